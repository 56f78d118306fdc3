"""The simulated controller: the server's life cycle and the writes that express robot states."""

from __future__ import annotations

import gc
import logging
import socket
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, cast

from asyncua import Server, ua

from robodensity.core.wire import State
from robodensity.simulators.behaviour import Schedule, SimClock, due_changes
from robodensity.simulators.opcua_controller import model as m
from robodensity.simulators.opcua_controller.robotics import StateIds, build_robotics, load_nodesets
from robodensity.simulators.opcua_controller.security import Access
from robodensity.simulators.opcua_controller.vendor import VENDOR_SIGNALS_FOR_STATE, VENDOR_VARIANT, build_vendor

log = logging.getLogger(__name__)

VARIANTS = ("robotics", "robotics10", "vendor")
Write = tuple[ua.NodeId, ua.Variant | None, ua.StatusCode | None]
"""``(node, value, status)``: a value, or a status (then the value is null)."""
_BAD_COMMUNICATION = ua.StatusCode(cast(Any, ua.StatusCodes.BadCommunicationError))


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _dv(
    value: ua.Variant | None, ts: datetime, status: ua.StatusCode | None = None, offset: timedelta = timedelta(0)
) -> ua.DataValue:
    """A DataValue stamped with simulated time ``ts`` (plus the device clock's ``offset``) at the
    source and wall time at the server."""
    now = datetime.now(ts.tzinfo)
    ts = ts + offset
    if status is not None:
        return ua.DataValue(StatusCode=status, SourceTimestamp=cast(Any, ts), ServerTimestamp=cast(Any, now))
    return ua.DataValue(value, SourceTimestamp=cast(Any, ts), ServerTimestamp=cast(Any, now))


def _check_robots(robots: Sequence[m.SimRobot]) -> tuple[m.SimRobot, ...]:
    keys = [r.key for r in robots]
    if len(set(keys)) != len(keys):
        raise ValueError("robots must have distinct manufacturer/serial pairs")
    for r in robots:
        if r.category not in m.MOTION_DEVICE_CATEGORIES:
            raise ValueError(f"category must be one of {', '.join(m.MOTION_DEVICE_CATEGORIES)}; got {r.category!r}")
    return tuple(robots)


