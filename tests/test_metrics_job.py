"""The metrics job on a real database: what counts as verified, reporting and registered."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from collector.db import connect
from collector.registry import import_registry
from robodensity import metrics_job
from simulators.province import CitySpec, ProvinceSpec, generate, write_registry_csv

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
