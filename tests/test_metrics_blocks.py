"""Blocks: the additive building blocks every figure is summed from."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robodensity.metrics.blocks import COLUMNS, QUARTER_HOUR_S, quarter_hour_edges, robot_blocks
from robodensity.metrics.reliability import fault_runs
from robodensity.metrics.state_time import seconds_in_buckets
from robodensity.metrics.states import EXECUTING, FAULT, IDLE, N_STATES, OFFLINE

S = 1_000_000
Q = QUARTER_HOUR_S * S


@st.composite
def events(draw):
    n_robots = draw(st.integers(1, 3))
    out = []
    for r in range(n_robots):
        times = sorted(draw(st.lists(st.integers(-2 * Q, 10 * Q), max_size=12)))
        out += [(r, t, draw(st.sampled_from([EXECUTING, IDLE, FAULT, OFFLINE]))) for t in times]
    return n_robots, out


def arrays(evs):
    return (
        np.array([e[0] for e in evs], dtype=np.int64),
        np.array([e[1] for e in evs], dtype=np.int64),
        np.array([e[2] for e in evs], dtype=np.int8),
    )


@settings(max_examples=200, deadline=None)
@given(events(), st.integers(1, 7))
def test_blocks_of_a_split_window_sum_to_the_blocks_of_the_whole(fleet, cut):
    """What the metrics job stores per run adds up, bucket by bucket, to one run over everything."""
    n_robots, evs = fleet
    r, t, s = arrays(evs)
    edges = np.arange(0, 9 * Q, Q)
    whole = robot_blocks(r, t, s, n_robots, edges)
    # The second run sees events from its start on, plus each robot's state then (its whole
    # FAULT run when it is in one), as metrics_job.load_state_events loads them.
    lo = int(edges[cut])
    keep = t >= lo
    for robot in range(n_robots):
        before = np.flatnonzero((r == robot) & (t < lo))
        if len(before):
            keep[before[-1]] = True
            run = fault_runs(r[before], t[before], s[before], n_robots)
            if len(run.start) and s[before[-1]] == FAULT and not run.ended[-1]:
                keep[before[np.searchsorted(t[before], run.start[-1])]] = True
    second = robot_blocks(r[keep], t[keep], s[keep], n_robots, edges[cut:])
    np.testing.assert_allclose(second.columns(), whole.columns()[:, cut:], atol=1e-6)


@settings(max_examples=200, deadline=None)
@given(events())
def test_block_columns_follow_their_rules(fleet):
    n_robots, evs = fleet
    r, t, s = arrays(evs)
    edges = np.arange(0, 9 * Q, Q)
    b = robot_blocks(r, t, s, n_robots, edges)
    np.testing.assert_allclose(b.seconds, seconds_in_buckets(r, t, s, n_robots, edges))
    np.testing.assert_array_equal(b.planned_s, b.covered_s)  # 24/7 plan
    np.testing.assert_array_equal(b.planned_executing_s, b.seconds[..., 0])  # ... every EXECUTING second in it
    runs = fault_runs(r, t, s, n_robots)
    starts_inside = (runs.start >= 0) & (runs.start < edges[-1])
    ends_inside = runs.ended & (runs.end >= 0) & (runs.end < edges[-1])
    assert b.failures.sum() == starts_inside.sum()
    assert b.repairs.sum() == ends_inside.sum()
    assert b.repair_s.sum() == pytest.approx(runs.duration_s[ends_inside].sum())
    merged = b.merge(np.array([0, 3, 5]))
    assert merged.columns().shape == (n_robots, 3, len(COLUMNS))
    np.testing.assert_allclose(merged.columns().sum(axis=1), b.columns().sum(axis=1), atol=1e-6)


def test_a_fault_counts_where_it_started_and_its_repair_where_it_ended():
    # EXECUTING, FAULT 10-40 min: failure in bucket 0, repair of 1800 s in bucket 2.
    b = robot_blocks([0, 0, 0], [0, 10 * 60 * S, 40 * 60 * S], [EXECUTING, FAULT, IDLE], 1, [0, Q, 2 * Q, 3 * Q])
    assert b.failures[0].tolist() == [1, 0, 0]
    assert b.repairs[0].tolist() == [0, 0, 1] and b.repair_s[0].tolist() == [0, 0, 1800]
    assert b.seconds[0, :, FAULT].tolist() == [300, 900, 600]
    assert b.seconds.shape == (1, 3, N_STATES)


def test_quarter_hour_edges_keep_an_off_grid_start_and_end():
    edges = quarter_hour_edges(0, 5 * 60 * S, 2 * Q + 60 * S)
    assert edges.tolist() == [5 * 60 * S, Q, 2 * Q, 2 * Q + 60 * S]
    with pytest.raises(ValueError, match="after start"):
        quarter_hour_edges(0, Q, Q)


def test_merge_rejects_bad_starts():
    b = robot_blocks([0], [0], [IDLE], 1, [0, Q, 2 * Q])
    with pytest.raises(ValueError, match="starts"):
        b.merge(np.array([1]))
