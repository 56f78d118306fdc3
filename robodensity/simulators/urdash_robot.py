"""A simulated Universal Robots Dashboard Server (TCP, one ASCII line per command).

Written from ``../shared/reference/protocols/ur-dashboard-rtde.md`` §1 (never from the
edge): the welcome line on connect, the query commands and their reply patterns, the
robot-mode and safety-status names, and which software versions know which command
(``version``: "3.15" is a CB3, "5.11" an e-Series). How each canonical state looks::

    state           robotmode   safety (status/mode)   programState       operational mode
    EXECUTING       RUNNING     NORMAL                 PLAYING cell.urp   AUTOMATIC
    IDLE            RUNNING     NORMAL                 STOPPED cell.urp   AUTOMATIC
    FAULT           RUNNING     PROTECTIVE_STOP        PAUSED cell.urp    AUTOMATIC
    OUT_OF_SERVICE  POWER_OFF   NORMAL                 STOPPED cell.urp   MANUAL
    OFFLINE         the server is not listening (powered off)

Commands that would move or power the robot are refused (this is a read-only test
double). Fault injection: ``garbage`` (nonsense replies), ``cut`` (a reply without its
line end, then the connection closes), ``delay_s`` (a slow controller), ``banner``
(another welcome line), ``power_off()`` / ``power_on()``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

from robodensity.core.wire import State
from robodensity.simulators.behaviour import Schedule, SimClock, due_changes
from robodensity.simulators.device import SwitchedDevice

PORT = 29999
BANNER = "Connected: Universal Robots Dashboard Server"
PROGRAM = "cell.urp"

WIRE: dict[State, tuple[str, str, str, str]] = {
    State.EXECUTING: ("RUNNING", "NORMAL", "PLAYING", "AUTOMATIC"),
    State.IDLE: ("RUNNING", "NORMAL", "STOPPED", "AUTOMATIC"),
    State.FAULT: ("RUNNING", "PROTECTIVE_STOP", "PAUSED", "AUTOMATIC"),
    State.OUT_OF_SERVICE: ("POWER_OFF", "NORMAL", "STOPPED", "MANUAL"),
}
"""State -> (robot mode, safety, program state, operational mode)."""
_ACTIONS = ("load", "play", "stop", "pause", "power", "brake", "unlock", "close", "restart", "shutdown")


class UrDashRobot(SwitchedDevice):
    """One robot's Dashboard Server on 127.0.0.1 (``port`` 0: a free one)."""

    def __init__(self, serial: str, model: str = "UR10", version: str = "5.11", port: int = 0) -> None:
        self.serial, self.model, self.version, self.port = serial, model, version, port
        self.state = State.IDLE
        self.banner = BANNER
        self.garbage = False
        self.cut = False
        self.delay_s = 0.0
        self.connections = 0
        self.commands = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        return f"urdash://127.0.0.1:{self.port}"

    @property
    def powered(self) -> bool:
        return self._server is not None

    async def power_on(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def power_off(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    def set_state(self, state: State) -> None:
        self.state = state

    def _at_least(self, cb3: str, eseries: str) -> bool:
        """Whether this software version knows a command (the protocol file's min. versions)."""
        want = eseries if self.version.startswith("5") else cb3
        return tuple(int(x) for x in self.version.split(".")) >= tuple(int(x) for x in want.split("."))

    def reply(self, command: str) -> str:
        mode, safety, program, operational = WIRE.get(self.state, WIRE[State.IDLE])
        cmd = command.strip()
        low = cmd.lower()
        if low == "robotmode":
            return f"Robotmode: {mode}"
        if low == "safetymode":
            return f"Safetymode: {safety}"
        if low == "safetystatus" and self._at_least("99", "5.4"):
            return f"Safetystatus: {safety}"
        if low == "programstate":
            return f"{program} {PROGRAM}"
        if low == "running":
            return f"Program running: {'true' if program == 'PLAYING' else 'false'}"
        if low == "get loaded program":
            return f"Loaded program: /programs/{PROGRAM}"
        if low == "polyscopeversion":
            return f"URSoftware {self.version}.1.108318 (Jun 22 2021)"
        if low == "get serial number" and self._at_least("3.12", "5.6"):
            return self.serial
        if low == "get robot model" and self._at_least("3.12", "5.6"):
            return self.model
        if low == "get operational mode" and self._at_least("99", "5.6"):
            return operational
        if low.startswith(_ACTIONS):
            return f"Failed to execute: {cmd}"  # read-only double: nothing moves here
        return f"could not understand: '{cmd}'"  # the real text is unconfirmed

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            writer.write(self.banner.encode() + b"\n")
            await writer.drain()
            while True:
                line = await reader.readline()
                if not line:
                    break
                self.commands += 1
                if line.strip().lower() == b"quit":
                    writer.write(b"Disconnected\n")
                    break
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                text = "\x07#&%?? 17 ~~" if self.garbage else self.reply(line.decode("ascii", "replace"))
                if self.cut:
                    writer.write(text.encode()[: max(1, len(text) // 2)])
                    await writer.drain()
                    break
                writer.write(text.encode() + b"\n")
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()


async def replay(robots: Mapping[str, UrDashRobot], schedules: Mapping[str, Schedule], clock_: SimClock) -> None:
    """Set each robot's state when its change is due (OFFLINE powers it off, anything else on)."""
    async for _, key, state in due_changes(schedules, clock_):
        robot = robots[key]
        if state is State.OFFLINE:
            await robot.power_off()
            continue
        if not robot.powered:
            await robot.power_on()
        robot.set_state(state)
