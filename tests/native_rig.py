"""A simulated shift through a polled native source: simulator -> edge agent -> collector -> PostgreSQL.

The simulators replay schedules (simulators.behaviour) on a fast simulated clock; the
sources stamp readings with the same clock (their ``now`` seam), so the stored events can
be compared with the schedules' ground truth through the metrics core.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from unittest.mock import patch

import numpy as np

from robodensity.core import clock
from robodensity.core.wire import EventType, Reading, State
from robodensity.edge.agent import EdgeAgent
from robodensity.edge.sources.polled import PolledSource
from robodensity.metrics.state_time import seconds_in_state
from robodensity.metrics.states import EXECUTING, STATES, state_codes
from robodensity.simulators import behaviour
from robodensity.simulators.behaviour import PROFILES, Schedule, SimClock, state_schedule
from robodensity.storage.db import connect
from tests.helpers import running_collector, wait_until_async
from tests.rig import rig_settings

SHIFT = timedelta(hours=4)
WALL_S = 4.0
"""Wall seconds the shift takes: 3600 simulated seconds per wall second."""


@dataclass
class Shift:
    """Simulated time: real speed from an hour before ``start`` until :meth:`go`, then fast."""

    start: datetime
    end: datetime
    speed: float
    t0: float
    clock: SimClock | None = None

    def now(self) -> datetime:
        if self.clock is None:
            return self.start - timedelta(hours=1) + timedelta(seconds=time.monotonic() - self.t0)
        return self.clock.sim_at(time.monotonic())

    def go(self) -> SimClock:
        """From now on fast: ``start`` is reached in 0.3 wall seconds (so no change is already due)."""
        self.clock = SimClock(self.start, time.monotonic() + 0.3, self.speed)
        return self.clock


def with_outage(schedule: Schedule, start: datetime, end: datetime) -> Schedule:
    """The schedule with the controller powered off over [start, end) (OFFLINE), then as before."""
    before = [(t, s) for t, s in schedule if t < start]
    after = [(t, s) for t, s in schedule if t >= end]
    resume = before[-1][1] if before else State.IDLE
    return [*before, (start, State.OFFLINE), (end, after[0][1] if after and after[0][0] == end else resume), *[
        (t, s) for t, s in after if t > end
    ]]


def plan(keys: Sequence[str], seed: int = 11, wall_s: float = WALL_S) -> tuple[Shift, dict[str, Schedule]]:
    start = clock.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=8)
    end = start + SHIFT
    profiles = list(PROFILES.values())
    schedules = {k: state_schedule(seed, k, start, end, profiles[i % len(profiles)]) for i, k in enumerate(keys)}
    return Shift(start, end, SHIFT.total_seconds() / wall_s, time.monotonic()), schedules


async def run_shift(
    pg_url: str,
    broker_url: str,
    schema: str,
    tmp_path: Path,
    shift: Shift,
    schedules: Mapping[str, Schedule],
    sources: Sequence[PolledSource],
    replay: Callable[[SimClock], Awaitable[None]],
    during: Callable[[], Awaitable[None]] | None = None,
) -> dict[str, dict[State, float]]:
    """Replay the shift, wait until every robot's last state is stored, and return the seconds
    in each state per robot key that the database holds over [start, end)."""
    # Simulated time magnifies the agent's own delays (1 ms of wall time is 3.6 s here): the
    # agent's clock check must not take them for a controller clock that is off.
    settings = rig_settings(schema, tmp_path, clock_threshold_s=300)
    # Every clock of the process (the agent's receive time, the collector's window) runs simulated
    # time, so the agent sees the controllers' clocks in step with its own.
    with patch.object(clock, "now", shift.now), running_collector(settings, pg_url, broker_url, schema):
        agent = EdgeAgent(settings, broker_url, sources=sources)
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        try:
            await wait_until_async(lambda: all(s.connected.is_set() for s in sources), 15, "every source connected")
            jobs = [asyncio.create_task(replay(shift.go()))]
            if during is not None:
                jobs.append(asyncio.create_task(during()))
            await asyncio.gather(*jobs)
            last = {k: s[-1][1] for k, s in schedules.items()}
            await wait_until_async(
                lambda: all(agent.stats.robot_state.get(k) is v for k, v in last.items()) and agent.backlog() == 0,
                20,
                "every robot's last state stored and acknowledged",
            )
        finally:
            stop.set()
            await task
    with connect(pg_url, schema) as conn:
        rows = conn.execute(
            "SELECT r.manufacturer || '/' || r.serial, e.ts, e.state FROM events e JOIN robots r USING (robot_id) "
            "WHERE e.type = 'state' ORDER BY 1, e.ts, e.seq"
        ).fetchall()
    keys = sorted(schedules)
    index = {k: i for i, k in enumerate(keys)}
    rows = [r for r in rows if r[0] in index]
    robot = np.array([index[k] for k, _, _ in rows], dtype=np.int32)
    ts = np.array([round(t.timestamp() * 1e6) for _, t, _ in rows], dtype=np.int64)
    measured = seconds_in_state(
        robot, ts, state_codes([s for *_, s in rows]), len(keys), _us(shift.start), _us(shift.end)
    )[:, 0, :]
    return {k: {state: float(measured[i, code]) for code, state in enumerate(STATES)} for k, i in index.items()}


def _us(t: datetime) -> int:
    return round(t.timestamp() * 1_000_000)


def assert_matches_truth(
    measured: Mapping[str, Mapping[State, float]], shift: Shift, schedules: Mapping[str, Schedule]
) -> None:
    """Utilisation and every state's share within one percentage point of the schedules'."""
    calendar_s = (shift.end - shift.start).total_seconds()
    for key, schedule in schedules.items():
        truth = behaviour.seconds_in_state(schedule, shift.start, shift.end)
        got = measured[key]
        assert abs(got[State.EXECUTING] / calendar_s - behaviour.utilisation(truth)) < 0.01, (key, got, truth)
        for state in STATES:
            assert abs(got[state] - truth[state]) / calendar_s < 0.01, (key, state, got, truth)
    assert EXECUTING == STATES.index(State.EXECUTING)


async def until(it: AsyncIterator[Reading], cond: Callable[[Reading], bool], timeout: float = 5.0) -> list[Reading]:
    """Readings from ``it`` up to the first for which ``cond`` holds; fails after ``timeout`` s."""
    got: list[Reading] = []

    async def run() -> None:
        async for r in it:
            got.append(r)
            if cond(r):
                return

    await asyncio.wait_for(run(), timeout)
    return got


def is_state(state: State) -> Callable[[Reading], bool]:
    return lambda r: r.type is EventType.STATE and r.state is state
