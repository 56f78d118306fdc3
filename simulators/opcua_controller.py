"""A simulated robot cell controller: an asyncua server speaking OPC 40010 (Robotics).

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
them. State -> CurrentState (:data:`edge.normalise.STATE_MACHINES_FOR_STATE`)::

    State            MachineryItemState   SystemOperationStateMachine
    EXECUTING        Executing            Executing
    IDLE             NotExecuting         Ready      (program loaded, automatic, not moving)
    FAULT            NotExecuting         Idle       (the fault is in EmergencyStop/ProtectiveStop)
    OUT_OF_SERVICE   OutOfService         Idle       (OperationalMode MANUAL_REDUCED_SPEED)
    OFFLINE          NotAvailable         Bad status (BadCommunicationError, as every signal)

``set_state_machines`` writes the state machines alone (for tests in which they disagree
with the signals).

``variant="robotics10"`` is a Robotics 1.0-style server: the same address space without
the two state machines (only the parameter signals).
Instantiating the full types costs ~60 ms per robot, so the nodes are added in one
AddNodes batch with the right type definitions and namespace-qualified browse names
(only the mandatory children plus the optional signals above).

``variant="vendor"`` exposes the same robots as plain vendor variables, the way many
real controllers do, for a mapping-file source::

    Objects/Cell/Robot_<Serial>/{Manufacturer, Serial, Model, Mode, Running, Fault}
        Mode: "AUTO" | "MANUAL" | "OFF"; Running, Fault: Boolean   (namespace VENDOR_NS)

``VENDOR_MAPPING_TOML`` is the mapping file an edge source needs for that variant.

Every write carries ``SourceTimestamp = ts`` (simulated time), and all signals of one
state change are written without yielding to the event loop, so they reach a
subscriber in one publish response with one timestamp. OFFLINE is written as
BadCommunicationError on every state signal; ``set_bad`` breaks a single signal.

Start-up costs about 2 s: 1.0 s for asyncua's standard address space, 0.8 s for the
four nodesets, 0.3 s for 50 robots (about 2.5 s per 1,000 robots, linear). Only signals
whose value or status changes are written; one process sustains about 4,000 robots
changing state and counters at 1 Hz with a subscriber in another process
(bench/bench_simulators.py).
With ``certificate``/``private_key`` the server offers only signed and encrypted
endpoints (Basic256Sha256, Aes128_Sha256_RsaOaep, Aes256_Sha256_RsaPss).

Access control, as a locked-down controller would have it: ``allow_anonymous=False``
refuses anonymous sessions (BadIdentityTokenRejected at ActivateSession); ``users``
(username -> password) accepts only those user names and passwords
(BadUserAccessDenied otherwise); ``trusted_clients`` (a folder of client or CA
certificates, with ``certificate``/``private_key``) refuses at CreateSession a client
whose certificate is not trusted (BadCertificateUntrusted) or out of its validity
period (BadCertificateTimeInvalid).
"""

from __future__ import annotations

import functools
import gc
import hmac
import logging
import re
import socket
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, cast

from asyncua import Server, ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.internal_server import InternalServer
from asyncua.server.user_managers import UserManager

from edge.normalise import (
    EMERGENCY_STOP,
    EXECUTION_CONTINUOUS,
    EXECUTION_MODE,
    IN_CONTROL,
    MACHINERY_ITEM_STATE,
    MACHINERY_ITEM_STATES,
    ON_PATH,
    OPERATION_STATE,
    OPERATION_STATES,
    OPERATIONAL_MODE,
    PROTECTIVE_STOP,
    SIGNALS_FOR_STATE,
    SPEED_OVERRIDE,
    STATE_MACHINES_FOR_STATE,
    STATE_SIGNALS,
    TASK_PROGRAM_LOADED,
    TASK_PROGRAM_NAME,
    TOTAL_ENERGY_CONSUMPTION,
    TOTAL_POWER_ON_TIME,
    format_duration_s,
)
from edge.sources.opcua import node_id
from robodensity.wire import State
from simulators.behaviour import Schedule, SimClock, due_changes

log = logging.getLogger(__name__)

NODESET_DIR = Path(__file__).parent / "nodesets"
NODESETS = (
    "Opc.Ua.Di.NodeSet2.xml",
    "Opc.Ua.IA.NodeSet2.xml",
    "Opc.Ua.Machinery.NodeSet2.xml",
    "Opc.Ua.Robotics.NodeSet2.xml",
)
DI_NS = "http://opcfoundation.org/UA/DI/"
ROBOTICS_NS = "http://opcfoundation.org/UA/Robotics/"
MACHINERY_NS = "http://opcfoundation.org/UA/Machinery/"
SIM_NS = "urn:robodensity:simulator:opcua"
VENDOR_NS = "urn:robodensity:simulator:vendor"
APPLICATION_URI = "urn:robodensity:simulator"

