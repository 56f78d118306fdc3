"""Universal Robots controllers (CB3, e-Series) over the Dashboard Server (TCP 29999).

Facts: ``../shared/reference/protocols/ur-dashboard-rtde.md`` §1. ASCII lines ending in
``\\n``, one reply line per command; on connect the server sends one welcome line
(``Connected: Universal Robots Dashboard Server``). One persistent connection per robot;
only queries are sent, never a command that moves or powers anything.

At connect (identity, and what this software version understands):

=========================  ==========================================================
``get serial number``      serial (CB3 >= 3.12, e-Series >= 5.6; older: ``serial`` setting)
``get robot model``        model (same versions)
``PolyscopeVersion``       ``URSoftware 5.11.1.108318 (Jun 22 2021)`` -> ``5.11.1.108318``
``safetystatus``           e-Series >= 5.4; a reply that is not ``Safetystatus: ...``
                           -> ``safetymode`` is polled instead (CB3)
``get operational mode``   e-Series >= 5.6; a reply not MANUAL/AUTOMATIC/NONE -> not polled
=========================  ==========================================================

Every poll: ``robotmode``, the safety query, ``programState`` and, where understood,
``get operational mode``. The state (§1 suggested mapping, our derivation; first match)::

    FAULT           safety PROTECTIVE_STOP, VIOLATION, FAULT, *EMERGENCY_STOP, *SAFEGUARD_STOP
    OUT_OF_SERVICE  robot mode not RUNNING (POWER_OFF, IDLE, BOOTING, ...), or operational
                    mode MANUAL
    EXECUTING       programState PLAYING
    IDLE            anything else (RUNNING, program STOPPED or PAUSED)

A reply that does not fit its command (garbage, a cut line, an unknown name of a newer
version is *not* garbage: it simply does not match a fault or RUNNING), a reply not in
``timeout_s`` (a slow robot, a half-open connection) or a closed connection ends the
connection: the robot is OFFLINE until a reconnect succeeds. No counters exist on the
Dashboard Server (unconfirmed that none exists elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from datetime import datetime

from robodensity.core import clock
from robodensity.core.errors import SourceError
from robodensity.core.settings_native import UrDashSourceSettings
from robodensity.core.wire import State
from robodensity.edge.sources.polled import Identity, PolledSource, Sample, reply_within

MANUFACTURER = "Universal Robots"
BANNER = "Connected: Universal Robots Dashboard Server"
MAX_LINE = 4096
MAX_CONFIRM_READS = 3
"""Reads of a changed state until two agree; after that the last read stands."""
_FAULT_SAFETY = frozenset({"PROTECTIVE_STOP", "VIOLATION", "FAULT"})
_VERSION_RE = re.compile(r"^URSoftware\s+(\S+)")
_SERIAL_RE = re.compile(r"^\d{8,}$|^20\w{6,}$")


def state_of(robot_mode: str, safety: str, program: str, operational: str | None = None) -> State:
    """The canonical state from the Dashboard's names (the table in the module doc)."""
    if safety in _FAULT_SAFETY or safety.endswith(("EMERGENCY_STOP", "SAFEGUARD_STOP")):
        return State.FAULT
    if robot_mode != "RUNNING" or operational == "MANUAL":
        return State.OUT_OF_SERVICE
    if program == "PLAYING":
        return State.EXECUTING
    return State.IDLE


def after_prefix(reply: str, prefix: str, command: str) -> str:
    """``Robotmode: RUNNING`` -> ``RUNNING``; SourceError when the reply is not for ``command``."""
    if not reply.lower().startswith(prefix.lower()):
        raise SourceError(f"unexpected reply to {command!r}: {reply[:80]!r}")
    value = reply[len(prefix) :].strip().upper()
    if not re.fullmatch(r"[A-Z_0-9]+", value):
        raise SourceError(f"unexpected reply to {command!r}: {reply[:80]!r}")
    return value


def program_state(reply: str) -> str:
    """``PLAYING cell.urp`` -> ``PLAYING``; SourceError when it is none of STOPPED/PLAYING/PAUSED."""
    word = reply.split(" ", 1)[0].upper()
    if word not in ("STOPPED", "PLAYING", "PAUSED"):
        raise SourceError(f"unexpected reply to 'programState': {reply[:80]!r}")
    return word


