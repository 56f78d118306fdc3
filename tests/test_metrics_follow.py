"""The following metrics job: incremental refreshes give the blocks a full recompute gives."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg
import pytest

from robodensity.app import metrics_job
from robodensity.app.metrics_follow import refresh
from robodensity.app.metrics_job import LOCAL_TZ
from robodensity.simulators.load import load_province
from robodensity.simulators.province import ProvinceSpec, generate
from robodensity.storage.binary_copy import copy_out
from robodensity.storage.db import connect

D0 = datetime(2026, 3, 1, tzinfo=LOCAL_TZ)
T1 = D0 + timedelta(days=1, hours=13, minutes=7)  # mid-bucket, mid-day: earlier quarters read back
T2 = T1 + timedelta(minutes=41)


def _tables(conn: psycopg.Connection) -> dict[str, list[tuple[object, ...]]]:
    return {
        t: conn.execute(f"SELECT * FROM {t} ORDER BY robot_id, {k}").fetchall()
        for t, k in (("robot_blocks_15m", "bucket"), ("robot_blocks_daily", "day"))
    }


def _append(conn: psycopg.Connection, rows: list[tuple[object, ...]]) -> None:
    """Store events as a collector flush does: the events and the robots' state marks."""
    with conn.transaction():
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO events (agent_id, seq, robot_id, factory_id, ts, type, state) "
                "VALUES (%s, %s, %s, %s, %s, 'state', %s)",
                rows,
            )
        lo: dict[int, datetime] = {}
        for r in rows:
            lo[r[2]] = min(lo.get(r[2], r[4]), r[4])  # type: ignore[arg-type, index, call-overload]
        conn.execute("SELECT mark_state_robots(%s, %s)", (list(lo), list(lo.values())))


def test_incremental_refreshes_equal_a_full_recompute_block_for_block(pg_url: str, schema: str, tmp_path: Path) -> None:
    province = generate(ProvinceSpec(robots=24), 3)
    with connect(pg_url, schema) as conn:
        load_province(conn, province, tmp_path, 3, D0, T2)
        later = conn.execute(
            "SELECT agent_id, seq, robot_id, factory_id, ts, state FROM events WHERE ts >= %s ORDER BY ts", (T1,)
        ).fetchall()
        conn.execute("DELETE FROM events WHERE ts >= %s", (T1,))
        # One factory on a shift calendar whose ends are off the 15-minute grid: in-plan time is
        # computed by the same rule incrementally (late events, a bucket split at T1) as in full.
        conn.execute(
            "INSERT INTO factory_shifts (factory_id, valid_from, days, start_min, end_min) "
            "VALUES (%s, '2000-01-01', '1234567', 8 * 60 + 5, 13 * 60 + 10)",
            (later[0][3],),
        )
        conn.commit()
        assert later

        first = refresh(conn, end=T1, start=D0)
        assert first.events > 0 and first.rows > 0
        assert _tables(conn) == _recomputed(conn, T1)

        # 41 minutes of new events for every robot, plus a late fault yesterday for one robot.
        robot, factory = later[0][2], later[0][3]
        late = D0 + timedelta(hours=10, minutes=3)
        _append(
            conn,
            [
                *later,
                ("late", 1, robot, factory, late, "FAULT"),
                ("late", 2, robot, factory, late + timedelta(minutes=50), "IDLE"),
            ],
        )
        before = _tables(conn)
        second = refresh(conn, end=T2)
        assert second.marked == len({r[2] for r in later})
        third = refresh(conn, end=T2 + timedelta(minutes=20))  # no new events: every robot's time goes on
        assert third.marked == 0
        got = _tables(conn)
        assert got == _recomputed(conn, T2 + timedelta(minutes=20))
        shrunk = conn.execute(
            "SELECT count(*) FILTER (WHERE planned_executing_s < executing_s), "
            "count(*) FILTER (WHERE planned_executing_s > 0 AND planned_executing_s < executing_s) "
            "FROM robot_blocks_15m WHERE factory_id = %s",
            (later[0][3],),
        ).fetchone()
        assert shrunk is not None and shrunk[0] > 0 and shrunk[1] > 0  # outside the plan, and partly planned

        # Late in the day (its daily block re-summed from 94 stored quarters), then over midnight,
        # with a fault that starts before and ends after it.
        evening, past_midnight = D0 + timedelta(days=1, hours=23, minutes=41), D0 + timedelta(days=2, minutes=10)
        _append(conn, [("late", 3, robot, factory, evening - timedelta(minutes=21), "FAULT")])
        assert refresh(conn, end=evening).rows >= 2 * len({r[2] for r in later})  # 23:30 and 23:40 of each robot
        assert _tables(conn) == _recomputed(conn, evening)
        _append(conn, [("late", 4, robot, factory, evening + timedelta(minutes=9), "IDLE")])
        assert refresh(conn, end=past_midnight).marked == 1
        assert _tables(conn) == _recomputed(conn, past_midnight)
    # The late fault changed the robot's day, so the comparison could fail.
    day0 = [r for r in got["robot_blocks_daily"] if r[0] == robot and r[1] == D0.date()]
    was = [r for r in before["robot_blocks_daily"] if r[0] == robot and r[1] == D0.date()]
    assert day0 != was and day0[0][5] > was[0][5]  # fault_s


def _recomputed(conn: psycopg.Connection, end: datetime) -> dict[str, list[tuple[object, ...]]]:
    """The blocks a full recompute of every day up to ``end`` stores (rolled back after)."""
    out: dict[str, list[tuple[object, ...]]] = {}
    with conn.transaction():
        metrics_job.compute(conn, D0, end)
        out.update(_tables(conn))
        raise psycopg.Rollback()
    return out


def test_binary_copy_out_names_a_null_column(pg_url: str, schema: str) -> None:
    from psycopg import sql

    with connect(pg_url, schema) as conn:
        rows = copy_out(conn, sql.SQL("SELECT 1::int8 AS a, 2::int2 AS b"), {}, [("a", ">i8"), ("b", ">i2")])
        assert rows["a"].tolist() == [1] and rows["b"].tolist() == [2]
        with pytest.raises(ValueError, match="NULL"):
            copy_out(conn, sql.SQL("SELECT 1::int8, NULL::int8"), {}, [("a", ">i8"), ("b", ">i8")])
    assert np.dtype(">i8").itemsize == 8


def test_metrics_compute_follow_once_brings_the_blocks_up_to_now(
    pg_url: str, schema: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from robodensity.app.cli import app
    from robodensity.core import clock

    now = D0 + timedelta(hours=30, minutes=5)
    with connect(pg_url, schema) as conn:
        load_province(conn, generate(ProvinceSpec(robots=6), 5), tmp_path, 5, D0, now)
    monkeypatch.setenv("ROBODENSITY_DATABASE__URL", pg_url)
    args = ["metrics", "compute", "--follow", "--once", "--from", "2026-03-01", "--schema", schema]
    with clock.frozen(now):
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "6 robots" in result.output
    with connect(pg_url, schema) as conn:
        assert conn.execute("SELECT done_until FROM metric_job_state").fetchone() == (now,)
        last = conn.execute("SELECT max(bucket), count(DISTINCT robot_id) FROM robot_blocks_15m").fetchone()
    assert last == (now - timedelta(minutes=5), 6)