# Numeric ids inside the Robotics and DI nodesets (stable across releases of a model).
_MOTION_DEVICE_SYSTEM_TYPE = 1002
_MOTION_DEVICE_TYPE = 1004
_CONTROLLER_TYPE = 1003
_TASK_CONTROL_TYPE = 1011
_SAFETY_STATE_TYPE = 1013
_USER_TYPE = 18175
_CONTROLS = 4002
_HAS_SAFETY_STATES = 18182
_OPERATIONAL_MODE_ENUM = 3006
_EXECUTION_MODE_ENUM = 18191
_MOTION_DEVICE_CATEGORY_ENUM = 18193
_DI_DEVICE_SET = 5001
_SYSTEM_OPERATION_TYPE = 1028
_SYSTEM_OPERATION_STATE_MACHINE_TYPE = 1021
_MACHINERY_ITEM_STATE_TYPE = 1002  # in the Machinery namespace
# NodeIds of the state objects in the state machine types: CurrentState/Id of an instance.
_OPERATION_STATE_IDS = {"Idle": 5030, "Ready": 5031, "Executing": 5032}  # Robotics ns
_MACHINERY_ITEM_STATE_IDS = {"OutOfService": 5004, "NotAvailable": 5005, "Executing": 5006, "NotExecuting": 5007}
VARIANTS = ("robotics", "robotics10", "vendor")

MOTION_DEVICE_CATEGORIES = {
    "OTHER": 0,
    "ARTICULATED_ROBOT": 1,
    "SCARA_ROBOT": 2,
    "CARTESIAN_ROBOT": 3,
    "SPHERICAL_ROBOT": 4,
    "PARALLEL_ROBOT": 5,
    "CYLINDRICAL_ROBOT": 6,
}

