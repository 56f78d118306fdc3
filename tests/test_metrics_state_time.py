"""Time in state: worked examples and properties against a plain-Python reference."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robodensity.core.wire import State
from robodensity.metrics import state_time
from robodensity.metrics.state_time import (
    attribute,
    group_at,
    seconds_in_buckets,
    seconds_in_state,
    utilisation,
)
from robodensity.metrics.states import (
    EXECUTING,
    FAULT,
    IDLE,
    N_STATES,
    OFFLINE,
    OUT_OF_SERVICE,
    STATES,
    state_codes,
)

S = 1_000_000  # µs per second
MIN = 60 * S
H = 3600 * S


# ---------------------------------------------------------------- reference


def reference(events, n_robots, edges):
    """Plain-Python time in state [s]: for each robot, segments between its events."""
    out = np.zeros((n_robots, len(edges) - 1, N_STATES))
    for r in range(n_robots):
        mine = [(t, s) for rr, t, s in events if rr == r]
        # Before the first event nothing is covered; the last state holds past the end.
        points = mine
        for i, (t0, s0) in enumerate(points):
            t1 = points[i + 1][0] if i + 1 < len(points) else 2**62
            for k in range(len(edges) - 1):
                lo, hi = max(t0, edges[k]), min(t1, edges[k + 1])
                if hi > lo:
                    out[r, k, s0] += (hi - lo) / S
    return out


@st.composite
def fleets(draw):
    n_robots = draw(st.integers(1, 4))
    start = draw(st.integers(-5 * S, 5 * S))
    length = draw(st.integers(1, 20 * S))
    events = []
    for r in range(n_robots):
        times = sorted(draw(st.lists(st.integers(start - 5 * S, start + length + 5 * S), max_size=8)))
        events += [(r, t, draw(st.integers(0, N_STATES - 1))) for t in times]
    bucket_s = draw(st.none() | st.integers(1, 7))
    return events, n_robots, start, start + length, bucket_s


def arrays(events):
    robot = np.array([e[0] for e in events], dtype=np.int64)
    ts = np.array([e[1] for e in events], dtype=np.int64)
    state = np.array([e[2] for e in events], dtype=np.int8)
    return robot, ts, state


def uniform_edges(start, end, bucket_s):
    if bucket_s is None:
        return [start, end]
    edges = list(range(start, end, bucket_s * S))
    return [*edges, end]


# ---------------------------------------------------------------- states


def test_state_codes_are_indices_into_states():
    assert list(state_codes(["EXECUTING", State.IDLE, "FAULT", "OUT_OF_SERVICE", "OFFLINE"])) == [
        EXECUTING,
        IDLE,
        FAULT,
        OUT_OF_SERVICE,
        OFFLINE,
    ]
    assert [STATES[c] for c in state_codes(np.array(["OFFLINE", "IDLE"]))] == [State.OFFLINE, State.IDLE]
    assert state_codes([]).dtype == np.int8


def test_state_codes_name_the_bad_value():
    with pytest.raises(ValueError, match="'RUNNING'"):
        state_codes(["IDLE", "RUNNING"])


# ---------------------------------------------------------------- worked examples


def test_half_hour_executing_then_half_hour_idle_gives_1800_each():
    s = seconds_in_state([0, 0], [0, 30 * MIN], state_codes(["EXECUTING", "IDLE"]), 1, 0, H)
    assert s.shape == (1, 1, N_STATES)
    assert s[0, 0].tolist() == [1800.0, 1800.0, 0.0, 0.0, 0.0]
    assert utilisation(s)[0, 0] == 0.5


def test_event_before_window_sets_state_at_start():
    # EXECUTING since an hour before the window, FAULT at 45 min.
    s = seconds_in_state([0, 0], [-H, 45 * MIN], [EXECUTING, FAULT], 1, 0, H)
    assert s[0, 0, EXECUTING] == 2700 and s[0, 0, FAULT] == 900


def test_only_time_from_a_robots_first_event_is_covered():
    s = seconds_in_state([0], [15 * MIN], [IDLE], 2, 0, H)
    assert s[0, 0, OFFLINE] == 0 and s[0, 0, IDLE] == 2700 and s[0, 0].sum() == 2700
    assert s[1, 0].sum() == 0  # no events: nothing covered
    assert np.isnan(utilisation(s)[1, 0])


def test_events_after_end_are_ignored():
    s = seconds_in_state([0, 0], [0, 2 * H], [IDLE, FAULT], 1, 0, H)
    assert s[0, 0, IDLE] == 3600 and s[0, 0, FAULT] == 0


def test_interval_spanning_days_fills_whole_buckets():
    day = 86_400
    start = np.datetime64("2024-03-01T00:00", "us")
    ts = np.array(["2024-03-01T12:00", "2024-03-03T06:00"], dtype="datetime64[us]")
    s = seconds_in_state([0, 0], ts, [EXECUTING, IDLE], 1, start, start + np.timedelta64(4, "D"), day)
    assert s[0, :, EXECUTING].tolist() == [43_200, 86_400, 21_600, 0]
    assert s[0, :, IDLE].tolist() == [0, 0, 64_800, 86_400]
    assert s[0, :, OFFLINE].tolist() == [0, 0, 0, 0]
    assert s[0].sum(axis=-1).tolist() == [43_200, 86_400, 86_400, 86_400]


def test_last_bucket_is_clipped_at_end():
    s = seconds_in_state([0], [0], [IDLE], 1, 0, 150 * MIN, bucket_s=3600)
    assert s.sum(axis=-1)[0].tolist() == [3600, 3600, 1800]


def test_explicit_edges_follow_month_lengths():
    edges = np.array(["2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01"], dtype="datetime64[us]")
    s = seconds_in_buckets([0], edges[:1], [EXECUTING], 1, edges)
    assert (s[0, :, EXECUTING] / 86_400).tolist() == [31, 29, 31]


@pytest.mark.parametrize("chunk", [1, 2, 1 << 16])
def test_unsorted_events_are_rejected(chunk):
    with mock.patch.object(state_time, "CHUNK", chunk):
        with pytest.raises(ValueError, match="sorted"):
            seconds_in_state([0, 0, 0], [10, 11, 5], [IDLE, IDLE, IDLE], 1, 0, 100)
        with pytest.raises(ValueError, match="sorted"):
            seconds_in_state([0, 1, 0], [1, 5, 6], [IDLE, IDLE, IDLE], 2, 0, 100)


def test_bad_robot_index_and_state_code_are_rejected():
    with pytest.raises(ValueError, match="robot indices"):
        seconds_in_state([0, 3], [1, 5], [IDLE, IDLE], 2, 0, 100)
    with pytest.raises(ValueError, match="state codes"):
        seconds_in_state([0], [1], [7], 1, 0, 100)


def test_utilisation_is_nan_without_calendar_time():
    u = utilisation(np.zeros((2, N_STATES)))
    assert np.isnan(u).all()


# ---------------------------------------------------------------- properties


@settings(max_examples=300, deadline=None)
@given(fleets())
def test_seconds_in_state_sum_to_covered_time(fleet):
    events, n_robots, start, end, bucket_s = fleet
    s = seconds_in_state(*arrays(events), n_robots, start, end, bucket_s)
    edges = np.array(uniform_edges(start, end, bucket_s))
    assert s.shape == (n_robots, len(edges) - 1, N_STATES)
    assert (s >= 0).all()
    for r in range(n_robots):
        first = min((t for rr, t, _ in events if rr == r), default=2**62)
        covered = (edges[1:] - np.clip(first, edges[:-1], edges[1:])) / S
        np.testing.assert_allclose(s[r].sum(axis=-1), covered, rtol=0, atol=1e-6)


@settings(max_examples=300, deadline=None)
@given(fleets())
def test_seconds_in_state_match_plain_python_reference(fleet):
    events, n_robots, start, end, bucket_s = fleet
    s = seconds_in_state(*arrays(events), n_robots, start, end, bucket_s)
    np.testing.assert_allclose(s, reference(events, n_robots, uniform_edges(start, end, bucket_s)), atol=1e-6)


@settings(max_examples=300, deadline=None)
@given(fleets(), st.integers(1, 6))
def test_chunked_computation_matches_reference(fleet, chunk):
    # Large inputs are processed in chunks of consecutive events; tiny chunks exercise
    # robots split across chunks and chunks holding many robots.
    events, n_robots, start, end, bucket_s = fleet
    with mock.patch.object(state_time, "CHUNK", chunk):
        s = seconds_in_state(*arrays(events), n_robots, start, end, bucket_s)
    np.testing.assert_allclose(s, reference(events, n_robots, uniform_edges(start, end, bucket_s)), atol=1e-6)


@settings(max_examples=200, deadline=None)
@given(fleets(), st.lists(st.integers(1, 5 * S), min_size=1, max_size=5))
def test_explicit_edges_match_reference(fleet, widths):
    events, n_robots, start, _, _ = fleet
    edges = np.cumsum([start, *widths])
    s = seconds_in_buckets(*arrays(events), n_robots, edges)
    np.testing.assert_allclose(s, reference(events, n_robots, edges.tolist()), atol=1e-6)


# ---------------------------------------------------------------- relocation


def test_group_at_follows_each_robots_assignments():
    # Robot 0 in group 0 from day 10, group 1 from day 12; robot 1 unassigned from day 11; robot 2 never assigned.
    got = group_at([0, 0, 1, 1], [10, 12, 5, 11], [0, 1, 2, -1], 3, np.arange(9, 14))
    assert got.tolist() == [[-1, 0, 0, 1, 1], [2, 2, -1, -1, -1], [-1, -1, -1, -1, -1]]


def test_group_at_rejects_unsorted_assignments():
    with pytest.raises(ValueError, match="sorted"):
        group_at([0, 0], [12, 10], [0, 1], 1, np.arange(3))


@settings(max_examples=100, deadline=None)
@given(fleets(), st.data())
def test_attribute_sums_robot_buckets_into_groups(fleet, data):
    events, n_robots, start, end, bucket_s = fleet
    s = seconds_in_state(*arrays(events), n_robots, start, end, bucket_s)
    group = np.array(
        data.draw(st.lists(st.integers(-1, 2), min_size=s.size // N_STATES, max_size=s.size // N_STATES))
    ).reshape(s.shape[:2])
    got = attribute(s, group, 3)
    want = np.zeros((3, s.shape[1], N_STATES))
    for r in range(n_robots):
        for k in range(s.shape[1]):
            if group[r, k] >= 0:
                want[group[r, k], k] += s[r, k]
    np.testing.assert_allclose(got, want)


def test_a_robot_moved_at_a_day_edge_counts_each_day_at_its_factory():
    # Robot 0 EXECUTING for three days, leased from factory 0 to factory 1 from day 1.
    s = seconds_in_state([0], [0], [EXECUTING], 1, 0, 72 * H, bucket_s=86_400)
    got = attribute(s, group_at([0, 0], [0, 1], [0, 1], 1, np.arange(3)), 2)
    assert got[:, :, EXECUTING].tolist() == [[86_400, 0, 0], [0, 86_400, 86_400]]


def test_nat_timestamps_are_rejected():
    ts = np.array(["2024-01-01T00:00", "NaT"], dtype="datetime64[us]")
    with pytest.raises(ValueError, match="NaT"):
        seconds_in_state([0, 0], ts, [IDLE, IDLE], 1, ts[0], ts[0] + np.timedelta64(1, "h"))
