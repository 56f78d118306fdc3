"""What every polled native-protocol source shares (HSES, RWS, UR Dashboard Server).

A polled source reads one robot controller. Its protocol module supplies three coroutines
(connect and identify, read one :class:`Sample`, disconnect) and a pure mapping from the
controller's signals to a :class:`~robodensity.core.wire.State`; this module turns samples
into readings and owns the life around them::

    source = HsesSource(settings)        # settings checked when they loaded; no network
    async with source:                   # nothing yet: the first connect is in the loop,
        async for reading in source:     # which reconnects on its own, forever
            ...

Readings (:class:`Tracker`, no I/O):

- state: on change only; the first one after each (re)connect is always emitted;
- alarms: an active reading when a code appears, an inactive one when it goes;
- counters: on change;
- OFFLINE once when the controller stops answering (timeout, refused, closed, garbage),
  stamped with the edge's clock like every reading (these protocols carry no source time).

Timing: one status read every ``poll_s`` (times a random factor within ``jitter``, so a
gateway's robots never poll in step), counters every ``counters_every_s``. A failed read is
logged once per outage as one line naming the controller and the cause; reconnection waits
double from 0.5 s up to ``reconnect_max_s``. A login the controller refuses is
:class:`LoginRefused`: the next try waits ``login_retry_s`` at least, and after
``login_attempts`` refusals in a row the source raises ConfigError (the agent stops this
source and goes on with the others), so a wrong password never hammers a controller.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import TypeVar

from robodensity.core import clock
from robodensity.core.errors import ConfigError, SourceError
from robodensity.core.settings_native import PolledSettings
from robodensity.core.wire import Counter, Reading, RobotId, State

log = logging.getLogger(__name__)

BACKOFF_START_S = 0.5


class LoginRefused(SourceError):
    """The controller refused our credentials (wrong user or password): not retried quickly."""


@dataclass(frozen=True)
class Identity:
    """What a controller tells about its robot; ``manufacturer`` + ``serial`` is the identity."""

    manufacturer: str
    serial: str
    model: str = ""
    software: str = ""

    @property
    def robot(self) -> RobotId:
        return RobotId(self.manufacturer, self.serial)


@dataclass(frozen=True)
class Sample:
    """One read of a robot: its state, and what else was read this time (None: not read)."""

    state: State
    alarms: dict[str, str] | None = None
    """Active alarms, code -> text; None when this read did not look at alarms."""
    counters: dict[Counter, float] = field(default_factory=dict)
    at: datetime | None = None
    """When it was true, if known better than "now" (a pushed change, stamped when it arrived)."""


class Tracker:
    """Samples of one robot -> readings (change detection). No I/O."""

    def __init__(self, robot: RobotId) -> None:
        self.robot = robot
        self.state: State | None = None
        self.alarms: dict[str, str] = {}
        self.counters: dict[Counter, float] = {}

    def sample(self, s: Sample, ts: datetime | Callable[[], datetime]) -> list[Reading]:
        """Readings for what changed, stamped ``ts`` (a clock is asked only when something did)."""
        if (
            s.state is self.state
            and (s.alarms is None or s.alarms.keys() == self.alarms.keys())
            and all(self.counters.get(c) == v for c, v in s.counters.items())
        ):
            return []  # most polls: nothing changed
        if callable(ts):
            ts = ts()
        out: list[Reading] = []
        if s.state is not self.state:
            out.append(Reading.of_state(self.robot, ts, s.state))
            self.state = s.state
        if s.alarms is not None:
            for code in sorted(self.alarms.keys() - s.alarms.keys()):
                out.append(Reading.of_alarm(self.robot, ts, code, self.alarms.pop(code), False))
            for code in sorted(s.alarms.keys() - self.alarms.keys()):
                out.append(Reading.of_alarm(self.robot, ts, code, s.alarms[code], True))
                self.alarms[code] = s.alarms[code]
        for counter, value in s.counters.items():
            if self.counters.get(counter) != value:
                out.append(Reading.of_counter(self.robot, ts, counter, value))
                self.counters[counter] = value
        return out

    def offline(self, ts: datetime) -> list[Reading]:
        """OFFLINE once; the next sample's state is emitted whatever it is. Alarms are kept:
        the next read after reconnecting says whether they are still active."""
        if self.state in (None, State.OFFLINE):
            return []
        self.state = State.OFFLINE
        return [Reading.of_state(self.robot, ts, State.OFFLINE)]


class PolledSource(abc.ABC):
    """One controller read by polling; subclasses implement the protocol (see the module doc)."""

    protocol = "polled"
    login_retry_s = 60.0
    login_attempts = 3

    def __init__(self, settings: PolledSettings, now: Callable[[], datetime] = clock.now) -> None:
        self.settings = settings
        self.now = now
        """The clock readings are stamped with (a test may hand in a simulated one)."""
        self.identity: Identity | None = None
        self.tracker: Tracker | None = None
        self.connected = asyncio.Event()
        self.stats: dict[str, int] = {"connects": 0, "losses": 0, "polls": 0, "refused_logins": 0}
        self._rng = random.Random()
        self._outage_logged = False
        self._next_at = 0.0

    @property
    @abc.abstractmethod
    def address(self) -> str:
        """The controller, for log lines: ``hses://10.0.0.5:10040``."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.address}>"

    @abc.abstractmethod
    async def _connect(self) -> Identity:
        """Open the connection (and session), read the identity; SourceError when it fails."""

    @abc.abstractmethod
    async def _read(self, counters: bool) -> Sample:
        """Read the robot once (and its counters when ``counters``); SourceError when it fails."""

    @abc.abstractmethod
    async def _disconnect(self) -> None:
        """Close what ``_connect`` opened; never raises."""

    async def _pause(self) -> None:
        """Wait until the next read is due (a push source may return earlier).

        Reads are due every ``poll_s`` (times the jitter factor) from the previous due time, not
        from the end of the read, so slow replies or a busy loop do not stretch the period; a
        source that fell behind starts again from now."""
        j = self.settings.jitter
        now = time.monotonic()
        self._next_at = max(self._next_at + self.settings.poll_s * self._rng.uniform(1 - j, 1 + j), now)
        await asyncio.sleep(self._next_at - now)

    async def __aenter__(self) -> PolledSource:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.connected.clear()
        await self._disconnect()

    async def __aiter__(self) -> AsyncIterator[Reading]:
        first = min(BACKOFF_START_S, self.settings.reconnect_max_s)
        backoff = first
        refused = 0
        counters_due = 0.0
        while True:
            try:
                if not self.connected.is_set():
                    await self._open()
                    refused = 0
                    counters_due = 0.0
                read_counters = time.monotonic() >= counters_due
                sample = await self._read(read_counters)
                if read_counters:
                    counters_due = time.monotonic() + self.settings.counters_every_s
                self.stats["polls"] += 1
                assert self.tracker is not None
                for reading in self.tracker.sample(sample, sample.at or self.now):
                    yield reading
                backoff = first
                await self._pause()
                continue
            except LoginRefused as exc:
                refused += 1
                self.stats["refused_logins"] += 1
                wait = max(self.login_retry_s, backoff)
                if refused >= self.login_attempts:
                    raise ConfigError(f"{self.address}: login refused {refused} times in a row: {exc}") from None
                log.error("%s: login refused (%s); trying again in %.1f s", self.address, exc, wait)
            except SourceError as exc:
                wait = backoff
                if not self._outage_logged:  # one line per outage, not one per try
                    log.warning("%s: %s; robot OFFLINE, reconnecting", self.address, exc)
                    self.stats["losses"] += 1
                    self._outage_logged = True
                else:
                    log.debug("%s: still unreachable: %s", self.address, exc)
            except Exception:  # a reply that broke the parser: a bug here must not stop the agent
                wait = backoff
                log.exception("%s: failed on a reply; robot OFFLINE, reconnecting", self.address)
                self.stats["losses"] += 1
            for reading in self._lost():
                yield reading
            await self._disconnect()
            await asyncio.sleep(wait)
            backoff = min(backoff * 2, self.settings.reconnect_max_s)

    async def _open(self) -> None:
        identity = await self._connect()
        if self.identity is not None and identity.robot != self.identity.robot:
            log.warning("%s: now answers as %s (was %s)", self.address, identity.robot.key, self.identity.robot.key)
            self.tracker = None
        self.identity = identity
        if self.tracker is None:
            self.tracker = Tracker(identity.robot)
        self.stats["connects"] += 1
        self.connected.set()
        self._outage_logged = False
        self._next_at = time.monotonic()
        log.info("%s: connected to %s %s (%s)", self.address, identity.robot.key, identity.model, identity.software)

    def _lost(self) -> list[Reading]:
        self.connected.clear()
        return self.tracker.offline(self.now()) if self.tracker is not None else []


