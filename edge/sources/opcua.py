"""The edge agent's OPC UA source: OPC 40010 (Robotics) discovery and subscriptions.

Life (see STYLE.md, one life for every source)::

    source = OpcUaSource(settings)       # validates, no network
    async with source:                   # connects, discovers robots, subscribes
        async for reading in source:     # forever; reconnects on its own
            ...

Discovery browses, in batched Browse / TranslateBrowsePaths / Read requests, for
instances of MotionDeviceSystemType (or a subtype) below ``Objects``, their
MotionDevices (by type definition, MotionDeviceType or a subtype), Controllers,
TaskControls and SafetyStates, and reads the DI identification. A motion device is
linked to its controller and task control through the Robotics ``Controls``
references (inverse, from the motion device) and the controller to its safety state
through ``HasSafetyStates``; when a server omits those references, a system with one
controller (or safety state) shares it, otherwise the n-th is paired with the n-th
motion device. Namespace indexes always come from the server's namespace array.

Readings:

- state: derived by :func:`edge.normalise.derive_state` from the robot's signals and,
  where the server has them, the CurrentState of its state machines (OPC 40001-1
  MachineryItemState below the motion device: ``MachineryBuildingBlocks/
  MachineryItemState``, ``Monitoring/Status/MachineryItemState`` or directly; OPC 40010-1
  1.02 ``SystemOperation/SystemOperationStateMachine`` of its controller, else
  ``TaskControlOperation/TaskControlStateMachine`` of its task control), found by browse
  name with the namespace indexes from the namespace array. A state machine decides over
  the parameter signals, the safety signals (FAULT) over both; without state machines
  (Robotics 1.0) the signals alone (see the table in :mod:`edge.normalise`).
  emitted only when the (state, quality) pair changes; the first one after each
  (re)connect is always emitted. ``ts`` is the SourceTimestamp of the signal change.
  The notifications of one publish response are grouped per robot and timestamp and
  applied in timestamp order, so several changes of one robot inside one publishing
  interval all come out, in order, each exactly once (the server queues values per
  monitored item, so a response is not in write order across items).
- counters: ``TotalPowerOnTime`` (ISO 8601 DurationString) -> POWER_ON_S,
  ``TotalEnergyConsumption`` -> ENERGY_WH, on change.
- a Bad status on a state signal makes it unknown and the reading's quality BAD.
- on connection loss: one OFFLINE reading per known robot, stamped with the local
  clock (the only readings that are), then reconnection with exponential backoff up
  to ``reconnect_max_s``; after reconnecting everything is re-read and re-subscribed.
  Loss is noticed when the socket closes, when asyncua's watchdog (``watchdog_s``)
  cannot read the server state, or when three keep-alives in a row do not arrive.

Controllers that expose vendor variables instead of OPC 40010 are read through a TOML
mapping file (``mapping_file``, see :func:`load_mapping`): where the robots are, which
variables identify them, and rules from variable values to states.

Security: with ``security_policy`` the client signs and encrypts with its
``certificate`` / ``private_key`` and accepts only a server whose certificate is in
``trust_dir`` (time range checked too). Without a policy only loopback URLs are allowed.
A session the server refuses (anonymous login, user name or password, this client's
certificate) or a server certificate not in ``trust_dir`` is a SourceConnectError that
says which; it names the user, never the password.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import time
import tomllib
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import groupby
from pathlib import Path
from types import TracebackType
from typing import Any, cast
from urllib.parse import urlsplit

from asyncua import Client, ua
from asyncua.common.utils import ServiceError
from asyncua.crypto import security_policies
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions

from edge.normalise import (
    EMERGENCY_STOP,
    IN_CONTROL,
    MACHINERY_ITEM_STATE,
    ON_PATH,
    OPERATION_STATE,
    OPERATIONAL_MODE,
    PROTECTIVE_STOP,
    SPEED_OVERRIDE,
    STATE_MACHINE_SIGNALS,
    STATE_SIGNALS,
    TASK_PROGRAM_LOADED,
    TOTAL_ENERGY_CONSUMPTION,
    TOTAL_POWER_ON_TIME,
    StateRule,
    derive_state,
    derive_state_by_rules,
    parse_duration_s,
)
from robodensity.errors import ConfigError, SourceConnectError, SourceError
from robodensity.settings import OpcUaSourceSettings
from robodensity.wire import Counter, Quality, Reading, RobotId, State

log = logging.getLogger(__name__)

ROBOTICS_NS = "http://opcfoundation.org/UA/Robotics/"
DI_NS = "http://opcfoundation.org/UA/DI/"
MACHINERY_NS = "http://opcfoundation.org/UA/Machinery/"

# Numeric ids in the Robotics namespace (OPC 40010-1).
_MOTION_DEVICE_SYSTEM_TYPE = 1002
_MOTION_DEVICE_TYPE = 1004
_CONTROLLER_TYPE = 1003
_TASK_CONTROL_TYPE = 1011
_SAFETY_STATE_TYPE = 1013
_CONTROLS = 4002
_HAS_SAFETY_STATES = 18182

MOTION_DEVICE_CATEGORIES = (
    "OTHER",
    "ARTICULATED_ROBOT",
    "SCARA_ROBOT",
    "CARTESIAN_ROBOT",
    "SPHERICAL_ROBOT",
    "PARALLEL_ROBOT",
    "CYLINDRICAL_ROBOT",
)
COUNTERS = {TOTAL_POWER_ON_TIME: Counter.POWER_ON_S, TOTAL_ENERGY_CONSUMPTION: Counter.ENERGY_WH}

MONITORED_QUEUE_SIZE = 1000
"""Per monitored item: a robot may change many times within one publishing interval."""
KEEPALIVE_S = 5.0
"""The server sends a keep-alive after this long without changes; 3 missed ones = lost."""
READING_QUEUE_SIZE = 10_000
"""Readings waiting for the consumer; when full the publish loop waits (backpressure)."""
MAX_DEPTH = 6
"""How deep below Objects discovery looks for MotionDeviceSystemType instances."""
_CHUNK = 500
_BACKOFF_START_S = 0.5

_POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}


def node_id(ident: int | str, ns: int = 0) -> ua.NodeId:
    """``ua.NodeId`` for plain ints and strings (asyncua types its arguments as NewTypes)."""
    return ua.NodeId(cast(Any, ident), cast(Any, ns))


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
class _Found:
    """Discovery's result for one robot: identity and the node of each signal."""

    robot: DiscoveredRobot
    signals: dict[str, ua.NodeId] = field(default_factory=dict)
    derive: Callable[[Mapping[str, Any]], State] = derive_state


