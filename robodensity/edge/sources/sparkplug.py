"""Robots behind Sparkplug B edge nodes on the factory's MQTT broker (namespace spBv1.0).

This source is a Sparkplug *host application* that only listens, apart from asking
for rebirths. Topics::

    spBv1.0/{group}/NBIRTH|NDATA|NDEATH/{node}              the edge node itself
    spBv1.0/{group}/DBIRTH|DDATA|DDEATH/{node}/{device}     a device behind it
    spBv1.0/{group}/NCMD/{node}                             what this source publishes

A BIRTH names every metric, binds it to an alias and gives its current value; DATA
carries only what changed, usually by alias. Every message of a node but NDEATH has a
sequence number 0..255 that wraps; a gap, or DATA from a node or device whose BIRTH
this source has not seen (because it started late, or the node is confused), makes it
publish an NCMD with ``Node Control/Rebirth = true``, and the node answers by sending
all its BIRTHs again. An NDEATH whose ``bdSeq`` matches the NBIRTH's (the broker
sends it as the node's MQTT will when the node vanishes) makes every robot of that
node OFFLINE; a DDEATH makes that device's robot OFFLINE.

Which metrics carry the state, the identity and the counters is configured in
:class:`SparkplugSourceSettings`. A device (or a node) is a robot when its BIRTH has
the state metric. The decoding is sans-I/O (:class:`SparkplugHost`), so it can be
fuzzed without a broker; a message that does not fit is logged and counted, never a
crash.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from robodensity.core import sparkplug_b_pb2 as pb
from robodensity.core import wire
from robodensity.core.errors import SourceError
from robodensity.core.settings import SparkplugSourceSettings
from robodensity.edge.sources.paho import PahoSource

log = logging.getLogger(__name__)

NAMESPACE = "spBv1.0"
BDSEQ_METRIC = "bdSeq"
REBIRTH_METRIC = "Node Control/Rebirth"
NODE_TYPES = ("NBIRTH", "NDATA", "NDEATH", "NCMD")
DEVICE_TYPES = ("DBIRTH", "DDATA", "DDEATH", "DCMD")
SUBSCRIBED_TYPES = ("NBIRTH", "NDATA", "NDEATH", "DBIRTH", "DDATA", "DDEATH")
MAX_PAYLOAD_BYTES = 1_048_576
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class DataType(enum.IntEnum):
    """Sparkplug B datatype codes (Metric.datatype) this source reads."""

    INT8 = 1
    INT16 = 2
    INT32 = 3
    INT64 = 4
    UINT8 = 5
    UINT16 = 6
    UINT32 = 7
    UINT64 = 8
    FLOAT = 9
    DOUBLE = 10
    BOOLEAN = 11
    STRING = 12
    DATETIME = 13
    TEXT = 14


_SIGNED_32 = (DataType.INT8, DataType.INT16, DataType.INT32)


class SparkplugError(SourceError):
    """A message that breaks Sparkplug B or this source's mapping; ``field`` names the part."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


# ---------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class Topic:
    group: str
    type: str
    node: str
    device: str | None = None


def topic_for(group: str, mtype: str, node: str, device: str | None = None) -> str:
    return f"{NAMESPACE}/{group}/{mtype}/{node}" + (f"/{device}" if device is not None else "")


def subscriptions(group: str, edge_node: str = "+") -> list[str]:
    """The topic filters of a host that reads ``group`` (``.../{node}/#`` also matches node topics)."""
    return [f"{NAMESPACE}/{group}/{t}/{edge_node}/#" for t in SUBSCRIBED_TYPES]


def parse_topic(topic: str) -> Topic:
    parts = topic.split("/")
    if len(parts) not in (4, 5) or parts[0] != NAMESPACE:
        raise SparkplugError("topic", f"not {NAMESPACE}/<group>/<type>/<node>[/<device>]: {topic!r}")
    _, group, mtype, node, *rest = parts
    device = rest[0] if rest else None
    if (mtype in NODE_TYPES and device is None) or (mtype in DEVICE_TYPES and device is not None):
        return Topic(group, mtype, node, device)
    raise SparkplugError("topic", f"message type {mtype!r} does not fit {topic!r}")