async def identify(source: PolledSource) -> tuple[Identity, Sample]:
    """Connect once, read the identity and one sample with counters, disconnect (``edge discover``)."""
    async with source:  # leaving it closes the connection (and logs out of a session)
        return await source._connect(), await source._read(counters=True)


T = TypeVar("T")


async def reply_within(reply: Awaitable[T], timeout_s: float) -> T:
    """``reply``'s result, or TimeoutError when it is not in after ``timeout_s``.

    A reply that is in by the time the timeout is handled wins: a gateway whose loop stalled
    past the deadline while the reply sat in the socket must not report the robot OFFLINE
    (``asyncio.timeout`` would). A cancel always wins: Python 3.11's ``asyncio.wait_for`` returns
    a result that lands in the loop pass of the cancel and loses the cancel, so an agent that
    stopped its sources could wait for ever."""
    task = asyncio.ensure_future(reply)
    try:
        await asyncio.wait((task,), timeout=timeout_s)
    except BaseException:  # cancelled: whatever the reply, it is not wanted
        task.cancel()
        await asyncio.wait((task,))
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log it as lost
        raise
    if not task.done():
        task.cancel()
        await asyncio.wait((task,))
    if task.cancelled():
        raise TimeoutError(f"no reply in {timeout_s:g} s")
    return task.result()
