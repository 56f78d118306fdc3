"""Keep the blocks current: recompute only the robot x bucket blocks touched since the last run.

``robodensity metrics compute --follow`` calls :func:`refresh` about once a minute. A run
brings every robot's blocks up to now (``end``): from the 15-minute bucket where the last run
ended (``metric_job_state.done_until``) for every robot, and from its earliest new event for a
robot with late events (``metric_marks``, copied from the collector's state marks by the
trigger of migrations/060_metric_marks.sql). It takes the marks, writes the blocks and moves
``done_until`` in one transaction, so a failed run leaves everything for the next.

The blocks are those a full recompute (:func:`metrics_job.compute`) of the same days up to
the same end gives, block for block: the same code computes them from the same events, and a
day's block is the sum of all its 15-minute blocks, the earlier ones read back from the table.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import psycopg
from psycopg import sql

from robodensity.app.metrics_job import (
    CELLS_PER_CHUNK,
    LOCAL_TZ,
    Meter,
    Progress,
    _at_us,
    _quiet,
    _us,
    id_array,
    last_day,
    layout,
    local_midnight,
    store_chunk,
)
from robodensity.core import clock
from robodensity.metrics.blocks import QUARTER_HOUR_S
from robodensity.storage.binary_copy import CopyWriter, copy_out_arrays, reader_beside

_STEP_US = QUARTER_HOUR_S * 1_000_000


@dataclass(frozen=True)
class Refreshed:
    """What a run did."""

    since: datetime | None  # the earliest bucket recomputed (None: nothing to do)
    end: datetime
    robots: int
    marked: int  # robots with new events taken from metric_marks
    events: int
    rows: int  # 15-minute blocks written


def refresh(
    conn: psycopg.Connection, end: datetime | None = None, start: datetime | None = None, progress: Progress = _quiet
) -> Refreshed:
    """Bring the blocks of every robot up to ``end`` (default: now), recomputing only what changed.

    ``start``: where the first run ever starts (default: the local midnight of ``end``); later
    runs start where the last one ended.
    """
    end = end or clock.now()
    meter = Meter(progress)
    with reader_beside(conn) as reader, conn.transaction():
        # Its queries are many index probes: compiling them (JIT) took longer than running them.
        conn.execute("SET LOCAL jit = off")
        if reader is not conn:
            reader.execute("SET jit = off")
        conn.execute(
            "INSERT INTO metric_job_state (done_until) VALUES (%s) ON CONFLICT DO NOTHING",
            (start or local_midnight(end),),
        )
        done_until = conn.execute("SELECT done_until FROM metric_job_state FOR UPDATE").fetchone()[0]  # type: ignore[index]
        marks = conn.execute(
            "WITH d AS (DELETE FROM metric_marks RETURNING robot_id, lo) "
            "SELECT robot_id, (extract(epoch FROM min(lo)) * 1000000)::bigint FROM d GROUP BY 1 ORDER BY 1"
        ).fetchall()
        b0 = _us(done_until) // _STEP_US * _STEP_US
        if _us(end) <= b0:
            return Refreshed(None, end, 0, len(marks), 0, 0)
        marked = np.array([m[0] for m in marks], dtype=np.int64)
        lo = np.array([m[1] for m in marks], dtype=np.int64)
        _, (registered,), _ = copy_out_arrays(  # one row: an array of every id and a dummy 0 (no robots: NULL)
            conn, sql.SQL("SELECT 0::int8, array_append(array_agg(robot_id), 0) FROM robots"), {}, ">i8", [">i8"]
        )
        registered = np.sort(registered[:-1].astype(np.int64))
        ids = np.union1d(registered, marked)
        since = np.full(len(ids), b0, dtype=np.int64)  # first bucket to recompute, per robot
        at = np.searchsorted(ids, marked)
        since[at] = np.minimum(since[at], lo // _STEP_US * _STEP_US)
        factory_ids = [r[0] for r in conn.execute("SELECT factory_id FROM factories ORDER BY 1")]
        with CopyWriter(conn) as writer:
            for w in np.unique(since).tolist():
                group = ids[since == w]
                lay = layout(_at_us(w), end)
                first = int(np.searchsorted(lay.edges, w))
                writer.wait()
                conn.execute(
                    "DELETE FROM robot_blocks_15m WHERE robot_id = ANY(%s::bigint[]) AND bucket >= %s",
                    (id_array(group), _at_us(w)),
                )
                conn.execute(
                    "DELETE FROM robot_blocks_daily WHERE robot_id = ANY(%s::bigint[]) AND day >= %s",
                    (id_array(group), lay.day[0]),
                )
                per_chunk = max(1, CELLS_PER_CHUNK // (len(lay.edges) - 1))
                for i in range(0, len(group), per_chunk):
                    sub = group[i : i + per_chunk]
                    meter.add(store_chunk(reader, writer, sub, lay, first, _at_us(w), end, factory_ids, True))
                    meter("refreshing blocks", 0.0)
        days = (_at_us(int(since.min())).astimezone(LOCAL_TZ).date(), last_day(end) + timedelta(days=1))
        conn.execute("SELECT refresh_region_daily(%s, %s)", days)  # region x day aggregates (migration 050)
        conn.execute("SELECT refresh_factory_fleet(true)")  # robots per factory today (migration 090)
        conn.execute("UPDATE metric_job_state SET done_until = %s", (end,))
    meter("refreshed", 1.0)
    return Refreshed(
        _at_us(int(since.min())) if len(ids) else None, end, len(ids), len(marks), meter.events, meter.rows
    )


def follow(
    connect: Callable[[], psycopg.Connection],
    stop: threading.Event,
    interval_s: float = 60.0,
    start: datetime | None = None,
    report: Callable[[Refreshed], None] = lambda _r: None,
) -> None:
    """Run :func:`refresh` every ``interval_s`` until ``stop`` is set (each run its own connection)."""
    while not stop.is_set():
        with connect() as conn:
            report(refresh(conn, start=start))
        stop.wait(interval_s)


@contextlib.contextmanager
def following(db_url: str, schema: str, interval_s: float = 60.0, start: datetime | None = None) -> Iterator[None]:
    """Keep the blocks current in a background thread while the ``with`` block runs (e.g. the demo)."""
    from robodensity.storage.db import connect

    stop = threading.Event()
    thread = threading.Thread(
        target=follow,
        args=(lambda: connect(db_url, schema), stop, interval_s, start),
        name="metrics-follow",
        daemon=True,
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