def decode_payload(data: bytes) -> pb.Payload:
    """The protobuf payload; SparkplugError when the bytes are not one."""
    if len(data) > MAX_PAYLOAD_BYTES:
        raise SparkplugError("payload", f"{len(data)} bytes is over the {MAX_PAYLOAD_BYTES} limit")
    payload = pb.Payload()
    try:
        payload.ParseFromString(data)
    except Exception as exc:  # DecodeError, and RecursionError on absurd nesting
        raise SparkplugError("payload", f"not a Sparkplug B payload ({type(exc).__name__}: {exc})") from None
    return payload


def to_ms(ts: datetime) -> int:
    """Milliseconds since the Unix epoch, rounded down (Sparkplug's timestamp unit)."""
    return (ts - EPOCH) // timedelta(milliseconds=1)


def from_ms(ms: int) -> datetime:
    try:
        return EPOCH + timedelta(milliseconds=ms)
    except OverflowError:
        raise SparkplugError("timestamp", f"{ms} ms is out of range") from None


def rebirth_payload(now: datetime) -> bytes:
    """An NCMD payload asking an edge node to send all its BIRTHs again."""
    p = pb.Payload(timestamp=to_ms(now))
    p.metrics.add(name=REBIRTH_METRIC, timestamp=to_ms(now), datatype=DataType.BOOLEAN, boolean_value=True)
    return p.SerializeToString()


Value = bool | int | float | str | None


def metric_value(m: pb.Payload.Metric) -> Value:
    """A metric's scalar value (signed types sign-corrected); None when null or not a scalar."""
    if m.is_null:
        return None
    kind = m.WhichOneof("value")
    if kind == "int_value":
        v: int = m.int_value
        return v - (1 << 32) if m.datatype in _SIGNED_32 and v >= 1 << 31 else v
    if kind == "long_value":
        v = m.long_value
        return v - (1 << 64) if m.datatype == DataType.INT64 and v >= 1 << 63 else v
    if kind in ("float_value", "double_value"):
        return float(getattr(m, kind))
    if kind == "boolean_value":
        return bool(m.boolean_value)
    if kind == "string_value":
        return str(m.string_value)
    return None


