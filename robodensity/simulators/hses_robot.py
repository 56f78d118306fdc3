"""A simulated Yaskawa controller answering High-Speed Ethernet Server requests over UDP.

Written from ``../shared/reference/protocols/yaskawa-hses.md`` (never from the edge): the
32-byte ``YERC`` header with the request id echoed (§2), reply status codes (§3), and the
read commands 0x70 alarms, 0x72 status, 0x88 management time, 0x89 system information (§4).
How each canonical state looks on the wire (the protocol file's bits)::

    state           data 1 (0x72)                   data 2 (0x72)         0x70 instance 1
    EXECUTING       play, running, auto-continuous  servo on              no alarm
    IDLE            play                            servo on              no alarm
    FAULT           play                            alarm (servo off)     code 4107
    OUT_OF_SERVICE  teach                           servo on              no alarm
    OFFLINE         the controller does not answer (powered off)

Management times (0x88) grow with the simulated time of each state: control power-on in
every state, servo on while servo is on, playback while in play, motion and operation
(application 1) while EXECUTING. Fault injection: ``loss`` (requests dropped),
``duplicate`` (every reply sent twice), ``reorder`` (each reply held back and sent after
the next one), ``garbage`` / ``short`` (replies that are not HSES), ``delay_s`` (a slow
controller), ``power_off()`` / ``power_on()``.
"""

from __future__ import annotations

import asyncio
import random
import struct
from collections.abc import Callable, Mapping
from datetime import datetime

from robodensity.core import clock
from robodensity.core.wire import State
from robodensity.simulators.behaviour import Schedule, SimClock, due_changes

PORT = 10040
ALARM_CODE, ALARM_NAME = 4107, "OUT OF RANGE (ABSO DATA)"
SOFTWARE, MODEL = "YAS4.10.00A-00", "GP25-A00"

_STEP, _CYCLE, _AUTO, _RUNNING, _GUARD, _TEACH, _PLAY, _REMOTE = (1 << i for i in range(8))
_HOLD_PP, _HOLD_EXT, _HOLD_CMD, _ALARM, _ERROR, _SERVO = (1 << i for i in range(1, 7))

WIRE: dict[State, tuple[int, int, bool]] = {
    State.EXECUTING: (_PLAY | _RUNNING | _AUTO | _REMOTE, _SERVO, False),
    State.IDLE: (_PLAY | _REMOTE, _SERVO, False),
    State.FAULT: (_PLAY | _REMOTE, _ALARM, True),
    State.OUT_OF_SERVICE: (_TEACH, _SERVO, False),
}
"""State -> (data 1, data 2, alarm active), from the protocol file's bit table."""


def _header(request_id: int, size: int, service: int, status: int, added: int | None) -> bytes:
    return (
        b"YERC"
        + struct.pack("<HHBBBBI", 32, size, 3, 1, 1, request_id, 0x80000000)
        + b"99999999"
        + struct.pack("<BBBBHH", service | 0x80, status, 0 if added is None else 1, 0, added or 0, 0)
    )


def _fixed(text: str, n: int) -> bytes:
    return text.encode("utf-8")[:n].ljust(n, b"\0")


def format_elapsed(seconds: float) -> str:
    """Elapsed time as in the protocol file's example ``000000:00'00`` (hours:minutes'seconds)."""
    s = int(seconds)
    return f"{s // 3600:06d}:{s % 3600 // 60:02d}'{s % 60:02d}"


