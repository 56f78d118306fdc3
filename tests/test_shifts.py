"""Shift plans (issue 15 item 4): calendars import with the registry; planned time, and so ISO
22400-2 availability, follows them; 24/7 stays the explicit, labelled default."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from robodensity.app import metrics_job
from robodensity.core.errors import RegistryError
from robodensity.metrics.shifts import Calendar, Shift, planned_seconds
from robodensity.simulators.province import CitySpec, ProvinceSpec, generate, write_registry_csv
from robodensity.storage.db import connect
from robodensity.storage.registry import import_registry
from robodensity.storage.shifts import LABEL_24_7, LABEL_CALENDAR, weekdays

Z = ZoneInfo("Asia/Shanghai")
WEEK = frozenset(range(1, 6))
TWO_SHIFTS = (Shift(WEEK, 6 * 60, 14 * 60), Shift(WEEK, 14 * 60, 22 * 60))
MON = date(2026, 3, 2)  # a Monday


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
        truth: dict[str, list[float]] = {shifted: [0.0, 0.0], around: [0.0, 0.0]}  # executing, planned [min]
        rows, seq = [], 0
        for rid, factory in robots:
            last, was_planned = None, None
            for m, in_plan in enumerate(planned_minute.tolist()):
                planned = in_plan or factory == around
                # in planned time mostly executing (a change every 20 minutes or so), otherwise idle
                if planned != was_planned or (planned and rng.random() < 1 / 20):
                    state = rng.choice(["EXECUTING", "EXECUTING", "EXECUTING", "IDLE", "FAULT"]) if planned else "IDLE"
                    if state != last:
                        seq += 1
                        rows.append((f"sim-{factory}", seq, rid, factory, start + timedelta(minutes=m), state))
                        last = state
                was_planned = planned
                truth[factory][0] += last == "EXECUTING"
                truth[factory][1] += planned
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
            (f, (e, p, c))
            for f, e, p, c in conn.execute(
                "SELECT factory_id, sum(executing_s), sum(planned_s), "
                "sum(executing_s + idle_s + fault_s + out_of_service_s + offline_s) "
                "FROM robot_blocks_15m WHERE bucket >= %s AND bucket < %s GROUP BY 1",
                (start, end),
            )
        )
        labels = dict(conn.execute("SELECT factory_id, plan FROM v_factory_plan"))
    executing, planned_s, covered = got[shifted]
    true_availability = truth[shifted][0] / truth[shifted][1]
    assert executing / planned_s == pytest.approx(true_availability, abs=0.01)
    assert planned_s == pytest.approx(truth[shifted][1] * 60, rel=1e-6)  # 2 robots x the plan's minutes
    assert executing / covered < 0.5 * true_availability  # the 24/7 reading would call it under-used
    executing, planned_s, covered = got[around]
    assert planned_s == covered  # no calendar: 24/7
    assert executing / planned_s == pytest.approx(truth[around][0] / truth[around][1], abs=0.01)
    assert labels == {shifted: LABEL_CALENDAR, around: LABEL_24_7}
