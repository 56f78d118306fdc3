"""From OPC UA nodes to readings: node ids, vendor mapping files, signals -> states.

Pure (no I/O): discovery (:mod:`.discover`) says which node feeds which signal of which
robot; :class:`Tracker` turns the values of those nodes into readings with the decision
tables of :mod:`edge.normalise` (OPC 40010 robots) or the rules of a mapping file
(:func:`load_mapping`, controllers with vendor variables).
"""

from __future__ import annotations

import functools
import logging
import tomllib
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import groupby
from pathlib import Path
from typing import Any, cast

from asyncua import ua

from robodensity.core.errors import ConfigError
from robodensity.core.settings import OpcUaSourceSettings
from robodensity.core.wire import Counter, Quality, Reading, RobotId, State
from robodensity.edge.normalise import (
    TOTAL_ENERGY_CONSUMPTION,
    TOTAL_POWER_ON_TIME,
    StateRule,
    derive_state,
    derive_state_by_rules,
    parse_duration_s,
)

log = logging.getLogger(__name__)

COUNTERS = {TOTAL_POWER_ON_TIME: Counter.POWER_ON_S, TOTAL_ENERGY_CONSUMPTION: Counter.ENERGY_WH}
"""Signals that are counters (read on change), not inputs of the state."""

MOTION_DEVICE_CATEGORIES = (
    "OTHER",
    "ARTICULATED_ROBOT",
    "SCARA_ROBOT",
    "CARTESIAN_ROBOT",
    "SPHERICAL_ROBOT",
    "PARALLEL_ROBOT",
    "CYLINDRICAL_ROBOT",
)


def node_id(ident: int | str, ns: int = 0) -> ua.NodeId:
    """``ua.NodeId`` for plain ints and strings (asyncua types its arguments as NewTypes)."""
    return ua.NodeId(cast(Any, ident), cast(Any, ns))


def plain_node_id(node: ua.NodeId) -> ua.NodeId:
    """A plain NodeId (browse results carry ExpandedNodeIds)."""
    return ua.NodeId(node.Identifier, node.NamespaceIndex, node.NodeIdType)


def text(value: Any) -> str:
    """An identification value (LocalizedText or anything) as stripped text; None is empty."""
    if isinstance(value, ua.LocalizedText):
        return value.Text or ""
    return "" if value is None else str(value).strip()


def category(value: Any) -> str:
    """OPC 40010 MotionDeviceCategoryEnumeration value -> its name."""
    if isinstance(value, int) and 0 <= value < len(MOTION_DEVICE_CATEGORIES):
        return MOTION_DEVICE_CATEGORIES[value]
    name = getattr(value, "name", None)
    return name if isinstance(name, str) else ("" if value is None else str(value))


def source_ts(dv: ua.DataValue) -> datetime:
    """The SourceTimestamp of a value, else its ServerTimestamp, else now; always aware."""
    ts = dv.SourceTimestamp or dv.ServerTimestamp
    if ts is None:
        return datetime.now(UTC)
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


@dataclass(frozen=True)
class DiscoveredRobot:
    """One OPC 40010 motion device as discovery found it."""

    manufacturer: str
    model: str
    serial: str
    product_code: str
    category: str
    node_path: str
    """Browse path from Objects, browse names without namespace: ``Objects/DeviceSet/...``."""
    node_id: str
    state_machines: tuple[str, ...] = ()
    """The state machines found for it (``MachineryItemState``, ``OperationState``, see
    :data:`edge.normalise.STATE_MACHINE_SIGNALS`); empty: a Robotics 1.0-style server,
    the state comes from the parameter signals alone."""

    @property
    def robot_id(self) -> RobotId:
        return RobotId(self.manufacturer, self.serial)


@dataclass
class Found:
    """Discovery's result for one robot: identity and the node of each signal."""

    robot: DiscoveredRobot
    signals: dict[str, ua.NodeId] = field(default_factory=dict)
    derive: Callable[[Mapping[str, Any]], State] = derive_state


# -- mapping files ----------------------------------------------------------------------


@dataclass(frozen=True)
class VendorMapping:
    """A controller that exposes vendor variables instead of OPC 40010 (see :func:`load_mapping`)."""

    namespace: str
    robots: tuple[str, ...]
    identity: dict[str, str]
    signals: dict[str, str]
    counters: dict[str, str]
    rules: tuple[StateRule, ...]
    default: State
    category: str = ""

    def derive(self, signals: Mapping[str, Any]) -> State:
        return derive_state_by_rules(signals, self.rules, self.default)


_COUNTER_KEYS = {"power_on_s": TOTAL_POWER_ON_TIME, "energy_wh": TOTAL_ENERGY_CONSUMPTION}