class DashboardClient:
    """One line-based connection to a Dashboard Server."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self, banner_timeout_s: float) -> str:
        """Connect and return the welcome line; SourceError when there is none."""
        try:
            self._reader, self._writer = await reply_within(
                asyncio.open_connection(self.host, self.port, limit=MAX_LINE), self.timeout_s
            )
        except (OSError, TimeoutError) as exc:
            raise SourceError(f"cannot connect: {getattr(exc, 'strerror', None) or type(exc).__name__}") from None
        banner = await self._line(banner_timeout_s, "the welcome line")
        if not banner.startswith("Connected"):
            raise SourceError(f"no Dashboard Server welcome line: {banner[:80]!r}")
        return banner

    async def ask(self, command: str) -> str:
        if self._writer is None:
            raise SourceError("not connected")
        try:
            self._writer.write(command.encode("ascii") + b"\n")
            await self._writer.drain()
        except OSError as exc:
            raise SourceError(f"connection lost sending {command!r}: {exc.strerror or exc}") from None
        return await self._line(self.timeout_s, repr(command))

    async def _line(self, timeout_s: float, what: str) -> str:
        assert self._reader is not None
        try:
            raw = await reply_within(self._reader.readuntil(b"\n"), timeout_s)
        except TimeoutError:
            raise SourceError(f"no reply to {what} in {timeout_s:g} s") from None
        except asyncio.IncompleteReadError:
            raise SourceError(f"connection closed waiting for the reply to {what}") from None
        except asyncio.LimitOverrunError:
            raise SourceError(f"reply to {what} longer than {MAX_LINE} bytes without a line end") from None
        except OSError as exc:
            raise SourceError(f"connection lost waiting for {what}: {exc.strerror or exc}") from None
        return raw.decode("utf-8", "replace").strip()

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()


class UrDashSource(PolledSource):
    """One Universal Robots robot (see the module doc)."""

    protocol = "urdash"
    settings: UrDashSourceSettings

    def __init__(self, settings: UrDashSourceSettings, now: Callable[[], datetime] = clock.now) -> None:
        super().__init__(settings, now)
        self.client = DashboardClient(settings.host, settings.port, settings.timeout_s)
        self.safety_query = "safetystatus"
        self.operational_mode = False
        self._last_state: State | None = None

    @property
    def address(self) -> str:
        return f"urdash://{self.settings.host}:{self.settings.port}"

    async def _connect(self) -> Identity:
        await self.client.open(self.settings.banner_timeout_s)
        serial = (await self.client.ask("get serial number")).strip()
        if not _SERIAL_RE.match(serial):
            if self.settings.serial is None:
                raise SourceError(
                    f"the robot has no 'get serial number' (PolyScope before 3.12/5.6: {serial[:60]!r}): "
                    "set serial in the settings"
                )
            serial = self.settings.serial
        model = (await self.client.ask("get robot model")).strip()
        model = model if model.upper().startswith("UR") else ""
        match = _VERSION_RE.match(await self.client.ask("PolyscopeVersion"))
        software = match.group(1) if match else ""
        safety = await self.client.ask("safetystatus")
        self.safety_query = "safetystatus" if safety.lower().startswith("safetystatus:") else "safetymode"
        mode = (await self.client.ask("get operational mode")).strip().upper()
        self.operational_mode = mode in ("MANUAL", "AUTOMATIC", "NONE")
        return Identity(MANUFACTURER, self.settings.serial or serial, model, software)

    async def _read(self, counters: bool) -> Sample:
        """The state, from three or four replies. A change is read again until two reads agree: the
        Dashboard Server answers one field per request, so a read that straddles a change mixes old
        and new fields (EXECUTING -> FAULT can read as IDLE: NORMAL safety, then PAUSED program)."""
        state = await self._state()
        for _ in range(MAX_CONFIRM_READS):
            if state is self._last_state:
                break
            self._last_state, state = state, await self._state()
        self._last_state = state
        return Sample(state)

    async def _state(self) -> State:
        ask = self.client.ask
        robot_mode = after_prefix(await ask("robotmode"), "Robotmode:", "robotmode")
        safety = after_prefix(await ask(self.safety_query), f"{self.safety_query}:", self.safety_query)
        program = program_state(await ask("programState"))
        operational = None
        if self.operational_mode:
            operational = (await ask("get operational mode")).strip().upper()
            if operational not in ("MANUAL", "AUTOMATIC", "NONE"):
                raise SourceError(f"unexpected reply to 'get operational mode': {operational[:80]!r}")
        return state_of(robot_mode, safety, program, operational)

    async def _disconnect(self) -> None:
        await self.client.close()
