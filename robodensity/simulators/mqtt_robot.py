"""Robots that publish their state as plain JSON on a factory's MQTT broker.

Topic ``plant/{factory}/robots/{serial}/state``, payload
``{"manufacturer": ..., "serial": ..., "state": ..., "ts": ...}``. The current state
is retained, so an edge agent that subscribes late still learns it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

import paho.mqtt.client as mqtt

from robodensity.core.mqtt import connect, make_client
from robodensity.core.settings import BrokerSettings
from robodensity.core.wire import State, format_ts
from robodensity.simulators.behaviour import Schedule, SimClock, due_changes


def topic_for(factory: str, serial: str = "+") -> str:
    return f"plant/{factory}/robots/{serial}/state"


class MqttRobots:
    """One MQTT connection publishing for many robots of one factory."""

    def __init__(self, broker_url: str, factory: str, robot_keys: Sequence[str], clock_skew_s: float = 0.0) -> None:
        self.broker_url = broker_url
        self.factory = factory
        self.robot_keys = list(robot_keys)
        self.clock_skew_s = clock_skew_s
        """Fault injection: added to every timestamp the robots report (a controller clock off)."""
        self.published = 0
        self._sent: list[tuple[str, bytes]] = []
        self._client: mqtt.Client | None = None
        self._last: mqtt.MQTTMessageInfo | None = None

    def __enter__(self) -> MqttRobots:
        client = make_client(BrokerSettings(url=self.broker_url), self.broker_url, f"sim-{uuid.uuid4().hex[:8]}")
        connect(client, BrokerSettings(url=self.broker_url), self.broker_url, clean_start=True)
        deadline = time.monotonic() + 10
        while not client.is_connected() and time.monotonic() < deadline:
            time.sleep(0.01)
        self._client = client
        return self

    def __exit__(self, *exc: object) -> None:
        if self._client is not None:
            self.flush()
            self._client.disconnect()
            self._client.loop_stop()

    def publish_state(self, robot_key: str, state: State, ts: datetime, retain: bool = True) -> None:
        assert self._client is not None, "use `with MqttRobots(...)` first"
        manufacturer, serial = robot_key.split("/", 1)
        skewed = ts + timedelta(seconds=self.clock_skew_s)
        payload = json.dumps(
            {"manufacturer": manufacturer, "serial": serial, "state": state.value, "ts": format_ts(skewed)}
        ).encode()
        self._last = self._client.publish(topic_for(self.factory, serial), payload, qos=1, retain=retain)
        self._sent.append((topic_for(self.factory, serial), payload))
        self.published += 1

    def publish_garbage(self, serial: str, payload: bytes) -> None:
        """Fault injection: anything at all on a robot's topic."""
        assert self._client is not None, "use `with MqttRobots(...)` first"
        self._last = self._client.publish(topic_for(self.factory, serial), payload, qos=1)

    def replay_sent(self, last: int) -> None:
        """Fault injection: publish the last ``last`` messages again, byte for byte."""
        assert self._client is not None, "use `with MqttRobots(...)` first"
        for topic, payload in self._sent[-last:]:
            self._last = self._client.publish(topic, payload, qos=1)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until the broker has acknowledged everything published so far."""
        if self._last is not None:
            self._last.wait_for_publish(timeout_s)

    def clear_retained(self) -> None:
        assert self._client is not None
        for key in self.robot_keys:
            self._client.publish(topic_for(self.factory, key.split("/", 1)[1]), b"", qos=1, retain=True)
        self.flush()

    async def replay(self, schedules: Mapping[str, Schedule], clock: SimClock) -> None:
        """Publish each change when its simulated time comes; returns after the last one."""
        async for t, key, state in due_changes(schedules, clock):
            self.publish_state(key, state, t)
        await asyncio.to_thread(self.flush)
