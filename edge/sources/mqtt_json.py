"""Robots that publish plain JSON on the factory's own MQTT broker.

A mapping in settings names the fields that carry the robot's identity, its state
and the timestamp, and translates the robot's own state words into canonical
states. A message that does not fit is logged and counted, never a crash.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt

from edge.sources.paho import PahoSource
from robodensity import wire
from robodensity.mqtt import broker_address, make_client
from robodensity.settings import BrokerSettings, MqttJsonSourceSettings

log = logging.getLogger(__name__)


def field_at(doc: Any, path: str) -> Any:
    """``doc["a"]["b"]`` for the path ``a.b``; KeyError naming the path when absent."""
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            raise KeyError(path)
        doc = doc[part]
    return doc


def parse_message(settings: MqttJsonSourceSettings, payload: bytes, now: datetime) -> wire.Reading:
    """One Reading from one JSON message; WireError naming the field that does not fit."""
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise wire.WireError("payload", f"not JSON: {exc}") from None
    try:
        manufacturer = field_at(doc, settings.manufacturer_field)
        serial = field_at(doc, settings.serial_field)
        state_raw = field_at(doc, settings.state_field)
        ts_raw = field_at(doc, settings.ts_field)
    except KeyError as exc:
        raise wire.WireError(str(exc.args[0]), "missing") from None
    if not isinstance(manufacturer, str) or not manufacturer or not isinstance(serial, (str, int)):
        raise wire.WireError(settings.serial_field, "robot identity must be non-empty text")
    state = settings.state_map.get(str(state_raw))
    if state is None:
        raise wire.WireError(settings.state_field, f"{state_raw!r} is not in the state map")
    ts = wire.parse_ts(settings.ts_field, ts_raw, now)
    return wire.Reading.of_state(wire.RobotId(manufacturer, str(serial)), ts, state)


class MqttJsonSource(PahoSource):
    def __init__(self, settings: MqttJsonSourceSettings, queue_max: int = 10_000) -> None:
        broker_address(settings.url)  # validates the URL; no network yet
        self.settings = settings
        self.queue_max = queue_max
        self.bad_messages = 0
        self.dropped = 0
        self.subscribed = asyncio.Event()
        self._queue: asyncio.Queue[tuple[int, bytes]] | None = None
        self._client: mqtt.Client | None = None
        self._unsettled: collections.deque[int] = collections.deque()

    async def __aenter__(self) -> MqttJsonSource:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue(self.queue_max)
        self._queue = queue
        self._unsettled.clear()
        persistent = self.settings.client_id is not None
        broker = BrokerSettings(url=self.settings.url, session_expiry_s=self.settings.session_expiry_s)
        client_id = self.settings.client_id or f"rd-json-{uuid.uuid4().hex[:8]}"
        client = make_client(broker, self.settings.url, client_id, manual_ack=persistent)

        def put(item: tuple[int, bytes]) -> None:
            try:
                queue.put_nowait(item)
            except asyncio.QueueFull:
                self.dropped += 1
                log.error("MQTT JSON source queue full: dropped a message (%d so far)", self.dropped)

        def on_connect(c: mqtt.Client, _u: object, _f: object, reason: object, _p: object) -> None:
            if not getattr(reason, "is_failure", False):
                c.subscribe(self.settings.topic, qos=1)

        client.on_connect = on_connect

        def on_subscribe(*_: object) -> None:
            loop.call_soon_threadsafe(self.subscribed.set)

        def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            loop.call_soon_threadsafe(put, (msg.mid if msg.qos else 0, bytes(msg.payload)))

        client.on_subscribe = on_subscribe
        client.on_message = on_message
        self._start(client, broker, clean_start=not persistent, session_expiry_s=None if persistent else 0)
        return self

    async def __aiter__(self) -> AsyncIterator[wire.Reading]:
        assert self._queue is not None, "use `async with source:` first"
        while True:
            mid, payload = await self._queue.get()
            try:
                reading = parse_message(self.settings, payload, datetime.now(UTC))
            except wire.WireError as exc:
                self.bad_messages += 1
                log.warning("MQTT JSON source %s: bad message (%s)", self.settings.topic, exc)
                self._ack(mid)  # nothing to keep: redelivery would not make it better
                continue
            self._unsettled.append(mid)
            yield reading

    def settle(self, n: int) -> None:
        """The next ``n`` readings yielded are durable: acknowledge their messages."""
        for _ in range(min(n, len(self._unsettled))):
            self._ack(self._unsettled.popleft())

    def _ack(self, mid: int) -> None:
        if mid and self._client is not None and self.settings.client_id is not None:
            self._client.ack(mid, 1)
