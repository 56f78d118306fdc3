"""Shift plans (issue 15 item 4): calendars import with the registry; planned time, and so ISO
22400-2 availability, follows them; 24/7 stays the explicit, labelled default."""

from __future__ import annotations

import random
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from robodensity.app import metrics_job
from robodensity.core.errors import RegistryError
from robodensity.metrics.shifts import Calendar, Shift, planned_seconds
from robodensity.simulators.province import CitySpec, ProvinceSpec, generate, write_registry_csv
from robodensity.storage.db import connect, drop_schema, migrate
from robodensity.storage.registry import import_registry
from robodensity.storage.shifts import LABEL_24_7, LABEL_CALENDAR, weekdays
from tests.helpers import migrate_through

Z = ZoneInfo("Asia/Shanghai")
WEEK = frozenset(range(1, 6))
TWO_SHIFTS = (Shift(WEEK, 6 * 60, 14 * 60), Shift(WEEK, 14 * 60, 22 * 60))
MON = date(2026, 3, 2)  # a Monday
LABEL_HALF = "planned: shift calendars (1 of 2 factories, the others 24/7)"


def _edges(*days: date) -> np.ndarray:
    return np.array([int(datetime.combine(d, datetime.min.time(), Z).timestamp() * 1e6) for d in days])


def _hours(cal: Calendar, first: date, n_days: int) -> list[float]:
    days = [first + timedelta(days=i) for i in range(n_days + 1)]
    return (planned_seconds(cal, _edges(*days), Z) / 3600).tolist()


# ----------------------------------------------------------------------------- planned time


def test_two_shifts_five_days_plan_sixteen_hours_on_weekdays_only() -> None:
    cal = Calendar(((date(2026, 1, 1), TWO_SHIFTS),))
    assert _hours(cal, MON, 7) == [16, 16, 16, 16, 16, 0, 0]


def test_a_night_shift_ends_the_next_day_and_belongs_to_the_day_it_starts() -> None:
    cal = Calendar(((date(2026, 1, 1), (Shift(frozenset({5}), 22 * 60, 6 * 60),)),))  # Friday night
    assert _hours(cal, MON, 7) == [0, 0, 0, 0, 2, 6, 0]


def test_holidays_maintenance_and_a_new_calendar_version_change_the_plan() -> None:
    cal = Calendar(
        ((date(2026, 1, 1), TWO_SHIFTS), (MON + timedelta(days=3), (Shift(WEEK, 8 * 60, 8 * 60),))),
        holidays=frozenset({MON + timedelta(days=1)}),
        maintenance=((datetime(2026, 3, 4, 13, 0), 2.0),),  # Wednesday 13:00-15:00
    )
    assert _hours(cal, MON, 5) == [16, 0, 14, 16, 24]  # the 24 h shift runs from Thursday 08:00


def test_before_its_first_calendar_a_factory_is_planned_around_the_clock() -> None:
    cal = Calendar(((MON + timedelta(days=2), TWO_SHIFTS),))
    assert _hours(cal, MON, 3) == [24, 24, 16]


@pytest.mark.parametrize(
    ("text", "digits"),
    [("Mon-Fri", "12345"), ("mon, wed ,FRI", "135"), ("1-5", "12345"), ("daily", "1234567"), ("Sat-Sun", "67")],
)
def test_days_read_as_iso_weekdays(text: str, digits: str) -> None:
    assert weekdays(text) == digits


# ----------------------------------------------------------------------------- import


def _registry(tmp_path: Path) -> tuple[Path, list[str]]:
    province = generate(
        ProvinceSpec(cities=(CitySpec("320400", "常州市", "Changzhou", 2),), robots=4, opcua_share=0.0), seed=3
    )
    folder = tmp_path / "registry"
    write_registry_csv(province, folder)
    return folder, [f.id for f in province.factories]


def _calendar_files(folder: Path, factory: str) -> None:
    (folder / "shifts.csv").write_text(
        f"factory_id,days,start,end\n{factory},Mon-Fri,06:00,14:00\n{factory},Mon-Fri,14:00,22:00\n", encoding="utf-8"
    )
    (folder / "holidays.csv").write_text("factory_id,date,name\n*,2026-03-11,test holiday\n", encoding="utf-8")
    (folder / "maintenance.csv").write_text(
        f"factory_id,start,hours,note\n{factory},2026-03-04 10:00,2,gearbox\n", encoding="utf-8"
    )


