"""The wire contract between edge agents and the collector, version 1.

This module is the only definition of what travels on the uplink. It uses the
standard library only, so the collector never imports asyncua or paho through it
and a gateway needs nothing else to speak it.

A *reading* is what a source observed about one robot. When the edge agent puts a
reading into its outbox it becomes an *event* with the agent's next sequence
number. Events travel in *batches*, one MQTT message each; the collector answers
with an *ack* once the batch is committed to the database.

Topics (``{factory}`` and ``{agent}`` are identifiers, see ``IDENT_RE``)::

    robodensity/v1/{factory}/{agent}/up      edge -> collector   Batch (QoS 1)
    robodensity/v1/{factory}/{agent}/ack     collector -> edge   Ack   (QoS 1)
    robodensity/v1/{factory}/{agent}/status  edge, retained      "online" / "offline"
"""

from __future__ import annotations

import enum
import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

VERSION = 1
TOPIC_ROOT = f"robodensity/v{VERSION}"
MAX_PAYLOAD_BYTES = 1_048_576
MAX_FUTURE = timedelta(minutes=5)
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
IDENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SEQ_MAX = 2**63 - 1
_E = TypeVar("_E", bound=enum.StrEnum)


class State(enum.StrEnum):
    """Canonical robot states, aligned with OPC 40001-1 MachineryItemState plus fault."""

    EXECUTING = "EXECUTING"
    IDLE = "IDLE"
    FAULT = "FAULT"
    OUT_OF_SERVICE = "OUT_OF_SERVICE"
    OFFLINE = "OFFLINE"


class EventType(enum.StrEnum):
    STATE = "state"
    COUNTER = "counter"
    ALARM = "alarm"


class Quality(enum.StrEnum):
    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"


class Counter(enum.StrEnum):
    """Monotonic counters a robot reports, with their canonical units."""

    POWER_ON_S = "power_on_s"  # [s] OPC 40010 TotalPowerOnTime
    ENERGY_WH = "energy_wh"  # [Wh] OPC 40010 TotalEnergyConsumption
    CYCLES = "cycles"  # [1] completed program cycles
    STARTUPS = "startups"  # [1] controller start-ups


class WireError(ValueError):
    """Input that breaks the contract. ``field`` names the offending field."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RobotId:
    """A robot's stable identity: manufacturer and serial number (OPC 40010/DI).

    Never an address: a leased robot that moves keeps its history.
    """

    manufacturer: str
    serial: str

    @property
    def key(self) -> str:
        return f"{self.manufacturer}/{self.serial}"


@dataclass(frozen=True, slots=True)
class Reading:
    """One observation of one robot, before it has a sequence number."""

    robot: RobotId
    ts: datetime
    type: EventType
    state: State | None = None
    counter: Counter | None = None
    value: float | None = None
    alarm_code: str | None = None
    alarm_text: str | None = None
    alarm_active: bool | None = None
    quality: Quality = Quality.GOOD

    def __post_init__(self) -> None:
        _check_reading(self)

    @classmethod
    def of_state(cls, robot: RobotId, ts: datetime, state: State, quality: Quality = Quality.GOOD) -> Reading:
        return cls(robot, ts, EventType.STATE, state=state, quality=quality)

    @classmethod
    def of_counter(
        cls,
        robot: RobotId,
        ts: datetime,
        counter: Counter,
        value: float,
        quality: Quality = Quality.GOOD,
    ) -> Reading:
        return cls(robot, ts, EventType.COUNTER, counter=counter, value=value, quality=quality)

    @classmethod
    def of_alarm(
        cls, robot: RobotId, ts: datetime, code: str, text: str, active: bool, quality: Quality = Quality.GOOD
    ) -> Reading:
        return cls(robot, ts, EventType.ALARM, alarm_code=code, alarm_text=text, alarm_active=active, quality=quality)


@dataclass(frozen=True, slots=True)
class Event:
    """A reading with the per-agent sequence number it got when entering the outbox."""

    seq: int
    reading: Reading


@dataclass(frozen=True, slots=True)
class Batch:
    agent: str
    factory: str
    events: tuple[Event, ...]
    v: int = VERSION


@dataclass(frozen=True, slots=True)
class Ack:
    """The collector's word that these sequence numbers are committed (or dead-lettered).

    ``ranges`` are inclusive ``(first, last)`` pairs; ``through`` is the highest
    sequence number up to which everything of this agent is committed.
    """

    agent: str
    ranges: tuple[tuple[int, int], ...]
    through: int = 0


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """What the collector got out of one message: good events and per-event errors."""

    agent: str
    factory: str
    events: tuple[Event, ...]
    errors: tuple[tuple[int | None, WireError, Any], ...] = field(default=())
    """(seq if known, error, raw event) for each event that broke the contract."""


# ---------------------------------------------------------------- topics


def uplink_topic(factory: str, agent: str) -> str:
    return f"{TOPIC_ROOT}/{factory}/{agent}/up"


def ack_topic(factory: str, agent: str) -> str:
    return f"{TOPIC_ROOT}/{factory}/{agent}/ack"


def status_topic(factory: str, agent: str) -> str:
    return f"{TOPIC_ROOT}/{factory}/{agent}/status"


def parse_uplink_topic(topic: str) -> tuple[str, str]:
    """(factory, agent) from an uplink topic; WireError when it is not one."""
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != TOPIC_ROOT or parts[4] != "up":
        raise WireError("topic", f"not an uplink topic {TOPIC_ROOT}/<factory>/<agent>/up")
    factory, agent = parts[2], parts[3]
    check_ident("topic.factory", factory)
    check_ident("topic.agent", agent)
    return factory, agent


def check_ident(name: str, value: object) -> str:
    if not isinstance(value, str) or not IDENT_RE.match(value):
        raise WireError(name, f"must match {IDENT_RE.pattern}; got {value!r}")
    return value


# ---------------------------------------------------------------- encoding


def format_ts(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def event_to_dict(event: Event) -> dict[str, Any]:
    r = event.reading
    d: dict[str, Any] = {
        "seq": event.seq,
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
    return d


def encode_batch(batch: Batch) -> bytes:
    doc = {
        "v": batch.v,
        "agent": batch.agent,
        "factory": batch.factory,
        "events": [event_to_dict(e) for e in batch.events],
    }
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


def encode_ack(ack: Ack) -> bytes:
    doc = {"v": VERSION, "agent": ack.agent, "through": ack.through, "ranges": ack.ranges}
    return json.dumps(doc, separators=(",", ":")).encode()


def decode_ack(payload: bytes) -> Ack:
    doc = _load_object(payload)
    agent = check_ident("agent", doc.get("agent"))
    ranges = doc.get("ranges", [])
    if not isinstance(ranges, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(_is_int(x) for x in p) for p in ranges
    ):
        raise WireError("ranges", "must be a list of [first, last] integer pairs")
    through = doc.get("through", 0)
    if not _is_int(through):
        raise WireError("through", "must be an integer")
    return Ack(agent, tuple((int(a), int(b)) for a, b in ranges), int(through))


def seq_ranges(seqs: list[int]) -> tuple[tuple[int, int], ...]:
    """Inclusive runs of consecutive sequence numbers: [1,2,3,7] -> ((1,3),(7,7))."""
    out: list[tuple[int, int]] = []
    for s in sorted(set(seqs)):
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return tuple(out)


# ---------------------------------------------------------------- decoding


def decode_batch(payload: bytes, now: datetime | None = None) -> DecodedBatch:
    """Decode and validate one uplink message.

    Raises WireError when the message as a whole is unusable (not JSON, wrong
    version, no agent). An event that breaks the contract does not spoil its
    neighbours: it is returned in ``errors`` with its sequence number when known.
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
    now = now or datetime.now(UTC)
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
    return _is_int(x) and 1 <= x <= SEQ_MAX  # type: ignore[operator]


