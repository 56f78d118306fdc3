"""Pure mapping from OPC 40010 (OPC UA for Robotics) signals to the canonical robot state.

No I/O and no asyncua: a source collects the latest value of each signal of one robot
into a mapping (signal name -> value, ``None`` when the value is unknown or has a Bad
status) and asks :func:`derive_state` what state that robot is in.

Signals (OPC 40010-1 browse names; ``ParameterSet`` is the DI ParameterSet object)::

    MotionDevice.ParameterSet   OnPath (Boolean), InControl (Boolean), SpeedOverride (Double [%])
    TaskControl.ParameterSet    TaskProgramLoaded (Boolean)
    SafetyState.ParameterSet    OperationalMode (OperationalModeEnumeration),
                                EmergencyStop (Boolean), ProtectiveStop (Boolean)

and, where the server has them, the CurrentState (LocalizedText; its text is the state's
browse name) of two state machines (:data:`STATE_MACHINE_SIGNALS`)::

    MachineryItemState          OPC 40001-1 MachineryItemState_StateMachineType on the
                                motion device (MachineryBuildingBlocks/MachineryItemState
                                or Monitoring/Status/MachineryItemState): NotAvailable,
                                OutOfService, NotExecuting, Executing
    OperationState              OPC 40010-1 1.02 SystemOperationStateMachineType of the
                                controller (Controller.SystemOperation.
                                SystemOperationStateMachine; else the TaskControlStateMachine
                                of TaskControl.TaskControlOperation): Idle, Ready, Executing

The table, first matching row wins:

    ====  ===========================================================  ================
    row   condition                                                    state
    ====  ===========================================================  ================
    1     no signal known at all (empty, or every value ``None``)      OFFLINE
    2     EmergencyStop is true or ProtectiveStop is true              FAULT
    3     MachineryItemState is known:                                 by its state:
            NotAvailable                                               OFFLINE
            OutOfService                                               OUT_OF_SERVICE
            NotExecuting                                               IDLE
            Executing                                                  EXECUTING (*)
    4     OperationState is known:                                     by its state:
            Executing                                                  EXECUTING (*)
            Ready                                                      IDLE
            Idle, and OperationalMode is MANUAL_*                      OUT_OF_SERVICE
            Idle otherwise                                             IDLE
    5     OperationalMode is MANUAL_REDUCED_SPEED or MANUAL_HIGH_SPEED OUT_OF_SERVICE
    6     OperationalMode is AUTOMATIC or AUTOMATIC_EXTERNAL, and      EXECUTING
          OnPath, InControl and TaskProgramLoaded are true, and
          SpeedOverride > 0
    7     anything else, including unknown or missing signals          IDLE
    ====  ===========================================================  ================

So a state machine, where the server has one, wins over the parameter signals (rows 3-4
before 5-7; MachineryItemState before the Robotics one), but never over the safety
signals: a fault is only ever seen in EmergencyStop / ProtectiveStop (both machines say
NotExecuting / Idle for it). A state machine whose CurrentState is unknown (Bad status,
or a text that is not one of its state names, e.g. a localised one) is skipped, so a
server without state machines (Robotics 1.0) uses rows 5-7 as before.
(*) A state machine's Executing is IDLE while one of OnPath, InControl, TaskProgramLoaded,
SpeedOverride is present in the mapping with the value ``None`` (the server has the
signal but its value is unknown, e.g. Bad): not provably executing, as in row 7. An
absent key (the server has no such signal) does not count.

A missing or unknown signal never satisfies a condition: a robot whose OnPath is
unknown is IDLE, not EXECUTING (conservative: utilisation is never overstated).

:data:`SIGNALS_FOR_STATE` is the same table in reverse: the signal values a simulator
writes to express a state; ``derive_state(SIGNALS_FOR_STATE[s]) is s`` for every state
but OFFLINE, which a controller expresses by not answering (or Bad status codes).
:data:`STATE_MACHINES_FOR_STATE` is the reverse for the state machines (the simulator
writes both tables; with both, every state, OFFLINE included, derives back)::

    State            MachineryItemState   OperationState (SystemOperationStateMachine)
    EXECUTING        Executing            Executing
    IDLE             NotExecuting         Ready
    FAULT            NotExecuting         Idle       (the fault is in the safety signals)
    OUT_OF_SERVICE   OutOfService         Idle       (OperationalMode MANUAL_REDUCED_SPEED)
    OFFLINE          NotAvailable         None       (a Bad status, as every signal)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from robodensity.core.wire import State

# Signal names: the OPC 40010 browse names without namespace.
ON_PATH = "OnPath"
IN_CONTROL = "InControl"
SPEED_OVERRIDE = "SpeedOverride"
TASK_PROGRAM_LOADED = "TaskProgramLoaded"
TASK_PROGRAM_NAME = "TaskProgramName"
EXECUTION_MODE = "ExecutionMode"
OPERATIONAL_MODE = "OperationalMode"
EMERGENCY_STOP = "EmergencyStop"
PROTECTIVE_STOP = "ProtectiveStop"
TOTAL_POWER_ON_TIME = "TotalPowerOnTime"
TOTAL_ENERGY_CONSUMPTION = "TotalEnergyConsumption"

STATE_SIGNALS = (
    OPERATIONAL_MODE,
    EMERGENCY_STOP,
    PROTECTIVE_STOP,
    ON_PATH,
    IN_CONTROL,
    SPEED_OVERRIDE,
    TASK_PROGRAM_LOADED,
)
"""The parameter signals :func:`derive_state` reads."""

# State machines (their CurrentState), see the module docstring.
MACHINERY_ITEM_STATE = "MachineryItemState"
OPERATION_STATE = "OperationState"
STATE_MACHINE_SIGNALS = (MACHINERY_ITEM_STATE, OPERATION_STATE)
"""The state machine signals :func:`derive_state` also reads (their CurrentState)."""

MACHINERY_ITEM_STATES = ("NotAvailable", "OutOfService", "NotExecuting", "Executing")
"""MachineryItemState_StateMachineType's states (OPC 40001-1), by browse name."""
OPERATION_STATES = ("Idle", "Ready", "Executing")
"""OperationStateMachineType's states (OPC 40010-1 1.02), by browse name."""
_MOTION_SIGNALS = (ON_PATH, IN_CONTROL, TASK_PROGRAM_LOADED, SPEED_OVERRIDE)