@dataclass
class _Track:
    """What the source knows about one robot during a session."""

    robot: RobotId
    derive: Callable[[Mapping[str, Any]], State] = derive_state
    signals: dict[str, Any] = field(default_factory=dict)
    bad: set[str] = field(default_factory=set)
    snapshot: dict[str, tuple[bool, Any]] = field(default_factory=dict)
    """Signal -> (bad, value) of its (re)connect snapshot, until its first notification."""
    last: tuple[State, Quality] | None = None
    counters: dict[Counter, float] = field(default_factory=dict)


# -- settings ---------------------------------------------------------------------------


def _validate(settings: OpcUaSourceSettings) -> None:
    host = urlsplit(settings.url).hostname or ""
    if settings.security_policy is None:
        if not _is_loopback(host):
            raise ConfigError(
                f"edge.opcua security_policy must be one of {', '.join(_POLICIES)} for a non-loopback "
                f"address; got None for {settings.url}"
            )
    else:
        for key in ("certificate", "private_key", "trust_dir"):
            if getattr(settings, key) is None:
                raise ConfigError(f"edge.opcua {key} is required with security_policy {settings.security_policy}")
        for key in ("certificate", "private_key"):
            path = getattr(settings, key)
            if not path.is_file():
                raise ConfigError(f"edge.opcua {key} {path} does not exist")
        if not settings.trust_dir or not settings.trust_dir.is_dir():
            raise ConfigError(f"edge.opcua trust_dir {settings.trust_dir} is not a folder")
        if not any(p.suffix.lower() in (".der", ".pem", ".crt", ".cer") for p in settings.trust_dir.iterdir()):
            raise ConfigError(f"edge.opcua trust_dir {settings.trust_dir} holds no certificate (.der, .pem)")
    if settings.password is not None and settings.username is None:
        raise ConfigError("edge.opcua password is set but username is not")
    if settings.mapping_file is not None:
        load_mapping(settings.mapping_file)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _make_client(settings: OpcUaSourceSettings) -> Client:
    client = Client(settings.url, timeout=max(4.0, settings.watchdog_s), watchdog_intervall=settings.watchdog_s)
    client.name = client.description = "RoboDensity edge agent"
    client.application_uri = "urn:robodensity:edge"
    client.session_timeout = max(60_000, int(settings.watchdog_s * 6_000))
    if settings.username is not None:
        client.set_user(settings.username)
        if settings.password is not None:
            client.set_password(settings.password.get_secret_value())
    if settings.security_policy is not None:
        assert settings.certificate and settings.private_key and settings.trust_dir  # _validate checked
        store = TrustStore([settings.trust_dir], [])
        await store.load()
        options = (
            CertificateValidatorOptions.TIME_RANGE
            | CertificateValidatorOptions.TRUSTED
            | CertificateValidatorOptions.PEER_SERVER
        )
        client.certificate_validator = CertificateValidator(options, store)
        await client.set_security(
            _POLICIES[settings.security_policy],
            str(settings.certificate),
            str(settings.private_key),
            mode=getattr(ua.MessageSecurityMode, settings.security_mode),
        )
    return client


async def _connect(settings: OpcUaSourceSettings) -> Client:
    """A connected client; every library failure becomes SourceConnectError."""
    try:
        client = await _make_client(settings)
        await client.connect()
    except ConfigError:
        raise
    except Exception as exc:
        raise SourceConnectError(_refusal(settings, exc) or settings.url) from exc
    return client


