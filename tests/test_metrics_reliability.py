"""Failures, MTBF/MTTR and ISO 22400-2 availability."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robodensity.metrics.reliability import availability, fault_runs, mtbf_s, mttr_s
from robodensity.metrics.state_time import seconds_in_state
from robodensity.metrics.states import EXECUTING, FAULT, IDLE, OFFLINE

S = 1_000_000
H = 3600 * S


def test_consecutive_fault_events_are_one_failure():
    # FAULT at 1 h, re-reported at 1.5 h, EXECUTING at 2 h.
    f = fault_runs([0, 0, 0, 0], [0, H, H + H // 2, 2 * H], [EXECUTING, FAULT, FAULT, EXECUTING], 1)
    assert f.robot.tolist() == [0] and f.start.tolist() == [H] and f.ended.tolist() == [True]
    assert f.duration_s.tolist() == [3600.0]


def test_a_fault_without_a_later_event_is_not_repaired():
    f = fault_runs([0, 0, 1], [0, H, 0], [IDLE, FAULT, FAULT], 2)
    assert f.robot.tolist() == [0, 1] and f.ended.tolist() == [False, False]
    assert f.duration_s.tolist() == [0.0, 0.0]


def test_the_last_event_at_an_instant_wins():
    # FAULT at 1 h, IDLE at 2 h overridden by FAULT at 2 h: one failure until 3 h.
    f = fault_runs([0] * 4, [H, 2 * H, 2 * H, 3 * H], [FAULT, IDLE, FAULT, IDLE], 1)
    assert f.start.tolist() == [H] and f.duration_s.tolist() == [7200.0]


def test_mtbf_divides_operating_time_by_failures_plus_robots_and_mttr_averages_repairs():
    assert mtbf_s(27_000.0, 2) == 9_000.0
    assert mtbf_s([27_000.0 + 28_800.0], [2], [2]).tolist() == [55_800.0 / 4]
    assert mttr_s(1_800.0, 2) == 900.0
    assert np.isnan(mttr_s(0.0, 0)) and np.isnan(mtbf_s(0.0, 0, 0))


def test_availability_is_executing_over_planned_and_nan_without_planned_time():
    assert availability([4 * 3600.0], [16 * 3600.0]).tolist() == [0.25]
    assert np.isnan(availability([0.0], [0.0])).all()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 100), st.sampled_from([EXECUTING, IDLE, FAULT, OFFLINE])), max_size=30))
def test_repaired_runs_add_up_to_fault_seconds(evs):
    evs = sorted(evs, key=lambda e: e[0])
    ts = np.array([t * S for t, _ in evs], dtype=np.int64)
    state = np.array([s for _, s in evs], dtype=np.int8)
    robot = np.zeros(len(evs), dtype=np.int64)
    f = fault_runs(robot, ts, state, 1)
    end = 200 * S
    sec = seconds_in_state(robot, ts, state, 1, 0, end)
    open_s = np.where(f.ended, 0, end - f.start).sum() / S
    assert f.duration_s.sum() + open_s == pytest.approx(sec[0, 0, FAULT])
    assert (f.end[f.ended] > f.start[f.ended]).all()
