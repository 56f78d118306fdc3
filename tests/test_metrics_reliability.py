"""Failures, MTBF/MTTR, ISO 22400-2 availability and active robots."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrics.reliability import (
    active_robots,
    availability,
    fault_intervals,
    iso22400_times,
    last_executing,
    mtbf_mttr,
    seconds_in_shifts,
    utilisation_efficiency,
)
from metrics.state_time import seconds_in_state
from metrics.states import EXECUTING, FAULT, IDLE, N_STATES, OFFLINE, OUT_OF_SERVICE

S = 1_000_000
H = 3600 * S
DAY = 24 * H


def test_consecutive_fault_events_are_one_failure():
    # FAULT at 1 h, re-reported at 1.5 h, EXECUTING at 2 h.
    f = fault_intervals([0, 0, 0, 0], [0, H, H + H // 2, 2 * H], [EXECUTING, FAULT, FAULT, EXECUTING], 1, 0, 4 * H)
    assert f.robot.tolist() == [0]
    assert f.duration_s.tolist() == [3600.0]
    assert not f.began_before[0] and not f.open_at_end[0]


def test_faults_are_clipped_to_the_window_and_flagged_censored():
    ts = [-H, 30 * 60 * S, 3 * H, 5 * H]
    f = fault_intervals([0, 0, 0, 0], ts, [FAULT, IDLE, FAULT, IDLE], 1, 0, 4 * H)
    assert f.duration_s.tolist() == [1800.0, 3600.0]
    assert f.began_before.tolist() == [True, False]
    assert f.open_at_end.tolist() == [False, True]


def test_mtbf_divides_operating_time_by_failures_plus_one_and_mttr_averages_repairs():
    # Robot 0: two repaired faults of 10 and 20 min; robot 1: no faults.
    ts = [0, 1 * H, 1 * H + 10 * 60 * S, 3 * H, 3 * H + 20 * 60 * S]
    st_ = [EXECUTING, FAULT, EXECUTING, FAULT, EXECUTING]
    f = fault_intervals([0] * 5, ts, st_, 2, 0, 8 * H)
    op = np.array([27_000.0, 28_800.0])
    out = mtbf_mttr(f, 2, op)
    assert out["failure_count"].tolist() == [2, 0]
    assert out["mtbf_s"].tolist() == [9_000.0, 28_800.0]
    assert out["mttr_s"][0] == 900.0 and np.isnan(out["mttr_s"][1])
    assert out["fault_s"].tolist() == [1_800.0, 0.0]


def test_censored_faults_count_as_downtime_but_not_in_mttr():
    ts = [-H, 30 * 60 * S, 3 * H]
    f = fault_intervals([0, 0, 0], ts, [FAULT, IDLE, FAULT], 1, 0, 4 * H)
    out = mtbf_mttr(f, 1, np.array([0.0]))
    assert out["failure_count"][0] == 1  # the one that began inside the window
    assert np.isnan(out["mttr_s"][0])  # none both began and ended inside
    assert out["fault_s"][0] == 5_400.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 100), st.sampled_from([EXECUTING, IDLE, FAULT, OFFLINE])), max_size=30))
def test_fault_runs_add_up_to_fault_seconds(evs):
    evs = sorted(evs)
    ts = np.array([t * S for t, _ in evs], dtype=np.int64)
    state = np.array([s for _, s in evs], dtype=np.int8)
    robot = np.zeros(len(evs), dtype=np.int64)
    f = fault_intervals(robot, ts, state, 1, 10 * S, 90 * S)
    sec = seconds_in_state(robot, ts, state, 1, 10 * S, 90 * S)
    assert f.duration_s.sum() == pytest.approx(sec[0, 0, FAULT])
    assert (f.end > f.start).all()
    assert (f.start[1:] >= f.end[:-1]).all()


def test_availability_on_a_two_shift_day():
    # Shifts 08-16 and 16-24 (touching: merged), robot EXECUTING 08-12, FAULT 12-14, IDLE after.
    ts = [8 * H, 12 * H, 14 * H]
    sec = seconds_in_shifts([0, 0, 0], ts, [EXECUTING, FAULT, IDLE], 1, [8 * H, 16 * H], [16 * H, 24 * H])
    assert sec[0].tolist() == [4 * 3600.0, 10 * 3600.0, 2 * 3600.0, 0.0, 0.0]
    t = iso22400_times(sec)
    assert t["pbt_s"][0] == 16 * 3600 and t["adot_s"][0] == 2 * 3600
    assert availability(t["apt_s"], t["pbt_s"])[0] == pytest.approx(4 / 16)
    assert utilisation_efficiency(t["apt_s"], t["aubt_s"])[0] == pytest.approx(4 / 14)


def test_time_outside_shifts_is_not_planned_busy_time():
    sec = seconds_in_shifts([0], [0], [EXECUTING], 1, [8 * H, 20 * H], [12 * H, 22 * H])
    assert sec[0, EXECUTING] == 6 * 3600 and sec.sum() == 6 * 3600


def test_availability_is_nan_without_planned_time():
    assert np.isnan(availability([0.0], [0.0])).all()
    assert np.isnan(utilisation_efficiency([5.0], [0.0])).all()
    t = iso22400_times(np.zeros((3, N_STATES)))
    assert np.isnan(availability(t["apt_s"], t["pbt_s"])).all()


def test_iso_time_elements_partition_planned_busy_time():
    sec = np.array([[1.0, 2.0, 4.0, 8.0, 16.0]])
    t = iso22400_times(sec)
    assert t["aubt_s"][0] + t["adot_s"][0] == t["pbt_s"][0] == 31
    assert sec[0, OUT_OF_SERVICE] == 8


def test_active_robots_worked_in_the_trailing_window():
    at = np.datetime64("2024-06-30T00:00", "us")
    day = np.timedelta64(1, "D")
    last = np.array([at - 2 * day, at - 40 * day, "NaT", at + day], dtype="datetime64[us]")
    assert active_robots(last, at).tolist() == [True, False, False, False]


def test_last_executing_is_when_the_last_executing_stretch_ended():
    # Robot 0 EXECUTING 0-10 h then IDLE; robot 1 EXECUTING since 20 h (still at `at`);
    # robot 2 never EXECUTING; robot 3 EXECUTING only after `at`.
    robot = [0, 0, 1, 2, 3, 3]
    ts = [0, 10 * H, 20 * H, 0, 0, 30 * H]
    state = [EXECUTING, IDLE, EXECUTING, IDLE, IDLE, EXECUTING]
    last = last_executing(robot, ts, state, 4, 24 * H)
    assert last.view(np.int64)[:2].tolist() == [10 * H, 24 * H]
    assert np.isnat(last[2:]).all()
    assert active_robots(last, 24 * H, window_s=12 * 3600).tolist() == [False, True, False, False]
    assert active_robots(last, 24 * H, window_s=15 * 3600).tolist() == [True, True, False, False]