_AUTH_REFUSED = frozenset(
    {
        ua.StatusCodes.BadIdentityTokenRejected,
        ua.StatusCodes.BadIdentityTokenInvalid,
        ua.StatusCodes.BadUserAccessDenied,
        ua.StatusCodes.BadUserSignatureInvalid,
    }
)


def _refusal(settings: OpcUaSourceSettings, exc: Exception) -> str | None:
    """Why the server (or this client) refused the session, for a status code that says so.

    Names the user, never the password."""
    if not isinstance(exc, ua.UaStatusCodeError):
        return None
    code = exc.code
    name = ua.StatusCode(code).name
    if code in _AUTH_REFUSED:
        who = f"user {settings.username!r}" if settings.username is not None else "an anonymous session"
        hint = "check username and password" if settings.username is not None else "the server may need a username"
        return f"{settings.url}: authentication refused by the server for {who} ({name}); {hint}"
    if name.startswith("BadCertificate") or code == ua.StatusCodes.BadSecurityChecksFailed:
        if isinstance(exc.__cause__, ServiceError):  # raised by this client's own validator
            return f"{settings.url}: the server's certificate is not in trust_dir {settings.trust_dir} ({name})"
        return f"{settings.url}: the server refused this client's certificate {settings.certificate} ({name})"
    return None