# OperationalModeEnumeration (OPC 40010-1, i=3006 in the Robotics namespace).
OPERATIONAL_MODES = {
    0: "OTHER",
    1: "MANUAL_REDUCED_SPEED",
    2: "MANUAL_HIGH_SPEED",
    3: "AUTOMATIC",
    4: "AUTOMATIC_EXTERNAL",
}
_MODE_VALUES = {name: value for value, name in OPERATIONAL_MODES.items()}
_MANUAL = frozenset({"MANUAL_REDUCED_SPEED", "MANUAL_HIGH_SPEED"})
_AUTOMATIC = frozenset({"AUTOMATIC", "AUTOMATIC_EXTERNAL"})

# ExecutionModeEnumeration: CYCLE 0, CONTINUOUS 1, STEP 2.
EXECUTION_CONTINUOUS = 1

SIGNALS_FOR_STATE: dict[State, dict[str, object]] = {
    State.EXECUTING: {
        OPERATIONAL_MODE: _MODE_VALUES["AUTOMATIC"],
        EMERGENCY_STOP: False,
        PROTECTIVE_STOP: False,
        ON_PATH: True,
        IN_CONTROL: True,
        SPEED_OVERRIDE: 100.0,
        TASK_PROGRAM_LOADED: True,
    },
    State.IDLE: {
        OPERATIONAL_MODE: _MODE_VALUES["AUTOMATIC"],
        EMERGENCY_STOP: False,
        PROTECTIVE_STOP: False,
        ON_PATH: False,
        IN_CONTROL: True,
        SPEED_OVERRIDE: 100.0,
        TASK_PROGRAM_LOADED: True,
    },
    State.FAULT: {
        OPERATIONAL_MODE: _MODE_VALUES["AUTOMATIC"],
        EMERGENCY_STOP: False,
        PROTECTIVE_STOP: True,
        ON_PATH: False,
        IN_CONTROL: False,
        SPEED_OVERRIDE: 100.0,
        TASK_PROGRAM_LOADED: True,
    },
    State.OUT_OF_SERVICE: {
        OPERATIONAL_MODE: _MODE_VALUES["MANUAL_REDUCED_SPEED"],
        EMERGENCY_STOP: False,
        PROTECTIVE_STOP: False,
        ON_PATH: False,
        IN_CONTROL: False,
        SPEED_OVERRIDE: 100.0,
        TASK_PROGRAM_LOADED: False,
    },
}
"""State -> the signal values that express it (the table above in reverse)."""

