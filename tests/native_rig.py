"""A simulated shift through a polled native source: simulator -> edge agent -> collector -> PostgreSQL.

The simulators replay schedules (simulators.behaviour) on a simulated clock that every part
of the process reads (the sources' stamps, the agent's receive time, the collector's window).
The clock moves in step with the shift: at each scheduled change it stands still at the
change's time until the agent has stored the robot's new state, then moves on. So a busy
machine (two shared cores) delays the test, never its figures: the stored events must give
the schedules' ground truth through the metrics core, within a percentage point.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from unittest.mock import patch

import numpy as np

from robodensity.core import clock
from robodensity.core.wire import EventType, Reading, State
from robodensity.edge.agent import EdgeAgent
from robodensity.edge.sources.polled import PolledSource
from robodensity.metrics.state_time import seconds_in_state
from robodensity.metrics.states import EXECUTING, STATES, state_codes
from robodensity.simulators import behaviour
from robodensity.simulators.behaviour import Profile, Schedule, state_schedule
from robodensity.storage.db import connect
from tests.helpers import running_collector, wait_until_async
from tests.rig import rig_settings

SHIFT = timedelta(hours=4)
CALM = Profile(executing_s=2400, idle_s=600, fault_s=600, out_of_service_s=1200, p_fault=0.15, min_s=120)
"""Fewer, longer states than a real cell (each change costs the test some wall time)."""


@dataclass
class Shift:
    """The simulated clock: ``at`` is "now" for the whole process while the shift runs."""

    start: datetime
    end: datetime
    at: datetime

    def now(self) -> datetime:
        return self.at


def with_outage(schedule: Schedule, start: datetime, end: datetime) -> Schedule:
    """The schedule with the controller powered off over [start, end) (OFFLINE), then as before."""
    before = [(t, s) for t, s in schedule if t < start]
    after = [(t, s) for t, s in schedule if t >= end]
    resume = before[-1][1] if before else State.IDLE
    return [
        *before,
        (start, State.OFFLINE),
        (end, after[0][1] if after and after[0][0] == end else resume),
        *[(t, s) for t, s in after if t > end],
    ]


def plan(keys: Sequence[str], seed: int = 11) -> tuple[Shift, dict[str, Schedule]]:
    start = clock.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=8)
    end = start + SHIFT
    schedules = {k: state_schedule(seed, k, start, end, CALM) for k in keys}
    assert {s for sched in schedules.values() for _, s in sched} >= set(STATES) - {State.OFFLINE}  # a real test
    return Shift(start, end, start - timedelta(hours=1)), schedules


@dataclass(frozen=True)
class Services:
    """Where a shift runs: the test's PostgreSQL, broker, schema and folder."""

    pg_url: str
    broker_url: str
    schema: str
    tmp_path: Path


async def run_shift(
    services: Services,
    shift: Shift,
    schedules: Mapping[str, Schedule],
    sources: Sequence[PolledSource],
    sims: Mapping[str, Any],
) -> dict[str, dict[State, float]]:
    """Play the shift on ``sims`` (robot key -> simulator with ``set_state``, ``power_on``,
    ``power_off``, ``powered``) and return the seconds in each state per robot key that the
    database holds over [start, end)."""
    pg_url, broker_url, schema = services.pg_url, services.broker_url, services.schema
    settings = rig_settings(schema, services.tmp_path)
    changes = sorted((t, key, i, state) for key, sched in schedules.items() for i, (t, state) in enumerate(sched))
    with patch.object(clock, "now", shift.now), running_collector(settings, pg_url, broker_url, schema):
        agent = EdgeAgent(settings, broker_url, sources=sources)
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        try:
            await wait_until_async(lambda: all(s.connected.is_set() for s in sources), 15, "every source connected")
            for t, key, _, state in changes:
                shift.at = t
                sim = sims[key]
                if state is State.OFFLINE:
                    await _done(sim.power_off())
                else:
                    if not sim.powered:
                        await sim.power_on()
                    sim.set_state(state)
                await wait_until_async(
                    lambda k=key, s=state: agent.stats.robot_state.get(k) is s, 15, f"{key} {state} stored"
                )
            shift.at = shift.end
            await wait_until_async(lambda: agent.backlog() == 0, 20, "every event acknowledged")
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
    assert STATES.index(State.EXECUTING) == EXECUTING


async def _done(result: object) -> None:
    if inspect.isawaitable(result):
        await result


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