@functools.cache
def _load_mapping_cached(path: Path, mtime_ns: int) -> VendorMapping:
    where = f"mapping file {path}"
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None

    def text_at(table: Mapping[str, Any], key: str, ctx: str, required: bool = True) -> str:
        value = table.get(key, "")
        if not isinstance(value, str) or (required and not value.strip()):
            raise ConfigError(f"{where}: {ctx}{key} must be a non-empty string; got {value!r}")
        return value.strip()

    def table(key: str, required: bool = True) -> dict[str, Any]:
        value = doc.get(key, {} if not required else None)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: [{key}] must be a table")
        return value

    states = ", ".join(x.value for x in State if x is not State.OFFLINE)

    def state(value: Any, ctx: str) -> State:
        try:
            found = State(str(value).upper())
        except ValueError:
            found = State.OFFLINE
        if found is State.OFFLINE:
            raise ConfigError(f"{where}: {ctx} must be one of {states}; got {value!r}")
        return found

    identity_t = table("identity")
    identity = {k: text_at(identity_t, k, "identity.") for k in ("manufacturer", "serial")}
    identity.update({k: text_at(identity_t, k, "identity.", False) for k in ("model", "product_code")})
    signals_t = table("signals")
    signals = {name: text_at(signals_t, name, "signals.") for name in signals_t}
    if not signals:
        raise ConfigError(f"{where}: [signals] must name at least one variable")
    counters_t = table("counters", required=False)
    for key in counters_t:
        if key not in _COUNTER_KEYS:
            raise ConfigError(f"{where}: counters.{key} must be one of {', '.join(_COUNTER_KEYS)}")
    counters = {_COUNTER_KEYS[k]: text_at(counters_t, k, "counters.") for k in counters_t}
    raw_rules = doc.get("rules", [])
    if not isinstance(raw_rules, list) or not raw_rules:
        raise ConfigError(f"{where}: [[rules]] must list at least one rule")
    rules = []
    for i, rule in enumerate(raw_rules):
        when = rule.get("when") if isinstance(rule, dict) else None
        if not isinstance(when, dict) or not when:
            raise ConfigError(f"{where}: rules[{i}].when must be a table of signal = value")
        unknown = sorted(set(when) - set(signals))
        if unknown:
            raise ConfigError(f"{where}: rules[{i}].when uses {', '.join(unknown)}, not in [signals]")
        rules.append(StateRule(tuple(when.items()), state(rule.get("state"), f"rules[{i}].state")))
    robots = text_at(doc, "robots", "")
    return VendorMapping(
        namespace=text_at(doc, "namespace", ""),
        robots=tuple(p for p in robots.split("/") if p),
        identity=identity,
        signals=signals,
        counters=counters,
        rules=tuple(rules),
        default=state(doc.get("default", "IDLE"), "default"),
        category=str(doc.get("category", "")),
    )


def load_mapping(path: Path) -> VendorMapping:
    """Read and check a TOML mapping file for a controller with vendor variables.

    ::

        namespace = "urn:vendor:controller"  # URI of the namespace of every browse name below
        robots = "Cell"                      # browse path from Objects; each child object is a robot
        default = "IDLE"                     # state when no rule matches
        category = "ARTICULATED_ROBOT"       # optional
        [identity]                           # variables below each robot object ("=TEXT": a constant)
        manufacturer = "Manufacturer"
        serial = "Serial"
        model = "Model"                      # optional, as product_code
        [signals]                            # name used by the rules = variable below each robot
        Mode = "Mode"
        Running = "Running"
        Fault = "Fault"
        [counters]                           # optional: power_on_s (seconds or ISO 8601), energy_wh
        [[rules]]                            # first match wins
        when = { Fault = true }
        state = "FAULT"

    Read again only when the file changed. Raises ConfigError naming the file and the bad key.
    """
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as exc:
        raise ConfigError(f"edge.opcua mapping_file {path}: {exc.strerror}") from None
    return _load_mapping_cached(path, mtime)


def mapping_of(settings: OpcUaSourceSettings) -> VendorMapping | None:
    """The settings' mapping file, read (again if it changed), or None for OPC 40010 discovery."""
    return load_mapping(settings.mapping_file) if settings.mapping_file else None


# -- values -> readings -----------------------------------------------------------------


@dataclass
class Track:
    """What the source knows about one robot during a session."""

    robot: RobotId
    derive: Callable[[Mapping[str, Any]], State] = derive_state
    signals: dict[str, Any] = field(default_factory=dict)
    bad: set[str] = field(default_factory=set)
    snapshot: dict[str, tuple[bool, Any]] = field(default_factory=dict)
    """Signal -> (bad, value) of its (re)connect snapshot, until its first notification."""
    last: tuple[State, Quality] | None = None
    counters: dict[Counter, float] = field(default_factory=dict)


Update = tuple[datetime, int, str, ua.DataValue]  # source time, arrival order, signal, value