class OpcUaController:
    """One simulated robot cell controller; ``async with`` starts and stops the server."""

    def __init__(
        self,
        robots: Sequence[m.SimRobot],
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
        clock_offset_s: float = 0.0,
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
        without security a client sends no certificate.

        ``clock_offset_s`` [s]: how far the controller's own clock runs off real time (positive:
        fast). The SourceTimestamp is "the timestamp that was applied to a Variable value by the
        data source", always by the same physical clock (OPC 10000-4 1.05, 7.11.3), and it and
        the ServerTimestamp "may originate from different clocks that have no synchronization"
        (OPC 10000-3, 8.37): every SourceTimestamp written is ``ts + clock_offset_s``, the
        ServerTimestamp stays this host's clock. Fault injection for the edge's clock truth."""
        self.access = Access(
            certificate, private_key, allow_anonymous, dict(users) if users is not None else None, trusted_clients
        )
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}; got {variant!r}")
        self.robots = _check_robots(robots)
        self.host = host
        self.port = port
        self.variant = variant
        self.name = name
        self.clock_offset = timedelta(seconds=clock_offset_s)
        self.url = ""
        self._server: Server | None = None
        # robot key -> signal name -> NodeId of the variable that carries it
        self._nodes: dict[str, dict[str, ua.NodeId]] = {}
        # robot key -> state machine signal -> (CurrentState/Id node, state name -> state NodeId)
        self._state_ids: dict[str, StateIds] = {}
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
        server = Server(user_manager=self.access.user_manager())
        await server.init()
        server.set_endpoint(f"opc.tcp://{self.host}:{port}")
        server.set_server_name(f"RoboDensity simulated controller {self.name}")
        await server.set_application_uri(m.APPLICATION_URI)
        await self.access.apply(server)
        self.timings["init"] = time.perf_counter() - t0
        # Generational GC passes over the growing address space were half of the build time.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            await self._build(server)
        finally:
            if gc_was_enabled:
                gc.enable()
        if self.clock_offset:
            await self._stamp_initial_values(server)
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

    async def _build(self, server: Server) -> None:
        t1 = time.perf_counter()
        if self.variant == "vendor":
            self._nodes = await build_vendor(server, self.robots)
        else:
            await load_nodesets(server)
            self.timings["nodesets"] = time.perf_counter() - t1
            t1 = time.perf_counter()
            nodes = await build_robotics(server, self.name, self.robots, state_machines=self.variant == "robotics")
            self._nodes, self._state_ids = nodes.signals, nodes.state_ids
        self.timings["address_space"] = time.perf_counter() - t1

    async def _stamp_initial_values(self, server: Server) -> None:
        """The robots' initial values (added with the nodes, stamped with this host's clock) get
        SourceTimestamps from the controller's own clock, as every later write does."""
        aspace = server.iserver.aspace
        now = datetime.now(UTC)
        nodes = [n for signals in self._nodes.values() for n in signals.values()]
        nodes += [id_node for machines in self._state_ids.values() for id_node, _ in machines.values()]
        for nodeid in nodes:
            dv = aspace.read_attribute_value(nodeid, ua.AttributeIds.Value)
            stamped = ua.DataValue(
                dv.Value, StatusCode=dv.StatusCode, SourceTimestamp=cast(Any, now + self.clock_offset)
            )
            (await aspace.write_attribute_value(nodeid, ua.AttributeIds.Value, stamped)).check()

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop()

    # -- behaviour --------------------------------------------------------------------

    def _require(self, robot_key: str) -> tuple[Server, dict[str, ua.NodeId]]:
        if self._server is None:
            raise RuntimeError("the simulated controller is not running; use 'async with OpcUaController(...)'")
        nodes = self._nodes.get(robot_key)
        if nodes is None:
            raise KeyError(f"no robot {robot_key!r} on controller {self.name}; have {', '.join(self._nodes)}")
        return self._server, nodes

    async def _write(self, server: Server, ts: datetime, writes: list[Write]) -> None:
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
            result = await aspace.write_attribute_value(
                nodeid, ua.AttributeIds.Value, _dv(value, ts, status, self.clock_offset)
            )
            result.check()
            written[nodeid] = key

    async def set_state(self, robot_key: str, state: State, ts: datetime) -> None:
        """Write the signals that express ``state``, all with SourceTimestamp ``ts``.

        OFFLINE writes BadCommunicationError to every state signal (values become null).
        Signals that already have the value are left alone. On the default variant the
        state machines are written first, in the same batch (see the package docstring).
        """
        server, nodes = self._require(robot_key)
        writes: list[Write] = []
        if robot_key in self._state_ids:
            self._state_machine_writes(robot_key, m.STATE_MACHINES_FOR_STATE[state], writes)
        if self.variant == "vendor":
            names, variants, table = tuple(VENDOR_VARIANT), VENDOR_VARIANT, VENDOR_SIGNALS_FOR_STATE
        else:
            names, variants, table = m.STATE_SIGNALS, m.VARIANT, m.SIGNALS_FOR_STATE
        if state is State.OFFLINE:
            writes += [(nodes[name], None, _BAD_COMMUNICATION) for name in names]
        else:
            signals = dict(table[state])
            if self.variant != "vendor":
                signals[m.TASK_PROGRAM_NAME] = "MAIN" if signals[m.TASK_PROGRAM_LOADED] else ""
            writes += [(nodes[name], ua.Variant(value, variants[name]), None) for name, value in signals.items()]
        await self._write(server, ts, writes)

    def _state_machine_writes(self, robot_key: str, states: Mapping[str, str | None], writes: list[Write]) -> None:
        """Append the CurrentState and CurrentState/Id writes for ``states`` (None: Bad)."""
        nodes = self._nodes[robot_key]
        for name, value in states.items():
            id_node, ids = self._state_ids[robot_key][name]
            if value is None:
                writes += [(nodes[name], None, _BAD_COMMUNICATION), (id_node, None, _BAD_COMMUNICATION)]
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
        that state machine as it is. Names: the state browse names of
        MachineryItemState_StateMachineType (``model.MACHINERY_ITEM_STATE_IDS``) and
        SystemOperationStateMachineType (``model.OPERATION_STATE_IDS``). Only the default
        ``robotics`` variant has state machines.
        """
        server, _ = self._require(robot_key)
        if robot_key not in self._state_ids:
            raise NotImplementedError(f"the {self.variant} variant has no state machines")
        states: dict[str, str | None] = {}
        for name, value, allowed in (
            (m.MACHINERY_ITEM_STATE, machinery_item_state, m.MACHINERY_ITEM_STATE_IDS),
            (m.OPERATION_STATE, operation_state, m.OPERATION_STATE_IDS),
        ):
            if value is not None:
                if value not in allowed:
                    raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
                states[name] = value
        writes: list[Write] = []
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
        power = ua.Variant(m.duration_string(power_on_s), ua.VariantType.String)
        energy = ua.Variant(float(energy_wh), ua.VariantType.Double)
        await self._write(
            server,
            ts,
            [(nodes[m.TOTAL_POWER_ON_TIME], power, None), (nodes[m.TOTAL_ENERGY_CONSUMPTION], energy, None)],
        )

    async def replay(self, schedules: Mapping[str, Schedule], clock: SimClock) -> None:
        """Write each robot's ``(ts, State)`` changes at wall time ``clock.wall_at(ts)``.

        Changes already due are written back to back; returns when all are written.
        """
        for key in schedules:
            self._require(key)
        async for ts, key, state in due_changes(schedules, clock):
            await self.set_state(key, state, ts)
