"""TimescaleDB mode for real, on the session's second cluster that preloads it (tests/conftest.py;
skipped with the reason where TimescaleDB is not installed): events a hypertable compressed by
robot and time, the retention and compression policies following the settings, their background
jobs succeeding, and late and re-sent events landing in compressed chunks. The rest of the
storage suite runs in this mode too (the ``storage_modes`` marker)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from robodensity.collector.validate import Incoming
from robodensity.collector.write import Writer
from robodensity.core import wire
from robodensity.core.wire import Batch, Event, Reading, RobotId, State
from robodensity.storage.db import connect, drop_schema, migrate
from tests.helpers import wait_until

NOW = datetime.now(UTC).replace(microsecond=0)
T = (NOW - timedelta(days=60)).replace(hour=8, minute=0, second=0)  # in a chunk the policy compresses
ROBOT = RobotId("KUKA", "S1")


@pytest.fixture
def ts(timescale_pg_url: str) -> Iterator[Writer]:
    name = f"t_ts_{uuid.uuid4().hex[:10]}"
    migrate(timescale_pg_url, name)
    try:
        with connect(timescale_pg_url, name) as conn:
            yield Writer(conn)
    finally:
        drop_schema(timescale_pg_url, name)


def _flush(writer: Writer, *events: tuple[int, datetime, State]) -> object:
    batch = Batch("a1", "f1", tuple(Event(s, Reading.of_state(ROBOT, t, st)) for s, t, st in events))
    return writer.flush([Incoming(wire.uplink_topic("f1", "a1"), wire.encode_batch(batch), 0)])


def _rows(conn: psycopg.Connection, query: str) -> list[tuple]:
    rows = conn.execute(query).fetchall()
    conn.commit()
    return rows


def _jobs(conn: psycopg.Connection) -> dict[str, tuple[int, dict]]:
    rows = _rows(
        conn,
        "SELECT proc_name, job_id, config FROM timescaledb_information.jobs "
        "WHERE hypertable_schema = current_schema() AND hypertable_name = 'events'",
    )
    return {name: (job, config) for name, job, config in rows}


def _compressed(conn: psycopg.Connection) -> list[tuple[datetime, bool]]:
    return _rows(
        conn,
        "SELECT range_start, is_compressed FROM timescaledb_information.chunks "
        "WHERE hypertable_schema = current_schema() AND hypertable_name = 'events' ORDER BY 1",
    )


def test_events_compress_by_robot_and_time_with_policies_from_the_settings(ts: Writer) -> None:
    settings = _rows(
        ts.conn,
        "SELECT attname, segmentby_column_index, orderby_column_index FROM timescaledb_information"
        ".compression_settings WHERE hypertable_schema = current_schema() AND hypertable_name = 'events' ORDER BY 1",
    )
    assert settings == [("robot_id", 1, None), ("ts", None, 1)]
    jobs = _jobs(ts.conn)
    assert jobs["policy_retention"][1]["drop_after"] == "400 days"  # the settings' defaults
    assert jobs["policy_compression"][1]["compress_after"] == "30 days"
    Writer(ts.conn, lifecycle=(500, 7))  # what the collector applies at start and hourly
    jobs = _jobs(ts.conn)
    assert jobs["policy_retention"][1]["drop_after"] == "500 days"
    assert jobs["policy_compression"][1]["compress_after"] == "7 days"


def test_background_jobs_compress_and_drop_old_chunks_and_succeed(ts: Writer) -> None:
    ancient = NOW - timedelta(days=800)
    _flush(ts, (1, ancient, State.IDLE), (2, T, State.EXECUTING), (3, NOW - timedelta(hours=1), State.IDLE))
    jobs = _jobs(ts.conn)
    ids = [jobs["policy_compression"][0], jobs["policy_retention"][0]]

    def successes() -> list[tuple[int, str, int]]:
        return _rows(
            ts.conn,
            "SELECT job_id, last_run_status, total_successes FROM timescaledb_information.job_stats "
            f"WHERE job_id IN ({ids[0]}, {ids[1]}) ORDER BY job_id",
        )

    before = {job: n for job, _, n in successes()}
    for job in ids:  # one after the other: run together, the two may deadlock (and retry later)
        ts.conn.execute("SELECT public.alter_job(%s, next_start => now())", (job,))
        ts.conn.commit()
        wait_until(lambda j=job: dict((i, n) for i, _, n in successes())[j] > before[j], 60, f"job {job} run again")
    assert [status for _, status, _ in successes()] == ["Success", "Success"]
    chunks = _compressed(ts.conn)
    assert all(start > ancient for start, _ in chunks)  # the 800-day-old chunk was dropped
    assert [c for start, c in chunks if start <= T] == [True]  # the 60-day-old one compressed
    assert [c for start, c in chunks if start > NOW - timedelta(days=8)] == [False]
    assert _rows(ts.conn, "SELECT seq FROM events ORDER BY seq") == [(2,), (3,)]


def test_late_and_resent_events_land_in_compressed_chunks(ts: Writer) -> None:
    h = timedelta(hours=1)
    _flush(ts, (1, T, State.IDLE), (2, T + h, State.EXECUTING), (3, T + 2 * h, State.IDLE))
    _rows(ts.conn, "SELECT public.compress_chunk(c) FROM public.show_chunks('events', older_than => interval '30d') c")
    assert [c for _, c in _compressed(ts.conn)] == [True]
    result = _flush(
        ts,
        (4, T + 1.5 * h, State.FAULT),  # late: between two compressed events
        (2, T + h, State.EXECUTING),  # re-sent as stored
        (3, T + 2 * h, State.FAULT),  # re-sent with other content
    )
    assert (result.inserted, result.duplicates, result.conflicts) == (1, 1, 1)  # type: ignore[attr-defined]
    assert [c for _, c in _compressed(ts.conn)] == [True]
    assert _rows(ts.conn, "SELECT seq, state FROM events ORDER BY ts") == [
        (1, "IDLE"),
        (2, "EXECUTING"),
        (4, "FAULT"),
        (3, "IDLE"),
    ]
    assert _rows(ts.conn, "SELECT start_ts, end_ts, state FROM state_intervals ORDER BY start_ts") == [
        (T, T + h, "IDLE"),
        (T + h, T + 1.5 * h, "EXECUTING"),
        (T + 1.5 * h, T + 2 * h, "FAULT"),
        (T + 2 * h, None, "IDLE"),
    ]
    assert _rows(ts.conn, "SELECT payload->>'state' FROM event_conflicts") == [("FAULT",)]