def test_bad_calendar_rows_are_reported_by_file_line_and_column_and_nothing_is_imported(
    pg_url: str, schema: str, tmp_path: Path
) -> None:
    folder, factories = _registry(tmp_path)
    (folder / "shifts.csv").write_text(
        "factory_id,days,start,end\n"
        f"{factories[0]},Mon-Fri,06:00,14:00\n"
        f"{factories[0]},Fri-Mon,06:00,14:00\n"
        f"{factories[0]},Mon-Fri,25:00,14:00\n"
        "nowhere,Mon-Fri,06:00,14:00\n",
        encoding="utf-8",
    )
    (folder / "maintenance.csv").write_text(f"factory_id,start,hours\n{factories[0]},2026-03-04,-2\n", encoding="utf-8")
    with connect(pg_url, schema) as conn, pytest.raises(RegistryError) as err:
        import_registry(conn, folder)
    lines = str(err.value).splitlines()
    for expected in (
        "shifts.csv:3: days: 'fri-mon' runs backwards",
        "shifts.csv:4: start: '25:00' is not a time",
        "shifts.csv:5: factory_id: factory nowhere is in neither",
        "maintenance.csv:2: hours: -2 hours is not between 0 and a year",
    ):
        assert any(expected in line for line in lines), (expected, lines)
    with connect(pg_url, schema) as conn:
        assert conn.execute("SELECT count(*) FROM factories").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM factory_shifts").fetchone() == (0,)


