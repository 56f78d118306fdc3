"""Finding the robots of one server: OPC 40010 (Robotics) discovery, or a vendor mapping file.

Discovery browses, in batched Browse / TranslateBrowsePaths / Read requests, for
instances of MotionDeviceSystemType (or a subtype) below ``Objects``, their
MotionDevices (by type definition, MotionDeviceType or a subtype), Controllers,
TaskControls and SafetyStates, and reads the DI identification. A motion device is
linked to its controller and task control through the Robotics ``Controls``
references (inverse, from the motion device) and the controller to its safety state
through ``HasSafetyStates``; when a server omits those references, a system with one
controller (or safety state) shares it, otherwise the n-th is paired with the n-th
motion device. Namespace indexes always come from the server's namespace array.

State machines (OPC 40001-1 MachineryItemState below the motion device:
``MachineryBuildingBlocks/MachineryItemState``, ``Monitoring/Status/MachineryItemState``
or directly; OPC 40010-1 1.02 ``SystemOperation/SystemOperationStateMachine`` of its
controller, else ``TaskControlOperation/TaskControlStateMachine`` of its task control)
are found by browse name, the first one found is used.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, cast

from asyncua import Client, ua

from robodensity.core.errors import SourceConnectError, SourceError
from robodensity.core.settings import OpcUaSourceSettings
from robodensity.edge.normalise import (
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
)
from robodensity.edge.sources.opcua.connect import connect, disconnect
from robodensity.edge.sources.opcua.mapping import (
    COUNTERS,
    DiscoveredRobot,
    Found,
    VendorMapping,
    category,
    mapping_of,
    node_id,
    plain_node_id,
    text,
)

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

MAX_DEPTH = 6
"""How deep below Objects discovery looks for MotionDeviceSystemType instances."""
CHUNK = 500
"""Nodes per Browse, TranslateBrowsePaths, Read or CreateMonitoredItems request."""


class Browser:
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
        for start in range(0, len(nodes), CHUNK):
            params = ua.BrowseParameters()
            params.NodesToBrowse = []
            for node in nodes[start : start + CHUNK]:
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
        for start in range(0, len(paths), CHUNK):
            requests = []
            for node, names in paths[start : start + CHUNK]:
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
                out.append(plain_node_id(result.Targets[0].TargetId) if good else None)
        return out

    async def read(self, nodes: Sequence[ua.NodeId]) -> list[ua.DataValue]:
        out: list[ua.DataValue] = []
        for start in range(0, len(nodes), CHUNK):
            params = ua.ReadParameters()
            params.TimestampsToReturn = ua.TimestampsToReturn.Both
            params.NodesToRead = []
            for node in nodes[start : start + CHUNK]:
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
            level = [plain_node_id(r.NodeId) for group in refs for r in group if plain_node_id(r.NodeId) not in found]
            found.update(level)
        return found


def _targets(refs: Iterable[ua.ReferenceDescription]) -> list[ua.NodeId]:
    return [plain_node_id(r.NodeId) for r in refs]


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


async def _discover_robotics(client: Client) -> list[Found]:
    """Every OPC 40010 motion device on the server, with the nodes of its signals."""
    namespaces = await client.get_namespace_array()
    if ROBOTICS_NS not in namespaces or DI_NS not in namespaces:
        return []
    rob, di = namespaces.index(ROBOTICS_NS), namespaces.index(DI_NS)
    mach = namespaces.index(MACHINERY_NS) if MACHINERY_NS in namespaces else None
    b = Browser(client)
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
                node = plain_node_id(ref.NodeId)
                if node in seen or node.NamespaceIndex == 0:
                    continue
                seen.add(node)
                paths[node] = f"{paths[parent]}/{ref.BrowseName.Name}"
                typedef = plain_node_id(ref.TypeDefinition)
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
                node = plain_node_id(ref.NodeId)
                if plain_node_id(ref.TypeDefinition) in typed[fname]:
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
        tasks_of[ctl_node] = [plain_node_id(r.NodeId) for r in refs if plain_node_id(r.TypeDefinition) in task_types]

    # 4. Links: inverse Controls on each motion device, HasSafetyStates from controllers and devices.
    all_devices = [d for s in per_system for d in s["MotionDevices"]]
    controls = await b.browse(all_devices, node_id(_CONTROLS, rob), forward=False)
    ctl_safety = await b.browse(all_controllers, node_id(_HAS_SAFETY_STATES, rob))
    dev_safety = await b.browse(all_devices, node_id(_HAS_SAFETY_STATES, rob))
    controllers_of = {d: _targets(refs) for d, refs in zip(all_devices, controls, strict=True)}
    safety_of = {n: _targets(refs) for n, refs in zip(all_controllers, ctl_safety, strict=True)}
    safety_of.update({n: _targets(refs) for n, refs in zip(all_devices, dev_safety, strict=True)})

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
    results: list[Found] = []
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
            results.append(Found(DiscoveredRobot("", "", "", "", "", paths[dev], dev.to_string())))
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
    out: list[Found] = []
    for n, found in enumerate(results):
        got = ident[n]
        robot = DiscoveredRobot(
            manufacturer=text(got.get("Manufacturer")),
            model=text(got.get("Model")),
            serial=text(got.get("SerialNumber")),
            product_code=text(got.get("ProductCode")),
            category=category(got.get("MotionDeviceCategory")),
            node_path=found.robot.node_path,
            node_id=found.robot.node_id,
            state_machines=tuple(name for name in STATE_MACHINE_SIGNALS if name in found.signals),
        )
        out.append(Found(robot, found.signals))
    return out


async def find_robots(client: Client, mapping: VendorMapping | None) -> list[Found]:
    """The robots of one server, with a stable identity each."""
    found = await (_discover_mapped(client, mapping) if mapping else _discover_robotics(client))
    out: list[Found] = []
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


async def discover(settings: OpcUaSourceSettings) -> list[DiscoveredRobot]:
    """The robots of one server: OPC 40010 motion devices, or what the mapping file describes.

    Raises ConfigError for a bad mapping file (before any I/O), SourceConnectError when the
    server cannot be reached or browsed, SourceError when it exposes no robots.
    """
    mapping = mapping_of(settings)
    client = await connect(settings)
    try:
        found = await find_robots(client, mapping)
    except (TimeoutError, ua.UaError, OSError) as exc:
        raise SourceConnectError(settings.url) from exc
    finally:
        await disconnect(client)
    if not found:
        what = "as the mapping file describes" if settings.mapping_file else "(no OPC 40010 MotionDeviceSystemType)"
        raise SourceError(f"{settings.url}: no robots found {what}")
    return [f.robot for f in found]


async def _discover_mapped(client: Client, mapping: VendorMapping) -> list[Found]:
    """Robots of a controller with vendor variables, as a mapping file describes them."""
    namespaces = await client.get_namespace_array()
    if mapping.namespace not in namespaces:
        return []
    ns = namespaces.index(mapping.namespace)
    b = Browser(client)
    objects = node_id(ua.ObjectIds.ObjectsFolder)
    (parent,) = await b.translate([(objects, [ua.QualifiedName(p, ns) for p in mapping.robots])])
    if parent is None:
        return []
    (children,) = await b.browse([parent])
    robots = [plain_node_id(r.NodeId) for r in children]
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
        ident[i][key] = text(dv.Value.Value) if good and dv.Value is not None else ""
    out: list[Found] = []
    for i, robot in enumerate(robots):
        got = {k: v[1:] for k, v in mapping.identity.items() if v.startswith("=")} | ident[i]
        found = Found(
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