STATE_MACHINES_FOR_STATE: dict[State, dict[str, str | None]] = {
    State.EXECUTING: {MACHINERY_ITEM_STATE: "Executing", OPERATION_STATE: "Executing"},
    State.IDLE: {MACHINERY_ITEM_STATE: "NotExecuting", OPERATION_STATE: "Ready"},
    State.FAULT: {MACHINERY_ITEM_STATE: "NotExecuting", OPERATION_STATE: "Idle"},
    State.OUT_OF_SERVICE: {MACHINERY_ITEM_STATE: "OutOfService", OPERATION_STATE: "Idle"},
    State.OFFLINE: {MACHINERY_ITEM_STATE: "NotAvailable", OPERATION_STATE: None},
}
"""State -> the CurrentState of each state machine that expresses it (None: Bad status)."""


def state_name(value: object, names: Sequence[str]) -> str | None:
    """A state machine's CurrentState (LocalizedText, or its text) -> one of ``names``.

    Matches case-insensitively and ignoring spaces; None if unknown."""
    text = getattr(value, "Text", value)
    if not isinstance(text, str):
        return None
    key = text.replace(" ", "").replace("_", "").casefold()
    for name in names:
        if name.casefold() == key:
            return name
    return None


def operational_mode_name(value: object) -> str | None:
    """``3``, ``"3"``, ``"AUTOMATIC"`` or an enum member -> ``"AUTOMATIC"``; None if unknown."""
    if value is None or isinstance(value, bool):
        return None
    name = getattr(value, "name", None)  # an IntEnum generated by asyncua
    if isinstance(name, str) and name in _MODE_VALUES:
        return name
    if isinstance(value, int):
        return OPERATIONAL_MODES.get(value)
    if isinstance(value, str):
        text = value.strip().upper()
        if text.isdigit():
            return OPERATIONAL_MODES.get(int(text))
        return text if text in _MODE_VALUES else None
    return None


def _is_true(value: object) -> bool:
    return value is True or (isinstance(value, int | float) and not isinstance(value, bool) and value != 0)


def derive_state(signals: Mapping[str, object]) -> State:
    """The canonical state of one robot from its OPC 40010 signals (see the module table).

    signals : mapping of signal name (``OnPath``, ``OperationalMode``, ``MachineryItemState``,
        ...) to its latest value; ``None`` or an absent key means unknown (``None`` also
        means the server has the signal, see row (*)). Other keys are ignored.
    Returns the State; OFFLINE only when no state signal is known at all, or when
    MachineryItemState is NotAvailable.
    """
    known = {name: signals[name] for name in STATE_SIGNALS + STATE_MACHINE_SIGNALS if signals.get(name) is not None}
    if not known:
        return State.OFFLINE
    if _is_true(known.get(EMERGENCY_STOP)) or _is_true(known.get(PROTECTIVE_STOP)):
        return State.FAULT
    mode = operational_mode_name(known.get(OPERATIONAL_MODE))
    # A state machine's Executing is not provable while a motion signal the server has is unknown.
    executing = State.IDLE if any(n in signals and signals[n] is None for n in _MOTION_SIGNALS) else State.EXECUTING
    machinery = state_name(known.get(MACHINERY_ITEM_STATE), MACHINERY_ITEM_STATES)
    if machinery is not None:
        return {
            "NotAvailable": State.OFFLINE,
            "OutOfService": State.OUT_OF_SERVICE,
            "NotExecuting": State.IDLE,
            "Executing": executing,
        }[machinery]
    operation = state_name(known.get(OPERATION_STATE), OPERATION_STATES)
    if operation is not None:
        if operation == "Executing":
            return executing
        return State.OUT_OF_SERVICE if operation == "Idle" and mode in _MANUAL else State.IDLE
    if mode in _MANUAL:
        return State.OUT_OF_SERVICE
    speed = known.get(SPEED_OVERRIDE)
    if (
        mode in _AUTOMATIC
        and known.get(ON_PATH) is True
        and known.get(IN_CONTROL) is True
        and known.get(TASK_PROGRAM_LOADED) is True
        and isinstance(speed, int | float)
        and not isinstance(speed, bool)
        and speed > 0
    ):
        return State.EXECUTING
    return State.IDLE