class HsesRobot(asyncio.DatagramProtocol):
    """One controller with one robot, on 127.0.0.1 (``port`` 0: a free one)."""

    def __init__(self, serial: str, port: int = 0, now: Callable[[], datetime] = clock.now, seed: int = 0) -> None:
        self.serial = serial
        self.port = port
        self.now = now
        self.state = State.IDLE
        self.requests = 0
        self.loss = 0.0
        self.duplicate = False
        self.reorder = False
        self.garbage = False
        self.short = False
        self.delay_s = 0.0
        self.times = dict.fromkeys(("power", "servo", "play", "motion", "operation"), 0.0)
        self._since: datetime | None = None
        self._held: tuple[bytes, tuple[str, int]] | None = None
        self._rng = random.Random(seed)
        self._transport: asyncio.DatagramTransport | None = None

    # -- life
    @property
    def powered(self) -> bool:
        return self._transport is not None

    async def __aenter__(self) -> HsesRobot:
        await self.power_on()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.power_off()

    async def power_on(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", self.port))
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        self._since = self.now()

    def power_off(self) -> None:
        self._accumulate()
        self._since = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    @property
    def address(self) -> str:
        return f"hses://127.0.0.1:{self.port}"

    def set_state(self, state: State) -> None:
        self._accumulate()
        self.state = state

    def _accumulate(self) -> None:
        if self._since is None:
            return
        now = self.now()
        dt = max(0.0, (now - self._since).total_seconds())
        self._since = now
        d1, d2, _ = WIRE.get(self.state, (0, 0, False))
        self.times["power"] += dt
        self.times["servo"] += dt if d2 & _SERVO else 0.0
        self.times["play"] += dt if d1 & _PLAY else 0.0
        self.times["motion"] += dt if d1 & _RUNNING else 0.0
        self.times["operation"] += dt if d1 & _RUNNING else 0.0

    # -- protocol
    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        self.requests += 1
        if self._rng.random() < self.loss:
            return
        reply = self._answer(data)
        if reply is None:
            return
        if self.garbage:
            reply = bytes(self._rng.randrange(256) for _ in range(len(reply)))
        elif self.short:
            reply = reply[:20]
        if self.delay_s:
            asyncio.get_running_loop().call_later(self.delay_s, self._send, reply, addr)
        else:
            self._send(reply, addr)

    def _send(self, reply: bytes, addr: tuple[str, int]) -> None:
        if self._transport is None:
            return
        if self.reorder:
            held, self._held = self._held, (reply, addr)
            if held is not None:
                self._transport.sendto(held[0], held[1])  # the previous request's answer, late
            return
        self._transport.sendto(reply, addr)
        if self.duplicate:
            self._transport.sendto(reply, addr)

    def _answer(self, data: bytes) -> bytes | None:
        if len(data) < 32 or data[:4] != b"YERC" or data[10] != 0:
            return None  # not a request: a real controller ignores it
        request_id = data[11]
        command, instance, attribute, service = struct.unpack_from("<HHBB", data, 24)
        if service not in (0x01, 0x0E):
            return _header(request_id, 0, service, 0x1F, 0xA000)
        payload = self._payload(command, instance)
        if payload is None:
            return _header(request_id, 0, service, 0x08, None)
        if payload == b"":
            return _header(request_id, 0, service, 0x28, None)
        if service == 0x0E and attribute:
            payload = self._single(command, attribute, payload)
        return _header(request_id, len(payload), service, 0, None) + payload

    def _payload(self, command: int, instance: int) -> bytes | None:
        """None: unknown command; b"": no such instance."""
        self._accumulate()
        d1, d2, alarm = WIRE.get(self.state, (0, 0, False))
        if command == 0x72:
            return struct.pack("<II", d1, d2) if instance == 1 else b""
        if command == 0x70:
            if not 1 <= instance <= 4:
                return b""
            code, name = (ALARM_CODE, ALARM_NAME) if alarm and instance == 1 else (0, "")
            return (
                struct.pack("<III", code, 0, 1 if code else 0)
                + _fixed("2026/03/02 08:00" if code else "", 16)
                + (_fixed(name, 32))
            )
        if command == 0x88:
            key = {1: "power", 10: "servo", 110: "play", 210: "motion", 301: "operation"}.get(instance)
            if key is None:
                return b""
            return _fixed("2026/03/02 08:00", 16) + _fixed(format_elapsed(self.times[key]), 12)
        if command == 0x89:
            if instance not in (11, 101):
                return b""
            return _fixed(SOFTWARE, 24) + _fixed(MODEL if instance == 11 else "GENERAL", 16) + _fixed("12.34", 8)
        return None

    @staticmethod
    def _single(command: int, attribute: int, payload: bytes) -> bytes:
        if command == 0x72:
            return payload[(attribute - 1) * 4 : attribute * 4]
        return payload


async def replay(robots: Mapping[str, HsesRobot], schedules: Mapping[str, Schedule], clock_: SimClock) -> None:
    """Set each robot's state when its change is due (OFFLINE powers it off, anything else on)."""
    async for _, key, state in due_changes(schedules, clock_):
        robot = robots[key]
        if state is State.OFFLINE:
            robot.power_off()
            continue
        if not robot.powered:
            await robot.power_on()
        robot.set_state(state)
