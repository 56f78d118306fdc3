"""The metrics job on a real database: what counts as verified, reporting and registered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from robodensity.app import metrics_job
from robodensity.simulators.province import CitySpec, ProvinceSpec, generate, write_registry_csv
from robodensity.storage.db import connect
from robodensity.storage.registry import import_registry

pytestmark = pytest.mark.storage_modes  # the rollup stage on plain PostgreSQL and TimescaleDB
END = datetime(2026, 11, 1, tzinfo=metrics_job.LOCAL_TZ)


def test_a_robot_that_worked_within_30_days_is_verified_one_that_did_not_is_not(
    pg_url: str, schema: str, tmp_path: Path
) -> None:
    province = generate(ProvinceSpec(cities=(CitySpec("320100", "南京市", "Nanjing", 1),), robots=3), seed=1)
    factory = province.factories[0].id
    worked_20_days_ago, idle_for_40_days, _silent = province.robots
    events = [
        (worked_20_days_ago, END - timedelta(days=20), "EXECUTING"),
        (worked_20_days_ago, END - timedelta(days=19), "IDLE"),
        (idle_for_40_days, END - timedelta(days=40), "IDLE"),
    ]
    with connect(pg_url, schema) as conn:
        import_registry(conn, write_registry_csv(province, tmp_path)[0].parent)
        ids = {(m, s): i for i, m, s in conn.execute("SELECT robot_id, manufacturer, serial FROM robots")}
        for seq, (robot, ts, state) in enumerate(events, start=1):
            conn.execute(
                "INSERT INTO events (agent_id, seq, robot_id, factory_id, ts, type, state) "
                "VALUES ('a', %s, %s, %s, %s, 'state', %s)",
                (seq, ids[(robot.manufacturer, robot.serial)], factory, ts, state),
            )
        conn.commit()
        metrics_job.compute(conn, END - timedelta(days=1), END)
        row = conn.execute(
            "SELECT robot_count, verified_count, reporting_count, utilisation FROM density "
            "WHERE region_code = '320100' AND industry_code = '*'"
        ).fetchone()
    # registered: all three; verified: only the one EXECUTING within 30 days of the end;
    # reporting in the period: the two whose last state (IDLE) holds into it; utilisation 0.
    assert row == (3, 1, 2, 0.0)


def _insert_states(conn: psycopg.Connection, robot_id: int, events: list[tuple[datetime, str]]) -> None:
    for seq, (ts, state) in enumerate(events, start=1):
        conn.execute(
            "INSERT INTO events (agent_id, seq, robot_id, factory_id, ts, type, state) "
            "VALUES ('a', %s, %s, 'f', %s, 'state', %s)",
            (seq, robot_id, ts, state),
        )
    conn.commit()


def test_blocks_count_covered_seconds_per_quarter_hour_and_local_day(pg_url: str, schema: str) -> None:
    t0 = datetime(2026, 1, 5, 2, 0, tzinfo=UTC)  # 10:00 China Standard Time
    with connect(pg_url, schema) as conn:
        _insert_states(
            conn, 7, [(t0, "IDLE"), (t0 + timedelta(minutes=10), "EXECUTING"), (t0 + timedelta(minutes=40), "OFFLINE")]
        )
        metrics_job.compute(conn, t0, t0 + timedelta(hours=1))
        rows = conn.execute(
            "SELECT bucket, executing_s, idle_s, offline_s, planned_s, executing_s / covered_s "
            "FROM v_robot_blocks_15m ORDER BY bucket"
        ).fetchall()
        q = timedelta(minutes=15)
        # Only covered time counts: nothing before the first event, at 10:00.
        assert rows == [
            (t0, 300.0, 600.0, 0.0, 900.0, 300 / 900),
            (t0 + q, 900.0, 0.0, 0.0, 900.0, 1.0),
            (t0 + 2 * q, 600.0, 0.0, 300.0, 900.0, 600 / 900),
            (t0 + 3 * q, 0.0, 0.0, 900.0, 900.0, 0.0),
        ]
        daily = conn.execute(
            "SELECT day, executing_s, idle_s, offline_s, planned_s FROM v_robot_blocks_daily"
        ).fetchall()
        assert daily == [(t0.date(), 1800.0, 600.0, 1200.0, 3600.0)]
        # Computing again, or for an overlapping period, changes nothing.
        metrics_job.compute(conn, t0 - timedelta(hours=5), t0 + timedelta(hours=1))
        again = conn.execute(
            "SELECT day, executing_s, idle_s, offline_s, planned_s FROM v_robot_blocks_daily"
        ).fetchall()
        assert again == daily


def test_a_repair_counts_in_the_bucket_it_ended_with_its_whole_duration(pg_url: str, schema: str) -> None:
    day1 = datetime(2026, 3, 1, tzinfo=metrics_job.LOCAL_TZ)
    day2 = day1 + timedelta(days=1)
    fault = day2 - timedelta(minutes=10)
    events = [
        (day1, "EXECUTING"),
        (fault, "FAULT"),
        (fault + timedelta(minutes=5), "FAULT"),  # re-reported: the same failure
        (day2 + timedelta(minutes=20), "EXECUTING"),
    ]
    with connect(pg_url, schema) as conn:
        _insert_states(conn, 7, events)
        # Two runs of the job, one per day: the fault started in the first and ended in the second.
        metrics_job.compute(conn, day1, day2)
        metrics_job.compute(conn, day2, day2 + timedelta(days=1))
        rows = conn.execute(
            "SELECT day, failures, repairs, repair_s, fault_s FROM robot_blocks_daily ORDER BY day"
        ).fetchall()
        assert rows == [(day1.date(), 1, 0, 0.0, 600.0), (day2.date(), 0, 1, 1800.0, 1200.0)]
        quarter = conn.execute(
            "SELECT bucket, failures, repairs, repair_s FROM robot_blocks_15m WHERE failures + repairs > 0 ORDER BY 1"
        ).fetchall()
        assert quarter == [(day2 - timedelta(minutes=15), 1, 0, 0.0), (day2 + timedelta(minutes=15), 0, 1, 1800.0)]