def _decode_event(raw: object, now: datetime) -> Event:
    if not isinstance(raw, dict):
        raise WireError("event", "must be an object")
    seq = raw.get("seq")
    if not _is_seq(seq):
        raise WireError("seq", f"must be an integer from 1 to 2^63-1; got {seq!r}")
    robot_raw = raw.get("robot")
    if not isinstance(robot_raw, dict):
        raise WireError("robot", "must be an object with manufacturer and serial")
    robot = RobotId(
        _text("robot.manufacturer", robot_raw.get("manufacturer")),
        _text("robot.serial", robot_raw.get("serial")),
    )
    ts = parse_ts("ts", raw.get("ts"), now)
    type_raw = raw.get("type")
    etype = _enum("type", EventType, type_raw)
    quality = _enum("quality", Quality, raw.get("quality", Quality.GOOD.value))
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
            _text("alarm.text", alarm.get("text"), 1000, True),
            active,
            quality,
        )
    return Event(int(seq), reading)  # type: ignore[arg-type]


def _finite(x: float) -> bool:
    try:
        return math.isfinite(x)
    except OverflowError:  # an integer too large for a float
        return False


def _text(name: str, value: object, max_len: int = 128, allow_empty: bool = False) -> str:
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


def parse_ts(name: str, value: object, now: datetime) -> datetime:
    """An RFC 3339 timestamp with a zone, not before 2000 nor over 5 minutes ahead."""
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
    if ts > now + MAX_FUTURE:
        raise WireError(name, f"more than {MAX_FUTURE} in the future: {value!r}")
    return ts.astimezone(UTC)


def _check_reading(r: Reading) -> None:
    if r.ts.tzinfo is None:
        raise WireError("ts", "has no time zone")
    if r.type is EventType.STATE and r.state is None:
        raise WireError("state", "a state event needs a state")
    if r.type is EventType.COUNTER and (r.counter is None or r.value is None or not math.isfinite(r.value)):
        raise WireError("value", "a counter event needs a counter and a finite value")
    if r.type is EventType.ALARM and (r.alarm_code is None or r.alarm_active is None):
        raise WireError("alarm", "an alarm event needs a code and active flag")
