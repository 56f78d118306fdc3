"""Encoding and decoding of the wire contract: every byte on the uplink is made and read here.

Encoding (the edge)
    ``encode_batch`` writes a whole batch. The edge's outbox stores each event once, as
    ``event_body`` (the event's JSON without its ``seq``, which the outbox assigns), and
    ``splice_batch`` joins stored bodies into a message without parsing them again; the
    result is byte for byte what ``encode_batch`` writes for the same events
    (tests/test_wire.py checks it). ``splice_fit`` says how many stored bodies fit in one
    message, so an outbox never hands out a batch the collector would refuse as too large.

Decoding (the collector), two paths over the same limits (see ``contract``)
    ``decode_batch`` is the reference: plain ``json`` and a check per field, returning
    frozen ``Event`` values, and for each bad event an error naming its exact path
    (``events[3].ts``) while its neighbours survive. ``decode_rows`` is the fast path:
    msgspec decodes the JSON into typed structs in C (types, required fields, lengths,
    seq bounds) and a short loop applies the rest (vocabularies, blank texts, the time
    window) while building flat ``EventRow`` tuples, about seven times faster. It
    returns None on the first thing it is not sure about; the caller then decodes the
    message with ``decode_batch``, so every verdict on bad input is the reference's.
    tests/test_fuzz.py and tests/test_wire.py check that the two paths agree.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any, TypeVar

import msgspec

from robodensity.core import clock
from robodensity.core.wire.contract import (
    EARLIEST,
    IDENT_RE,
    MAX_ALARM_TEXT_CHARS,
    MAX_BATCH_EVENTS,
    MAX_FUTURE,
    MAX_IDENT_CHARS,
    MAX_PAYLOAD_BYTES,
    MAX_TEXT_CHARS,
    SEQ_MAX,
    SEQ_MIN,
    VERSION,
    Ack,
    Batch,
    Counter,
    DecodedBatch,
    Event,
    EventType,
    Quality,
    Reading,
    RobotId,
    State,
    WireError,
    check_ident,
)

__all__ = [
    "EventRow",
    "batch_clock_offset",
    "decode_ack",
    "decode_batch",
    "decode_rows",
    "encode_ack",
    "encode_batch",
    "encode_refusal",
    "event_body",
    "event_to_dict",
    "event_to_row",
    "format_ts",
    "parse_ts",
    "row_to_event",
    "splice_batch",
    "splice_fit",
]

_E = TypeVar("_E", bound=enum.StrEnum)
_dumps = partial(json.dumps, separators=(",", ":"), allow_nan=False)

# ---------------------------------------------------------------- encoding


def format_ts(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _reading_fields(r: Reading) -> dict[str, Any]:
    d: dict[str, Any] = {
        "robot": {"manufacturer": r.robot.manufacturer, "serial": r.robot.serial},
        "ts": format_ts(r.ts),
        "type": r.type.value,
    }
    if r.quality is not Quality.GOOD:
        d["quality"] = r.quality.value
    if r.type is EventType.STATE:
        assert r.state is not None
        d["state"] = r.state.value
    elif r.type is EventType.COUNTER:
        assert r.counter is not None
        d["counter"] = r.counter.value
        d["value"] = r.value
    else:
        d["alarm"] = {"code": r.alarm_code, "text": r.alarm_text, "active": r.alarm_active}
    if r.clock_offset_s is not None:
        d["clock_offset_s"] = r.clock_offset_s
    return d


def event_to_dict(event: Event) -> dict[str, Any]:
    """The event as the JSON object it travels as (``seq`` first)."""
    return {"seq": event.seq, **_reading_fields(event.reading)}


def event_body(reading: Reading) -> str:
    """The JSON of the event ``reading`` becomes, without its ``seq``: what an outbox stores."""
    return _dumps(_reading_fields(reading))


def _head(agent: str, factory: str, clock_offset_s: float | None = None) -> str:
    """``{"v":1,"agent":...,"factory":...`` (and the agent's clock offset) without the closing brace."""
    doc: dict[str, Any] = {"v": VERSION, "agent": agent, "factory": factory}
    if clock_offset_s is not None:
        doc["clock_offset_s"] = clock_offset_s
    return _dumps(doc)[:-1]


def encode_batch(batch: Batch) -> bytes:
    doc: dict[str, Any] = {"v": batch.v, "agent": batch.agent, "factory": batch.factory}
    if batch.clock_offset_s is not None:
        doc["clock_offset_s"] = batch.clock_offset_s
    doc["events"] = [event_to_dict(e) for e in batch.events]
    return _dumps(doc).encode()


def splice_batch(
    agent: str, factory: str, bodies: Iterable[tuple[int, str]], clock_offset_s: float | None = None
) -> bytes:
    """An uplink message from ``(seq, event_body(reading))`` pairs, without re-encoding the bodies.

    Byte for byte what ``encode_batch`` writes for the same events. Each body must come from
    ``event_body`` (a JSON object with at least one member); it is trusted, not parsed.
    """
    events = ",".join(f'{{"seq":{seq},{body[1:]}' for seq, body in bodies)
    return f'{_head(agent, factory, clock_offset_s)},"events":[{events}]}}'.encode()


_SPLICE_BUDGET = MAX_PAYLOAD_BYTES - len(
    _head("x" * MAX_IDENT_CHARS, "x" * MAX_IDENT_CHARS, -1.2345678901234567e-300) + ',"events":[]}'
)


def batch_clock_offset(payload: bytes) -> float | None:
    """The agent's clock offset [s] from an uplink message's head, without decoding its events.

    Reads the members before ``"events"`` as ``splice_batch``/``encode_batch`` write them; None
    when absent, not a finite number, or the head is not in that form (the field is optional).
    """
    end = payload.find(b',"events":[', 0, 512)
    if end < 0 or b'"clock_offset_s"' not in payload[:end]:
        return None
    try:
        head = json.loads(payload[:end] + b"}")
    except ValueError:
        return None
    value = head.get("clock_offset_s") if isinstance(head, dict) else None
    if not isinstance(value, int | float) or isinstance(value, bool) or not _finite(value):
        return None
    return float(value)


def splice_fit(bodies: Iterable[tuple[int, str]]) -> int:
    """How many of ``bodies``, from the first, ``splice_batch`` fits in one message of at most
    ``MAX_PAYLOAD_BYTES`` whatever the identifiers; at least one. Bodies from ``event_body`` are
    ASCII, so characters are bytes."""
    used = n = 0
    for seq, body in bodies:
        used += len(body) + len(str(seq)) + 8  # '{"seq":' + seq + ',' + body[1:] + ','
        if used > _SPLICE_BUDGET and n:
            break
        n += 1
    return n


def encode_ack(ack: Ack) -> bytes:
    doc: dict[str, Any] = {"v": VERSION, "agent": ack.agent, "through": ack.through, "ranges": ack.ranges}
    if ack.now is not None:
        doc["now"] = format_ts(ack.now)
    return _dumps(doc).encode()


# ---------------------------------------------------------------- the reference decoder


def encode_refusal(agent: str, reason: str) -> bytes:
    """The collector's answer on an agent's ack topic to a batch it cannot read (another version)."""
    return _dumps({"v": VERSION, "agent": agent, "refused": reason, "speaks": [VERSION]}).encode()


def decode_ack(payload: bytes) -> Ack:
    """An ack of this contract version; WireError("v", ...) naming both versions for a refusal
    or an ack of another version (never read as one of ours)."""
    doc = _load_object(payload)
    if "refused" in doc:
        raise WireError("v", f"the collector refused our batches ({doc['refused']}); it speaks {doc.get('speaks')}")
    if doc.get("v") != VERSION:
        raise WireError("v", f"an ack of wire version {doc.get('v')!r}; this agent speaks {VERSION}")
    agent = check_ident("agent", doc.get("agent"))
    ranges = doc.get("ranges", [])
    if not isinstance(ranges, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(_is_int(x) for x in p) for p in ranges
    ):
        raise WireError("ranges", "must be a list of [first, last] integer pairs")
    through = doc.get("through", 0)
    if not _is_int(through):
        raise WireError("through", "must be an integer")
    now = doc.get("now")
    sent = None if now is None else parse_ts("now", now, None)
    return Ack(agent, tuple((int(a), int(b)) for a, b in ranges), int(through), sent)


def decode_batch(payload: bytes, now: datetime | None = None) -> DecodedBatch:
    """Decode and validate one uplink message.

    Raises WireError when the message as a whole is unusable (not JSON, wrong
    version, no agent, too many events). An event that breaks the contract does not
    spoil its neighbours: it is returned in ``errors`` with its sequence number when known.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise WireError("payload", f"{len(payload)} bytes is over the {MAX_PAYLOAD_BYTES} limit")
    doc = _load_object(payload)
    v = doc.get("v")
    if v != VERSION:
        raise WireError("v", f"unsupported contract version {v!r}; this collector speaks {VERSION}")
    agent = check_ident("agent", doc.get("agent"))
    factory = check_ident("factory", doc.get("factory"))
    raw_events = doc.get("events")
    if not isinstance(raw_events, list):
        raise WireError("events", "must be a list")
    if len(raw_events) > MAX_BATCH_EVENTS:
        raise WireError("events", f"{len(raw_events)} events is over the {MAX_BATCH_EVENTS} limit")
    now = now or clock.now()
    good: list[Event] = []
    errors: list[tuple[int | None, WireError, Any]] = []
    for i, raw in enumerate(raw_events):
        try:
            good.append(_decode_event(raw, now))
        except WireError as exc:
            seq = raw.get("seq") if isinstance(raw, dict) else None
            err = WireError(f"events[{i}].{exc.field}", exc.reason)
            errors.append((seq if _is_seq(seq) else None, err, raw))
    return DecodedBatch(agent, factory, tuple(good), tuple(errors))


def _load_object(payload: bytes) -> dict[str, Any]:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError("payload", f"invalid UTF-8 at byte {exc.start}") from None
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise WireError("payload", "nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise WireError("payload", f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(doc, dict):
        raise WireError("payload", "must be a JSON object")
    return doc


def _reject_constant(name: str) -> None:
    raise WireError("payload", f"{name} is not a number in this contract")


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_seq(x: object) -> bool:
    return _is_int(x) and SEQ_MIN <= x <= SEQ_MAX  # type: ignore[operator]


def _decode_event(raw: object, now: datetime) -> Event:
    if not isinstance(raw, dict):
        raise WireError("event", "must be an object")
    seq = raw.get("seq")
    if not _is_seq(seq):
        raise WireError("seq", f"must be an integer from {SEQ_MIN} to 2^63-1; got {seq!r}")
    robot_raw = raw.get("robot")
    if not isinstance(robot_raw, dict):
        raise WireError("robot", "must be an object with manufacturer and serial")
    robot = RobotId(
        _text("robot.manufacturer", robot_raw.get("manufacturer")),
        _text("robot.serial", robot_raw.get("serial")),
    )
    ts = parse_ts("ts", raw.get("ts"), now)
    etype = _enum("type", EventType, raw.get("type"))
    quality = _enum("quality", Quality, raw.get("quality", Quality.GOOD.value))
    offset = raw.get("clock_offset_s")
    if offset is not None and (not isinstance(offset, int | float) or isinstance(offset, bool) or not _finite(offset)):
        raise WireError("clock_offset_s", f"must be a finite number of seconds; got {offset!r}")
    if etype is EventType.STATE:
        reading = Reading.of_state(robot, ts, _enum("state", State, raw.get("state")), quality)
    elif etype is EventType.COUNTER:
        value = raw.get("value")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not _finite(value):
            raise WireError("value", f"must be a finite number; got {value!r}")
        reading = Reading.of_counter(robot, ts, _enum("counter", Counter, raw.get("counter")), float(value), quality)
    else:
        alarm = raw.get("alarm")
        if not isinstance(alarm, dict):
            raise WireError("alarm", "must be an object with code, text, active")
        active = alarm.get("active")
        if not isinstance(active, bool):
            raise WireError("alarm.active", f"must be true or false; got {active!r}")
        reading = Reading.of_alarm(
            robot,
            ts,
            _text("alarm.code", alarm.get("code")),
            _text("alarm.text", alarm.get("text"), MAX_ALARM_TEXT_CHARS, True),
            active,
            quality,
        )
    if offset is not None:
        reading = replace(reading, clock_offset_s=float(offset))
    return Event(int(seq), reading)  # type: ignore[arg-type]


def _finite(x: float) -> bool:
    try:
        return math.isfinite(x)
    except OverflowError:  # an integer too large for a float
        return False


def _text(name: str, value: object, max_len: int = MAX_TEXT_CHARS, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not value.strip() and not allow_empty):
        raise WireError(name, f"must be a non-empty string; got {value!r}")
    if len(value) > max_len:
        raise WireError(name, f"longer than {max_len} characters")
    return value


def _enum(name: str, kind: type[_E], value: object) -> _E:
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        return kind(value)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise WireError(name, f"must be one of {allowed}; got {value!r}") from None


def parse_ts(name: str, value: object, now: datetime | None) -> datetime:
    """An RFC 3339 timestamp with a zone, from ``EARLIEST`` to ``MAX_FUTURE`` ahead of ``now``
    (``now`` None: no upper bound, for a source whose clock the edge corrects)."""
    if not isinstance(value, str):
        raise WireError(name, f"must be an RFC 3339 string; got {value!r}")
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise WireError(name, f"not an RFC 3339 timestamp: {value!r}") from None
    if ts.tzinfo is None:
        raise WireError(name, f"has no time zone: {value!r}")
    if ts < EARLIEST:
        raise WireError(name, f"before {EARLIEST.year}: {value!r}")
    if now is not None and ts > now + MAX_FUTURE:
        raise WireError(name, f"more than {MAX_FUTURE} in the future: {value!r}")
    return ts.astimezone(UTC)


# ---------------------------------------------------------------- the fast decoder

EventRow = tuple[
    int,
    str,
    str,
    datetime,
    str,
    str | None,
    str | None,
    float | None,
    str | None,
    str | None,
    bool | None,
    str,
    float | None,
]
"""One event, flat: (seq, manufacturer, serial, ts, type, state, counter, value, alarm_code,
alarm_text, alarm_active, quality, clock_offset_s); ``ts`` in UTC, the vocabularies as their
wire strings."""

_TYPES = frozenset(t.value for t in EventType)
_STATES = frozenset(s.value for s in State)
_COUNTERS = frozenset(c.value for c in Counter)
_QUALITIES = frozenset(q.value for q in Quality)
_Text = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT_CHARS)]


class _Robot(msgspec.Struct, gc=False):
    manufacturer: _Text
    serial: _Text


class _Alarm(msgspec.Struct, gc=False):
    code: _Text
    active: bool
    text: Annotated[str, msgspec.Meta(max_length=MAX_ALARM_TEXT_CHARS)]


class _Event(msgspec.Struct, gc=False):
    seq: Annotated[int, msgspec.Meta(ge=SEQ_MIN, le=SEQ_MAX)]
    robot: _Robot
    ts: str  # parsed by datetime.fromisoformat, as parse_ts does
    type: str
    state: str | None = None
    counter: str | None = None
    value: float | int | None = None
    alarm: _Alarm | None = None
    quality: str = Quality.GOOD.value
    clock_offset_s: float | None = None


class _Batch(msgspec.Struct, gc=False):
    v: int
    agent: str
    factory: str
    events: Annotated[list[_Event], msgspec.Meta(max_length=MAX_BATCH_EVENTS)]


_decode_struct = msgspec.json.Decoder(_Batch).decode


def decode_rows(payload: bytes, now: datetime) -> tuple[str, str, list[EventRow]] | None:
    """(agent, factory, rows) when every event of the message is valid; None otherwise.

    None means "ask ``decode_batch``", never "invalid": the reference decides and explains.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        return None
    ident, fromiso, utc = IDENT_RE.match, datetime.fromisoformat, UTC
    try:
        doc = _decode_struct(payload)
        agent, factory = doc.agent, doc.factory
        if doc.v != VERSION or not ident(agent) or not ident(factory):
            return None
        earliest, latest = EARLIEST, now + MAX_FUTURE
        rows: list[EventRow] = []
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
            ts = fromiso(e.ts)
            if ts.tzinfo is None or ts < earliest or ts > latest:
                return None
            ts = ts.astimezone(utc)
            offset = e.clock_offset_s
            if offset is not None and not math.isfinite(offset):
                return None
            if etype == "state":
                state = e.state
                if state not in _STATES:
                    return None
                append((e.seq, m, s, ts, etype, state, None, None, None, None, None, quality, offset))
            elif etype == "counter":
                value, counter = e.value, e.counter
                if value is None or counter not in _COUNTERS:
                    return None
                value = float(value)  # OverflowError for huge ints: the reference decides
                if not math.isfinite(value):
                    return None
                append((e.seq, m, s, ts, etype, None, counter, value, None, None, None, quality, offset))
            else:
                alarm = e.alarm
                if alarm is None or not alarm.code.strip():
                    return None
                append(
                    (e.seq, m, s, ts, etype, None, None, None, alarm.code, alarm.text, alarm.active, quality, offset)
                )
    except (msgspec.DecodeError, ValueError, TypeError, OverflowError, RecursionError):
        return None
    return agent, factory, rows


def row_to_event(row: EventRow) -> Event:
    """The Event a row stands for."""
    seq, m, s, ts, etype, state, counter, value, code, text, active, quality, offset = row
    reading = Reading(
        RobotId(m, s),
        ts,
        EventType(etype),
        state=State(state) if state else None,
        counter=Counter(counter) if counter else None,
        value=value,
        alarm_code=code,
        alarm_text=text,
        alarm_active=active,
        quality=Quality(quality),
        clock_offset_s=offset,
    )
    return Event(seq, reading)


def event_to_row(event: Event) -> EventRow:
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
        r.clock_offset_s,
    )