async def _disconnect(client: Client) -> None:
    # A dead server makes close_session fail after its request timeout; that is fine.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.disconnect(), timeout=5.0)


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

    def text(table: Mapping[str, Any], key: str, ctx: str, required: bool = True) -> str:
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
    identity = {k: text(identity_t, k, "identity.") for k in ("manufacturer", "serial")}
    identity.update({k: text(identity_t, k, "identity.", False) for k in ("model", "product_code")})
    signals_t = table("signals")
    signals = {name: text(signals_t, name, "signals.") for name in signals_t}
    if not signals:
        raise ConfigError(f"{where}: [signals] must name at least one variable")
    counters_t = table("counters", required=False)
    for key in counters_t:
        if key not in _COUNTER_KEYS:
            raise ConfigError(f"{where}: counters.{key} must be one of {', '.join(_COUNTER_KEYS)}")
    counters = {_COUNTER_KEYS[k]: text(counters_t, k, "counters.") for k in counters_t}
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
    robots = text(doc, "robots", "")
    return VendorMapping(
        namespace=text(doc, "namespace", ""),
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

    Raises ConfigError naming the file and the bad key.
    """
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as exc:
        raise ConfigError(f"edge.opcua mapping_file {path}: {exc.strerror}") from None
    return _load_mapping_cached(path, mtime)


async def _discover_mapped(client: Client, mapping: VendorMapping) -> list[_Found]:
    """Robots of a controller with vendor variables, as a mapping file describes them."""
    namespaces = await client.get_namespace_array()
    if mapping.namespace not in namespaces:
        return []
    ns = namespaces.index(mapping.namespace)
    b = _Browser(client)
    objects = node_id(ua.ObjectIds.ObjectsFolder)
    (parent,) = await b.translate([(objects, [ua.QualifiedName(p, ns) for p in mapping.robots])])
    if parent is None:
        return []
    (children,) = await b.browse([parent])
    robots = [_nid(r.NodeId) for r in children]
    names = {r: str(c.BrowseName.Name) for r, c in zip(robots, children, strict=True)}
    wanted: list[tuple[int, str, str]] = []  # robot index, key, browse name
    for i in range(len(robots)):
        for key, name in mapping.identity.items():
            if name and not name.startswith("="):
                wanted.append((i, key, name))
        wanted += [(i, key, name) for key, name in mapping.signals.items()]
        wanted += [(i, key, name) for key, name in mapping.counters.items()]
    nodes = await b.translate([(robots[i], [ua.QualifiedName(name, ns)]) for i, _, name in wanted])
    ident_at = [(i, key, node) for (i, key, _), node in zip(wanted, nodes, strict=True)
                if node is not None and key in mapping.identity]  # fmt: skip
    values = await b.read([node for _, _, node in ident_at])
    ident: dict[int, dict[str, str]] = defaultdict(dict)
    for (i, key, _), dv in zip(ident_at, values, strict=True):
        good = dv.StatusCode is None or dv.StatusCode.is_good()
        ident[i][key] = _text(dv.Value.Value) if good and dv.Value is not None else ""
    out: list[_Found] = []
    for i, robot in enumerate(robots):
        got = {k: v[1:] for k, v in mapping.identity.items() if v.startswith("=")} | ident[i]
        found = _Found(
            DiscoveredRobot(
                manufacturer=got.get("manufacturer", ""),
                model=got.get("model", ""),
                serial=got.get("serial", ""),
                product_code=got.get("product_code", ""),
                category=mapping.category,
                node_path="/".join(("Objects", *mapping.robots, names[robot])),
                node_id=robot.to_string(),
            ),
            derive=mapping.derive,
        )
        for (j, key, _), node in zip(wanted, nodes, strict=True):
            if j == i and node is not None and key not in mapping.identity:
                found.signals[key] = node
        out.append(found)
    return out


# -- discovery ----------------------------------------------------------------------------


class _Browser:
    """Batched Browse, TranslateBrowsePaths and Read on one connected client."""

    def __init__(self, client: Client) -> None:
        self.ua = client.uaclient

    async def browse(
        self,
        nodes: Sequence[ua.NodeId],
        reftype: ua.NodeId = node_id(ua.ObjectIds.HierarchicalReferences),
        forward: bool = True,
        node_class: ua.NodeClass = ua.NodeClass.Object,
    ) -> list[list[ua.ReferenceDescription]]:
        out: list[list[ua.ReferenceDescription]] = []
        for start in range(0, len(nodes), _CHUNK):
            params = ua.BrowseParameters()
            params.NodesToBrowse = []
            for node in nodes[start : start + _CHUNK]:
                desc = ua.BrowseDescription()
                desc.NodeId = node
                desc.BrowseDirection = ua.BrowseDirection.Forward if forward else ua.BrowseDirection.Inverse
                desc.ReferenceTypeId = reftype
                desc.IncludeSubtypes = True
                desc.NodeClassMask = node_class.value if node_class else 0
                desc.ResultMask = ua.BrowseResultMask.All
                params.NodesToBrowse.append(desc)
            results = await self.ua.browse(params)
            for result in results:
                refs = list(result.References) if result.StatusCode.is_good() else []
                cont = result.ContinuationPoint
                while cont:
                    nxt = ua.BrowseNextParameters()
                    nxt.ContinuationPoints = [cont]
                    more = (await self.ua.browse_next(nxt))[0]
                    refs += more.References or []
                    cont = more.ContinuationPoint
                out.append(refs)
        return out

    async def translate(self, paths: Sequence[tuple[ua.NodeId, Sequence[ua.QualifiedName]]]) -> list[ua.NodeId | None]:
        out: list[ua.NodeId | None] = []
        for start in range(0, len(paths), _CHUNK):
            requests = []
            for node, names in paths[start : start + _CHUNK]:
                bp = ua.BrowsePath()
                bp.StartingNode = node
                bp.RelativePath = ua.RelativePath()
                bp.RelativePath.Elements = []
                for name in names:
                    el = ua.RelativePathElement()
                    el.ReferenceTypeId = node_id(ua.ObjectIds.HierarchicalReferences)
                    el.IncludeSubtypes = cast(Any, True)
                    el.IsInverse = cast(Any, False)
                    el.TargetName = name
                    bp.RelativePath.Elements.append(el)
                requests.append(bp)
            for result in await self.ua.translate_browsepaths_to_nodeids(requests):
                good = result.StatusCode.is_good() and result.Targets
                out.append(_nid(result.Targets[0].TargetId) if good else None)
        return out

    async def read(self, nodes: Sequence[ua.NodeId]) -> list[ua.DataValue]:
        out: list[ua.DataValue] = []
        for start in range(0, len(nodes), _CHUNK):
            params = ua.ReadParameters()
            params.TimestampsToReturn = ua.TimestampsToReturn.Both
            params.NodesToRead = []
            for node in nodes[start : start + _CHUNK]:
                rv = ua.ReadValueId()
                rv.NodeId = node
                rv.AttributeId = ua.AttributeIds.Value
                params.NodesToRead.append(rv)
            out += await self.ua.read(params)
        return out

    async def subtypes(self, root: ua.NodeId) -> set[ua.NodeId]:
        found = {root}
        level = [root]
        while level:
            refs = await self.browse(level, node_id(ua.ObjectIds.HasSubtype), node_class=ua.NodeClass.ObjectType)
            level = [_nid(r.NodeId) for group in refs for r in group if _nid(r.NodeId) not in found]
            found.update(level)
        return found


def _nid(node: ua.NodeId) -> ua.NodeId:
    """A plain NodeId (browse results carry ExpandedNodeIds)."""
    return ua.NodeId(node.Identifier, node.NamespaceIndex, node.NodeIdType)


def _text(value: Any) -> str:
    if isinstance(value, ua.LocalizedText):
        return value.Text or ""
    return "" if value is None else str(value).strip()


def _category(value: Any) -> str:
    if isinstance(value, int) and 0 <= value < len(MOTION_DEVICE_CATEGORIES):
        return MOTION_DEVICE_CATEGORIES[value]
    name = getattr(value, "name", None)
    return name if isinstance(name, str) else ("" if value is None else str(value))


def _pick(linked: Iterable[ua.NodeId], candidates: Sequence[ua.NodeId], index: int, count: int) -> ua.NodeId | None:
    """The referenced candidate, else the only candidate, else the index-th when counts match."""
    for node in linked:
        if node in candidates:
            return node
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) == count and index < count:
        return candidates[index]
    return None


async def _discover_robotics(client: Client) -> list[_Found]:
    """Every OPC 40010 motion device on the server, with the nodes of its signals."""
    namespaces = await client.get_namespace_array()
    if ROBOTICS_NS not in namespaces or DI_NS not in namespaces:
        return []
    rob, di = namespaces.index(ROBOTICS_NS), namespaces.index(DI_NS)
    mach = namespaces.index(MACHINERY_NS) if MACHINERY_NS in namespaces else None
    b = _Browser(client)
    system_types = await b.subtypes(node_id(_MOTION_DEVICE_SYSTEM_TYPE, rob))
    device_types = await b.subtypes(node_id(_MOTION_DEVICE_TYPE, rob))
    controller_types = await b.subtypes(node_id(_CONTROLLER_TYPE, rob))
    task_types = await b.subtypes(node_id(_TASK_CONTROL_TYPE, rob))
    safety_types = await b.subtypes(node_id(_SAFETY_STATE_TYPE, rob))

    # 1. MotionDeviceSystemType instances: breadth first below Objects, one Browse per level.
    objects = node_id(ua.ObjectIds.ObjectsFolder)
    paths: dict[ua.NodeId, str] = {objects: "Objects"}
    seen = {objects, node_id(ua.ObjectIds.Server)}
    systems: list[ua.NodeId] = []
    level = [objects]
    for _ in range(MAX_DEPTH):
        if not level:
            break
        nxt = []
        for parent, refs in zip(level, await b.browse(level), strict=True):
            for ref in refs:
                node = _nid(ref.NodeId)
                if node in seen or node.NamespaceIndex == 0:
                    continue
                seen.add(node)
                paths[node] = f"{paths[parent]}/{ref.BrowseName.Name}"
                typedef = _nid(ref.TypeDefinition)
                if typedef in system_types:
                    systems.append(node)
                else:
                    nxt.append(node)
        level = nxt
    if not systems:
        return []

    # 2. Each system's folders and their members, typed by their type definitions.
    folders = ("MotionDevices", "Controllers", "SafetyStates")
    folder_nodes = await b.translate([(s, [ua.QualifiedName(f, rob)]) for s in systems for f in folders])
    members = await b.browse([f for f in folder_nodes if f is not None])
    member_iter = iter(members)
    per_system: list[dict[str, list[ua.NodeId]]] = []
    typed = {"MotionDevices": device_types, "Controllers": controller_types, "SafetyStates": safety_types}
    for si, system in enumerate(systems):
        members_of: dict[str, list[ua.NodeId]] = {f: [] for f in folders}
        for fi, fname in enumerate(folders):
            folder = folder_nodes[si * len(folders) + fi]
            if folder is None:
                continue
            for ref in next(member_iter):
                node = _nid(ref.NodeId)
                if _nid(ref.TypeDefinition) in typed[fname]:
                    members_of[fname].append(node)
                    paths[node] = f"{paths[system]}/{fname}/{ref.BrowseName.Name}"
        per_system.append(members_of)

    # 3. Task controls of every controller.
    all_controllers = [c for s in per_system for c in s["Controllers"]]
    tc_folders = await b.translate([(c, [ua.QualifiedName("TaskControls", rob)]) for c in all_controllers])
    tc_browse = await b.browse([f for f in tc_folders if f is not None])
    tc_iter = iter(tc_browse)
    tasks_of: dict[ua.NodeId, list[ua.NodeId]] = {}
    for ctl_node, folder in zip(all_controllers, tc_folders, strict=True):
        refs = next(tc_iter) if folder is not None else []
        tasks_of[ctl_node] = [_nid(r.NodeId) for r in refs if _nid(r.TypeDefinition) in task_types]

    # 4. Links: inverse Controls on each motion device, HasSafetyStates from controllers and devices.
    all_devices = [d for s in per_system for d in s["MotionDevices"]]
    controls = await b.browse(all_devices, node_id(_CONTROLS, rob), forward=False)
    ctl_safety = await b.browse(all_controllers, node_id(_HAS_SAFETY_STATES, rob))
    dev_safety = await b.browse(all_devices, node_id(_HAS_SAFETY_STATES, rob))
    controllers_of = {d: [_nid(r.NodeId) for r in refs] for d, refs in zip(all_devices, controls, strict=True)}
    safety_of = {n: [_nid(r.NodeId) for r in refs] for n, refs in zip(all_controllers, ctl_safety, strict=True)}
    safety_of.update({n: [_nid(r.NodeId) for r in refs] for n, refs in zip(all_devices, dev_safety, strict=True)})

    # 5. Signal and identification nodes, by browse path, in one batch.
    def q(name: str, ns: int) -> ua.QualifiedName:
        return ua.QualifiedName(name, ns)

    ps = q("ParameterSet", di)
    current = q("CurrentState", 0)
    # Where a state machine may be, in order of preference (the first one found is used).
    machinery_paths = (
        [
            [q("MachineryBuildingBlocks", mach), q("MachineryItemState", mach), current],
            [q("Monitoring", mach), q("Status", mach), q("MachineryItemState", mach), current],
            [q("MachineryItemState", mach), current],
        ]
        if mach is not None
        else []
    )
    controller_operation = [q("SystemOperation", rob), q("SystemOperationStateMachine", rob), current]
    task_operation = [q("TaskControlOperation", rob), q("TaskControlStateMachine", rob), current]
    wanted: list[tuple[int, str, ua.NodeId, list[ua.QualifiedName]]] = []
    results: list[_Found] = []
    for s in per_system:
        count = len(s["MotionDevices"])
        for i, dev in enumerate(s["MotionDevices"]):
            ctl = _pick(controllers_of[dev], s["Controllers"], i, count)
            tasks = tasks_of.get(ctl, []) if ctl is not None else []
            task = _pick(controllers_of[dev], tasks, 0, 1) if tasks else None
            safety = _pick(
                safety_of.get(dev, []) + (safety_of.get(ctl, []) if ctl else []), s["SafetyStates"], i, count
            )
            n = len(results)
            results.append(_Found(DiscoveredRobot("", "", "", "", "", paths[dev], dev.to_string())))
            for name in ("Manufacturer", "Model", "SerialNumber", "ProductCode"):
                wanted.append((n, name, dev, [q(name, di)]))
            wanted.append((n, "MotionDeviceCategory", dev, [q("MotionDeviceCategory", rob)]))
            for name in (ON_PATH, IN_CONTROL, SPEED_OVERRIDE):
                wanted.append((n, name, dev, [ps, q(name, rob)]))
            wanted += [(n, MACHINERY_ITEM_STATE, dev, path) for path in machinery_paths]
            if ctl is not None:
                wanted.append((n, OPERATION_STATE, ctl, controller_operation))
            if task is not None:
                wanted.append((n, OPERATION_STATE, task, task_operation))
                wanted.append((n, TASK_PROGRAM_LOADED, task, [ps, q(TASK_PROGRAM_LOADED, rob)]))
            if safety is not None:
                for name in (OPERATIONAL_MODE, EMERGENCY_STOP, PROTECTIVE_STOP):
                    wanted.append((n, name, safety, [ps, q(name, rob)]))
            if ctl is not None:
                for name in (TOTAL_POWER_ON_TIME, TOTAL_ENERGY_CONSUMPTION):
                    wanted.append((n, name, ctl, [ps, q(name, rob)]))
    nodes = await b.translate([(start, names) for _, _, start, names in wanted])
    ident_nodes: list[tuple[int, str, ua.NodeId]] = []
    for (n, name, _, _), target in zip(wanted, nodes, strict=True):
        if target is None:
            continue
        if name in STATE_MACHINE_SIGNALS:
            results[n].signals.setdefault(name, target)
        elif name in STATE_SIGNALS or name in COUNTERS:
            results[n].signals[name] = target
        else:
            ident_nodes.append((n, name, target))
    values = await b.read([node for _, _, node in ident_nodes])
    ident: dict[int, dict[str, Any]] = defaultdict(dict)
    for (n, name, _), dv in zip(ident_nodes, values, strict=True):
        good = dv.StatusCode is None or dv.StatusCode.is_good()
        ident[n][name] = dv.Value.Value if good and dv.Value is not None else None
    out: list[_Found] = []
    for n, found in enumerate(results):
        got = ident[n]
        robot = DiscoveredRobot(
            manufacturer=_text(got.get("Manufacturer")),
            model=_text(got.get("Model")),
            serial=_text(got.get("SerialNumber")),
            product_code=_text(got.get("ProductCode")),
            category=_category(got.get("MotionDeviceCategory")),
            node_path=found.robot.node_path,
            node_id=found.robot.node_id,
            state_machines=tuple(name for name in STATE_MACHINE_SIGNALS if name in found.signals),
        )
        out.append(_Found(robot, found.signals))
    return out


async def _discover(client: Client, mapping: VendorMapping | None) -> list[_Found]:
    """The robots of one server, with a stable identity each."""
    found = await (_discover_mapped(client, mapping) if mapping else _discover_robotics(client))
    out: list[_Found] = []
    keys: set[str] = set()
    for f in found:
        robot = f.robot
        if not robot.manufacturer or not robot.serial:
            log.warning("%s: robot %s has no manufacturer or serial number; skipped", client, robot.node_path)
            continue
        if robot.robot_id.key in keys:
            log.warning("%s: two robots are %s; kept the first", client, robot.robot_id.key)
            continue
        keys.add(robot.robot_id.key)
        out.append(f)
    return out


def _mapping(settings: OpcUaSourceSettings) -> VendorMapping | None:
    return load_mapping(settings.mapping_file) if settings.mapping_file else None


async def discover(settings: OpcUaSourceSettings) -> list[DiscoveredRobot]:
    """The robots of one server: OPC 40010 motion devices, or what the mapping file describes.

    Raises ConfigError for bad settings, SourceConnectError when the server cannot be
    reached or browsed, SourceError when it exposes no robots.
    """
    _validate(settings)
    client = await _connect(settings)
    try:
        found = await _discover(client, _mapping(settings))
    except (TimeoutError, ua.UaError, OSError) as exc:
        raise SourceConnectError(settings.url) from exc
    finally:
        await _disconnect(client)
    if not found:
        what = "as the mapping file describes" if settings.mapping_file else "(no OPC 40010 MotionDeviceSystemType)"
        raise SourceError(f"{settings.url}: no robots found {what}")
    return [f.robot for f in found]


# -- the source -----------------------------------------------------------------------------


def _ts(dv: ua.DataValue) -> datetime:
    ts = dv.SourceTimestamp or dv.ServerTimestamp
    if ts is None:
        return datetime.now(UTC)
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def monitored_item(
    node: ua.NodeId, handle: int, queue_size: int = MONITORED_QUEUE_SIZE
) -> ua.MonitoredItemCreateRequest:
    """A request to report every change of ``node``'s value, queued on the server, under ``handle``."""
    rv = ua.ReadValueId()
    rv.NodeId = node
    rv.AttributeId = ua.AttributeIds.Value
    mp = ua.MonitoringParameters()
    mp.ClientHandle = handle
    mp.SamplingInterval = 0.0  # report every change; the server queues them
    mp.QueueSize = queue_size
    mp.DiscardOldest = True
    req = ua.MonitoredItemCreateRequest()
    req.ItemToMonitor = rv
    req.MonitoringMode = ua.MonitoringMode.Reporting
    req.RequestedParameters = mp
    return req


class OpcUaSource:
    """Readings from the OPC 40010 robots of one OPC UA server (one controller or cell)."""

    def __init__(self, settings: OpcUaSourceSettings) -> None:
        _validate(settings)
        self.settings = settings
        self.robots: list[DiscoveredRobot] = []
        """The robots of the current (or last) session."""
        self._client: Client | None = None
        self._tracks: dict[RobotId, _Track] = {}
        self._watch: list[list[tuple[_Track, str]]] = []  # client handle -> what it feeds
        self._queue: asyncio.Queue[Reading] | None = None
        self._backlog: deque[Reading] = deque()  # (re)connect snapshots: bounded by the robot count
        self._last_publish = 0.0
        self._stale_after_s = 60.0
        self._lost: asyncio.Event | None = None
        self._subscription_id: int | None = None
        self.stats: dict[str, int] = defaultdict(int)
        """Counts: connects, losses, notifications, bad_counter_values."""

    def __repr__(self) -> str:
        return f"OpcUaSource({self.settings.url})"

    async def __aenter__(self) -> OpcUaSource:
        self._queue = asyncio.Queue(READING_QUEUE_SIZE)
        self._lost = asyncio.Event()
        await self._open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._close()

    def __aiter__(self) -> AsyncIterator[Reading]:
        return self._run()

    # -- session ------------------------------------------------------------------------

    async def _open(self) -> None:
        """Connect, discover, read everything, subscribe. Raises SourceError."""
        assert self._queue is not None and self._lost is not None
        self._lost.clear()
        client = await _connect(self.settings)
        try:
            found = await _discover(client, _mapping(self.settings))
            if not found:
                raise SourceError(f"{self.settings.url}: no robots found")
            await self._start(client, found)
        except SourceError:
            await _disconnect(client)
            raise
        except Exception as exc:
            await _disconnect(client)
            raise SourceConnectError(self.settings.url) from exc
        self._client = client
        self.stats["connects"] += 1

    async def _start(self, client: Client, found: list[_Found]) -> None:
        assert self._queue is not None
        self.robots = [f.robot for f in found]
        watch: dict[ua.NodeId, list[tuple[_Track, str]]] = defaultdict(list)
        for f in found:
            rid = f.robot.robot_id
            track = self._tracks.setdefault(rid, _Track(rid, f.derive))
            track.derive = f.derive
            track.signals.clear()
            track.bad.clear()
            track.snapshot.clear()
            track.last = None  # the first state after (re)connect is always emitted
            for name, node in f.signals.items():
                watch[node].append((track, name))
        nodes = list(watch)
        self._watch = [watch[n] for n in nodes]

        async def lost(exc: Exception) -> None:
            log.warning("%s: connection lost: %r", self, exc)
            if self._lost is not None:
                self._lost.set()

        client.connection_lost_callback = lost
        # Snapshot: every value read, one state per robot stamped with its newest signal.
        values = await _Browser(client).read(nodes)
        # _run, the only consumer, is busy in _open: never wait on the bounded queue here.
        self._backlog.extend(self._apply(list(enumerate(values)), snapshot=True))

        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = float(self.settings.publishing_interval_ms)
        params.RequestedMaxKeepAliveCount = max(1, round(KEEPALIVE_S * 1000 / params.RequestedPublishingInterval))
        # Long enough to survive a consumer that stalls the publish loop for minutes.
        params.RequestedLifetimeCount = max(
            3 * params.RequestedMaxKeepAliveCount, round(600_000 / params.RequestedPublishingInterval)
        )
        params.MaxNotificationsPerPublish = 0
        params.PublishingEnabled = True
        params.Priority = 0
        result = await client.uaclient.create_subscription(params, self._on_publish)
        self._subscription_id = result.SubscriptionId
        keepalive_s = result.RevisedPublishingInterval * result.RevisedMaxKeepAliveCount / 1000
        self._stale_after_s = 3 * keepalive_s + self.settings.watchdog_s
        self._last_publish = time.monotonic()
        for start in range(0, len(nodes), _CHUNK):
            items = [monitored_item(nodes[h], h) for h in range(start, min(start + _CHUNK, len(nodes)))]
            cp = ua.CreateMonitoredItemsParameters()
            cp.SubscriptionId = self._subscription_id
            cp.ItemsToCreate = items
            cp.TimestampsToReturn = ua.TimestampsToReturn.Both
            created = await client.uaclient.create_monitored_items(cp)
            failed = [(start + i, r.StatusCode) for i, r in enumerate(created) if not r.StatusCode.is_good()]
            for handle, status in failed:
                log.warning("%s: cannot monitor %s: %s", self, nodes[handle], status.name)
                bad = ua.DataValue(StatusCode=status, SourceTimestamp=cast(Any, datetime.now(UTC)))
                self._backlog.extend(self._apply([(handle, bad)]))
        log.info("%s: %d robots, %d monitored items", self, len(found), len(nodes))

    async def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.connection_lost_callback = None
            await _disconnect(client)

    async def _on_publish(self, result: ua.PublishResult) -> None:
        """One publish response: the notifications of one publishing interval."""
        assert self._queue is not None and self._lost is not None
        self._last_publish = time.monotonic()
        items: list[tuple[int, ua.DataValue]] = []
        for notification in result.NotificationMessage.NotificationData or []:
            if isinstance(notification, ua.DataChangeNotification):
                for item in notification.MonitoredItems:
                    items.append((item.ClientHandle, item.Value))
            elif isinstance(notification, ua.StatusChangeNotification) and notification.Status.is_bad():
                log.warning("%s: subscription status %s", self, notification.Status.name)
                self._lost.set()
        self.stats["notifications"] += len(items)
        for reading in self._apply(items):
            await self._queue.put(reading)

    def _apply(self, items: list[tuple[int, ua.DataValue]], snapshot: bool = False) -> list[Reading]:
        """Readings from values of monitored nodes (by client handle), in time order per robot."""
        per_robot: dict[RobotId, list[tuple[datetime, int, str, ua.DataValue]]] = defaultdict(list)
        for order, (handle, dv) in enumerate(items):
            if not 0 <= handle < len(self._watch) or dv is None:
                continue
            ts = _ts(dv)
            bad = dv.StatusCode is not None and dv.StatusCode.is_bad()
            seen = (bad, None if bad or dv.Value is None else dv.Value.Value)
            for track, name in self._watch[handle]:
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
            track = self._tracks[rid]
            updates.sort(key=lambda u: (u[0], u[1]))
            if snapshot:
                state_ts = [u[0] for u in updates if u[2] not in COUNTERS]
                groups: list[tuple[datetime, list[tuple[datetime, int, str, ua.DataValue]]]] = [
                    (max(state_ts) if state_ts else updates[-1][0], updates)
                ]
            else:
                groups = [(ts, list(g)) for ts, g in groupby(updates, key=lambda u: u[0])]
            for ts, group in groups:
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
                        out.append(Reading.of_state(rid, ts, state, quality))
        return out

    def _counter(self, track: _Track, ts: datetime, name: str, dv: ua.DataValue) -> Reading | None:
        if dv.StatusCode is not None and dv.StatusCode.is_bad():
            return None
        raw = dv.Value.Value if dv.Value is not None else None
        try:
            value = parse_duration_s(raw) if isinstance(raw, str) and name == TOTAL_POWER_ON_TIME else float(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            self.stats["bad_counter_values"] += 1
            log.warning("%s: %s of %s is not a number: %r", self, name, track.robot.key, raw)
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

    # -- the iterator -------------------------------------------------------------------

    async def _run(self) -> AsyncIterator[Reading]:
        if self._queue is None or self._lost is None:
            raise SourceError(f"{self}: use 'async with source:' before iterating")
        queue, lost = self._queue, self._lost
        backoff = _BACKOFF_START_S
        while True:
            while self._backlog:
                yield self._backlog.popleft()
            while not queue.empty():
                yield queue.get_nowait()
            if self._client is not None and lost.is_set():
                self.stats["losses"] += 1
                await self._close()
                now = datetime.now(UTC)
                for track in self._tracks.values():
                    track.last = (State.OFFLINE, Quality.GOOD)
                    yield Reading.of_state(track.robot, now, State.OFFLINE)
                continue
            if self._client is None:
                try:
                    await self._open()
                except SourceError as exc:
                    cause = exc.__cause__ or exc
                    log.warning("%s: reconnect failed (%r); next try in %.1f s", self, cause, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.settings.reconnect_max_s)
                else:
                    backoff = _BACKOFF_START_S
                continue
            getter = asyncio.ensure_future(queue.get())
            waiter = asyncio.ensure_future(lost.wait())
            try:
                await asyncio.wait({getter, waiter}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                if time.monotonic() - self._last_publish > self._stale_after_s and not getter.done():
                    # Not even a keep-alive: the server dropped the subscription or stopped publishing.
                    log.warning("%s: no publish response for %.0f s", self, time.monotonic() - self._last_publish)
                    lost.set()
            finally:
                waiter.cancel()
                if not getter.done():
                    getter.cancel()
            if getter.done() and not getter.cancelled():
                yield getter.result()


__all__ = ["DiscoveredRobot", "OpcUaSource", "discover"]
