"""What travels on the uplink, version 1: topics, limits, vocabularies and the typed values.

A *reading* is what a source observed about one robot. When the edge agent puts a
reading into its outbox it becomes an *event* with the agent's next sequence
number. Events travel in *batches*, one MQTT message each; the collector answers
with an *ack* once the batch is committed to the database.

Topics (``{factory}`` and ``{agent}`` are identifiers, see ``IDENT_RE``)::

    robodensity/v1/{factory}/{agent}/up      edge -> collector   Batch (QoS 1)
    robodensity/v1/{factory}/{agent}/ack     collector -> edge   Ack   (QoS 1)
    robodensity/v1/{factory}/{agent}/status  edge, retained      "online" / "offline"

Every limit of the contract is a named constant here; both decoders of
:mod:`robodensity.core.wire.codec` and the edge's settings read them from here.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "EARLIEST",
    "IDENT_RE",
    "MAX_ALARM_TEXT_CHARS",
    "MAX_BATCH_EVENTS",
    "MAX_FUTURE",
    "MAX_IDENT_CHARS",
    "MAX_PAYLOAD_BYTES",
    "MAX_TEXT_CHARS",
    "SEQ_MAX",
    "SEQ_MIN",
    "TOPIC_ROOT",
    "VERSION",
    "Ack",
    "Batch",
    "Counter",
    "DecodedBatch",
    "Event",
    "EventType",
    "Quality",
    "Reading",
    "RobotId",
    "State",
    "WireError",
    "ack_topic",
    "check_ident",
    "parse_uplink_topic",
    "seq_ranges",
    "status_topic",
    "uplink_topic",
]

VERSION = 1
"""The payload's contract version, in every batch and ack as ``"v"``. A collector refuses a
batch of another version by name (a dead letter naming both versions, the batch not
acknowledged, a refusal on the agent's ack topic); an agent ignores an ack of another
version and says so. Neither side ever reads one version as another."""
TOPIC_ROOT = "robodensity/v1"
"""The topic layout's version: it stays when VERSION moves on, so that collectors and agents
of different payload versions still reach each other and refuse clearly instead of silently
publishing where nobody listens."""

# ---------------------------------------------------------------- limits
MAX_PAYLOAD_BYTES = 1_048_576
"""[bytes] one uplink message; larger ones are refused before parsing."""
MAX_BATCH_EVENTS = 10_000
"""[events] in one uplink message (the edge's ``batch_max_events`` can go no higher)."""
MAX_IDENT_CHARS = 64
"""[characters] a factory or agent identifier."""
MAX_TEXT_CHARS = 128
"""[characters] a robot's manufacturer or serial number, an alarm code (none may be blank)."""
MAX_ALARM_TEXT_CHARS = 1000
"""[characters] an alarm's text (may be empty)."""
SEQ_MIN = 1
SEQ_MAX = 2**63 - 1
"""Sequence numbers fit PostgreSQL's int8 and start at 1."""
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
"""No event is older than this."""
MAX_FUTURE = timedelta(minutes=5)
"""How far ahead of the collector's clock an event's timestamp may be."""

IDENT_RE = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_IDENT_CHARS - 1}}}$")


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
    SERVO_ON_S = "servo_on_s"  # [s] drives powered (Yaskawa HSES 0x88 servo power-on time)
    PLAYBACK_S = "playback_s"  # [s] in playback (Yaskawa HSES 0x88 playback time)
    MOTION_S = "motion_s"  # [s] moving (Yaskawa HSES 0x88 motion time)
    OPERATING_S = "operating_s"  # [s] working time of the first application (Yaskawa HSES 0x88 301)


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
    clock_offset_s: float | None = None
    """[s] set when the edge corrected ``ts`` for a controller clock that is off (the reading
    is *clock-corrected*): the estimated offset (edge receive time - source time) it added,
    so the source's own timestamp is ``ts - clock_offset_s``. None: ``ts`` is as read."""

    def __post_init__(self) -> None:
        _check_reading(self)

    @property
    def clock_corrected(self) -> bool:
        return self.clock_offset_s is not None

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
    clock_offset_s: float | None = None
    """[s] optional: the agent's clock offset against the collector (collector - agent), as the
    agent measured it from acks; an agent sends it now and then, not in every batch."""


@dataclass(frozen=True, slots=True)
class Ack:
    """The collector's word that these sequence numbers are committed (or dead-lettered).

    ``ranges`` are inclusive ``(first, last)`` pairs; ``through`` is the highest
    sequence number up to which everything of this agent is committed.
    """

    agent: str
    ranges: tuple[tuple[int, int], ...]
    through: int = 0
    now: datetime | None = None
    """Optional: the collector's clock when it sent the ack (the agent measures its offset)."""


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """What the collector got out of one message: good events and per-event errors."""

    agent: str
    factory: str
    events: tuple[Event, ...]
    errors: tuple[tuple[int | None, WireError, Any], ...] = field(default=())
    """(seq if known, error, raw event) for each event that broke the contract."""


def _check_reading(r: Reading) -> None:
    if r.ts.tzinfo is None:
        raise WireError("ts", "has no time zone")
    if r.type is EventType.STATE and r.state is None:
        raise WireError("state", "a state event needs a state")
    if r.type is EventType.COUNTER and (r.counter is None or r.value is None or not math.isfinite(r.value)):
        raise WireError("value", "a counter event needs a counter and a finite value")
    if r.type is EventType.ALARM and (r.alarm_code is None or r.alarm_active is None):
        raise WireError("alarm", "an alarm event needs a code and active flag")
    if r.clock_offset_s is not None and not math.isfinite(r.clock_offset_s):
        raise WireError("clock_offset_s", "must be a finite number of seconds")


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


def seq_ranges(seqs: list[int]) -> tuple[tuple[int, int], ...]:
    """Inclusive runs of consecutive sequence numbers: [1,2,3,7] -> ((1,3),(7,7))."""
    out: list[tuple[int, int]] = []
    for s in sorted(set(seqs)):
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return tuple(out)
