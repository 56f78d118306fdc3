"""Target progress and trend projection."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robodensity.metrics.targets import linear_trend, month_reached, on_track, target_progress, to_days

TARGETS = Path("/work/shared/reference/targets.csv")
IFR = Path("/work/shared/reference/ifr_density.csv")


def test_progress_is_value_over_target():
    assert target_progress([250, 500], 500).tolist() == [0.5, 1.0]


def test_progress_is_nan_when_target_is_not_positive():
    assert np.isnan(target_progress([1, 1, 1], [0, -5, np.nan])).all()


def test_linear_trend_recovers_a_line():
    t = np.array([0.0, 10.0, 20.0, 30.0])
    slope, intercept = linear_trend(t, 3 + 0.5 * t)
    assert slope == pytest.approx(0.5) and intercept == pytest.approx(3)


def test_linear_trend_ignores_nans_and_needs_two_times():
    slope, _ = linear_trend([0.0, 1.0, 2.0], [1.0, np.nan, 3.0])
    assert slope == pytest.approx(1.0)
    slope, intercept = linear_trend([0.0, 1.0], [1.0, np.nan])
    assert np.isnan(slope) and np.isnan(intercept)


def test_trend_reaching_target_half_a_year_after_last_observation():
    t = np.array(["2023-01-01", "2024-01-01"], dtype="datetime64[D]")
    assert month_reached(t, [100.0, 200.0], 250.0, np.datetime64("2025-12-31")) == np.datetime64("2024-07")


def test_month_reached_is_nat_when_trend_is_flat_or_falling_below_target():
    t = np.array(["2023-01-01", "2024-01-01"], dtype="datetime64[D]")
    assert np.isnat(month_reached(t, [200.0, 150.0], 250.0, "2025-12-31"))
    assert np.isnat(month_reached(t, [200.0, 200.0], 250.0, "2025-12-31"))
    assert np.isnat(month_reached(t[:1], [200.0], 250.0, "2025-12-31"))


def test_month_reached_is_first_observation_when_already_above_target():
    t = np.array(["2023-03-10", "2024-01-01"], dtype="datetime64[D]")
    assert month_reached(t, [300.0, 200.0], 250.0, "2025-12-31") == np.datetime64("2023-03")


def test_month_reached_beyond_horizon_is_nat():
    t = np.array(["2023-01-01", "2024-01-01"], dtype="datetime64[D]")
    assert np.isnat(month_reached(t, [100.0, 101.0], 500.0, "2025-12-31", horizon_years=25))


@pytest.mark.skipif(not (TARGETS.exists() and IFR.exists()), reason="shared reference data not mounted")
def test_china_density_trend_against_the_robot_plus_target():
    # Published IFR densities for China (2021-2023) against the national 2025 target (492).
    with IFR.open() as f:
        rows = [r for r in csv.DictReader(f) if r["country"] == "CN"]
    with TARGETS.open() as f:
        target = next(r for r in csv.DictReader(f) if r["scope_region"] == "CN")
    t = np.array([f"{r['data_year']}-12-31" for r in rows], dtype="datetime64[D]")
    d = np.array([float(r["robots_per_10000_employees"]) for r in rows])
    order = np.argsort(t)
    due = np.datetime64(target["due_date"])
    goal = float(target["value"])
    # 322 -> 392 -> 470: about 74 a year; 492 is reached during 2024, ahead of the due date.
    m = month_reached(t[order], d[order], goal, due)
    assert np.datetime64("2024-01") <= m <= np.datetime64("2024-12")
    assert on_track(t[order], d[order], goal, due)
    assert target_progress(d[order][-1], goal) == pytest.approx(470 / 492)


@settings(max_examples=200, deadline=None)
@given(
    st.floats(0.05, 10),
    st.floats(0, 500),
    st.floats(0, 2000),
    st.lists(st.integers(18_000, 20_000), min_size=2, max_size=10, unique=True),
)
def test_trend_at_reported_month_is_at_target_and_month_before_is_below(slope, intercept, target, days):
    t = np.sort(np.array(days, dtype=float))
    values = intercept + slope * (t - 18_000)
    m = month_reached(t, values, target, np.datetime64("2030-12-31"), horizon_years=200)
    assert not np.isnat(m)
    end_of_month = to_days((m + 1).astype("datetime64[D]"))
    start_of_month = to_days(m.astype("datetime64[D]"))
    assert intercept + slope * (end_of_month - 18_000) >= target - 1e-6
    if start_of_month > t[0]:
        # Strictly before the month the trend is still below the target.
        assert intercept + slope * (start_of_month - 1 - 18_000) < target + 1e-6