# Variant type of each signal, for DataValues the server's type check accepts.
_VARIANT: dict[str, ua.VariantType] = {
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

# Vendor variant: how each canonical state looks in the vendor's own variables.
VENDOR_SIGNALS_FOR_STATE: dict[State, dict[str, object]] = {
    State.EXECUTING: {"Mode": "AUTO", "Running": True, "Fault": False},
    State.IDLE: {"Mode": "AUTO", "Running": False, "Fault": False},
    State.FAULT: {"Mode": "AUTO", "Running": False, "Fault": True},
    State.OUT_OF_SERVICE: {"Mode": "MANUAL", "Running": False, "Fault": False},
}
VENDOR_MAPPING_TOML = f"""\
# Mapping for the simulator's vendor variant (see edge.sources.opcua.load_mapping).
namespace = "{VENDOR_NS}"
robots = "Cell"
default = "IDLE"
category = "ARTICULATED_ROBOT"

[identity]
manufacturer = "Manufacturer"
serial = "Serial"
model = "Model"

[signals]
Mode = "Mode"
Running = "Running"
Fault = "Fault"

[[rules]]
when = {{ Fault = true }}
state = "FAULT"

[[rules]]
when = {{ Mode = "MANUAL" }}
state = "OUT_OF_SERVICE"

[[rules]]
when = {{ Mode = "OFF" }}
state = "OUT_OF_SERVICE"

[[rules]]
when = {{ Mode = "AUTO", Running = true }}
state = "EXECUTING"
"""
"""A mapping file for ``variant="vendor"``: write it to a file for ``mapping_file``."""
_VENDOR_VARIANT = {
    "Mode": ua.VariantType.String,
    "Running": ua.VariantType.Boolean,
    "Fault": ua.VariantType.Boolean,
}


def _dv(value: ua.Variant | None, ts: datetime, status: ua.StatusCode | None = None) -> ua.DataValue:
    """A DataValue stamped with simulated time ``ts`` at the source and wall time at the server."""
    now = datetime.now(ts.tzinfo)
    if status is not None:
        return ua.DataValue(StatusCode=status, SourceTimestamp=cast(Any, ts), ServerTimestamp=cast(Any, now))
    return ua.DataValue(value, SourceTimestamp=cast(Any, ts), ServerTimestamp=cast(Any, now))


@dataclass(frozen=True)
class SimRobot:
    """Identity of one simulated motion device."""

    manufacturer: str
    serial: str
    model: str
    product_code: str = ""
    category: str = "ARTICULATED_ROBOT"

    @property
    def key(self) -> str:
        """``MANUFACTURER/SERIAL``, as ``robodensity.wire.RobotId.key``."""
        return f"{self.manufacturer}/{self.serial}"


@functools.cache
def _nodeset_xml(name: str) -> str:
    """The nodeset's text, without DesignToolOnly nodes (asyncua rejects them with
    BadParentNodeIdInvalid: their parent is a type-design placeholder it never creates)."""
    text = (NODESET_DIR / name).read_text(encoding="utf-8")
    dropped = re.findall(r'<UA\w+ NodeId="([^"]+)"[^>]*\bDesignToolOnly="true"', text)
    if not dropped:
        return text
    text = re.sub(r'\s*<UA(\w+) [^>]*\bDesignToolOnly="true"[^>]*>.*?</UA\1>', "", text, flags=re.S)
    for nodeid in dropped:
        text = re.sub(r"\s*<Reference [^>]*>" + re.escape(nodeid) + r"</Reference>", "", text)
    return text


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _sanitise(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


class _PasswordUsers(UserManager):
    """Sessions for the listed user names with their passwords, and anonymous ones if allowed.

    The server offers no X509 user identity token alongside this manager."""

    def __init__(self, users: Mapping[str, str], allow_anonymous: bool) -> None:
        self._users = {name: password.encode("utf-8") for name, password in users.items()}
        self._allow_anonymous = allow_anonymous

    def get_user(
        self,
        iserver: InternalServer,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        # ``certificate`` is the secure channel's client certificate, whatever the token.
        if username is None:  # an anonymous token (X509 tokens are not offered)
            return User(role=UserRole.User) if self._allow_anonymous else None
        expected = self._users.get(username)
        given = (password or "").encode("utf-8")
        if expected is None or not hmac.compare_digest(expected, given):
            log.info("refused user %r: unknown user name or wrong password", username)
            return None
        return User(role=UserRole.User, name=username)


async def _client_validator(folder: Path) -> CertificateValidator:
    """Validity period and trust (directly, or through a CA in ``folder``) of client certificates."""
    if not any(p.is_file() and p.suffix.lower() in (".pem", ".der") for p in folder.iterdir()):
        raise ValueError(f"trusted_clients {folder} holds no certificate (.pem, .der)")
    store = TrustStore([folder], [])
    await store.load()
    options = CertificateValidatorOptions.TIME_RANGE | CertificateValidatorOptions.TRUSTED
    return CertificateValidator(options | CertificateValidatorOptions.PEER_CLIENT, store)


class OpcUaController:
    """One simulated robot cell controller; ``async with`` starts and stops the server."""

    def __init__(
        self,
        robots: Sequence[SimRobot],
        host: str = "127.0.0.1",
        port: int = 0,
        variant: Literal["robotics", "robotics10", "vendor"] = "robotics",
        name: str = "cell",
        *,
        certificate: Path | None = None,
        private_key: Path | None = None,
        allow_anonymous: bool = True,
        users: Mapping[str, str] | None = None,
        trusted_clients: Path | None = None,
    ) -> None:
        """``certificate`` and ``private_key`` (PEM or DER; the certificate's URI SAN should be
        APPLICATION_URI): offer only Basic256Sha256, Aes128_Sha256_RsaOaep and
        Aes256_Sha256_RsaPss with SignAndEncrypt instead of no security.

        ``allow_anonymous=False`` refuses anonymous sessions; it needs ``users``.
        ``users`` (username -> password): only these may log in with a user name (without
        it any user name and password is accepted, as before). With ``users`` no X509 user
        identity token is offered. ``trusted_clients``: a folder of trusted client (or CA)
        certificates, ``.pem``/``.der`` only (keys must not be in it), read at start; a
        client whose certificate does not chain to one of them, or is outside its validity
        period, is refused at CreateSession. It needs ``certificate``/``private_key``:
        without security a client sends no certificate."""
        if (certificate is None) != (private_key is None):
            raise ValueError("give both certificate and private_key, or neither")
        if not allow_anonymous and users is None:
            raise ValueError("allow_anonymous=False needs users, or nobody could log in")
        if users is not None and any(not name for name in users):
            raise ValueError("users must not have an empty user name")
        if trusted_clients is not None:
            if certificate is None:
                raise ValueError("trusted_clients needs certificate and private_key: an insecure client sends none")
            if not trusted_clients.is_dir():
                raise ValueError(f"trusted_clients {trusted_clients} is not a folder")
        self.certificate = certificate
        self.private_key = private_key
        self.allow_anonymous = allow_anonymous
        self.users: dict[str, str] | None = dict(users) if users is not None else None
        self.trusted_clients = trusted_clients
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}; got {variant!r}")
        keys = [r.key for r in robots]
        if len(set(keys)) != len(keys):
            raise ValueError("robots must have distinct manufacturer/serial pairs")
        for r in robots:
            if r.category not in MOTION_DEVICE_CATEGORIES:
                raise ValueError(f"category must be one of {', '.join(MOTION_DEVICE_CATEGORIES)}; got {r.category!r}")
        self.robots = tuple(robots)
        self.host = host
        self.port = port
        self.variant = variant
        self.name = name
        self.url = ""
        self._server: Server | None = None
        # robot key -> signal name -> NodeId of the variable that carries it
        self._nodes: dict[str, dict[str, ua.NodeId]] = {}
        # robot key -> state machine signal -> (CurrentState/Id node, state name -> state NodeId)
        self._state_ids: dict[str, dict[str, tuple[ua.NodeId, dict[str, ua.NodeId]]]] = {}
        # NodeId -> (value, status code) last written, to skip writes that change nothing
        self._written: dict[ua.NodeId, tuple[object, int]] = {}
        self.timings: dict[str, float] = {}
        """Seconds spent in each start-up phase (init, nodesets, address_space, start)."""

    # -- life cycle -------------------------------------------------------------------

    async def __aenter__(self) -> OpcUaController:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        t0 = time.perf_counter()
        self._written = {}
        port = self.port or _free_port(self.host)
        users = None if self.users is None else _PasswordUsers(self.users, self.allow_anonymous)
        server = Server(user_manager=users)
        await server.init()
        if self.users is not None:
            tokens: list[type] = [ua.UserNameIdentityToken]
            if self.allow_anonymous:
                tokens.insert(0, ua.AnonymousIdentityToken)
            server.set_identity_tokens(tokens)
        server.set_endpoint(f"opc.tcp://{self.host}:{port}")
        server.set_server_name(f"RoboDensity simulated controller {self.name}")
        await server.set_application_uri(APPLICATION_URI)
        if self.certificate is not None and self.private_key is not None:
            await server.load_certificate(str(self.certificate))
            await server.load_private_key(str(self.private_key))
            server.set_security_policy(
                [
                    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
                    ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
                    ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
                ]
            )
            if self.trusted_clients is not None:
                server.set_certificate_validator(await _client_validator(self.trusted_clients))
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        t1 = time.perf_counter()
        self.timings["init"] = t1 - t0
        # Generational GC passes over the growing address space were half of the build time.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            await self._build(server, t1)
        finally:
            if gc_was_enabled:
                gc.enable()
        t3 = time.perf_counter()
        await server.start()
        self.timings["start"] = time.perf_counter() - t3
        self._server = server
        self.port = port
        self.url = f"opc.tcp://{self.host}:{port}"
        log.info(
            "simulated controller %s on %s with %d robots (%s)",
            self.name,
            self.url,
            len(self.robots),
            ", ".join(f"{k} {v:.2f}s" for k, v in self.timings.items()),
        )

    async def _build(self, server: Server, t1: float) -> None:
        if self.variant != "vendor":
            # The importer warns about every child whose parent a later model re-targets.
            importer_log = logging.getLogger("asyncua.common.xmlimporter")
            level = importer_log.level
            importer_log.setLevel(logging.ERROR)
            try:
                for name in NODESETS:
                    await server.import_xml(xmlstring=_nodeset_xml(name))
            finally:
                importer_log.setLevel(level)
            t2 = time.perf_counter()
            self.timings["nodesets"] = t2 - t1
            await self._build_robotics(server)
        else:
            t2 = time.perf_counter()
            await self._build_vendor(server)
        self.timings["address_space"] = time.perf_counter() - t2

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop()

    # -- address space ----------------------------------------------------------------

    async def _build_robotics(self, server: Server) -> None:
        rob = await server.get_namespace_index(ROBOTICS_NS)
        di = await server.get_namespace_index(DI_NS)
        mach = await server.get_namespace_index(MACHINERY_NS)
        sim = await server.register_namespace(SIM_NS)
        builder = _Builder(sim)
        with_state_machines = self.variant == "robotics"
        operation_ids = {name: node_id(i, rob) for name, i in _OPERATION_STATE_IDS.items()}
        machinery_ids = {name: node_id(i, mach) for name, i in _MACHINERY_ITEM_STATE_IDS.items()}
        idle = STATE_MACHINES_FOR_STATE[State.IDLE]

        def state_machine(
            parent: ua.NodeId,
            ident: str,
            bname: ua.QualifiedName,
            typedef: ua.NodeId,
            key: str,
            name: str,
            ids: dict[str, ua.NodeId],
        ) -> None:
            """A state machine object with CurrentState and CurrentState/Id, added to parent (HasAddIn)."""
            sm = builder.obj(parent, ident, bname, typedef, ref=ua.ObjectIds.HasAddIn)
            initial = idle[name]
            assert initial is not None
            current = builder.prop(
                sm,
                ua.QualifiedName("CurrentState", 0),
                ua.LocalizedText(initial),
                ua.VariantType.LocalizedText,
                node_id(ua.ObjectIds.LocalizedText),
                typedef=ua.ObjectIds.FiniteStateVariableType,
            )
            id_node = builder.prop(
                current, ua.QualifiedName("Id", 0), ids[initial], ua.VariantType.NodeId, node_id(ua.ObjectIds.NodeId)
            )
            self._nodes[key][name] = current
            self._state_ids.setdefault(key, {})[name] = (id_node, ids)

        folder = node_id(ua.ObjectIds.FolderType)
        device_set = node_id(_DI_DEVICE_SET, di)
        system = builder.obj(
            device_set,
            _sanitise(self.name),
            ua.QualifiedName(self.name, sim),
            node_id(_MOTION_DEVICE_SYSTEM_TYPE, rob),
            ref=ua.ObjectIds.Organizes,
        )
        devices = builder.obj(system, "MotionDevices", ua.QualifiedName("MotionDevices", rob), folder)
        controllers = builder.obj(system, "Controllers", ua.QualifiedName("Controllers", rob), folder)
        safety = builder.obj(system, "SafetyStates", ua.QualifiedName("SafetyStates", rob), folder)

        def di_ident(parent: ua.NodeId, r: SimRobot, serial: str, model: str) -> None:
            lt, s = ua.VariantType.LocalizedText, ua.VariantType.String
            builder.prop(parent, ua.QualifiedName("Manufacturer", di), ua.LocalizedText(r.manufacturer), lt)
            builder.prop(parent, ua.QualifiedName("Model", di), ua.LocalizedText(model), lt)
            builder.prop(parent, ua.QualifiedName("SerialNumber", di), serial, s)
            builder.prop(parent, ua.QualifiedName("ProductCode", di), r.product_code, s)

        def var(parent: ua.NodeId, name: str, key: str, dtype: ua.NodeId) -> None:
            value = SIGNALS_FOR_STATE[State.IDLE].get(name, _INITIAL.get(name))
            nodeid = builder.var(parent, ua.QualifiedName(name, rob), value, _VARIANT[name], dtype)
            self._nodes[key][name] = nodeid

        boolean, double, string = (
            node_id(ua.ObjectIds.Boolean),
            node_id(ua.ObjectIds.Double),
            node_id(ua.ObjectIds.String),
        )
        refs: list[tuple[ua.NodeId, int, ua.NodeId]] = []
        for r in self.robots:
            key = r.key
            self._nodes[key] = {}
            tag = _sanitise(f"{r.manufacturer}_{r.serial}")
            md = builder.obj(devices, f"md.{tag}", ua.QualifiedName(r.serial, sim), node_id(_MOTION_DEVICE_TYPE, rob))
            di_ident(md, r, r.serial, r.model)
            builder.prop(
                md,
                ua.QualifiedName("MotionDeviceCategory", rob),
                MOTION_DEVICE_CATEGORIES[r.category],
                ua.VariantType.Int32,
                node_id(_MOTION_DEVICE_CATEGORY_ENUM, rob),
            )
            builder.obj(md, f"md.{tag}.Axes", ua.QualifiedName("Axes", rob), folder)
            builder.obj(md, f"md.{tag}.PowerTrains", ua.QualifiedName("PowerTrains", rob), folder)
            mps = builder.obj(md, f"md.{tag}.ParameterSet", ua.QualifiedName("ParameterSet", di))
            var(mps, ON_PATH, key, boolean)
            var(mps, IN_CONTROL, key, boolean)
            var(mps, SPEED_OVERRIDE, key, double)
            if with_state_machines:
                blocks = builder.obj(
                    md, f"md.{tag}.MachineryBuildingBlocks", ua.QualifiedName("MachineryBuildingBlocks", mach), folder
                )
                state_machine(
                    blocks,
                    f"md.{tag}.MachineryItemState",
                    ua.QualifiedName("MachineryItemState", mach),
                    node_id(_MACHINERY_ITEM_STATE_TYPE, mach),
                    key,
                    MACHINERY_ITEM_STATE,
                    machinery_ids,
                )

            ctl = builder.obj(
                controllers,
                f"ctl.{tag}",
                ua.QualifiedName(f"Controller_{r.serial}", sim),
                node_id(_CONTROLLER_TYPE, rob),
            )
            di_ident(ctl, r, f"{r.serial}-C", f"{r.model} controller")
            user = builder.obj(
                ctl,
                f"ctl.{tag}.CurrentUser",
                ua.QualifiedName("CurrentUser", rob),
                node_id(_USER_TYPE, rob),
            )
            builder.prop(user, ua.QualifiedName("Level", rob), "operator", ua.VariantType.String)
            builder.obj(ctl, f"ctl.{tag}.Software", ua.QualifiedName("Software", rob), folder)
            if with_state_machines:
                sysop = builder.obj(
                    ctl,
                    f"ctl.{tag}.SystemOperation",
                    ua.QualifiedName("SystemOperation", rob),
                    node_id(_SYSTEM_OPERATION_TYPE, rob),
                    ref=ua.ObjectIds.HasAddIn,
                )
                state_machine(
                    sysop,
                    f"ctl.{tag}.SystemOperationStateMachine",
                    ua.QualifiedName("SystemOperationStateMachine", rob),
                    node_id(_SYSTEM_OPERATION_STATE_MACHINE_TYPE, rob),
                    key,
                    OPERATION_STATE,
                    operation_ids,
                )
            cps = builder.obj(ctl, f"ctl.{tag}.ParameterSet", ua.QualifiedName("ParameterSet", di))
            var(cps, TOTAL_POWER_ON_TIME, key, node_id(ua.ObjectIds.DurationString))
            var(cps, TOTAL_ENERGY_CONSUMPTION, key, double)
            tcs = builder.obj(ctl, f"ctl.{tag}.TaskControls", ua.QualifiedName("TaskControls", rob), folder)
            task = builder.obj(
                tcs,
                f"task.{tag}",
                ua.QualifiedName(f"Task_{r.serial}", sim),
                node_id(_TASK_CONTROL_TYPE, rob),
            )
            builder.prop(
                task,
                ua.QualifiedName("ComponentName", di),
                ua.LocalizedText(f"Task of {r.serial}"),
                ua.VariantType.LocalizedText,
            )
            tps = builder.obj(task, f"task.{tag}.ParameterSet", ua.QualifiedName("ParameterSet", di))
            var(tps, TASK_PROGRAM_NAME, key, string)
            var(tps, TASK_PROGRAM_LOADED, key, boolean)
            var(tps, EXECUTION_MODE, key, node_id(_EXECUTION_MODE_ENUM, rob))

            st = builder.obj(
                safety,
                f"safety.{tag}",
                ua.QualifiedName(f"SafetyState_{r.serial}", sim),
                node_id(_SAFETY_STATE_TYPE, rob),
            )
            sps = builder.obj(st, f"safety.{tag}.ParameterSet", ua.QualifiedName("ParameterSet", di))
            var(sps, OPERATIONAL_MODE, key, node_id(_OPERATIONAL_MODE_ENUM, rob))
            var(sps, EMERGENCY_STOP, key, boolean)
            var(sps, PROTECTIVE_STOP, key, boolean)

            builder.prop(
                md,
                ua.QualifiedName("TaskControlReference", rob),
                task,
                ua.VariantType.NodeId,
                node_id(ua.ObjectIds.NodeId),
                typedef=ua.ObjectIds.BaseDataVariableType,
            )
            refs += [(ctl, _CONTROLS, md), (task, _CONTROLS, md), (ctl, _HAS_SAFETY_STATES, st)]
        await builder.commit(server)
        items = []
        for source, reftype, target in refs:
            item = ua.AddReferencesItem()
            item.SourceNodeId, item.TargetNodeId = source, target
            item.ReferenceTypeId = node_id(reftype, rob)
            item.IsForward = True
            item.TargetNodeClass = ua.NodeClass.Object
            items.append(item)
        for status in await server.iserver.isession.add_references(items):
            status.check()

    async def _build_vendor(self, server: Server) -> None:
        idx = await server.register_namespace(VENDOR_NS)
        builder = _Builder(idx)
        cell = builder.obj(
            node_id(ua.ObjectIds.ObjectsFolder),
            "Cell",
            ua.QualifiedName("Cell", idx),
            ref=ua.ObjectIds.Organizes,
        )
        for r in self.robots:
            tag = _sanitise(f"{r.manufacturer}_{r.serial}")
            robot = builder.obj(cell, f"Robot.{tag}", ua.QualifiedName(f"Robot_{r.serial}", idx))
            s = ua.VariantType.String
            string = node_id(ua.ObjectIds.String)
            builder.var(robot, ua.QualifiedName("Manufacturer", idx), r.manufacturer, s, string)
            builder.var(robot, ua.QualifiedName("Serial", idx), r.serial, s, string)
            builder.var(robot, ua.QualifiedName("Model", idx), r.model, s, string)
            self._nodes[r.key] = {}
            for name, value in VENDOR_SIGNALS_FOR_STATE[State.IDLE].items():
                vt = _VENDOR_VARIANT[name]
                dtype = node_id(ua.ObjectIds.Boolean if vt is ua.VariantType.Boolean else ua.ObjectIds.String)
                self._nodes[r.key][name] = builder.var(robot, ua.QualifiedName(name, idx), value, vt, dtype)
        await builder.commit(server)

    # -- behaviour --------------------------------------------------------------------

    def _require(self, robot_key: str) -> tuple[Server, dict[str, ua.NodeId]]:
        if self._server is None:
            raise RuntimeError("the simulated controller is not running; use 'async with OpcUaController(...)'")
        nodes = self._nodes.get(robot_key)
        if nodes is None:
            raise KeyError(f"no robot {robot_key!r} on controller {self.name}; have {', '.join(self._nodes)}")
        return self._server, nodes

    async def _write(
        self, server: Server, ts: datetime, writes: list[tuple[ua.NodeId, ua.Variant | None, ua.StatusCode | None]]
    ) -> None:
        """Write ``(node, value, status)`` triples, all stamped ``ts``.

        No await in here suspends (asyncua's server-side write and subscription enqueue
        are synchronous in effect), so the whole batch lands in one publish response.
        A signal whose value and status stay the same is not written: a subscriber would
        get no notification for it anyway (DataChangeTrigger StatusValue), and a state
        change then costs one or two writes instead of eight, as on a real controller.
        """
        aspace = server.iserver.aspace
        written = self._written
        for nodeid, value, status in writes:
            key = (value.Value if value is not None else None, status.value if status is not None else 0)
            if written.get(nodeid) == key:
                continue
            result = await aspace.write_attribute_value(nodeid, ua.AttributeIds.Value, _dv(value, ts, status))
            result.check()
            written[nodeid] = key

    async def set_state(self, robot_key: str, state: State, ts: datetime) -> None:
        """Write the signals that express ``state``, all with SourceTimestamp ``ts``.

        OFFLINE writes BadCommunicationError to every state signal (values become null).
        Signals that already have the value are left alone. On the default variant the
        state machines are written first, in the same batch (see the module docstring).
        """
        server, nodes = self._require(robot_key)
        robotics = self.variant != "vendor"
        table = SIGNALS_FOR_STATE if robotics else VENDOR_SIGNALS_FOR_STATE
        variants = _VARIANT if robotics else _VENDOR_VARIANT
        writes: list[tuple[ua.NodeId, ua.Variant | None, ua.StatusCode | None]] = []
        if robot_key in self._state_ids:
            self._state_machine_writes(robot_key, STATE_MACHINES_FOR_STATE[state], writes)
        if state is State.OFFLINE:
            names = STATE_SIGNALS if robotics else tuple(_VENDOR_VARIANT)
            bad = ua.StatusCode(cast(Any, ua.StatusCodes.BadCommunicationError))
            for name in names:
                writes.append((nodes[name], None, bad))
        else:
            signals = dict(table[state])
            if robotics:
                loaded = signals[TASK_PROGRAM_LOADED]
                signals[TASK_PROGRAM_NAME] = "MAIN" if loaded else ""
            for name, value in signals.items():
                writes.append((nodes[name], ua.Variant(value, variants[name]), None))
        await self._write(server, ts, writes)

    def _state_machine_writes(
        self,
        robot_key: str,
        states: Mapping[str, str | None],
        writes: list[tuple[ua.NodeId, ua.Variant | None, ua.StatusCode | None]],
    ) -> None:
        """Append the CurrentState and CurrentState/Id writes for ``states`` (None: Bad)."""
        nodes = self._nodes[robot_key]
        for name, value in states.items():
            id_node, ids = self._state_ids[robot_key][name]
            if value is None:
                bad = ua.StatusCode(cast(Any, ua.StatusCodes.BadCommunicationError))
                writes += [(nodes[name], None, bad), (id_node, None, bad)]
            else:
                text = ua.Variant(ua.LocalizedText(value), ua.VariantType.LocalizedText)
                writes += [(nodes[name], text, None), (id_node, ua.Variant(ids[value], ua.VariantType.NodeId), None)]

    async def set_state_machines(
        self,
        robot_key: str,
        ts: datetime,
        machinery_item_state: str | None = None,
        operation_state: str | None = None,
    ) -> None:
        """Write only the state machines' CurrentState (and Id), leaving the signals alone.

        For tests in which the state machines disagree with the signals. ``None`` leaves
        that state machine as it is. Names: ``edge.normalise.MACHINERY_ITEM_STATES`` and
        ``OPERATION_STATES``. Only the default ``robotics`` variant has state machines.
        """
        server, _ = self._require(robot_key)
        if robot_key not in self._state_ids:
            raise NotImplementedError(f"the {self.variant} variant has no state machines")
        states: dict[str, str | None] = {}
        for name, value, allowed in (
            (MACHINERY_ITEM_STATE, machinery_item_state, MACHINERY_ITEM_STATES),
            (OPERATION_STATE, operation_state, OPERATION_STATES),
        ):
            if value is not None:
                if value not in allowed:
                    raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
                states[name] = value
        writes: list[tuple[ua.NodeId, ua.Variant | None, ua.StatusCode | None]] = []
        self._state_machine_writes(robot_key, states, writes)
        await self._write(server, ts, writes)

    async def set_bad(
        self, robot_key: str, signal: str, ts: datetime, status: int = ua.StatusCodes.BadSensorFailure
    ) -> None:
        """Give one signal of a robot a Bad status (the value becomes null), for fault tests."""
        server, nodes = self._require(robot_key)
        await self._write(server, ts, [(nodes[signal], None, ua.StatusCode(cast(Any, status)))])

    async def set_counters(self, robot_key: str, ts: datetime, power_on_s: float, energy_wh: float) -> None:
        """Write TotalPowerOnTime (as an ISO 8601 DurationString) and TotalEnergyConsumption [Wh]."""
        if self.variant == "vendor":
            raise NotImplementedError("the vendor variant has no counters")
        server, nodes = self._require(robot_key)
        power = ua.Variant(format_duration_s(power_on_s), ua.VariantType.String)
        energy = ua.Variant(float(energy_wh), ua.VariantType.Double)
        await self._write(
            server, ts, [(nodes[TOTAL_POWER_ON_TIME], power, None), (nodes[TOTAL_ENERGY_CONSUMPTION], energy, None)]
        )

    async def replay(self, schedules: Mapping[str, Schedule], clock: SimClock) -> None:
        """Write each robot's ``(ts, State)`` changes at wall time ``clock.wall_at(ts)``.

        Changes already due are written back to back; returns when all are written.
        """
        for key in schedules:
            self._require(key)
        async for ts, key, state in due_changes(schedules, clock):
            await self.set_state(key, state, ts)


_INITIAL: dict[str, object] = {
    TASK_PROGRAM_NAME: "MAIN",
    EXECUTION_MODE: EXECUTION_CONTINUOUS,
    TOTAL_POWER_ON_TIME: "PT0S",
    TOTAL_ENERGY_CONSUMPTION: 0.0,
}


_WIDE_PARENT = 32
"""A parent with more children than this in one batch is added to without asyncua's scans."""


class _Builder:
    """Collects AddNodesItems and adds them in one batch (fast for hundreds of robots)."""

    def __init__(self, ns: int) -> None:
        self.ns = ns
        self.items: list[ua.AddNodesItem] = []
        self._auto = 0

    def _item(
        self,
        parent: ua.NodeId,
        nodeid: ua.NodeId,
        bname: ua.QualifiedName,
        cls: ua.NodeClass,
        ref: int,
        typedef: ua.NodeId,
    ) -> ua.AddNodesItem:
        item = ua.AddNodesItem()
        item.ParentNodeId = parent
        item.RequestedNewNodeId = nodeid
        item.BrowseName = bname
        item.NodeClass = cls
        item.ReferenceTypeId = node_id(ref)
        item.TypeDefinition = typedef
        self.items.append(item)
        return item

    def obj(
        self,
        parent: ua.NodeId,
        ident: str,
        bname: ua.QualifiedName,
        typedef: ua.NodeId | None = None,
        ref: int = ua.ObjectIds.HasComponent,
    ) -> ua.NodeId:
        nodeid = node_id(ident, self.ns)
        item = self._item(
            parent, nodeid, bname, ua.NodeClass.Object, ref, typedef or node_id(ua.ObjectIds.BaseObjectType)
        )
        attrs = ua.ObjectAttributes()
        attrs.DisplayName = ua.LocalizedText(bname.Name)
        attrs.EventNotifier = 0
        item.NodeAttributes = attrs
        return nodeid

    def _variable(
        self,
        parent: ua.NodeId,
        bname: ua.QualifiedName,
        value: object,
        vt: ua.VariantType,
        dtype: ua.NodeId | None,
        ref: int,
        typedef: int,
    ) -> ua.NodeId:
        self._auto += 1
        ident = f"{parent.Identifier}.{bname.Name}" if isinstance(parent.Identifier, str) else f"v{self._auto}"
        nodeid = node_id(ident, self.ns)
        item = self._item(parent, nodeid, bname, ua.NodeClass.Variable, ref, node_id(typedef))
        attrs = ua.VariableAttributes()
        attrs.DisplayName = ua.LocalizedText(bname.Name)
        attrs.DataType = dtype or node_id(vt.value)
        attrs.Value = ua.Variant(value, vt)
        attrs.ValueRank = ua.ValueRank.Scalar
        attrs.AccessLevel = ua.AccessLevel.CurrentRead.mask
        attrs.UserAccessLevel = ua.AccessLevel.CurrentRead.mask
        item.NodeAttributes = attrs
        return nodeid

    def var(
        self,
        parent: ua.NodeId,
        bname: ua.QualifiedName,
        value: object,
        vt: ua.VariantType,
        dtype: ua.NodeId | None = None,
    ) -> ua.NodeId:
        return self._variable(
            parent, bname, value, vt, dtype, ua.ObjectIds.HasComponent, ua.ObjectIds.BaseDataVariableType
        )

    def prop(
        self,
        parent: ua.NodeId,
        bname: ua.QualifiedName,
        value: object,
        vt: ua.VariantType,
        dtype: ua.NodeId | None = None,
        typedef: int = ua.ObjectIds.PropertyType,
    ) -> ua.NodeId:
        ref = ua.ObjectIds.HasProperty if typedef == ua.ObjectIds.PropertyType else ua.ObjectIds.HasComponent
        return self._variable(parent, bname, value, vt, dtype, ref, typedef)

    async def commit(self, server: Server) -> None:
        # asyncua checks every new child against all references of its parent (BrowseName
        # and duplicate-reference scans), so a folder with one child per robot costs
        # O(robots^2): 6 s for 1,000 robots, 47 s for 4,000. The builder's node ids are
        # unique by construction, so the children of wide parents are held aside while
        # their siblings are added and appended afterwards, after the parent's own references.
        aspace = server.iserver.aspace
        session = server.iserver.isession
        fanout = Counter(item.ParentNodeId for item in self.items)
        wide = {parent for parent, n in fanout.items() if n > _WIDE_PARENT}
        own: dict[ua.NodeId, list[ua.ReferenceDescription]] = {}
        held: dict[ua.NodeId, list[ua.ReferenceDescription]] = {}
        try:
            for item in self.items:
                parent = item.ParentNodeId
                data = aspace.get(parent) if parent in wide else None
                if data is not None:
                    if parent not in own:
                        own[parent], held[parent] = data.references, []
                    data.references = list(own[parent])
                (result,) = await session.add_nodes([item])
                if data is not None:
                    held[parent] += data.references[len(own[parent]) :]
                if not result.StatusCode.is_good():
                    raise RuntimeError(
                        f"could not add {item.BrowseName.to_string()} under {item.ParentNodeId}: {result.StatusCode}"
                    )
        finally:
            for parent, refs in own.items():
                aspace[parent].references = refs + held[parent]
        self.items = []
