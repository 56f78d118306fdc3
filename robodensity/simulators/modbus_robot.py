"""Robots behind a Modbus TCP server (pymodbus), written from the protocol facts.

Two register layouts, each this module's own table (never the edge's profile files, so a
mapping mistake on one side shows on the other):

- ``estun``: an ESTUN ER-series controller as Modbus/TCP slave, holding registers
  40001-40100 as in ../shared/reference/protocols/estun-modbus.md section 1: 40002 speed,
  40004 low byte status bits (b0 manual, b1 auto, b2 remote, b3 enable, b4 run, b5 error,
  b6 program running, b7 moving), 40005-40014 project name (ASCII, first character in the
  low byte), 40019 = 0x0801 "ready for a command".
- ``cell_plc``: the generic layout a cell PLC publishes (documented for integrators):
  40001 mode (1 manual, 2 auto), 40002 status bits (b0 servo on, b1 running, b2 paused,
  b3 alarm, b4 e-stop, b5 protective stop, b6 moving), 40003 alarm code, 40004-40005
  cycles (u32, high word first), 40006-40007 power-on minutes (u32), 40008 program,
  40009-40016 serial (16 ASCII, high byte first), 40017-40024 model.

Each robot answers on its own unit id. Fault modes for tests: :meth:`power_off` /
:meth:`power_on` (the server goes away and comes back on the same port), ``hang`` (the
connection stays open, requests get no reply: a half-open or very slow device), and
``replies = "exception"`` (Modbus exception responses) or ``"short"`` (replies cut short).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from robodensity.core.wire import State
from robodensity.simulators.behaviour import Schedule, SimClock, due_changes

log = logging.getLogger(__name__)

Layout = Literal["estun", "cell_plc"]
REGISTERS = 100

# ESTUN 40004 low byte (offset 3), per state; 40002 (offset 1) speed.
_ESTUN_MANUAL, _ESTUN_AUTO, _ESTUN_ENABLE, _ESTUN_RUN = 1 << 0, 1 << 1, 1 << 3, 1 << 4
_ESTUN_ERROR, _ESTUN_PROGRAM, _ESTUN_MOVING = 1 << 5, 1 << 6, 1 << 7
ESTUN_STATUS = {
    State.EXECUTING: _ESTUN_AUTO | _ESTUN_ENABLE | _ESTUN_RUN | _ESTUN_PROGRAM | _ESTUN_MOVING,
    State.IDLE: _ESTUN_AUTO | _ESTUN_ENABLE,
    State.FAULT: _ESTUN_AUTO | _ESTUN_ERROR,
    State.OUT_OF_SERVICE: _ESTUN_MANUAL,
}
# cell PLC 40001 mode, 40002 bits (offset 1), 40003 alarm code (offset 2).
_PLC_SERVO, _PLC_RUNNING, _PLC_ALARM, _PLC_MOVING = 1 << 0, 1 << 1, 1 << 3, 1 << 6
PLC_STATUS = {
    State.EXECUTING: (2, _PLC_SERVO | _PLC_RUNNING | _PLC_MOVING, 0),
    State.IDLE: (2, _PLC_SERVO, 0),
    State.FAULT: (2, _PLC_ALARM, 1042),
    State.OUT_OF_SERVICE: (1, 0, 0),
}


@dataclass
class ModbusRobot:
    """One simulated robot at a unit id."""

    manufacturer: str
    serial: str
    unit: int
    model: str = "ER20"
    state: State = State.IDLE
    cycles: int = 0
    power_on_min: int = 0
    registers: list[int] = field(default_factory=lambda: [0] * REGISTERS)

    @property
    def key(self) -> str:
        return f"{self.manufacturer}/{self.serial}"


def _ascii(text: str, registers: int, low_first: bool) -> list[int]:
    raw = text.encode("ascii")[: registers * 2].ljust(registers * 2, b"\0")
    return list(struct.unpack(f"{'<' if low_first else '>'}{registers}H", raw))


def render(robot: ModbusRobot, layout: Layout) -> None:
    """Write the robot's state into its registers, as the controller (or PLC) would."""
    r = robot.registers
    if robot.state is State.OFFLINE:
        return  # a controller that is off does not answer at all (see ModbusController.hang)
    if layout == "estun":
        r[1] = 100 if robot.state is State.EXECUTING else 0
        r[3] = ESTUN_STATUS[robot.state]
        r[4:14] = _ascii(f"PRJ_{robot.serial}", 10, low_first=True)
        r[18] = 0x0801
    else:
        mode, bits, alarm = PLC_STATUS[robot.state]
        r[0], r[1], r[2] = mode, bits, alarm
        r[3], r[4] = robot.cycles >> 16, robot.cycles & 0xFFFF
        r[5], r[6] = robot.power_on_min >> 16, robot.power_on_min & 0xFFFF
        r[7] = 7 if robot.state is State.EXECUTING else 0
        r[8:16] = _ascii(robot.serial, 8, low_first=False)
        r[16:24] = _ascii(robot.model, 8, low_first=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ModbusController:
    """One Modbus TCP server with robots at unit ids; ``async with`` starts and stops it."""

    def __init__(
        self, robots: Sequence[ModbusRobot], layout: Layout = "estun", host: str = "127.0.0.1", port: int | None = None
    ) -> None:
        self.robots = {r.unit: r for r in robots}
        self.by_key = {r.key: r for r in robots}
        self.layout: Layout = layout
        self.host = host
        self.port = port or free_port()
        self.hang = False
        """Fault: requests get no reply (the TCP connection stays open)."""
        self.replies: Literal["ok", "exception", "short"] = "ok"
        """Fault: "exception" answers every read with a Modbus exception, "short" cuts replies short."""
        self.fault_units: set[int] | None = None
        """The units ``replies`` applies to; None: every unit."""
        self.requests = 0
        self._server: ModbusTcpServer | None = None
        self._unhang = asyncio.Event()
        for r in robots:
            render(r, layout)

    @property
    def url(self) -> str:
        return f"modbus://{self.host}:{self.port}"

    async def __aenter__(self) -> ModbusController:
        await self.power_on()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.set_hang(False)
        await self.power_off()

    async def power_on(self) -> None:
        """Start serving (again, on the same port)."""
        devices = [
            SimDevice(
                id=unit,
                simdata=[SimData(0, count=REGISTERS, values=0, datatype=DataType.REGISTERS)],
                action=functools.partial(self._action, unit),
            )
            for unit in self.robots
        ]
        self._server = ModbusTcpServer(devices, address=(self.host, self.port), trace_packet=self._trace)
        await self._server.serve_forever(background=True)

    async def power_off(self) -> None:
        """Fault: the controller is switched off: the port closes and open connections drop."""
        if self._server is not None:
            await self._server.shutdown()
            self._server = None

    def set_hang(self, on: bool) -> None:
        self.hang = on
        if on:
            self._unhang.clear()
        else:
            self._unhang.set()

    def set_state(self, key: str, state: State) -> None:
        robot = self.by_key[key]
        robot.state = state
        render(robot, self.layout)

    def advance_counters(self, key: str, cycles: int = 0, minutes: int = 0) -> None:
        robot = self.by_key[key]
        robot.cycles += cycles
        robot.power_on_min += minutes
        render(robot, self.layout)

    async def replay(self, schedules: Mapping[str, Schedule], clock: SimClock) -> None:
        """Set each robot's state when its simulated time comes; returns after the last change."""
        async for _ts, key, state in due_changes(schedules, clock):
            self.set_state(key, state)

    async def _action(
        self,
        unit: int,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        self.requests += 1
        if self.hang:
            await self._unhang.wait()
        if set_values is not None:
            return ExcCodes.ILLEGAL_FUNCTION  # the simulated robots are read-only
        if self.replies == "exception" and (self.fault_units is None or unit in self.fault_units):
            return ExcCodes.DEVICE_FAILURE
        robot = self.robots[unit]
        registers[:REGISTERS] = robot.registers
        return None

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if not sending or self.replies != "short" or len(data) < 12:
            return data
        # A well-framed reply whose byte count promises more registers than it carries.
        header, pdu = data[:7], data[7:9] + data[9:11]
        return header[:4] + struct.pack(">H", 1 + len(pdu)) + header[6:7] + pdu


def estun_robots(n: int, first_unit: int = 1, prefix: str = "ER") -> list[ModbusRobot]:
    return [ModbusRobot("ESTUN", f"{prefix}{first_unit + i:04d}", first_unit + i) for i in range(n)]


async def serve(robots: int, layout: Layout, port: int) -> None:  # pragma: no cover - used by the bench
    """Serve ``robots`` idle robots at units 1..n until cancelled."""
    async with ModbusController(estun_robots(robots), layout=layout, port=port):
        await asyncio.Event().wait()