_DURATION_RE = re.compile(
    r"^(?P<sign>[-+])?P(?!$)(?:(?P<d>\d+(?:[.,]\d+)?)D)?"
    r"(?:T(?=\d)(?:(?P<h>\d+(?:[.,]\d+)?)H)?(?:(?P<m>\d+(?:[.,]\d+)?)M)?(?:(?P<s>\d+(?:[.,]\d+)?)S)?)?$"
)


def parse_duration_s(text: str) -> float:
    """An ISO 8601 duration (OPC UA DurationString) -> seconds [s].

    Accepts days, hours, minutes and (fractional) seconds, e.g. ``PT12345S``,
    ``P3DT4H5M6.5S``. Years and months have no fixed length and raise ValueError,
    as does anything that is not a duration.
    """
    match = _DURATION_RE.match(text.strip().upper())
    if match is None or text.strip().upper() in ("P", "PT"):
        raise ValueError(f"not an ISO 8601 duration of days/hours/minutes/seconds: {text!r}")
    parts = {k: float(v.replace(",", ".")) if v else 0.0 for k, v in match.groupdict().items() if k != "sign"}
    seconds = parts["d"] * 86_400 + parts["h"] * 3_600 + parts["m"] * 60 + parts["s"]
    return -seconds if match.group("sign") == "-" else seconds


def format_duration_s(seconds: float) -> str:
    """Seconds [s] -> an ISO 8601 DurationString, ``PT12345S`` (fractions kept to ms)."""
    if seconds < 0 or seconds != seconds:
        raise ValueError(f"a power-on time cannot be negative or NaN: {seconds}")
    whole = round(seconds, 3)
    text = f"{whole:.3f}".rstrip("0").rstrip(".")
    return f"PT{text}S"


@dataclass(frozen=True)
class StateRule:
    """One row of a vendor mapping: when every listed signal equals its value -> ``state``."""

    when: tuple[tuple[str, object], ...]
    state: State

    def matches(self, signals: Mapping[str, object]) -> bool:
        return all(_same(signals.get(name), want) for name, want in self.when)


def _same(got: object, want: object) -> bool:
    if got is None:
        return False
    if isinstance(want, bool) or isinstance(got, bool):
        return got is want
    if isinstance(want, str) and isinstance(got, str):
        return got.strip().casefold() == want.strip().casefold()
    return got == want


def derive_state_by_rules(signals: Mapping[str, object], rules: Sequence[StateRule], default: State) -> State:
    """The state of a robot that exposes vendor variables, from a mapping file's rules.

    First matching rule wins; no rule matches -> ``default``; no signal known at all
    (every value None or absent) -> OFFLINE, as in :func:`derive_state`. Strings compare
    case-insensitively, booleans only with booleans, numbers by value.
    """
    names = {name for rule in rules for name, _ in rule.when}
    if not any(signals.get(name) is not None for name in names):
        return State.OFFLINE
    for rule in rules:
        if rule.matches(signals):
            return rule.state
    return default
