"""Simulated robots and provinces: deterministic, realistic in shape, and honest ground truth."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from metrics.state_time import seconds_in_state as core_seconds
from metrics.states import STATES, state_codes
from robodensity.wire import State
from simulators.behaviour import (
    ShiftCalendar,
    counters,
    seconds_in_state,
    state_schedule,
    utilisation,
)
from simulators.province import ProvinceSpec, generate, load_spec, write_registry_csv

END = datetime(2026, 11, 23, tzinfo=UTC)
WEEK = END - timedelta(days=7)


def test_the_same_seed_gives_the_same_robot_life() -> None:
    assert state_schedule(3, "ABB/1", WEEK, END) == state_schedule(3, "ABB/1", WEEK, END)
    assert state_schedule(3, "ABB/1", WEEK, END) != state_schedule(4, "ABB/1", WEEK, END)


def test_robots_do_not_execute_outside_their_shifts() -> None:
    cal = ShiftCalendar(shifts_per_day=2)
    sched = state_schedule(1, "KUKA/7", WEEK, END, calendar=cal)
    points = [*sched, (END, State.OFFLINE)]
    tz = ZoneInfo(cal.tz)
    for (t0, s), (t1, _) in zip(points, points[1:]):
        if s is State.EXECUTING:
            a, b = t0.astimezone(tz), (t1 - timedelta(microseconds=1)).astimezone(tz)
            assert a.weekday() < 5 and 8 <= a.hour < 24 and b.hour >= 8 and a.date() == b.date(), (a, b)


def test_planned_maintenance_takes_the_robot_out_of_service() -> None:
    cal = ShiftCalendar(shifts_per_day=3, workdays=frozenset(range(7)), maintenance_weekday=2)
    sched = state_schedule(1, "FANUC/2", WEEK, END, calendar=cal)
    wednesday_10 = datetime(2026, 11, 18, 10, tzinfo=ZoneInfo(cal.tz))
    state_then = [s for t, s in sched if t <= wednesday_10][-1]
    assert state_then is State.OUT_OF_SERVICE


def test_counters_only_grow() -> None:
    series = counters(state_schedule(2, "ABB/9", WEEK, END), END)
    for column in (1, 2, 3):
        values = [row[column] for row in series]
        assert values == sorted(values)
    assert series[-1][1] == pytest.approx(7 * 86_400)  # powered on the whole week


def test_ground_truth_and_the_metrics_core_agree_over_a_simulated_week() -> None:
    keys = [f"SIM/{i}" for i in range(30)]
    cal = ShiftCalendar(shifts_per_day=2)
    schedules = [state_schedule(5, k, WEEK, END, calendar=cal) for k in keys]
    robot = np.concatenate([np.full(len(s), i) for i, s in enumerate(schedules)])
    ts = np.array([int(t.timestamp() * 1e6) for s in schedules for t, _ in s], dtype=np.int64)
    codes = state_codes([st for s in schedules for _, st in s])
    core = core_seconds(robot, ts, codes, len(keys), int(WEEK.timestamp() * 1e6), int(END.timestamp() * 1e6))
    for i, sched in enumerate(schedules):
        truth = seconds_in_state(sched, WEEK, END)
        assert core[i, 0] == pytest.approx([truth[s] for s in STATES])
        assert abs(core[i, 0, 0] / core[i, 0].sum() - utilisation(truth)) < 0.01


def test_a_province_aimed_at_a_density_reaches_it() -> None:
    province = generate(ProvinceSpec(density=400), seed=9)
    for f in province.factories:
        assert len(province.robots_of(f.id)) == max(1, round(400 * f.employees / 10_000))


def test_leased_robots_have_two_assignments_in_the_registry(tmp_path: Path) -> None:
    province = generate(ProvinceSpec(leased_share=0.5), seed=2)
    moved = [r for r in province.robots if r.moved_from]
    assert moved and all(r.moved_from and r.moved_from[0] != r.factory for r in moved)
    write_registry_csv(province, tmp_path)
    rows = (tmp_path / "assignments.csv").read_text().splitlines()[1:]
    assert len(rows) == len(province.robots) + len(moved)


def test_a_province_spec_loads_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        'code = "440000"\nname = "广东省"\nname_en = "Guangdong"\nrobots = 40\n'
        '[[cities]]\ncode = "440100"\nname = "广州市"\nname_en = "Guangzhou"\nfactories = 3\n'
        '[[cities]]\ncode = "440300"\nname = "深圳市"\nname_en = "Shenzhen"\nfactories = 2\n'
    )
    province = generate(load_spec(path), seed=1)
    assert {r.code for r in province.regions} == {"440000", "440100", "440300"}
    assert len(province.factories) == 5 and len(province.robots) == 40
