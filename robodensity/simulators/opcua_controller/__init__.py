"""A simulated robot cell controller: an asyncua server speaking OPC 40010 (Robotics).

The simulator is built from the protocol facts alone (the OPC Foundation nodesets, see
:mod:`.model`), never from the edge's tables, so a round trip through the edge tests both.
Modules: :mod:`.model` (NodeIds, browse names, enumerations, how each state shows),
:mod:`.builder` (batched AddNodes), :mod:`.robotics` (the nodesets and the OPC 40010
address space), :mod:`.vendor` (plain vendor variables), :mod:`.security` (users, trust),
:mod:`.controller` (:class:`OpcUaController`: life cycle and state writes).

``variant="robotics"`` loads the OPC Foundation nodesets (DI, IA, Machinery, Robotics,
in that order, from ``simulators/nodesets``) and exposes one MotionDeviceSystemType
instance under ``Objects/DeviceSet`` with, per simulated robot:

    MotionDevices/<Serial>              MotionDeviceType; DI identification
                                        (Manufacturer, Model, SerialNumber, ProductCode),
                                        MotionDeviceCategory, ParameterSet{OnPath,
                                        InControl, SpeedOverride}
    Controllers/Controller_<Serial>     ControllerType; identification, ParameterSet
                                        {TotalPowerOnTime, TotalEnergyConsumption},
                                        TaskControls/Task_<Serial> (TaskControlType;
                                        ParameterSet{TaskProgramName, TaskProgramLoaded,
                                        ExecutionMode})
    SafetyStates/SafetyState_<Serial>   SafetyStateType; ParameterSet{OperationalMode,
                                        EmergencyStop, ProtectiveStop}

with the Robotics references Controller -Controls-> MotionDevice, TaskControl
-Controls-> MotionDevice and Controller -HasSafetyStates-> SafetyState, and two state
machines per robot, written by ``set_state`` together with the signals::

    Controllers/Controller_<Serial>/SystemOperation          SystemOperationType (HasAddIn)
        /SystemOperationStateMachine                         SystemOperationStateMachineType
            /CurrentState (LocalizedText), CurrentState/Id   (Robotics 1.02, OPC 40010-1)
    MotionDevices/<Serial>/MachineryBuildingBlocks           FolderType (Machinery namespace)
        /MachineryItemState                                  MachineryItemState_StateMachineType
            /CurrentState (LocalizedText), CurrentState/Id   (HasAddIn; OPC 40001-1)

The Robotics 1.02 nodeset models the operation state machine on the controller
(``SystemOperation``, one per simulated robot here, as every robot has its own
controller) and on the task control (``TaskControlOperation``, not simulated);
MotionDeviceSystemType and MotionDeviceType have none. CurrentState's text is the state's
browse name and its Id the NodeId of the state object in the type, as the nodesets model
them. How each state shows (:data:`.model.SIGNALS_FOR_STATE`,
:data:`.model.STATE_MACHINES_FOR_STATE`)::

    State            MachineryItemState   SystemOperationStateMachine  parameter signals
    EXECUTING        Executing            Executing     AUTOMATIC, OnPath, InControl, program loaded
    IDLE             NotExecuting         Ready         AUTOMATIC, InControl, program loaded, not OnPath
    FAULT            NotExecuting         Idle          ProtectiveStop, not InControl
    OUT_OF_SERVICE   OutOfService         Idle          MANUAL_REDUCED_SPEED, no program loaded
    OFFLINE          NotAvailable         Bad status    BadCommunicationError, as every signal

``set_state_machines`` writes the state machines alone (for tests in which they disagree
with the signals).

``variant="robotics10"`` is a Robotics 1.0-style server: the same address space without
the two state machines (only the parameter signals). Instantiating the full types costs
~60 ms per robot, so the nodes are added in one AddNodes batch with the right type
definitions and namespace-qualified browse names (only the mandatory children plus the
optional signals above).

``variant="vendor"`` exposes the same robots as plain vendor variables, the way many
real controllers do, for a mapping-file source (:mod:`.vendor`); ``VENDOR_MAPPING_TOML``
is the mapping file an edge source needs for that variant.

Every write carries ``SourceTimestamp = ts`` (simulated time), and all signals of one
state change are written without yielding to the event loop, so they reach a
subscriber in one publish response with one timestamp. OFFLINE is written as
BadCommunicationError on every state signal; ``set_bad`` breaks a single signal.

Start-up costs about 2 s: 1.0 s for asyncua's standard address space, 0.8 s for the
four nodesets, 0.3 s for 50 robots (about 2.5 s per 1,000 robots, linear). Only signals
whose value or status changes are written; one process sustains about 4,000 robots
changing state and counters at 1 Hz with a subscriber in another process
(bench/bench_simulators.py).

Security and access control (:mod:`.security`): with ``certificate``/``private_key`` only
signed and encrypted endpoints; ``allow_anonymous=False``, ``users`` and
``trusted_clients`` as a locked-down controller would have them.
"""

from robodensity.simulators.opcua_controller.controller import VARIANTS, OpcUaController
from robodensity.simulators.opcua_controller.controller import _free_port as _free_port  # for tests and bench
from robodensity.simulators.opcua_controller.model import (
    APPLICATION_URI,
    DI_NS,
    MACHINERY_NS,
    MOTION_DEVICE_CATEGORIES,
    NODESET_DIR,
    NODESETS,
    ROBOTICS_NS,
    SIM_NS,
    VENDOR_NS,
    SimRobot,
)
from robodensity.simulators.opcua_controller.vendor import VENDOR_MAPPING_TOML, VENDOR_SIGNALS_FOR_STATE

__all__ = [
    "APPLICATION_URI",
    "DI_NS",
    "MACHINERY_NS",
    "MOTION_DEVICE_CATEGORIES",
    "NODESETS",
    "NODESET_DIR",
    "ROBOTICS_NS",
    "SIM_NS",
    "VARIANTS",
    "VENDOR_MAPPING_TOML",
    "VENDOR_NS",
    "VENDOR_SIGNALS_FOR_STATE",
    "OpcUaController",
    "SimRobot",
]
