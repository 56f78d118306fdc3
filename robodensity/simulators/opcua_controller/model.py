"""The simulator's own OPC UA facts, written from the OPC Foundation nodesets, not from the edge.

Every number here is a NodeId in ``simulators/nodesets`` (DI, IA, Machinery, Robotics;
unchanged copies of ``../shared/opcua-nodesets``), and every name a browse name or an
enumeration field in them; ``tests/test_simulators.py`` checks each one against the XML.
The edge reads the same protocol with its own tables, so a mapping mistake on one side
shows up as a failed round trip instead of being mirrored by the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from asyncua import ua

from robodensity.core.wire import State

NODESET_DIR = Path(__file__).resolve().parent.parent / "nodesets"
NODESETS = (
    "Opc.Ua.Di.NodeSet2.xml",
    "Opc.Ua.IA.NodeSet2.xml",
    "Opc.Ua.Machinery.NodeSet2.xml",
    "Opc.Ua.Robotics.NodeSet2.xml",
)
"""The nodesets in load order: each needs the ones before it."""
DI_NS = "http://opcfoundation.org/UA/DI/"
ROBOTICS_NS = "http://opcfoundation.org/UA/Robotics/"
MACHINERY_NS = "http://opcfoundation.org/UA/Machinery/"
SIM_NS = "urn:robodensity:simulator:opcua"
VENDOR_NS = "urn:robodensity:simulator:vendor"
APPLICATION_URI = "urn:robodensity:simulator"

# NodeIds (numeric, in the namespace named in the comment) from the nodesets' <UA... NodeId=>.
DI_DEVICE_SET = 5001  # DI: Objects/DeviceSet
MOTION_DEVICE_SYSTEM_TYPE = 1002  # Robotics
CONTROLLER_TYPE = 1003  # Robotics
MOTION_DEVICE_TYPE = 1004  # Robotics
TASK_CONTROL_TYPE = 1011  # Robotics
SAFETY_STATE_TYPE = 1013  # Robotics
USER_TYPE = 18175  # Robotics
SYSTEM_OPERATION_TYPE = 1028  # Robotics 1.02
SYSTEM_OPERATION_STATE_MACHINE_TYPE = 1021  # Robotics 1.02
MACHINERY_ITEM_STATE_TYPE = 1002  # Machinery: MachineryItemState_StateMachineType
CONTROLS = 4002  # Robotics reference type: Controller/TaskControl -Controls-> MotionDevice
HAS_SAFETY_STATES = 18182  # Robotics reference type: Controller -HasSafetyStates-> SafetyState
OPERATIONAL_MODE_ENUM = 3006  # Robotics: OperationalModeEnumeration
EXECUTION_MODE_ENUM = 18191  # Robotics: ExecutionModeEnumeration
MOTION_DEVICE_CATEGORY_ENUM = 18193  # Robotics: MotionDeviceCategoryEnumeration

OPERATION_STATE_IDS = {"Idle": 5030, "Ready": 5031, "Executing": 5032}
"""SystemOperationStateMachineType's state objects (Robotics ns): CurrentState/Id of an instance."""
MACHINERY_ITEM_STATE_IDS = {"OutOfService": 5004, "NotAvailable": 5005, "Executing": 5006, "NotExecuting": 5007}
"""MachineryItemState_StateMachineType's state objects (Machinery ns)."""

# Enumerations: <Field Name= Value=> of each enumeration DataType above.
OPERATIONAL_MODES = {
    "OTHER": 0,
    "MANUAL_REDUCED_SPEED": 1,
    "MANUAL_HIGH_SPEED": 2,
    "AUTOMATIC": 3,
    "AUTOMATIC_EXTERNAL": 4,
}
EXECUTION_MODES = {"CYCLE": 0, "CONTINUOUS": 1, "STEP": 2}
MOTION_DEVICE_CATEGORIES = {
    "OTHER": 0,
    "ARTICULATED_ROBOT": 1,
    "SCARA_ROBOT": 2,
    "CARTESIAN_ROBOT": 3,
    "SPHERICAL_ROBOT": 4,
    "PARALLEL_ROBOT": 5,
    "CYLINDRICAL_ROBOT": 6,
}

# Signals: Robotics browse names of the variables in each ParameterSet (DI ParameterSet object).
ON_PATH = "OnPath"  # MotionDevice, Boolean
IN_CONTROL = "InControl"  # MotionDevice, Boolean
SPEED_OVERRIDE = "SpeedOverride"  # MotionDevice, Double [%]
TASK_PROGRAM_NAME = "TaskProgramName"  # TaskControl, String
TASK_PROGRAM_LOADED = "TaskProgramLoaded"  # TaskControl, Boolean
EXECUTION_MODE = "ExecutionMode"  # TaskControl, ExecutionModeEnumeration
OPERATIONAL_MODE = "OperationalMode"  # SafetyState, OperationalModeEnumeration
EMERGENCY_STOP = "EmergencyStop"  # SafetyState, Boolean
PROTECTIVE_STOP = "ProtectiveStop"  # SafetyState, Boolean
TOTAL_POWER_ON_TIME = "TotalPowerOnTime"  # Controller, DurationString
TOTAL_ENERGY_CONSUMPTION = "TotalEnergyConsumption"  # Controller, Double [Wh]
# The two state machines' CurrentState, by the simulator's names for them.
MACHINERY_ITEM_STATE = "MachineryItemState"  # MotionDevice/MachineryBuildingBlocks/MachineryItemState
OPERATION_STATE = "OperationState"  # Controller/SystemOperation/SystemOperationStateMachine

