"""Benchmark: the metrics job against the raw speed of reading its events out of PostgreSQL.

Run on demand (not part of the tests)::

    ./dev bench job                                   # 20,000 robots x 30 days
    ./dev bench job --robots 100000 --days 30
    ./dev bench job --database-url postgresql://...   # reuse a server (a fresh schema, dropped after)

One run, on a generated province (registry from simulators/province.py, about 80 state events
per robot and day generated inside PostgreSQL straight into ``events``; the job reads events,
so state_intervals are not built):

(a) the raw ``COPY (SELECT robot_id, ts, state FROM events ...) TO STDOUT (FORMAT binary)`` of
    the month's events, read and discarded: the ceiling for anything that reads them;
(b) the full job for the month (``metrics_job.compute``: blocks and densities);
(c) an incremental run (``metrics_follow.refresh``) after 15 minutes of new events for every
    robot, stored with their state marks as the collector stores them (the first 15 minutes of
    a day); and, after (b), the same late in the day: the month's last 15 minutes refreshed, so
    every robot's daily block is re-summed from the 95 15-minute blocks (b) stored before them.

Prints events/s, the ratio (b)/(a), the peak RSS of (b) and (c) (each in its own process) and
the seconds of (c); and (d) the rate PostgreSQL inserts 15-minute blocks at (a 5 % sample
stored again), since (b) writes about 1.2 of them per event.

Goals (issue 18): (b) >= 0.3 x (a) and >= 1,000,000 events/s; 100,000 robots x 30 days under
60 s; (c) for 100,000 robots under 5 s; peak memory under 2 GB.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import resource
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import cast

from bench.bench_dashboards import spec_for
from robodensity.app.embedded import embedded_postgres
from robodensity.app.metrics_job import LOCAL_TZ
from robodensity.simulators.province import generate, write_registry_csv
from robodensity.storage.db import connect, drop_schema, migrate
from robodensity.storage.registry import import_registry

END = datetime(2026, 11, 1, tzinfo=LOCAL_TZ)
EVENTS_PER_DAY = 80
QUARTER = timedelta(minutes=15)

# Events k = k0 .. k1-1 of every robot in [lo, hi]: one per step, jittered within it; states
# drawn from a hash (44% EXECUTING, 44% IDLE, 4% FAULT, 6% OUT_OF_SERVICE, 2% OFFLINE).
_GENERATE = """
INSERT INTO events (agent_id, seq, robot_id, factory_id, ts, type, state)
SELECT 'bench-' || a.factory_id, r.robot_id * 100000000 + k, r.robot_id, a.factory_id,
       %(t0)s::timestamptz + make_interval(secs => (k + (abs(hashint8(r.robot_id * 7919 + k)) %% 1000) / 1000.0)
                                         * %(step)s::float8),
       'state',
       CASE WHEN h < 44 THEN 'EXECUTING' WHEN h < 88 THEN 'IDLE' WHEN h < 92 THEN 'FAULT'
            WHEN h < 98 THEN 'OUT_OF_SERVICE' ELSE 'OFFLINE' END
FROM robots r
JOIN LATERAL (SELECT factory_id FROM assignments a WHERE a.robot_id = r.robot_id
              ORDER BY valid_from DESC LIMIT 1) a ON true