class Tracker:
    """Values of monitored nodes -> state and counter readings, per robot; no I/O.

    A state is emitted only when the (state, quality) pair changes; the first one after
    each :meth:`start` always is. A Bad status on a state signal makes it unknown and the
    reading's quality BAD.
    """

    def __init__(self, label: str, stats: dict[str, int]) -> None:
        self.label = label
        self.stats = stats
        self.tracks: dict[RobotId, Track] = {}
        self.watch: list[list[tuple[Track, str]]] = []
        """Client handle -> the (robot, signal) pairs its node feeds."""

    def start(self, found: Sequence[Found]) -> list[ua.NodeId]:
        """Begin a session with what discovery found; returns the nodes to monitor, by client handle."""
        watch: dict[ua.NodeId, list[tuple[Track, str]]] = defaultdict(list)
        for f in found:
            rid = f.robot.robot_id
            track = self.tracks.setdefault(rid, Track(rid, f.derive))
            track.derive = f.derive
            track.signals.clear()
            track.bad.clear()
            track.snapshot.clear()
            track.last = None  # the first state after (re)connect is always emitted
            for name, node in f.signals.items():
                watch[node].append((track, name))
        nodes = list(watch)
        self.watch = [watch[n] for n in nodes]
        return nodes

    def offline(self, now: datetime) -> list[Reading]:
        """One OFFLINE reading per known robot: the connection is lost."""
        out = []
        for track in self.tracks.values():
            track.last = (State.OFFLINE, Quality.GOOD)
            out.append(Reading.of_state(track.robot, now, State.OFFLINE))
        return out

    def apply(self, items: list[tuple[int, ua.DataValue]], snapshot: bool = False) -> list[Reading]:
        """Readings from values of monitored nodes (by client handle), in time order per robot.

        ``snapshot``: the values read at (re)connect, one state per robot stamped with its
        newest signal. Otherwise the notifications of one publish response, grouped per robot
        and timestamp and applied in timestamp order (the server queues per monitored item,
        so a response is not in write order across items)."""
        per_robot: dict[RobotId, list[Update]] = defaultdict(list)
        for order, (handle, dv) in enumerate(items):
            if not 0 <= handle < len(self.watch) or dv is None:
                continue
            ts = source_ts(dv)
            bad = dv.StatusCode is not None and dv.StatusCode.is_bad()
            seen = (bad, None if bad or dv.Value is None else dv.Value.Value)
            for track, name in self.watch[handle]:
                if snapshot:
                    track.snapshot[name] = seen
                elif name in track.snapshot and track.snapshot.pop(name) == seen:
                    # The monitored item's first notification (in arrival order) repeating the
                    # snapshot: its timestamp may be newer than writes that follow it in the
                    # same response, so applied in time order it would undo them; skip it.
                    continue
                per_robot[track.robot].append((ts, order, name, dv))
        out: list[Reading] = []
        for rid, updates in per_robot.items():
            updates.sort(key=lambda u: (u[0], u[1]))
            if snapshot:
                state_ts = [u[0] for u in updates if u[2] not in COUNTERS]
                groups = [(max(state_ts) if state_ts else updates[-1][0], updates)]
            else:
                groups = [(ts, list(g)) for ts, g in groupby(updates, key=lambda u: u[0])]
            for ts, group in groups:
                out += self._apply_group(self.tracks[rid], ts, group)
        return out

    def _apply_group(self, track: Track, ts: datetime, group: list[Update]) -> list[Reading]:
        out: list[Reading] = []
        touched = False
        for uts, _, name, dv in group:
            if name in COUNTERS:
                reading = self._counter(track, uts, name, dv)
                if reading is not None:
                    out.append(reading)
                continue
            touched = True
            if dv.StatusCode is not None and dv.StatusCode.is_bad():
                track.bad.add(name)
                track.signals[name] = None
            else:
                track.bad.discard(name)
                track.signals[name] = dv.Value.Value if dv.Value is not None else None
        if touched:
            state = track.derive(track.signals)
            quality = Quality.BAD if track.bad else Quality.GOOD
            if track.last != (state, quality):
                track.last = (state, quality)
                out.append(Reading.of_state(track.robot, ts, state, quality))
        return out

    def _counter(self, track: Track, ts: datetime, name: str, dv: ua.DataValue) -> Reading | None:
        if dv.StatusCode is not None and dv.StatusCode.is_bad():
            return None
        raw = dv.Value.Value if dv.Value is not None else None
        try:
            value = parse_duration_s(raw) if isinstance(raw, str) and name == TOTAL_POWER_ON_TIME else float(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            self.stats["bad_counter_values"] += 1
            log.warning("%s: %s of %s is not a number: %r", self.label, name, track.robot.key, raw)
            return None
        counter = COUNTERS[name]
        if track.counters.get(counter) == value:
            return None
        track.counters[counter] = value
        quality = Quality.GOOD if dv.StatusCode is None or dv.StatusCode.is_good() else Quality.UNCERTAIN
        try:
            return Reading.of_counter(track.robot, ts, counter, value, quality)
        except ValueError:  # a non-finite value breaks the wire contract
            self.stats["bad_counter_values"] += 1
            return None