VARIANT: dict[str, ua.VariantType] = {
    OPERATIONAL_MODE: ua.VariantType.Int32,
    EMERGENCY_STOP: ua.VariantType.Boolean,
    PROTECTIVE_STOP: ua.VariantType.Boolean,
    ON_PATH: ua.VariantType.Boolean,
    IN_CONTROL: ua.VariantType.Boolean,
    SPEED_OVERRIDE: ua.VariantType.Double,
    TASK_PROGRAM_LOADED: ua.VariantType.Boolean,
    TASK_PROGRAM_NAME: ua.VariantType.String,
    EXECUTION_MODE: ua.VariantType.Int32,
    TOTAL_POWER_ON_TIME: ua.VariantType.String,
    TOTAL_ENERGY_CONSUMPTION: ua.VariantType.Double,
}
"""Variant type of each signal, for DataValues the server's type check accepts."""


def _signals(mode: str, *, protective_stop: bool, on_path: bool, in_control: bool, loaded: bool) -> dict[str, object]:
    return {
        OPERATIONAL_MODE: OPERATIONAL_MODES[mode],
        EMERGENCY_STOP: False,
        PROTECTIVE_STOP: protective_stop,
        ON_PATH: on_path,
        IN_CONTROL: in_control,
        SPEED_OVERRIDE: 100.0,
        TASK_PROGRAM_LOADED: loaded,
    }


SIGNALS_FOR_STATE: dict[State, dict[str, object]] = {
    # automatic mode, a program loaded, the robot under control and moving along its path
    State.EXECUTING: _signals("AUTOMATIC", protective_stop=False, on_path=True, in_control=True, loaded=True),
    # the same, standing still
    State.IDLE: _signals("AUTOMATIC", protective_stop=False, on_path=False, in_control=True, loaded=True),
    # a protective stop has taken the drives out of control
    State.FAULT: _signals("AUTOMATIC", protective_stop=True, on_path=False, in_control=False, loaded=True),
    # switched to manual (teach) mode, no program loaded
    State.OUT_OF_SERVICE: _signals(
        "MANUAL_REDUCED_SPEED", protective_stop=False, on_path=False, in_control=False, loaded=False
    ),
}
"""How a controller shows each state in its parameter signals (OFFLINE: no answer, Bad status)."""
STATE_SIGNALS = tuple(SIGNALS_FOR_STATE[State.IDLE])
"""The parameter signals a state change writes (OFFLINE makes all of them Bad)."""

STATE_MACHINES_FOR_STATE: dict[State, dict[str, str | None]] = {
    State.EXECUTING: {MACHINERY_ITEM_STATE: "Executing", OPERATION_STATE: "Executing"},
    State.IDLE: {MACHINERY_ITEM_STATE: "NotExecuting", OPERATION_STATE: "Ready"},
    State.FAULT: {MACHINERY_ITEM_STATE: "NotExecuting", OPERATION_STATE: "Idle"},
    State.OUT_OF_SERVICE: {MACHINERY_ITEM_STATE: "OutOfService", OPERATION_STATE: "Idle"},
    State.OFFLINE: {MACHINERY_ITEM_STATE: "NotAvailable", OPERATION_STATE: None},
}
"""How each state shows in the two state machines' CurrentState (None: a Bad status)."""

INITIAL: dict[str, object] = {
    TASK_PROGRAM_NAME: "MAIN",
    EXECUTION_MODE: EXECUTION_MODES["CONTINUOUS"],
    TOTAL_POWER_ON_TIME: "PT0S",
    TOTAL_ENERGY_CONSUMPTION: 0.0,
}
"""Start values of the signals no state writes (the state signals start IDLE)."""


def duration_string(seconds: float) -> str:
    """Seconds [s] -> an ISO 8601 duration (OPC UA DurationString) in days, hours, minutes and
    seconds, as a controller's clock would show it: ``PT0S``, ``PT59.5S``, ``P1DT2H3M4S``, ``P2D``."""
    if not seconds >= 0:  # also NaN
        raise ValueError(f"a power-on time must be a non-negative number of seconds; got {seconds}")
    s, ms = divmod(round(seconds * 1000), 1000)
    m, s = divmod(s, 60)
    h, m = divmod(m, 60)
    d, h = divmod(h, 24)
    clock = (f"{h}H" if h else "") + (f"{m}M" if m else "")
    if s or ms:
        clock += f"{s}.{ms:03d}S" if ms else f"{s}S"
    if not (d or clock):
        return "PT0S"
    return "P" + (f"{d}D" if d else "") + (f"T{clock}" if clock else "")


@dataclass(frozen=True)
class SimRobot:
    """Identity of one simulated motion device."""

    manufacturer: str
    serial: str
    model: str
    product_code: str = ""
    category: str = "ARTICULATED_ROBOT"
    """One of :data:`MOTION_DEVICE_CATEGORIES`."""

    @property
    def key(self) -> str:
        """``MANUFACTURER/SERIAL``, as ``robodensity.core.wire.RobotId.key``."""
        return f"{self.manufacturer}/{self.serial}"
