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

from robodensity.core import wire
from robodensity.core.settings import MqttJsonSourceSettings
from robodensity.edge.sources.paho import PahoSource

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


class MqttJsonSource(PahoSource[tuple[int, bytes]]):
    settings: MqttJsonSourceSettings

    def __init__(self, settings: MqttJsonSourceSettings, queue_max: int = 10_000) -> None:
        self.settings = settings  # validated when loaded: no check and no network here
        self.queue_max = queue_max
        self.bad_messages = 0
        self.dropped = 0
        self.subscribed = asyncio.Event()
        self._unsettled: collections.deque[int] = collections.deque()

    async def __aenter__(self) -> MqttJsonSource:
        self._unsettled.clear()
        persistent = self.settings.client_id is not None
        self._open(
            self.settings.client_id or f"rd-json-{uuid.uuid4().hex[:8]}",
            [self.settings.topic],
            lambda msg: (msg.mid if msg.qos else 0, bytes(msg.payload)),
            self.queue_max,
            manual_ack=persistent,
            clean_start=not persistent,
            session_expiry_s=self.settings.session_expiry_s if persistent else 0,
        )
        return self

    async def __aiter__(self) -> AsyncIterator[wire.Reading]:
        while True:
            mid, payload = await self._next()
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