CROSS JOIN generate_series(%(k0)s::bigint, %(k1)s::bigint - 1) k
CROSS JOIN LATERAL (SELECT abs(hashint8(r.robot_id * 104729 + k)) %% 100 AS h) s
WHERE r.robot_id BETWEEN %(lo)s AND %(hi)s
"""


def load(url: str, schema: str, robots: int, days: int) -> int:
    start = END - timedelta(days=days)
    t0 = time.perf_counter()
    province = generate(spec_for(robots), 1)
    with connect(url, schema) as conn, tempfile.TemporaryDirectory() as tmp:
        import_registry(conn, write_registry_csv(province, Path(tmp))[0].parent)
        conn.commit()
        print(f"registry: {robots:,} robots in {time.perf_counter() - t0:.0f} s", flush=True)
        lo, hi = conn.execute("SELECT min(robot_id), max(robot_id) FROM robots").fetchone()  # type: ignore[misc]
        step = 86_400 / EVENTS_PER_DAY
        t0 = time.perf_counter()
        conn.execute("DROP INDEX events_robot_ts")  # built once after the load: minutes faster
        for a in range(lo, hi + 1, 5000):
            params = {"t0": start, "step": step, "k0": 0, "k1": days * EVENTS_PER_DAY, "lo": a, "hi": a + 4999}
            conn.execute(_GENERATE, params)
            conn.commit()
            print(f"\r  events for robots up to {min(a + 4999, hi):,}", end="", file=sys.stderr, flush=True)
        conn.autocommit = True
        conn.execute("CREATE INDEX events_robot_ts ON events (robot_id, ts)")
        conn.execute("VACUUM ANALYZE events")
        n = conn.execute("SELECT count(*) FROM events").fetchone()[0]  # type: ignore[index]
        print(f"\nevents: {n:,} in {time.perf_counter() - t0:.0f} s (with VACUUM ANALYZE)", flush=True)
    return int(n)


def raw_copy(url: str, schema: str, start: datetime, end: datetime) -> tuple[float, int]:
    with connect(url, schema) as conn, conn.cursor() as cur:
        t0 = time.perf_counter()
        size = 0
        q = (
            "COPY (SELECT robot_id, ts, state FROM events WHERE type = 'state' AND ts >= %s AND ts < %s) "
            "TO STDOUT (FORMAT binary)"
        )
        with cur.copy(q, (start, end)) as cp:
            for block in cp:
                size += len(block)
        return time.perf_counter() - t0, size


def insert_rate(url: str, schema: str) -> float:
    """Rows/s PostgreSQL stores 15-minute blocks at: a 5 % sample deleted and inserted again, rolled back."""
    with connect(url, schema) as conn:
        conn.execute("CREATE TEMP TABLE sample AS SELECT * FROM robot_blocks_15m WHERE robot_id % 20 = 0")
        conn.execute("DELETE FROM robot_blocks_15m WHERE robot_id % 20 = 0")
        t0 = time.perf_counter()
        n = conn.execute("INSERT INTO robot_blocks_15m SELECT * FROM sample").rowcount
        dt = time.perf_counter() - t0
        conn.rollback()
        return n / dt


def _full(url: str, schema: str, start: datetime, end: datetime) -> float:
    from robodensity.app import metrics_job

    last = [0.0]

    def show(what: str, _done: float) -> None:
        if time.perf_counter() - last[0] > 2:
            last[0] = time.perf_counter()
            print(f"\r  {what}", end="", file=sys.stderr, flush=True)

    with connect(url, schema) as conn:
        t0 = time.perf_counter()
        metrics_job.compute(conn, start, end, show)
        conn.commit()
        print(file=sys.stderr)
        return time.perf_counter() - t0


def _incremental(url: str, schema: str, end: datetime) -> tuple[float, int, int]:
    from robodensity.app.metrics_follow import refresh

    with connect(url, schema) as conn:
        conn.execute("INSERT INTO metric_job_state (done_until) VALUES (%s) ON CONFLICT (only_row) DO NOTHING", (end,))
        lo, hi = conn.execute("SELECT min(robot_id), max(robot_id) FROM robots").fetchone()  # type: ignore[misc]
        step = QUARTER.total_seconds()  # one event per robot in the 15 minutes after the month
        with conn.transaction():
            conn.execute(_GENERATE, {"t0": end, "step": step, "k0": 0, "k1": 1, "lo": lo, "hi": hi})
            conn.execute(
                "SELECT mark_state_robots(array_agg(robot_id), array_agg(ts)) FROM events WHERE ts >= %s", (end,)
            )
        t0 = time.perf_counter()
        r = refresh(conn, end=end + QUARTER)
        return time.perf_counter() - t0, r.events, r.rows


def _late(url: str, schema: str, end: datetime) -> tuple[float, int, int]:
    """(c) late in the day: the month's last 15 minutes refreshed after (b) stored the rest of its
    last day, so each robot's daily block is re-summed from 95 stored 15-minute blocks."""
    from robodensity.app.metrics_follow import refresh

    with connect(url, schema) as conn:
        conn.execute("INSERT INTO metric_job_state (done_until) VALUES (%s)", (end - QUARTER,))
        conn.commit()
        t0 = time.perf_counter()
        r = refresh(conn, end=end)
        return time.perf_counter() - t0, r.events, r.rows


