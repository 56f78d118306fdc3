"""Fault injection from the MQTT robot simulator, seen by the edge's MQTT JSON source."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from robodensity.core.settings import MqttJsonSourceSettings
from robodensity.core.wire import Reading, State
from robodensity.edge.sources.mqtt_json import MqttJsonSource
from robodensity.simulators.mqtt_robot import MqttRobots, topic_for
from tests.helpers import wait_until_async


async def test_garbage_skewed_clocks_and_replays_are_counted_not_fatal(broker_url: str) -> None:
    factory = f"fz{uuid.uuid4().hex[:8]}"
    keys = ["YASKAWA/Y1", "YASKAWA/Y2"]
    source = MqttJsonSource(MqttJsonSourceSettings(url=broker_url, topic=topic_for(factory)))
    got: list[Reading] = []
    now = datetime.now(UTC).replace(microsecond=0)

    async def collect() -> None:
        async for reading in source:
            got.append(reading)

    async with source:
        await wait_until_async(source.subscribed.is_set, 10, "subscription")
        task = asyncio.create_task(collect())
        with (
            MqttRobots(broker_url, factory, keys) as sim,
            MqttRobots(broker_url, factory, keys, clock_skew_s=3600) as skewed,
        ):
            sim.publish_state(keys[0], State.EXECUTING, now - timedelta(minutes=2), retain=False)
            sim.publish_garbage("Y1", b"\x00\xff not json")
            sim.publish_garbage("Y1", b'{"manufacturer": "YASKAWA", "serial": "Y1", "state": "DANCING", "ts": "x"}')
            skewed.publish_state("YASKAWA/Y3", State.IDLE, now, retain=False)  # an hour ahead
            sim.publish_state(keys[1], State.FAULT, now - timedelta(minutes=1), retain=False)
            sim.replay_sent(2)  # both good messages once more
            sim.flush()
            skewed.flush()
            await wait_until_async(lambda: source.repeats >= 2 and len(got) + source.bad_messages >= 5, 10, "all")
        task.cancel()
    assert source.bad_messages >= 2  # the skewed clock (Y3) is refused, or accepted for the edge to correct
    # A replay repeats each robot's last state: dropped, counted, never a second event.
    assert [(r.robot.key, r.state) for r in got if r.robot.key in keys] == [
        (keys[0], State.EXECUTING),
        (keys[1], State.FAULT),
    ]
    assert source.repeats == 2