def value_key(v: Value) -> str:
    """The state_map key of a value: integers as "3", booleans as "true"/"false"."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


# ---------------------------------------------------------------- the host state machine


@dataclass
class _Entity:
    """A node or device: its alias table, and its robot when it is one."""

    names: dict[int, str] = field(default_factory=dict)
    robot: wire.RobotId | None = None
    born: bool = False


@dataclass
class _Node:
    bd_seq: int | None = None
    seq: int | None = None
    born: bool = False
    entity: _Entity = field(default_factory=_Entity)
    devices: dict[str, _Entity] = field(default_factory=dict)
    last_rebirth: float = -math.inf


@dataclass
class Outcome:
    """What one message gave: readings, a node to ask for a rebirth, and per-metric problems."""

    readings: list[wire.Reading] = field(default_factory=list)
    rebirth: str | None = None
    problems: list[str] = field(default_factory=list)


class SparkplugHost:
    """The state of every edge node of one group, fed one message at a time. No I/O.

    ``handle`` returns an Outcome or raises SparkplugError for a message that is
    unusable as a whole; nothing else escapes it.
    """

    def __init__(self, settings: SparkplugSourceSettings, monotonic: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.nodes: dict[str, _Node] = {}
        self._monotonic = monotonic
        self._id_rx = re.compile(settings.device_id_pattern) if settings.device_id_pattern else None

    def robots_of(self, node_id: str) -> list[wire.RobotId]:
        node = self.nodes.get(node_id)
        if node is None:
            return []
        return [e.robot for e in (node.entity, *node.devices.values()) if e.robot is not None]

    def handle(self, topic: str, data: bytes, now: datetime) -> Outcome:
        t = parse_topic(topic)
        if t.group != self.settings.group_id:
            raise SparkplugError("topic", f"group {t.group!r} is not {self.settings.group_id!r}")
        payload = decode_payload(data)
        out = Outcome()
        if t.type == "NBIRTH":
            self._nbirth(t.node, payload, now, out)
        elif t.type == "NDEATH":
            self._ndeath(t.node, payload, now, out)
        elif t.type in ("NDATA", "DBIRTH", "DDATA", "DDEATH"):
            node = self.nodes.get(t.node)
            if node is None or not node.born:
                self._ask_rebirth(t.node, out, f"{t.type} before NBIRTH")
                return out
            self._check_seq(t.node, node, payload, out)
            if t.type == "NDATA":
                self._data(t.node, node.entity, payload, now, out)
            elif t.type == "DBIRTH":
                assert t.device is not None
                node.devices[t.device] = self._birth(t.device, payload, now, out)
            else:
                assert t.device is not None
                device = node.devices.get(t.device)
                if device is None or not device.born:
                    if t.type == "DDATA":
                        self._ask_rebirth(t.node, out, f"DDATA of {t.device} before its DBIRTH")
                elif t.type == "DDATA":
                    self._data(t.node, device, payload, now, out)
                else:
                    device.born = False
                    if device.robot is not None:
                        ts = self._ts(payload.timestamp if payload.HasField("timestamp") else None, now, out)
                        out.readings.append(wire.Reading.of_state(device.robot, ts or now, wire.State.OFFLINE))
        # NCMD/DCMD are commands to nodes (our own rebirth requests among them): nothing to read
        return out

    # -- message types

    def _nbirth(self, node_id: str, p: pb.Payload, now: datetime, out: Outcome) -> None:
        node = self.nodes.setdefault(node_id, _Node())
        bd_seq = None
        for m in p.metrics:
            if m.name == BDSEQ_METRIC:
                v = metric_value(m)
                bd_seq = v if isinstance(v, int) and not isinstance(v, bool) else None
        if bd_seq is None:
            out.problems.append(f"NBIRTH of {node_id} has no integer {BDSEQ_METRIC} metric")
        if node.born and bd_seq != node.bd_seq:
            # a new session although this source saw no NDEATH of the old one (a late or lost
            # will): the old session's robots were offline in between, and its devices are gone
            ts = self._ts(p.timestamp if p.HasField("timestamp") else None, now, out) or now
            self._offline(node, ts, out)
            node.devices.clear()
        # On a rebirth (same bdSeq) devices keep their alias tables until their DBIRTHs,
        # which follow, replace them: a device that does not come back still goes OFFLINE
        # with the node's NDEATH instead of falling silent.
        node.bd_seq = bd_seq
        node.seq = p.seq if p.HasField("seq") else 0
        node.born = True
        node.entity = self._birth(node_id, p, now, out)

    def _ndeath(self, node_id: str, p: pb.Payload, now: datetime, out: Outcome) -> None:
        node = self.nodes.get(node_id)
        if node is None or not node.born:
            return  # already dead, or never seen: no robot to take offline
        bd = [metric_value(m) for m in p.metrics if m.name == BDSEQ_METRIC]
        if bd and node.bd_seq is not None and bd[0] != node.bd_seq:
            # the will of an earlier session, delivered late: this session lives on
            log.info("Sparkplug %s: ignored NDEATH with bdSeq %s (current %s)", node_id, bd[0], node.bd_seq)
            return
        self._offline(node, now, out)
        node.seq = None

    def _offline(self, node: _Node, ts: datetime, out: Outcome) -> None:
        for entity in (node.entity, *node.devices.values()):
            if entity.born and entity.robot is not None:
                out.readings.append(wire.Reading.of_state(entity.robot, ts, wire.State.OFFLINE))
            entity.born = False
        node.born = False

    def _birth(self, entity_id: str, p: pb.Payload, now: datetime, out: Outcome) -> _Entity:
        s = self.settings
        entity = _Entity(born=True)
        named: list[tuple[str, pb.Payload.Metric]] = []
        for m in p.metrics:
            if not m.HasField("name"):
                out.problems.append(f"BIRTH of {entity_id}: a metric without a name")
                continue
            named.append((m.name, m))
            if m.HasField("alias"):
                known = entity.names.setdefault(m.alias, m.name)
                if known != m.name:
                    out.problems.append(f"BIRTH of {entity_id}: alias {m.alias} used by {known!r} and {m.name!r}")
        values = {name: metric_value(m) for name, m in named}
        if s.state_metric in values:
            entity.robot = self._identity(entity_id, values)
            if entity.robot is None:
                out.problems.append(f"BIRTH of {entity_id}: no robot identity (metrics or device id rule)")
        for name, m in named:
            self._reading(entity, name, m, p, now, out)
        return entity

    def _data(self, node_id: str, entity: _Entity, p: pb.Payload, now: datetime, out: Outcome) -> None:
        for m in p.metrics:
            if m.HasField("alias") and m.alias in entity.names:
                name = entity.names[m.alias]
            elif m.HasField("name"):
                name = m.name
            else:
                out.problems.append(f"DATA of {node_id}: unknown alias {m.alias if m.HasField('alias') else None}")
                self._ask_rebirth(node_id, out, "a DATA metric with an unknown alias")
                continue
            self._reading(entity, name, m, p, now, out)

    # -- pieces

    def _identity(self, entity_id: str, values: dict[str, Value]) -> wire.RobotId | None:
        s = self.settings
        if s.manufacturer_metric and s.serial_metric:
            man, serial = values.get(s.manufacturer_metric), values.get(s.serial_metric)
            if _is_ident(man) and _is_ident(serial):
                return wire.RobotId(str(man), str(serial))
        if self._id_rx is not None:
            match = self._id_rx.fullmatch(entity_id)
            if match:
                groups = match.groupdict()
                man = groups.get("manufacturer") or s.manufacturer
                if _is_ident(man) and _is_ident(groups.get("serial")):
                    return wire.RobotId(str(man), groups["serial"])
        return None

    def _reading(
        self, entity: _Entity, name: str, m: pb.Payload.Metric, p: pb.Payload, now: datetime, out: Outcome
    ) -> None:
        s = self.settings
        if entity.robot is None or (name != s.state_metric and name not in s.counter_metrics):
            return
        raw = m.timestamp if m.HasField("timestamp") else p.timestamp if p.HasField("timestamp") else None
        ts = self._ts(raw, now, out)
        if ts is None:
            return
        value = metric_value(m)
        if value is None:
            out.problems.append(f"{name}: no scalar value")
            return
        try:
            if name == s.state_metric:
                state = s.state_map.get(value_key(value))
                if state is None:
                    out.problems.append(f"{name}: {value!r} is not in the state map")
                    return
                out.readings.append(wire.Reading.of_state(entity.robot, ts, state))
            else:
                if isinstance(value, (bool, str)) or not math.isfinite(value):
                    out.problems.append(f"{name}: {value!r} is not a finite number")
                    return
                out.readings.append(wire.Reading.of_counter(entity.robot, ts, s.counter_metrics[name], value))
        except wire.WireError as exc:
            out.problems.append(f"{name}: {exc}")

    def _ts(self, ms: int | None, now: datetime, out: Outcome) -> datetime | None:
        if ms is None:
            return now
        try:
            ts = from_ms(ms)
        except SparkplugError as exc:
            out.problems.append(str(exc))
            return None
        if ts < wire.EARLIEST:  # a future one is a controller clock off: the agent corrects it (edge/clock_truth.py)
            out.problems.append(f"timestamp {ms} ms is before {wire.EARLIEST.year}")
            return None
        return ts

    def _check_seq(self, node_id: str, node: _Node, p: pb.Payload, out: Outcome) -> None:
        if not p.HasField("seq"):
            out.problems.append(f"a message of {node_id} without seq")
            return
        expected = None if node.seq is None else (node.seq + 1) % 256
        node.seq = p.seq
        if expected is not None and p.seq != expected:
            self._ask_rebirth(node_id, out, f"sequence gap: expected {expected}, got {p.seq}")

    def _ask_rebirth(self, node_id: str, out: Outcome, why: str) -> None:
        node = self.nodes.setdefault(node_id, _Node())
        t = self._monotonic()
        if t - node.last_rebirth < self.settings.rebirth_min_interval_s:
            log.debug("Sparkplug %s: %s; rebirth already requested", node_id, why)
            return
        node.last_rebirth = t
        out.rebirth = node_id
        log.info("Sparkplug %s: %s; requesting a rebirth", node_id, why)


def _is_ident(v: object) -> bool:
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        return False
    text = str(v)
    return bool(text.strip()) and len(text) <= 128


# ---------------------------------------------------------------- the source


class SparkplugSource(PahoSource[tuple[str, bytes]]):
    """Readings from the Sparkplug B edge nodes of one group.

    ``async with source:`` connects; ``async for reading in source:`` yields readings
    and, while iterating, answers sequence gaps and DATA before BIRTH with rebirth
    requests.
    """

    settings: SparkplugSourceSettings

    def __init__(self, settings: SparkplugSourceSettings) -> None:
        self.settings = settings  # validated when loaded: no check and no network here
        self.host = SparkplugHost(settings)
        self.bad_messages = 0
        self.bad_metrics = 0
        self.dropped = 0
        self.rebirth_requests = 0
        self.subscribed = asyncio.Event()

    async def __aenter__(self) -> SparkplugSource:
        self._open(
            f"rd-spb-{uuid.uuid4().hex[:8]}",
            subscriptions(self.settings.group_id, self.settings.edge_node),
            lambda msg: (msg.topic, bytes(msg.payload)),
            self.settings.queue_max,
            clean_start=True,
            session_expiry_s=0,
        )
        return self

    async def __aiter__(self) -> AsyncIterator[wire.Reading]:
        while True:
            topic, payload = await self._next()
            for reading in self._handle(topic, payload):
                yield reading

    def _handle(self, topic: str, payload: bytes | bytearray) -> Iterator[wire.Reading]:
        now = datetime.now(UTC)
        try:
            out = self.host.handle(topic, bytes(payload), now)
        except SparkplugError as exc:
            self.bad_messages += 1
            log.warning("Sparkplug source %s: bad message on %s (%s)", self.settings.group_id, topic, exc)
            return
        except Exception:  # a bug here must not stop the agent: count it, keep the trace
            self.bad_messages += 1
            log.exception("Sparkplug source %s: failed on a message on %s", self.settings.group_id, topic)
            return
        if out.problems:
            self.bad_metrics += len(out.problems)
            log.warning("Sparkplug source %s: %s: %s", self.settings.group_id, topic, "; ".join(out.problems))
        if out.rebirth is not None:
            self.request_rebirth(out.rebirth, now)
        yield from out.readings

    def request_rebirth(self, node_id: str, now: datetime | None = None) -> None:
        """Publish NCMD ``Node Control/Rebirth = true`` to one edge node (QoS 0, as Sparkplug says)."""
        if self._client is None:
            return
        payload = rebirth_payload(now or datetime.now(UTC))
        self._client.publish(topic_for(self.settings.group_id, "NCMD", node_id), payload, qos=0)
        self.rebirth_requests += 1
