"""Time in state: worked examples and properties against a plain-Python reference."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrics import state_time
from metrics.state_time import (
    attribute,
    monthly_buckets,
    seconds_in_buckets,
    seconds_in_state,
    seconds_in_state_by_group,
    utilisation,
)
from metrics.states import (
    EXECUTING,
    FAULT,
    IDLE,
    N_STATES,
    OFFLINE,
    OUT_OF_SERVICE,
    STATES,
    state_codes,
)
from robodensity.wire import State

S = 1_000_000  # µs per second
MIN = 60 * S
H = 3600 * S


# ---------------------------------------------------------------- reference


def reference(events, n_robots, edges):
    """Plain-Python time in state [s]: for each robot, segments between its events."""
    out = np.zeros((n_robots, len(edges) - 1, N_STATES))
    for r in range(n_robots):
        mine = [(t, s) for rr, t, s in events if rr == r]
        # Before the first event the robot is OFFLINE; the last state holds past the end.
        points = [(-(2**62), OFFLINE), *mine]
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


def test_robot_is_offline_before_its_first_event_and_without_events():
    s = seconds_in_state([0], [15 * MIN], [IDLE], 2, 0, H)
    assert s[0, 0, OFFLINE] == 900 and s[0, 0, IDLE] == 2700
    assert s[1, 0, OFFLINE] == 3600


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
    assert s[0, :, OFFLINE].tolist() == [43_200, 0, 0, 0]


def test_last_bucket_is_clipped_at_end():
    s = seconds_in_state([0], [0], [IDLE], 1, 0, 150 * MIN, bucket_s=3600)
    assert s.sum(axis=-1)[0].tolist() == [3600, 3600, 1800]


def test_monthly_buckets_follow_month_lengths_in_local_time():
    edges = monthly_buckets("2024-01", "2024-03", utc_offset_s=8 * 3600)
    assert edges[0] == np.datetime64("2023-12-31T16:00", "us")
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
def test_seconds_in_state_sum_to_bucket_length(fleet):
    events, n_robots, start, end, bucket_s = fleet
    s = seconds_in_state(*arrays(events), n_robots, start, end, bucket_s)
    lengths = np.diff(uniform_edges(start, end, bucket_s)) / S
    assert s.shape == (n_robots, len(lengths), N_STATES)
    assert (s >= 0).all()
    np.testing.assert_allclose(s.sum(axis=-1), np.broadcast_to(lengths, s.shape[:2]), rtol=0, atol=1e-6)


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


@st.composite
def moves(draw, n_robots, start, end):
    """Assignments sorted by robot then time: (robot, from_ts, group)."""
    out = []
    for r in range(n_robots):
        times = sorted(draw(st.lists(st.integers(start - 3 * S, end + 3 * S), max_size=4)))
        out += [(r, t, draw(st.integers(-1, 2))) for t in times]
    return out


def reference_by_group(events, assignments, n_robots, n_groups, edges):
    """Split each robot's reference time at its moves and add it to the group it was in."""
    out = np.zeros((n_groups, len(edges) - 1, N_STATES))
    per_robot_edges_cache = {}
    for r in range(n_robots):
        mine = [(t, g) for rr, t, g in assignments if rr == r]
        periods = [(t, mine[i + 1][0] if i + 1 < len(mine) else 2**62, g) for i, (t, g) in enumerate(mine)]
        for lo, hi, g in periods:
            if g < 0 or hi <= lo:
                continue
            for k in range(len(edges) - 1):
                a, b = max(lo, edges[k]), min(hi, edges[k + 1])
                if b <= a:
                    continue
                key = (r, a, b)
                if key not in per_robot_edges_cache:
                    per_robot_edges_cache[key] = reference(events, n_robots, [a, b])[r, 0]
                out[g, k] += per_robot_edges_cache[key]
    return out


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_relocated_robot_time_goes_to_the_factory_it_was_in(data):
    events, n_robots, start, end, bucket_s = data.draw(fleets())
    assignments = data.draw(moves(n_robots, start, end))
    n_groups = 3
    ar = np.array([a[0] for a in assignments], dtype=np.int64)
    at = np.array([a[1] for a in assignments], dtype=np.int64)
    ag = np.array([a[2] for a in assignments], dtype=np.int64)
    got = seconds_in_state_by_group(*arrays(events), n_robots, start, end, ar, at, ag, n_groups, bucket_s)
    want = reference_by_group(events, assignments, n_robots, n_groups, uniform_edges(start, end, bucket_s))
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_robot_moved_mid_day_splits_its_day_between_factories():
    # Robot 0 EXECUTING all day; leased from factory 0 to factory 1 at 10:00.
    got = seconds_in_state_by_group([0], [0], [EXECUTING], 1, 0, 24 * H, [0, 0], [0, 10 * H], [0, 1], 2)
    assert got[:, 0, EXECUTING].tolist() == [36_000, 50_400]


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


def test_attribute_with_fixed_assignment_equals_by_group_without_moves():
    robot, ts, state = [0, 0, 1], [0, 20 * MIN, 5 * MIN], [EXECUTING, IDLE, FAULT]
    s = seconds_in_state(robot, ts, state, 2, 0, 2 * H, bucket_s=3600)
    by_bucket = attribute(s, np.array([1, 0]), 2)
    exact = seconds_in_state_by_group(robot, ts, state, 2, 0, 2 * H, [0, 1], [0, 0], [1, 0], 2, 3600)
    np.testing.assert_allclose(by_bucket, exact)


def test_nat_timestamps_are_rejected():
    ts = np.array(["2024-01-01T00:00", "NaT"], dtype="datetime64[us]")
    with pytest.raises(ValueError, match="NaT"):
        seconds_in_state([0, 0], ts, [IDLE, IDLE], 1, ts[0], ts[0] + np.timedelta64(1, "h"))