def _count(url: str, schema: str) -> int:
    with connect(url, schema) as conn:
        return int(conn.execute("SELECT count(*) FROM robot_blocks_15m").fetchone()[0])  # type: ignore[index]


def _child(target: str, args: tuple[object, ...], out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    result = globals()[target](*args)
    out.put((result, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def in_process(target: str, *args: object) -> tuple[object, float]:
    """Run ``target`` in a fresh process; (its result, its peak RSS [MB])."""
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(target, args, q))
    p.start()
    p.join()
    if p.exitcode != 0:
        raise SystemExit(f"{target} failed (exit code {p.exitcode}); its traceback is above")
    result, rss = q.get(timeout=10)
    return result, rss


def refresh_figures(what: str, robots: int, result: object, rss_mb: float) -> None:
    """Print a (c) run: ``result`` is the (seconds, events, 15-minute blocks) of its process."""
    seconds, events, rows = cast(tuple[float, int, int], result)
    print(
        f"(c) {what}, {robots:,} robots: {seconds:.2f} s ({events:,} events, {rows:,} 15-minute blocks), "
        f"peak RSS {rss_mb:,.0f} MB"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--robots", type=int, default=20_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--database-url", help="an existing server (default: a throwaway embedded one)")
    ap.add_argument(
        "--skip-full",
        action="store_true",
        help="skip (b) and (d): only (a) and (c), e.g. (c) at 100,000 robots in minutes (no blocks stored before (c))",
    )
    args = ap.parse_args(argv)
    start = END - timedelta(days=args.days)
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with contextlib.ExitStack() as stack:
        url = args.database_url or stack.enter_context(embedded_postgres())
        migrate(url, schema)
        try:
            n = load(url, schema, args.robots, args.days)
            raw_s, size = raw_copy(url, schema, start, END)
            print(f"(a) raw binary COPY out: {n / raw_s:,.0f} events/s ({raw_s:.1f} s, {size / 1e6:,.0f} MB)")
            if not args.skip_full:
                full_s, full_rss = in_process("_full", url, schema, start, END)
                rate = n / float(full_s)  # type: ignore[arg-type]
                print(
                    f"(b) full job, {args.robots:,} robots x {args.days} days: {full_s:.1f} s, {rate:,.0f} events/s, "
                    f"(b)/(a) = {rate / (n / raw_s):.2f}, peak RSS {full_rss:,.0f} MB"
                )
                rows = _count(url, schema)
                rate_in = insert_rate(url, schema)
                print(
                    f"(d) PostgreSQL stores 15-minute blocks at {rate_in:,.0f} rows/s here: the job's {rows:,} take "
                    f"{rows / rate_in:.0f} s of (b) at least"
                )
                refresh_figures(
                    "late in the day (23:45-24:00, each day re-summed from 95 stored 15-minute blocks)",
                    args.robots,
                    *in_process("_late", url, schema, END),
                )
            refresh_figures(
                "incremental 15 minutes after midnight", args.robots, *in_process("_incremental", url, schema, END)
            )
        finally:
            drop_schema(url, schema)


if __name__ == "__main__":
    main()
