"""A fast decode path for well-formed uplink messages: JSON straight to row tuples.

``robodensity.wire.decode_batch`` builds a frozen dataclass (and runs its checks) for
every event: at ~120,000 events/s on one core it was the collector's bottleneck. Here
msgspec decodes the JSON into typed structs in C (types, required fields, lengths) and
a short loop applies the rest of the contract (closed vocabularies, blank texts, the
time window) while building plain tuples. It gives up (returns None) on the first thing
it is not sure about; the caller then decodes the whole message with
``wire.decode_batch``, so error messages, field names and the treatment of bad events
stay exactly those of the wire module. tests/test_collector_storage.py checks that both
paths agree on valid and broken input.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated

import msgspec

from robodensity import wire

FastRow = tuple[
    int, str, str, datetime, str, str | None, str | None, float | None, str | None, str | None, bool | None, str
]
"""(seq, manufacturer, serial, ts, type, state, counter, value, alarm_code, alarm_text, alarm_active, quality)"""

_TYPES = frozenset(t.value for t in wire.EventType)
_STATES = frozenset(s.value for s in wire.State)
_COUNTERS = frozenset(c.value for c in wire.Counter)
_QUALITIES = frozenset(q.value for q in wire.Quality)
_IDENT = wire.IDENT_RE.match
_UTC = UTC
_fromiso = datetime.fromisoformat

_Text = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class _Robot(msgspec.Struct):
    manufacturer: _Text
    serial: _Text


class _Alarm(msgspec.Struct):
    code: _Text
    active: bool
    text: Annotated[str, msgspec.Meta(max_length=1000)]


class _Event(msgspec.Struct):
    seq: Annotated[int, msgspec.Meta(ge=1, le=wire.SEQ_MAX)]
    robot: _Robot
    ts: str  # parsed by datetime.fromisoformat, as the wire module does
    type: str
    state: str | None = None
    counter: str | None = None
    value: float | int | None = None
    alarm: _Alarm | None = None
    quality: str = "good"


class _Batch(msgspec.Struct):
    v: int
    agent: str
    factory: str
    events: list[_Event]


_decode = msgspec.json.Decoder(_Batch).decode


def decode_rows(payload: bytes, now: datetime) -> tuple[str, str, list[FastRow]] | None:
    """(agent, factory, rows) when every event of the message is valid; None otherwise."""
    if len(payload) > wire.MAX_PAYLOAD_BYTES:
        return None
    try:
        doc = _decode(payload)
        agent, factory = doc.agent, doc.factory
        if doc.v != wire.VERSION or not _IDENT(agent) or not _IDENT(factory):
            return None
        latest = now + wire.MAX_FUTURE
        earliest = wire.EARLIEST
        rows: list[FastRow] = []
        append = rows.append
        robots: set[tuple[str, str]] = set()  # robots whose names passed the blank check
        for e in doc.events:
            etype, quality, robot = e.type, e.quality, e.robot
            m, s = key = (robot.manufacturer, robot.serial)
            if key not in robots:
                if not m.strip() or not s.strip():
                    return None
                robots.add(key)
            if etype not in _TYPES or quality not in _QUALITIES:
                return None
            ts = _fromiso(e.ts)
            if ts.tzinfo is None or ts < earliest or ts > latest:
                return None
            ts = ts.astimezone(_UTC)
            if etype == "state":
                state = e.state
                if state not in _STATES:
                    return None
                append((e.seq, m, s, ts, etype, state, None, None, None, None, None, quality))
            elif etype == "counter":
                value, counter = e.value, e.counter
                if value is None or counter not in _COUNTERS:
                    return None
                value = float(value)  # OverflowError for huge ints: the slow path decides
                if not math.isfinite(value):
                    return None
                append((e.seq, m, s, ts, etype, None, counter, value, None, None, None, quality))
            else:
                alarm = e.alarm
                if alarm is None or not alarm.code.strip():
                    return None
                append((e.seq, m, s, ts, etype, None, None, None, alarm.code, alarm.text, alarm.active, quality))
    except (msgspec.DecodeError, ValueError, TypeError, OverflowError, RecursionError):
        return None
    return agent, factory, rows


def row_to_event(row: FastRow) -> wire.Event:
    """The wire Event a fast row stands for (used only to describe a rejected event)."""
    seq, m, s, ts, etype, state, counter, value, code, text, active, quality = row
    reading = wire.Reading(
        wire.RobotId(m, s),
        ts,
        wire.EventType(etype),
        state=wire.State(state) if state else None,
        counter=wire.Counter(counter) if counter else None,
        value=value,
        alarm_code=code,
        alarm_text=text,
        alarm_active=active,
        quality=wire.Quality(quality),
    )
    return wire.Event(seq, reading)


def event_to_row(event: wire.Event) -> FastRow:
    r = event.reading
    return (
        event.seq,
        r.robot.manufacturer,
        r.robot.serial,
        r.ts,
        r.type.value,
        r.state.value if r.state else None,
        r.counter.value if r.counter else None,
        r.value,
        r.alarm_code,
        r.alarm_text,
        r.alarm_active,
        r.quality.value,
    )
