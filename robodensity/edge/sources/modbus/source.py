"""One Modbus TCP connection and the robots behind it, polled through a profile.

Each poll reads the profile's blocks of every robot (one request per block, unit by unit
over the one connection: a controller or PLC serves one request at a time anyway), decodes
the signals, derives the state by the profile's rules and yields only what changed:

- a state reading when the (state, quality) pair changes; quality is per signal: a block
  that answers with a Modbus exception makes its signals unknown (UNCERTAIN), no signal
  known makes the robot OFFLINE (BAD);
- an alarm when the alarm code changes (raised for a non-zero code, cleared for the old one);
- a counter when it changed, at most every ``counter_interval_s``.

Faults: a unit that does not answer in ``timeout_s`` is OFFLINE; a round in which no unit
answers (a device powered off, a half-open connection, replies the client cannot decode)
drops the connection: every robot of it becomes OFFLINE, one log line says why, and the
source reconnects with backoff (1 s doubling to ``reconnect_max_s``), without the agent's help.
Polls wait ``poll_interval_s`` with +-``jitter`` so many agents do not poll in step.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException

from robodensity.core import clock
from robodensity.core.errors import ConfigError
from robodensity.core.settings_modbus import ModbusRobotSettings, ModbusSourceSettings, modbus_address
from robodensity.core.wire import Counter, Quality, Reading, RobotId, State
from robodensity.edge.rules import RuleTable
from robodensity.edge.sources.modbus.profile import Decoder, Profile, load_profile

log = logging.getLogger(__name__)
pymodbus_log = logging.getLogger("pymodbus")
pymodbus_log.setLevel(logging.CRITICAL)  # its per-request errors repeat ours, once per poll


class Unanswered(Exception):
    """A unit sent no usable reply (timeout, or a reply the client could not decode)."""


@dataclass
class Robot:
    """What the source remembers of one robot between polls."""

    cfg: ModbusRobotSettings
    robot: RobotId | None = None
    state: tuple[State, Quality] | None = None
    alarm: int = 0
    counters: dict[Counter, tuple[float, float]] = field(default_factory=dict)  # value, monotonic sent
    trouble: str | None = None
    """Why the last poll of this robot failed, logged once when it starts and once when it ends."""


Read = Callable[..., Any]


class ModbusSource:
    """Polls the robots of one ``[[edge.modbus]]`` connection; see the module docstring."""

    def __init__(self, settings: ModbusSourceSettings, now: Callable[[], datetime] | None = None) -> None:
        self.settings = settings
        self.profile: Profile = load_profile(settings.profile)
        self.decoder = Decoder(self.profile)  # every signal: for discovery
        self._poll_decoder = Decoder(self.profile, self.profile.polled_signals())
        self._table = RuleTable(self.profile.rules, self.profile.default)
        self.host, self.port = modbus_address(settings.url)
        self.now = now or (lambda: clock.now())  # looked up per call: tests run it on simulated time
        missing = [r.unit for r in settings.robots if r.serial is None]
        if missing and self.profile.serial is None:
            units = ", ".join(map(str, missing))
            raise ConfigError(
                f"edge.modbus {settings.url}: robots at unit {units} need a serial: "
                f"profile {self.profile.name} cannot read one from the robot"
            )
        self.robots = [Robot(cfg, self._identity(cfg, cfg.serial)) for cfg in settings.robots]
        self.polls = 0
        self.reconnects = 0
        self.overruns = 0
        self._client: AsyncModbusTcpClient | None = None
        self._down = False
        self._readers: dict[str, Read] = {}
        self._readers_of: AsyncModbusTcpClient | None = None
        self._rng = random.Random()

    def __repr__(self) -> str:
        return f"ModbusSource({self.settings.url}, {self.profile.name}, {len(self.robots)} robots)"

    def _identity(self, cfg: ModbusRobotSettings, serial: str | None) -> RobotId | None:
        return RobotId(cfg.manufacturer or self.profile.manufacturer, serial) if serial else None

    async def __aenter__(self) -> ModbusSource:
        self._client = self._new_client()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _new_client(self) -> AsyncModbusTcpClient:
        # Reconnects are ours (with OFFLINE readings and backoff): pymodbus's own are off.
        return AsyncModbusTcpClient(
            self.host, port=self.port, timeout=self.settings.timeout_s, retries=0, reconnect_delay=0
        )

    async def __aiter__(self) -> AsyncIterator[Reading]:
        assert self._client is not None, "use `async with source:` first"
        cfg = self.settings
        backoff = 1.0
        next_at = time.monotonic() + self._rng.uniform(0, cfg.poll_interval_s * cfg.jitter)
        while True:
            if not self._client.connected:
                problem = await self.connect_once()
                if problem is not None:
                    for reading in self._lost(f"cannot connect ({problem})", backoff):
                        yield reading
                    await asyncio.sleep(backoff * (1 + self._rng.uniform(-cfg.jitter, cfg.jitter)))
                    backoff = min(backoff * 2, cfg.reconnect_max_s)
                    continue
                if self._down:
                    log.info("modbus %s: connected again; polling %d robot(s)", cfg.url, len(self.robots))
                    self._down = False
                next_at = time.monotonic()  # an outage is not a late poll
            answered, why = 0, ""
            for robot in self.robots:
                try:
                    readings = await self._poll(robot)
                    answered += 1
                except Unanswered as exc:
                    why = str(exc)
                    readings = self._unit_down(robot, why)
                except ConnectionException as exc:
                    why = f"connection closed ({exc})"
                    break
                for reading in readings:
                    yield reading
            self.polls += 1
            if not answered:
                self._client.close()
                for reading in self._lost(f"no unit answered ({why or 'no robot to poll'})", backoff):
                    yield reading
                await asyncio.sleep(backoff * (1 + self._rng.uniform(-cfg.jitter, cfg.jitter)))
                backoff = min(backoff * 2, cfg.reconnect_max_s)
                continue
            backoff = 1.0  # a unit answered: the next outage starts from 1 s again
            next_at += cfg.poll_interval_s * (1 + self._rng.uniform(-cfg.jitter, cfg.jitter))
            delay = next_at - time.monotonic()
            if delay < 0:
                self.overruns += 1
                next_at = time.monotonic()
            await asyncio.sleep(max(delay, 0))

    async def connect_once(self) -> str | None:
        """None when connected, else why not."""
        assert self._client is not None
        self._client.close()
        self._client = self._new_client()
        try:
            async with asyncio.timeout(self.settings.timeout_s + 1):
                ok = await self._client.connect()
        except (TimeoutError, OSError, ModbusException) as exc:
            return str(exc) or type(exc).__name__
        return None if ok else "refused or unreachable"

    async def read_blocks(self, robot: Robot) -> list[Sequence[int] | Sequence[bool] | None]:
        """Every block of one robot; None for a block answered with a Modbus exception."""
        assert self._client is not None
        c = self._client
        readers: dict[str, Read] = self._readers if self._readers_of is c else self._bind_readers(c)
        out: list[Sequence[int] | Sequence[bool] | None] = []
        for block in self.profile.blocks:
            address = block.address + robot.cfg.base
            try:
                reply = await readers[block.table](address, count=block.count, device_id=robot.cfg.unit)
            except ConnectionException:
                raise
            except ModbusException as exc:
                log.debug("modbus %s unit %d: %s", self.settings.url, robot.cfg.unit, exc)
                why = f"unit {robot.cfg.unit}: no usable reply within {self.settings.timeout_s:g} s"
                raise Unanswered(why) from None
            if reply.isError():
                code = getattr(reply, "exception_code", "?")
                self._trouble(
                    robot, f"unit {robot.cfg.unit}: exception {code} to {block.table} {address}+{block.count}"
                )
                out.append(None)
            elif block.table in ("coil", "discrete"):
                out.append(reply.bits[: block.count])
            else:
                out.append(reply.registers)
        return out

    def _bind_readers(self, c: AsyncModbusTcpClient) -> dict[str, Read]:
        self._readers_of = c
        self._readers = {
            "holding": c.read_holding_registers,
            "input": c.read_input_registers,
            "coil": c.read_coils,
            "discrete": c.read_discrete_inputs,
        }
        return self._readers

    async def _poll(self, robot: Robot) -> list[Reading]:
        blocks = await self.read_blocks(robot)
        now = self.now()
        signals = self._poll_decoder.decode(blocks)
        if all(b is not None for b in blocks):
            self._trouble(robot, None)
        if robot.robot is None or (self.profile.serial and robot.cfg.serial is None):
            self._learn_identity(robot, signals)
        if robot.robot is None:
            return []
        state, quality = self._table.evaluate(signals)
        out: list[Reading] = []
        if robot.state != (state, quality):
            robot.state = (state, quality)
            out.append(Reading.of_state(robot.robot, now, state, quality))
        out += self._alarm(robot, signals.get(self.profile.alarm_code or ""), now)
        out += self._counters(robot, signals, now)
        return out

    def _learn_identity(self, robot: Robot, signals: dict[str, object]) -> None:
        serial = signals.get(self.profile.serial or "")
        text = str(int(serial)) if isinstance(serial, int | float) else str(serial or "").strip()
        if not text:
            self._trouble(robot, f"unit {robot.cfg.unit}: the serial register is empty: robot skipped")
            return
        if robot.robot is not None and robot.robot.serial != text:
            log.warning(
                "modbus %s unit %d: serial changed %s -> %s",
                self.settings.url,
                robot.cfg.unit,
                robot.robot.serial,
                text,
            )
            robot.state = None
        robot.robot = self._identity(robot.cfg, text)

    def _alarm(self, robot: Robot, code: object, now: datetime) -> list[Reading]:
        if robot.robot is None or not isinstance(code, int | float):
            return []
        code = int(code)
        if code == robot.alarm:
            return []
        out = []
        if robot.alarm:
            out.append(Reading.of_alarm(robot.robot, now, str(robot.alarm), f"alarm {robot.alarm}", False))
        if code:
            out.append(Reading.of_alarm(robot.robot, now, str(code), f"alarm {code}", True))
        robot.alarm = code
        return out

    def _counters(self, robot: Robot, signals: dict[str, object], now: datetime) -> list[Reading]:
        out = []
        mono = time.monotonic()
        for counter, name in self.profile.counters.items():
            value = signals.get(name)
            if robot.robot is None or not isinstance(value, int | float):
                continue
            last = robot.counters.get(counter)
            if last is None or (value != last[0] and mono - last[1] >= self.settings.counter_interval_s):
                robot.counters[counter] = (float(value), mono)
                out.append(Reading.of_counter(robot.robot, now, counter, float(value)))
        return out

    def _unit_down(self, robot: Robot, why: str) -> list[Reading]:
        self._trouble(robot, why)
        return self._offline(robot)

    def _offline(self, robot: Robot) -> list[Reading]:
        if robot.robot is None or (robot.state is not None and robot.state[0] is State.OFFLINE):
            return []
        robot.state = (State.OFFLINE, Quality.BAD)
        return [Reading.of_state(robot.robot, self.now(), State.OFFLINE, Quality.BAD)]

    def _lost(self, why: str, retry_s: float) -> list[Reading]:
        """Every robot OFFLINE (once), with one log line per outage of the connection."""
        out = [r for robot in self.robots for r in self._offline(robot)]
        if not self._down:
            keys = ", ".join(r.robot.key for r in self.robots if r.robot is not None) or "robots not yet identified"
            log.error(
                "modbus %s: %s; %d robot(s) OFFLINE (%s); reconnecting in %.0f s",
                self.settings.url,
                why,
                len(self.robots),
                keys,
                retry_s,
            )
            self._down = True
        self.reconnects += 1
        return out

    def _trouble(self, robot: Robot, why: str | None) -> None:
        if why == robot.trouble:
            return
        if why is None:
            log.info("modbus %s: unit %d reads again", self.settings.url, robot.cfg.unit)
        else:
            log.warning("modbus %s: %s", self.settings.url, why)
        robot.trouble = why
