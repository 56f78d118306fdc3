"""A fast decode path for well-formed uplink messages: JSON straight to row tuples.

``robodensity.wire.decode_batch`` builds a frozen dataclass (and runs its checks) for
every event: at ~120,000 events/s on one core it is the collector's bottleneck. This
module applies the same contract rules to produce plain tuples instead, and gives up
(returns None) on the first thing it is not sure about; the caller then decodes the whole
message with ``wire.decode_batch``, so error messages, field names and the treatment of
bad events stay exactly those of the wire module. tests/test_collector_storage.py checks
that both paths agree on valid and broken input.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

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


class _GiveUp(Exception):
    pass


def _reject_constant(name: str) -> None:
    raise _GiveUp(name)


def _text(value: object, max_len: int = 128, allow_empty: bool = False) -> str:
    if type(value) is not str or len(value) > max_len or (not allow_empty and not value.strip()):
        raise _GiveUp
    return value


def decode_rows(payload: bytes, now: datetime) -> tuple[str, str, list[FastRow]] | None:
    """(agent, factory, rows) when every event of the message is valid; None otherwise."""
    if len(payload) > wire.MAX_PAYLOAD_BYTES:
        return None
    try:
        doc = json.loads(payload.decode("utf-8"), parse_constant=_reject_constant)
        if type(doc) is not dict or doc.get("v") != wire.VERSION:
            return None
        agent, factory, events = doc.get("agent"), doc.get("factory"), doc.get("events")
        if type(agent) is not str or not _IDENT(agent) or type(factory) is not str or not _IDENT(factory):
            return None
        if type(events) is not list:
            return None
        latest = now + wire.MAX_FUTURE
        earliest = wire.EARLIEST
        rows: list[FastRow] = []
        append = rows.append
        for raw in events:
            if type(raw) is not dict:
                return None
            seq = raw.get("seq")
            robot = raw.get("robot")
            ts_raw = raw.get("ts")
            etype = raw.get("type")
            quality = raw.get("quality", "good")
            if (
                type(seq) is not int
                or not 1 <= seq <= wire.SEQ_MAX
                or type(robot) is not dict
                or type(ts_raw) is not str
                or type(etype) is not str
                or etype not in _TYPES
                or type(quality) is not str
                or quality not in _QUALITIES
            ):
                return None
            manufacturer = _text(robot.get("manufacturer"))
            serial = _text(robot.get("serial"))
            ts = _fromiso(ts_raw)
            if ts.tzinfo is None or ts < earliest or ts > latest:
                return None
            ts = ts.astimezone(_UTC)
            if etype == "state":
                state = raw.get("state")
                if type(state) is not str or state not in _STATES:
                    return None
                append((seq, manufacturer, serial, ts, etype, state, None, None, None, None, None, quality))
            elif etype == "counter":
                value = raw.get("value")
                counter = raw.get("counter")
                if type(value) is int:
                    value = float(value)  # OverflowError for huge ints: the slow path decides
                elif type(value) is not float:
                    return None
                if not math.isfinite(value) or type(counter) is not str or counter not in _COUNTERS:
                    return None
                append((seq, manufacturer, serial, ts, etype, None, counter, value, None, None, None, quality))
            else:
                alarm = raw.get("alarm")
                if type(alarm) is not dict:
                    return None
                active = alarm.get("active")
                if type(active) is not bool:
                    return None
                code = _text(alarm.get("code"))
                text = _text(alarm.get("text"), 1000, True)
                append((seq, manufacturer, serial, ts, etype, None, None, None, code, text, active, quality))
    except (_GiveUp, ValueError, TypeError, OverflowError, RecursionError, UnicodeDecodeError):
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