def test_two_shift_availability_matches_the_ground_truth_and_24_7_is_labelled(
    pg_url: str, schema: str, tmp_path: Path
) -> None:
    folder, factories = _registry(tmp_path)
    shifted, around = factories  # the first on two shifts five days a week, the second with no calendar
    _calendar_files(folder, shifted)
    start = datetime.combine(MON, datetime.min.time(), Z)
    end = start + timedelta(days=14)
    cal = Calendar(
        ((date(2000, 1, 1), TWO_SHIFTS),),
        holidays=frozenset({date(2026, 3, 11)}),
        maintenance=((datetime(2026, 3, 4, 10, 0), 2.0),),
    )
    # planned intervals of the calendar, by the pure function the test also checks above
    minute_edges = np.arange(int(start.timestamp() * 1e6), int(end.timestamp() * 1e6) + 1, 60_000_000)
    planned_minute = planned_seconds(cal, minute_edges, Z) > 0  # this factory's plan, minute by minute
    rng = random.Random(22)
    with connect(pg_url, schema) as conn:
        import_registry(conn, folder)
        robots = conn.execute(
            "SELECT r.robot_id, a.factory_id FROM robots r JOIN assignments a USING (robot_id) ORDER BY 1"
        ).fetchall()
        # executing in the plan, planned, executing outside the plan (overtime) [min]
        truth: dict[str, list[float]] = {shifted: [0.0, 0.0, 0.0], around: [0.0, 0.0, 0.0]}
        rows, seq = [], 0
        for rid, factory in robots:
            last, was_planned = None, None
            for m, in_plan in enumerate(planned_minute.tolist()):
                planned = in_plan or factory == around
                overtime = not planned and (m // 60) % 24 in (22, 23)  # two hours after the late shift
                # in planned time mostly executing (a change every 20 minutes or so); overtime
                # executing on weekdays and Saturdays; otherwise idle
                if planned != was_planned or (planned and rng.random() < 1 / 20) or (m // 60) % 24 in (0, 22):
                    if planned:
                        state = rng.choice(["EXECUTING", "EXECUTING", "EXECUTING", "IDLE", "FAULT"])
                    else:
                        state = "EXECUTING" if overtime and m // 1440 % 7 < 6 else "IDLE"
                    if state != last:
                        seq += 1
                        rows.append((f"sim-{factory}", seq, rid, factory, start + timedelta(minutes=m), state))
                        last = state
                was_planned = planned
                truth[factory][0] += last == "EXECUTING" and planned
                truth[factory][1] += planned
                truth[factory][2] += last == "EXECUTING" and not planned
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO events (agent_id, seq, robot_id, factory_id, ts, type, state) "
                "VALUES (%s, %s, %s, %s, %s, 'state', %s)",
                rows,
            )
        conn.commit()
        metrics_job.compute(conn, start, end)
        conn.commit()
        got = dict(
            (f, (e, pe, p, c))
            for f, e, pe, p, c in conn.execute(
                "SELECT factory_id, sum(executing_s), sum(planned_executing_s), sum(planned_s), "
                "sum(executing_s + idle_s + fault_s + out_of_service_s + offline_s) "
                "FROM robot_blocks_15m WHERE bucket >= %s AND bucket < %s GROUP BY 1",
                (start, end),
            )
        )
        labels = dict(conn.execute("SELECT factory_id, plan FROM v_factory_plan"))
        plans = dict(
            conn.execute(
                "SELECT region_code, plan FROM v_density WHERE industry_code = '*' AND period_start = %s", (start,)
            )
        )
    executing, in_plan, planned_s, covered = got[shifted]
    true_availability = truth[shifted][0] / truth[shifted][1]
    assert truth[shifted][2] > 0.1 * truth[shifted][0]  # real overtime
    # utilisation = availability: EXECUTING inside the plan over the plan; overtime is in neither
    assert in_plan / planned_s == pytest.approx(true_availability, abs=0.01)
    assert in_plan == pytest.approx(truth[shifted][0] * 60, abs=2 * 900)  # within a bucket per robot
    assert executing - in_plan == pytest.approx(truth[shifted][2] * 60, abs=2 * 900)
    assert planned_s == pytest.approx(truth[shifted][1] * 60, rel=1e-6)  # 2 robots x the plan's minutes
    assert executing / covered < 0.6 * true_availability  # the 24/7 reading would call it under-used
    assert executing / planned_s > true_availability + 0.05  # counting overtime would overstate it
    executing, in_plan, planned_s, covered = got[around]
    assert planned_s == covered and in_plan == executing  # no calendar: 24/7
    assert in_plan / planned_s == pytest.approx(truth[around][0] / truth[around][1], abs=0.01)
    assert labels == {shifted: LABEL_CALENDAR, around: LABEL_24_7}
    # the density rows name the plan beside utilisation: one of the city's two factories has a calendar
    assert plans == {"320000": LABEL_HALF, "320400": LABEL_HALF}


def test_migration_080_backfills_in_plan_executing_time_by_the_same_rule(pg_url: str, tmp_path: Path) -> None:
    """An existing database upgrades: 24/7 blocks keep executing_s, calendar blocks get
    executing_s x their planned share (planned_s / covered_s), days the sum of their buckets."""
    name = f"t_080_{uuid.uuid4().hex[:10]}"
    factories = ["f1", "f2"]
    day = datetime.combine(MON, datetime.min.time(), Z)
    try:
        migrate_through(pg_url, name, 79)
        with connect(pg_url, name, autocommit=True) as conn:
            conn.execute("INSERT INTO regions (code, name) VALUES ('320000', '江苏省'), ('320400', '常州市')")
            conn.execute("UPDATE regions SET parent_code = '320000' WHERE code = '320400'")
            conn.execute("INSERT INTO industries (code, name) VALUES ('36', '汽车制造业')")
            for f in factories:
                conn.execute("INSERT INTO factories VALUES (%s, %s, '320400', '36')", (f, f))
            rows = [  # robot, bucket, factory, executing, idle, planned
                (1, day, factories[0], 600.0, 300.0, 900.0),  # 24/7: planned = covered
                (1, day + timedelta(minutes=15), factories[0], 450.0, 450.0, 900.0),
                (2, day, factories[1], 600.0, 300.0, 300.0),  # a third of the bucket planned
                (2, day + timedelta(minutes=15), factories[1], 900.0, 0.0, 0.0),  # overtime only
            ]
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO robot_blocks_15m (robot_id, bucket, factory_id, executing_s, idle_s, fault_s, "
                    "out_of_service_s, offline_s, planned_s, failures, repairs, repair_s) "
                    "VALUES (%s, %s, %s, %s, %s, 0, 0, 0, %s, 0, 0, 0)",
                    rows,
                )
                cur.executemany(
                    "INSERT INTO robot_blocks_daily (robot_id, day, factory_id, executing_s, idle_s, fault_s, "
                    "out_of_service_s, offline_s, planned_s, failures, repairs, repair_s) "
                    "VALUES (%s, %s, %s, %s, %s, 0, 0, 0, %s, 0, 0, 0)",
                    [
                        (1, MON, factories[0], 1050.0, 750.0, 1800.0),
                        (2, MON, factories[1], 1500.0, 300.0, 300.0),
                        (2, MON - timedelta(days=1), factories[1], 900.0, 900.0, 600.0),  # its buckets are gone
                    ],
                )
            conn.execute("SELECT refresh_region_daily(%s, %s)", (MON - timedelta(days=1), MON + timedelta(days=1)))
            conn.execute(
                "INSERT INTO density (region_code, industry_code, period_start, period_end, robot_count, "
                "employee_count, verified_count, reporting_count, utilisation) "
                "VALUES ('320400', '*', %s, %s, 2, 100, 2, 2, 0.5)",
                (day, day + timedelta(days=1)),
            )
        migrate(pg_url, name)
        with connect(pg_url, name) as conn:
            quarter = conn.execute("SELECT planned_executing_s FROM robot_blocks_15m ORDER BY robot_id, bucket")
            assert [r[0] for r in quarter] == [600.0, 450.0, pytest.approx(200.0), 0.0]
            daily = dict(conn.execute("SELECT day, planned_executing_s FROM robot_blocks_daily WHERE robot_id = 2"))
            assert daily == {MON: pytest.approx(200.0), MON - timedelta(days=1): pytest.approx(300.0)}
            assert conn.execute("SELECT planned_executing_s FROM robot_blocks_daily WHERE robot_id = 1").fetchone() == (
                1050.0,
            )
            city = conn.execute(
                "SELECT planned_executing_s, planned_s FROM v_region_daily "
                "WHERE region_code = '320400' AND industry_code = '*' AND day = %s",
                (MON,),
            ).fetchone()
            assert city == (pytest.approx(1250.0), 2100.0)
            assert conn.execute(
                "SELECT sum(planned_executing_s), sum(planned_s) FROM v_factory_daily WHERE day = %s", (MON,)
            ).fetchone() == (pytest.approx(1250.0), 2100.0)
            assert conn.execute("SELECT plan FROM v_density").fetchone() == (LABEL_24_7,)
    finally:
        drop_schema(pg_url, name)
