"""Robots that publish plain JSON on the factory's own MQTT broker.

A mapping in settings names where the robot's identity is (payload fields, or topic
levels such as ``plant/+/robots/{serial}/status``), the timestamp, and the state: one
field translated by ``state_map``, or several fields (mode, running, alarm code...)
through a rule table (``state_rules``, :mod:`robodensity.edge.rules`). A message that
does not fit is logged and counted, never a crash.

Never a repeat: a reading in the state the robot was last reported in is dropped. That
is what a broker's retained status message becomes when the agent reconnects or
restarts: with a persistent session the subscription asks for retained messages only
when it is new (MQTT 5 retain handling 1); without one the broker re-sends them, and the
robot's last state, kept on disk once durable (:mod:`robodensity.edge.last_readings`),
tells the repeat from news, across restarts too.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from robodensity.core import wire
from robodensity.core.settings import MqttJsonSourceSettings
from robodensity.edge.last_readings import LastReadings
from robodensity.edge.rules import evaluate, signal_names
from robodensity.edge.sources.paho import PahoSource

log = logging.getLogger(__name__)


def field_at(doc: Any, path: str) -> Any:
    """``doc["a"]["b"]`` for the path ``a.b``; KeyError naming the path when absent."""
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            raise KeyError(path)
        doc = doc[part]
    return doc


def _identity_part(doc: Any, topic: list[str], level: int | None, fixed: str | None, path: str) -> object:
    if level is not None:
        if level >= len(topic):
            raise wire.WireError("topic", f"has no level {level}: {'/'.join(topic)}")
        return topic[level]
    return fixed if fixed is not None else field_at(doc, path)


def parse_message(settings: MqttJsonSourceSettings, payload: bytes, now: datetime, topic: str = "") -> wire.Reading:
    """One Reading from one JSON message on ``topic``; WireError naming the field that does not fit."""
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise wire.WireError("payload", f"not JSON: {exc}") from None
    levels = topic.split("/")
    s = settings
    try:
        manufacturer = _identity_part(doc, levels, s.manufacturer_topic_level, s.manufacturer, s.manufacturer_field)
        serial = _identity_part(doc, levels, s.serial_topic_level, None, s.serial_field)
        ts_raw = field_at(doc, s.ts_field)
        if not s.state_rules:
            state_raw = field_at(doc, s.state_field)
    except KeyError as exc:
        raise wire.WireError(str(exc.args[0]), "missing") from None
    if not isinstance(manufacturer, str) or not manufacturer or not isinstance(serial, str | int) or serial == "":
        raise wire.WireError(s.serial_field, "robot identity must be non-empty text")
    quality = wire.Quality.GOOD
    if s.state_rules:
        signals = {name: _field_or_none(doc, name) for name in signal_names(s.state_rules)}
        state, quality = evaluate(signals, s.state_rules, s.state_default)
        if state is wire.State.OFFLINE:
            raise wire.WireError("state_rules", f"none of the fields {', '.join(sorted(signals))} is present")
    else:
        mapped = s.state_map.get(str(state_raw))
        if mapped is None:
            raise wire.WireError(s.state_field, f"{state_raw!r} is not in the state map")
        state = mapped
    ts = wire.parse_ts(s.ts_field, ts_raw, None)  # any controller clock: the agent corrects it (edge/clock_truth.py)
    return wire.Reading.of_state(wire.RobotId(manufacturer, str(serial)), ts, state, quality)


def _field_or_none(doc: Any, path: str) -> object:
    try:
        return field_at(doc, path)
    except KeyError:
        return None


class MqttJsonSource(PahoSource[tuple[int, str, bytes]]):
    settings: MqttJsonSourceSettings

    def __init__(
        self, settings: MqttJsonSourceSettings, queue_max: int = 10_000, last_readings_path: Path | None = None
    ) -> None:
        self.settings = settings  # validated when loaded: no check and no network here
        self.queue_max = queue_max
        self.last_readings_path = last_readings_path
        self.bad_messages = 0
        self.repeats = 0
        """Readings dropped for repeating the robot's last state (a retained message re-sent...)."""
        self.dropped = 0
        self.subscribed = asyncio.Event()
        self._unsettled: collections.deque[tuple[int, wire.Reading | None]] = collections.deque()
        self._last: dict[str, wire.State] = {}
        self._store: LastReadings | None = None

    async def __aenter__(self) -> MqttJsonSource:
        self._unsettled.clear()
        if self.last_readings_path is not None and self._store is None:
            scope = f"mqtt_json {self.settings.url} {self.settings.topic}"
            self._store = LastReadings(self.last_readings_path, scope)
            self._last = self._store.load()
        persistent = self.settings.client_id is not None
        self._open(
            self.settings.client_id or f"rd-json-{uuid.uuid4().hex[:8]}",
            [self.settings.topic],
            lambda msg: (msg.mid if msg.qos else 0, msg.topic, bytes(msg.payload)),
            self.queue_max,
            manual_ack=persistent,
            retain_handling=1 if persistent else 0,
            clean_start=not persistent,
            session_expiry_s=self.settings.session_expiry_s if persistent else 0,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await super().__aexit__(*exc)
        if self._store is not None:
            self._store.close()
            self._store = None

    async def __aiter__(self) -> AsyncIterator[wire.Reading]:
        while True:
            mid, topic, payload = await self._next()
            try:
                reading = parse_message(self.settings, payload, datetime.now(UTC), topic)
            except wire.WireError as exc:
                self.bad_messages += 1
                log.warning("MQTT JSON source %s: bad message on %s (%s)", self.settings.topic, topic, exc)
                self._ack(mid)  # nothing to keep: redelivery would not make it better
                continue
            key = reading.robot.key
            if self._last.get(key) is reading.state:
                self.repeats += 1
                log.debug("MQTT JSON source %s: %s still %s: not repeated", self.settings.topic, key, reading.state)
                self._unsettled.append((mid, None))  # acknowledged in order with the readings before it
                if len(self._unsettled) == 1:
                    self.settle(0)
                continue
            self._last[key] = reading.state  # type: ignore[assignment]  # a state reading always has one
            self._unsettled.append((mid, reading))
            yield reading

    def settle(self, n: int) -> None:
        """The next ``n`` readings yielded are durable: acknowledge their messages (and the
        repeats between them) and remember each robot's state on disk."""
        durable: dict[str, wire.State] = {}
        while self._unsettled and (n > 0 or self._unsettled[0][1] is None):
            mid, reading = self._unsettled.popleft()
            if reading is not None:
                n -= 1
                durable[reading.robot.key] = reading.state  # type: ignore[assignment]
            self._ack(mid)
        if self._store is not None:
            self._store.save(durable.items())

    def _ack(self, mid: int) -> None:
        if mid and self._client is not None and self.settings.client_id is not None:
            self._client.ack(mid, 1)
