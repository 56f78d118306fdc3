"""Robot density and roll-ups."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robodensity.metrics.density import region_ancestors, robot_density, rollup

REFERENCE = Path("/work/shared/reference/ifr_density.csv")


def test_density_is_robots_per_ten_thousand_employees():
    assert robot_density(470, 10_000).item() == 470.0
    assert robot_density(47, 1_000).item() == pytest.approx(470.0)


def test_density_is_nan_when_no_employees():
    d = robot_density([5, 0, 3], [0, 0, -2])
    assert np.isnan(d).all()
    assert not np.isinf(d).any()


@pytest.mark.skipif(not REFERENCE.exists(), reason="shared reference data not mounted")
def test_density_reproduces_published_figures_from_counts():
    # A region with the published density's robots per 10,000 employees gives it back.
    with REFERENCE.open() as f:
        rows = list(csv.DictReader(f))
    published = np.array([float(r["robots_per_10000_employees"]) for r in rows])
    employees = np.full(len(rows), 3_700_000.0)
    np.testing.assert_allclose(robot_density(published * 370, employees), published)


def test_rollup_density_is_total_robots_over_total_employees_not_a_mean_of_densities():
    # Factory A: 10 robots / 100 employees (1000); factory B: 10 robots / 10,000 (10).
    out = rollup([0, 0], 1, [10, 10], [100, 10_000])
    assert out["robot_density"][0] == pytest.approx(20 / 10_100 * 10_000)
    assert out["robot_density"][0] != pytest.approx((1000 + 10) / 2)


def test_rollup_coverage_and_domestic_share():
    out = rollup(
        [0, 0, 1, -1], 3, [10, 30, 0, 99], [100, 100, 50, 99], reporting=[5, 15, 0, 99], domestic=[10, 0, 0, 99]
    )
    assert out["robot_count"].tolist() == [40, 0, 0]
    assert out["employee_count"].tolist() == [200, 50, 0]
    assert out["coverage"][0] == 0.5 and out["domestic_share"][0] == 0.25
    # Group 1 has employees but no robots: density 0, coverage undefined; group 2 has nothing.
    assert out["robot_density"][1] == 0 and np.isnan(out["coverage"][1])
    assert np.isnan(out["robot_density"][2]) and np.isnan(out["domestic_share"][2])


def test_rollup_rejects_mismatched_lengths_and_bad_groups():
    with pytest.raises(ValueError, match="employees"):
        rollup([0, 1], 2, [1, 2], [1])
    with pytest.raises(ValueError, match="n_groups"):
        rollup([0, 2], 2, [1, 2], [1, 2])


rows = st.lists(
    st.tuples(
        st.integers(-1, 4),
        st.integers(0, 500),
        st.integers(0, 5000),
        st.floats(0, 1),
        st.floats(0, 1),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(rows)
def test_rollups_equal_totals_recomputed_from_rows(data):
    n_groups = 5
    group = np.array([r[0] for r in data], dtype=np.int64)
    robots = np.array([r[1] for r in data], dtype=float)
    employees = np.array([r[2] for r in data], dtype=float)
    reporting = np.floor(robots * np.array([r[3] for r in data]))
    domestic = np.floor(robots * np.array([r[4] for r in data]))
    out = rollup(group, n_groups, robots, employees, reporting=reporting, domestic=domestic)
    for g in range(n_groups):
        mine = [i for i in range(len(data)) if group[i] == g]
        r = sum(robots[i] for i in mine)
        e = sum(employees[i] for i in mine)
        assert out["robot_count"][g] == r
        assert out["employee_count"][g] == e
        if e > 0:
            assert out["robot_density"][g] == pytest.approx(r / e * 10_000)
        else:
            assert np.isnan(out["robot_density"][g])
        if r > 0:
            assert out["coverage"][g] == pytest.approx(sum(reporting[i] for i in mine) / r)
            assert out["domestic_share"][g] == pytest.approx(sum(domestic[i] for i in mine) / r)
        else:
            assert np.isnan(out["coverage"][g]) and np.isnan(out["domestic_share"][g])
    assert not np.isinf(out["robot_density"]).any()
    # Rolling up the groups again gives the grand total.
    total = rollup(np.zeros(n_groups, dtype=int), 1, out["robot_count"], out["employee_count"])
    assert total["robot_count"][0] == robots[group >= 0].sum()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1000), st.integers(-100, 1000)), max_size=30))
def test_density_is_never_infinite(data):
    d = robot_density([r for r, _ in data], [e for _, e in data])
    assert not np.isinf(d).any()
    assert all(np.isnan(d[i]) == (e <= 0) for i, (_, e) in enumerate(data))


def test_region_ancestors_walk_district_city_province():
    assert region_ancestors("320506") == ["320506", "320500", "320000"]
    assert region_ancestors("320500") == ["320500", "320000"]
    assert region_ancestors("320000") == ["320000"]


@pytest.mark.parametrize("bad", ["32050", "3205060", "32O506", "020506", 320506, ""])
def test_region_ancestors_reject_codes_that_are_not_six_digits(bad):
    with pytest.raises(ValueError, match="GB/T 2260"):
        region_ancestors(bad)
