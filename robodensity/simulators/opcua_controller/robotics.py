"""The OPC 40010 address space: the four nodesets and one MotionDeviceSystem of simulated robots.

Layout (see the package docstring): ``Objects/DeviceSet/<name>`` (MotionDeviceSystemType)
with ``MotionDevices/<Serial>``, ``Controllers/Controller_<Serial>`` (with
``TaskControls/Task_<Serial>``) and ``SafetyStates/SafetyState_<Serial>``, the Robotics
references between them, and (``state_machines=True``) the MachineryItemState and
SystemOperationStateMachine of each robot. Only mandatory children and the signals the
simulator writes are added, in one batch with the nodesets' type definitions: instantiating
the full types costs ~60 ms per robot.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from asyncua import Server, ua

from robodensity.core.wire import State
from robodensity.simulators.opcua_controller import model as m
from robodensity.simulators.opcua_controller.builder import NodeBatch, node_id, sanitise

StateIds = dict[str, tuple[ua.NodeId, dict[str, ua.NodeId]]]
"""State machine signal -> (its CurrentState/Id node, state name -> the state's NodeId)."""


@functools.cache
def nodeset_xml(name: str) -> str:
    """The nodeset's text, without DesignToolOnly nodes (asyncua rejects them with
    BadParentNodeIdInvalid: their parent is a type-design placeholder it never creates)."""
    text = (m.NODESET_DIR / name).read_text(encoding="utf-8")
    dropped = re.findall(r'<UA\w+ NodeId="([^"]+)"[^>]*\bDesignToolOnly="true"', text)
    if not dropped:
        return text
    text = re.sub(r'\s*<UA(\w+) [^>]*\bDesignToolOnly="true"[^>]*>.*?</UA\1>', "", text, flags=re.S)
    for nodeid in dropped:
        text = re.sub(r"\s*<Reference [^>]*>" + re.escape(nodeid) + r"</Reference>", "", text)
    return text


async def load_nodesets(server: Server) -> None:
    """Import DI, IA, Machinery and Robotics, in that order."""
    # The importer warns about every child whose parent a later model re-targets.
    importer_log = logging.getLogger("asyncua.common.xmlimporter")
    level = importer_log.level
    importer_log.setLevel(logging.ERROR)
    try:
        for name in m.NODESETS:
            await server.import_xml(xmlstring=nodeset_xml(name))
    finally:
        importer_log.setLevel(level)


@dataclass
class RobotNodes:
    """What a state change writes: per robot key, each signal's node and the state machines' ids."""

    signals: dict[str, dict[str, ua.NodeId]] = field(default_factory=dict)
    state_ids: dict[str, StateIds] = field(default_factory=dict)


class _RoboticsSpace:
    """Collects one MotionDeviceSystem's nodes in a batch; see :func:`build_robotics`."""

    def __init__(self, batch: NodeBatch, rob: int, di: int, mach: int, state_machines: bool) -> None:
        self.batch = batch
        self.rob, self.di, self.mach, self.sim = rob, di, mach, batch.ns
        self.state_machines = state_machines
        self.nodes = RobotNodes()
        self.refs: list[tuple[ua.NodeId, ua.NodeId, ua.NodeId]] = []
        self.state_ids = {  # state machine -> state name -> NodeId of the state object in the type
            m.OPERATION_STATE: {name: node_id(i, rob) for name, i in m.OPERATION_STATE_IDS.items()},
            m.MACHINERY_ITEM_STATE: {name: node_id(i, mach) for name, i in m.MACHINERY_ITEM_STATE_IDS.items()},
        }
        self.folder = node_id(ua.ObjectIds.FolderType)
        self.boolean = node_id(ua.ObjectIds.Boolean)
        self.double = node_id(ua.ObjectIds.Double)
        self.string = node_id(ua.ObjectIds.String)

    def system(self, name: str) -> tuple[ua.NodeId, ua.NodeId, ua.NodeId]:
        """The MotionDeviceSystem in DeviceSet; its MotionDevices, Controllers, SafetyStates folders."""
        system = self.batch.obj(
            node_id(m.DI_DEVICE_SET, self.di),
            sanitise(name),
            ua.QualifiedName(name, self.sim),
            node_id(m.MOTION_DEVICE_SYSTEM_TYPE, self.rob),
            ref=ua.ObjectIds.Organizes,
        )
        devices = self._folder(system, "MotionDevices", "MotionDevices")
        controllers = self._folder(system, "Controllers", "Controllers")
        safety = self._folder(system, "SafetyStates", "SafetyStates")
        return devices, controllers, safety

    def robot(self, r: m.SimRobot, devices: ua.NodeId, controllers: ua.NodeId, safety: ua.NodeId) -> None:
        """One robot: its motion device, controller with task control, safety state, and references."""
        self.nodes.signals[r.key] = {}
        tag = sanitise(f"{r.manufacturer}_{r.serial}")
        md = self._motion_device(r, tag, devices)
        ctl = self._controller(r, tag, controllers)
        task = self._task_control(r, tag, ctl)
        st = self._safety_state(r, tag, safety)
        self.batch.prop(
            md,
            ua.QualifiedName("TaskControlReference", self.rob),
            task,
            ua.VariantType.NodeId,
            node_id(ua.ObjectIds.NodeId),
            typedef=ua.ObjectIds.BaseDataVariableType,
        )
        controls, has_safety = node_id(m.CONTROLS, self.rob), node_id(m.HAS_SAFETY_STATES, self.rob)
        self.refs += [(ctl, controls, md), (task, controls, md), (ctl, has_safety, st)]

    def _folder(self, parent: ua.NodeId, ident: str, name: str) -> ua.NodeId:
        return self.batch.obj(parent, ident, ua.QualifiedName(name, self.rob), self.folder)

    def _parameter_set(self, parent: ua.NodeId, prefix: str) -> ua.NodeId:
        return self.batch.obj(parent, f"{prefix}.ParameterSet", ua.QualifiedName("ParameterSet", self.di))

    def _identification(self, parent: ua.NodeId, r: m.SimRobot, serial: str, model: str) -> None:
        """The DI identification properties."""
        lt, s, di = ua.VariantType.LocalizedText, ua.VariantType.String, self.di
        self.batch.prop(parent, ua.QualifiedName("Manufacturer", di), ua.LocalizedText(r.manufacturer), lt)
        self.batch.prop(parent, ua.QualifiedName("Model", di), ua.LocalizedText(model), lt)
        self.batch.prop(parent, ua.QualifiedName("SerialNumber", di), serial, s)
        self.batch.prop(parent, ua.QualifiedName("ProductCode", di), r.product_code, s)

    def _signal(self, parent: ua.NodeId, key: str, name: str, dtype: ua.NodeId) -> None:
        """A Robotics parameter variable, starting as an IDLE robot shows it."""
        value = m.SIGNALS_FOR_STATE[State.IDLE].get(name, m.INITIAL.get(name))
        nodeid = self.batch.var(parent, ua.QualifiedName(name, self.rob), value, m.VARIANT[name], dtype)
        self.nodes.signals[key][name] = nodeid

    def _motion_device(self, r: m.SimRobot, tag: str, devices: ua.NodeId) -> ua.NodeId:
        p = f"md.{tag}"
        md = self.batch.obj(devices, p, ua.QualifiedName(r.serial, self.sim), node_id(m.MOTION_DEVICE_TYPE, self.rob))
        self._identification(md, r, r.serial, r.model)
        self.batch.prop(
            md,
            ua.QualifiedName("MotionDeviceCategory", self.rob),
            m.MOTION_DEVICE_CATEGORIES[r.category],
            ua.VariantType.Int32,
            node_id(m.MOTION_DEVICE_CATEGORY_ENUM, self.rob),
        )
        self._folder(md, f"{p}.Axes", "Axes")
        self._folder(md, f"{p}.PowerTrains", "PowerTrains")
        ps = self._parameter_set(md, p)
        self._signal(ps, r.key, m.ON_PATH, self.boolean)
        self._signal(ps, r.key, m.IN_CONTROL, self.boolean)
        self._signal(ps, r.key, m.SPEED_OVERRIDE, self.double)
        if self.state_machines:
            blocks = self.batch.obj(
                md, f"{p}.MachineryBuildingBlocks", ua.QualifiedName("MachineryBuildingBlocks", self.mach), self.folder
            )
            bname = ua.QualifiedName("MachineryItemState", self.mach)
            typedef = node_id(m.MACHINERY_ITEM_STATE_TYPE, self.mach)
            self._state_machine(blocks, f"{p}.MachineryItemState", bname, typedef, r.key, m.MACHINERY_ITEM_STATE)
        return md

    def _controller(self, r: m.SimRobot, tag: str, controllers: ua.NodeId) -> ua.NodeId:
        p = f"ctl.{tag}"
        ctl = self.batch.obj(
            controllers,
            p,
            ua.QualifiedName(f"Controller_{r.serial}", self.sim),
            node_id(m.CONTROLLER_TYPE, self.rob),
        )
        self._identification(ctl, r, f"{r.serial}-C", f"{r.model} controller")
        user = self.batch.obj(
            ctl, f"{p}.CurrentUser", ua.QualifiedName("CurrentUser", self.rob), node_id(m.USER_TYPE, self.rob)
        )
        self.batch.prop(user, ua.QualifiedName("Level", self.rob), "operator", ua.VariantType.String)
        self._folder(ctl, f"{p}.Software", "Software")
        if self.state_machines:
            sysop = self.batch.obj(
                ctl,
                f"{p}.SystemOperation",
                ua.QualifiedName("SystemOperation", self.rob),
                node_id(m.SYSTEM_OPERATION_TYPE, self.rob),
                ref=ua.ObjectIds.HasAddIn,
            )
            bname = ua.QualifiedName("SystemOperationStateMachine", self.rob)
            typedef = node_id(m.SYSTEM_OPERATION_STATE_MACHINE_TYPE, self.rob)
            self._state_machine(sysop, f"{p}.SystemOperationStateMachine", bname, typedef, r.key, m.OPERATION_STATE)
        ps = self._parameter_set(ctl, p)
        self._signal(ps, r.key, m.TOTAL_POWER_ON_TIME, node_id(ua.ObjectIds.DurationString))
        self._signal(ps, r.key, m.TOTAL_ENERGY_CONSUMPTION, self.double)
        return ctl

    def _task_control(self, r: m.SimRobot, tag: str, ctl: ua.NodeId) -> ua.NodeId:
        tcs = self._folder(ctl, f"ctl.{tag}.TaskControls", "TaskControls")
        p = f"task.{tag}"
        task = self.batch.obj(
            tcs, p, ua.QualifiedName(f"Task_{r.serial}", self.sim), node_id(m.TASK_CONTROL_TYPE, self.rob)
        )
        self.batch.prop(
            task,
            ua.QualifiedName("ComponentName", self.di),
            ua.LocalizedText(f"Task of {r.serial}"),
            ua.VariantType.LocalizedText,
        )
        ps = self._parameter_set(task, p)
        self._signal(ps, r.key, m.TASK_PROGRAM_NAME, self.string)
        self._signal(ps, r.key, m.TASK_PROGRAM_LOADED, self.boolean)
        self._signal(ps, r.key, m.EXECUTION_MODE, node_id(m.EXECUTION_MODE_ENUM, self.rob))
        return task

    def _safety_state(self, r: m.SimRobot, tag: str, safety: ua.NodeId) -> ua.NodeId:
        p = f"safety.{tag}"
        st = self.batch.obj(
            safety, p, ua.QualifiedName(f"SafetyState_{r.serial}", self.sim), node_id(m.SAFETY_STATE_TYPE, self.rob)
        )
        ps = self._parameter_set(st, p)
        self._signal(ps, r.key, m.OPERATIONAL_MODE, node_id(m.OPERATIONAL_MODE_ENUM, self.rob))
        self._signal(ps, r.key, m.EMERGENCY_STOP, self.boolean)
        self._signal(ps, r.key, m.PROTECTIVE_STOP, self.boolean)
        return st

    def _state_machine(
        self, parent: ua.NodeId, ident: str, bname: ua.QualifiedName, typedef: ua.NodeId, key: str, name: str
    ) -> None:
        """A state machine add-in of ``parent`` with CurrentState (LocalizedText, the state's browse
        name) and CurrentState/Id (the NodeId of the state object in the type)."""
        sm = self.batch.obj(parent, ident, bname, typedef, ref=ua.ObjectIds.HasAddIn)
        ids = self.state_ids[name]
        initial = m.STATE_MACHINES_FOR_STATE[State.IDLE][name]
        assert initial is not None
        current = self.batch.prop(
            sm,
            ua.QualifiedName("CurrentState", 0),
            ua.LocalizedText(initial),
            ua.VariantType.LocalizedText,
            node_id(ua.ObjectIds.LocalizedText),
            typedef=ua.ObjectIds.FiniteStateVariableType,
        )
        id_node = self.batch.prop(
            current, ua.QualifiedName("Id", 0), ids[initial], ua.VariantType.NodeId, node_id(ua.ObjectIds.NodeId)
        )
        self.nodes.signals[key][name] = current
        self.nodes.state_ids.setdefault(key, {})[name] = (id_node, ids)


async def build_robotics(server: Server, name: str, robots: Sequence[m.SimRobot], state_machines: bool) -> RobotNodes:
    """Add the MotionDeviceSystem ``name`` with ``robots`` (the nodesets must be loaded)."""
    space = _RoboticsSpace(
        NodeBatch(await server.register_namespace(m.SIM_NS)),
        rob=await server.get_namespace_index(m.ROBOTICS_NS),
        di=await server.get_namespace_index(m.DI_NS),
        mach=await server.get_namespace_index(m.MACHINERY_NS),
        state_machines=state_machines,
    )
    devices, controllers, safety = space.system(name)
    for r in robots:
        space.robot(r, devices, controllers, safety)
    await space.batch.commit(server)
    await space.batch.add_references(server, space.refs)
    return space.nodes
