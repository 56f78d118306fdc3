"""A simulated week through OPC UA: simulator ground truth and the metrics core agree.

Twelve robots on shift calendars replay seven days in a few seconds of wall time through
OpcUaController -> OpcUaSource; the readings go through metrics.state_time and must
match simulators.behaviour.seconds_in_state of the schedules.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from robodensity.core.settings import OpcUaSourceSettings
from robodensity.core.wire import EventType, Reading, RobotId, State
from robodensity.edge.sources.opcua import OpcUaSource, discover
from robodensity.metrics.state_time import seconds_in_state
from robodensity.metrics.states import EXECUTING, STATES, state_codes
from robodensity.simulators import behaviour
from robodensity.simulators.behaviour import PROFILES, ShiftCalendar, SimClock, state_schedule
from robodensity.simulators.opcua_controller import OpcUaController, SimRobot

pytestmark = pytest.mark.slow

TZ = ZoneInfo("Asia/Shanghai")
START = datetime(2026, 3, 2, 0, 0, tzinfo=TZ)  # a Monday, local midnight
END = START + timedelta(days=7)
WALL_S = 3.0
"""Wall seconds the week takes to replay."""
CALENDARS = {
    "two shifts": ShiftCalendar(),
    "three shifts": ShiftCalendar(shifts_per_day=3, first_shift_hour=6.0, workdays=frozenset(range(6))),
    "one shift": ShiftCalendar(shifts_per_day=1, maintenance_weekday=2),
}
ROBOTS = [
    SimRobot(maker, f"{maker[:2]}-W{i:02d}", "week model")
    for i, maker in enumerate(["KUKA", "FANUC", "ABB", "YASKAWA"] * 3)
]
US = 1_000_000


def us(t: datetime) -> int:
    return round(t.timestamp() * US)


async def collect_until(it: AsyncIterator[Reading], done: Callable[[Reading], bool], timeout: float) -> list[Reading]:
    got: list[Reading] = []

    async def run() -> None:
        async for reading in it:
            got.append(reading)
            if done(reading):
                return

    try:
        await asyncio.wait_for(run(), timeout)
    except TimeoutError:
        pytest.fail(f"condition not met within {timeout} s; got {len(got)} readings: {got[-3:]}")
    return got


async def test_a_simulated_week_through_opc_ua_matches_the_ground_truth_within_a_point() -> None:
    calendars = list(CALENDARS.values())
    profiles = list(PROFILES.values())
    schedules = {
        r.key: state_schedule(7, r.key, START, END, profiles[i % len(profiles)], calendars[i % len(calendars)])
        for i, r in enumerate(ROBOTS)
    }
    assert sum(len(s) for s in schedules.values()) > 2_000  # a busy week, not a trivial one
    cfg = OpcUaSourceSettings(url="opc.tcp://127.0.0.1:1", publishing_interval_ms=50)
    async with OpcUaController(ROBOTS, name="week") as ctl:
        cfg = cfg.model_copy(update={"url": ctl.url})
        found = await discover(cfg)
        assert {(d.manufacturer, d.serial, d.model) for d in found} == {
            (r.manufacturer, r.serial, r.model) for r in ROBOTS
        }

        async with OpcUaSource(cfg) as src:
            it = aiter(src)
            want = {RobotId(r.manufacturer, r.serial) for r in ROBOTS}
            seen_first: set[RobotId] = set()

            def all_known(r: Reading) -> bool:
                seen_first.add(r.robot)
                return seen_first >= want

            await collect_until(it, all_known, 10.0)
            # A state no schedule starts with, an hour before the week: every change is a change.
            for r in ROBOTS:
                await ctl.set_state(r.key, State.OUT_OF_SERVICE, START - timedelta(hours=1))
            oos: set[RobotId] = set()

            def all_out_of_service(r: Reading) -> bool:
                if r.state is State.OUT_OF_SERVICE:
                    oos.add(r.robot)
                return oos >= want

            before = await collect_until(it, all_out_of_service, 10.0)

            last = {RobotId(r.manufacturer, r.serial): schedules[r.key][-1] for r in ROBOTS}
            latest: dict[RobotId, tuple[datetime, State]] = {}

            def week_done(r: Reading) -> bool:
                if r.type is EventType.STATE:
                    latest[r.robot] = (r.ts, r.state)  # type: ignore[assignment]
                return all(latest.get(k) == v for k, v in last.items())

            speed = (END - START).total_seconds() / WALL_S
            clock = SimClock(START, time.monotonic() + 0.2, speed=speed)
            replay = asyncio.create_task(ctl.replay(schedules, clock))
            week = await collect_until(it, week_done, 30.0)
            await replay

    readings = [r for r in before + week if r.type is EventType.STATE and r.ts >= START - timedelta(hours=1)]
    per_robot: dict[RobotId, list[tuple[datetime, State]]] = defaultdict(list)
    for reading in readings:
        per_robot[reading.robot].append((reading.ts, reading.state))  # type: ignore[arg-type]
    index = {RobotId(r.manufacturer, r.serial): i for i, r in enumerate(ROBOTS)}
    rows = sorted((index[rid], us(ts), state) for rid, events in per_robot.items() for ts, state in events)
    robot = np.array([r for r, _, _ in rows], dtype=np.int32)
    ts = np.array([t for _, t, _ in rows], dtype=np.int64)
    codes = state_codes([s for _, _, s in rows])

    measured = seconds_in_state(robot, ts, codes, len(ROBOTS), us(START), us(END))[:, 0, :]
    calendar_s = (END - START).total_seconds()
    for i, r in enumerate(ROBOTS):
        truth = behaviour.seconds_in_state(schedules[r.key], START, END)
        assert abs(measured[i, EXECUTING] / calendar_s - behaviour.utilisation(truth)) < 0.01, r.key
        for code, state in enumerate(STATES):
            assert abs(measured[i, code] - truth[state]) / calendar_s < 0.01, (r.key, state)
