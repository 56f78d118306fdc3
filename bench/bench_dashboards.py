"""Benchmark: every dashboard panel's query on a simulated province, p95 against a 150 ms goal.

Run on demand (not part of the tests)::

    .venv/bin/python -m bench.bench_dashboards                     # 5,000 robots x 90 days
    .venv/bin/python -m bench.bench_dashboards --robots 500 --days 14 --repeat 10
    .venv/bin/python -m bench.bench_dashboards --robots 100000 --days 365 --blocks   # province scale
    .venv/bin/python -m bench.bench_dashboards --database-url postgresql://... # reuse a server
    .venv/bin/python -m bench.bench_dashboards --database-url postgresql://... --keep   # keep the schema
    .venv/bin/python -m bench.bench_dashboards --database-url postgresql://... --schema bench_1a2b3c4d
                                                              # time again on a kept schema, no load

Starts a throwaway PostgreSQL (robodensity.app.embedded) unless given a URL, migrates a fresh
schema, bulk-loads the province's registry and state events with simulators/load.py (which
also fills state_intervals as the collector would), computes the daily and
15-minute rollups and monthly densities with robodensity.app.metrics_job.compute (one calendar
month at a time, to bound its memory), adds agents and dead letters, then times each panel
query expanded exactly as Grafana expands it (dashboards.macros). Also timed, in the same
run and the same way: a trivial baseline (``SELECT 1``), so the ratio shows the cost of the
query itself over the round trip.

Time ranges: the province and drill-down dashboards over the whole simulated period; the
factory dashboard over its default (the last 7 days) and over the whole period; the fleet
dashboard over its default (the last 24 hours).

What is timed: the expanded SQL on one warm connection logged in as the read-only
``{schema}_reader`` role Grafana uses (so its role settings apply), until every row is in
libpq's result: the server's work and the wire, what Grafana's Go driver waits for [ms]; the
goal applies to it. Printed beside it: the same run until psycopg has made a Python object of
every value (the client's decoding, tens of milliseconds for panels of 50,000 rows, which Go
does several times faster). The first run of each query is a warm-up and not counted.

``--blocks``: province scale. Instead of raw events and the metrics job, bench/province_scale.py
writes the daily metric blocks, region x day aggregates and monthly densities straight into
their tables (100,000 robots x 365 days in minutes), and raw events only for the factory with
the most robots; every dashboard is timed, the factory dashboard on that factory.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from bench.province_scale import load_scale
from robodensity.app import metrics_job
from robodensity.app.embedded import embedded_postgres
from robodensity.app.metrics_job import LOCAL_TZ
from robodensity.dashboards import macros
from robodensity.dashboards.build import build_all
from robodensity.dashboards.panels import panels_of
from robodensity.simulators.load import load_province
from robodensity.simulators.province import CitySpec, ProvinceSpec, generate
from robodensity.storage.db import connect, drop_schema, migrate
from robodensity.storage.roles import role_names

GOAL_MS = 150.0
BLOCKS_ABOVE = 5_000_000
"""Robot-days above which the province is generated straight into the metric tables (--blocks)."""
END = datetime(2026, 4, 1, tzinfo=LOCAL_TZ)


@dataclass
class Timing:
    dashboard: str
    panel: str
    ref: str
    range_label: str
    rows: int
    samples: list[float]
    """Execute: the server runs the query and the rows cross the wire into libpq (what Grafana's Go
    driver waits for) [ms]."""
    decoded: list[float]
    """The same run plus psycopg making a Python object of every value [ms]: Python's cost, not
    the database's; shown for the panels with thousands of rows."""

    @property
    def p50(self) -> float:
        return statistics.median(self.samples)

    @property
    def p95(self) -> float:
        return _p95(self.samples)

    @property
    def decoded_p95(self) -> float:
        return _p95(self.decoded)


def _p95(samples: list[float]) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, max(0, round(0.95 * len(s)) - 1))]


def spec_for(robots: int) -> ProvinceSpec:
    """Jiangsu-like: 13 cities, about 48 robots per factory."""
    factories = max(6, round(robots / 48))
    n_cities = 13
    cities = tuple(
        CitySpec(
            f"32{i + 1:02d}00",
            f"城市{i + 1}",
            f"City {i + 1}",
            factories // n_cities + (1 if i < factories % n_cities else 0),
        )
        for i in range(n_cities)
    )
    return ProvinceSpec(cities=tuple(c for c in cities if c.factories > 0), robots=robots)


def months(start: datetime, end: datetime) -> Iterator[tuple[datetime, datetime]]:
    t = start
    while t < end:
        nxt = datetime(t.year + t.month // 12, t.month % 12 + 1, 1, tzinfo=LOCAL_TZ)
        yield t, min(nxt, end)
        t = nxt


def load(url: str, schema: str, robots: int, days: int, seed: int) -> tuple[datetime, datetime, str, int]:
    start = END - timedelta(days=days)
    province = generate(spec_for(robots), seed)
    with connect(url, schema) as conn, tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        load_province(conn, province, Path(tmp), seed, start, END)
        conn.commit()
        n_events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        print(
            f"loaded {len(province.robots):,} robots, {len(province.factories)} factories, "
            f"{n_events:,} state events in {time.perf_counter() - t0:.0f} s",
            flush=True,
        )
        t0 = time.perf_counter()
        for a, b in months(datetime(start.year, start.month, 1, tzinfo=LOCAL_TZ), END):
            metrics_job.compute(conn, max(a, start), b)
            conn.commit()
        print(f"metrics_job.compute (per month) in {time.perf_counter() - t0:.0f} s", flush=True)
        t0 = time.perf_counter()
        conn.execute(  # the agents' settled seqs as the collector would leave them
            "INSERT INTO agents (agent_id, factory_id, first_seen, last_seen, acked_through, committed) "
            "SELECT agent_id, min(factory_id), min(ts), now() - interval '1 minute', max(seq), "
            "int8multirange(int8range(1, max(seq), '[]')) "
            "FROM events GROUP BY agent_id ON CONFLICT DO NOTHING"
        )
        conn.execute(
            "INSERT INTO dead_letters (received_at, topic, agent_id, seq, reason, field, payload) "
            "SELECT now() - g * interval '1 minute', 'robodensity/v1/x/y/up', 'sim-x', g, "
            "(ARRAY['schema', 'unknown_robot', 'clock_skew'])[1 + g % 3], 'events[].ts', '\\x00' "
            "FROM generate_series(1, 5000) g"
        )
        conn.execute("ANALYZE")
        conn.commit()
        print(f"agents, dead letters, ANALYZE in {time.perf_counter() - t0:.0f} s", flush=True)
    return start, END, busiest_factory(url, schema), n_events


def busiest_factory(url: str, schema: str) -> str:
    with connect(url, schema) as conn:
        row = conn.execute(
            "SELECT factory_id FROM events GROUP BY 1 ORDER BY count(DISTINCT robot_id) DESC, 1 LIMIT 1"
        ).fetchone()
    assert row is not None, "no factory has events"
    return str(row[0])


def time_query(conn: psycopg.Connection, sql: str, repeat: int) -> tuple[int, list[float], list[float]]:
    rows = len(conn.execute(sql).fetchall())  # warm-up
    samples, decoded = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        cur = conn.execute(sql)  # psycopg 3 returns once libpq holds the whole result
        t1 = time.perf_counter()
        cur.fetchall()
        t2 = time.perf_counter()
        samples.append((t1 - t0) * 1000)
        decoded.append((t2 - t0) * 1000)
    return rows, samples, decoded


def run(
    url: str, schema: str, start: datetime, end: datetime, factory: str, repeat: int, skip: tuple[str, ...] = ()
) -> list[Timing]:
    a, b = list(months(datetime(start.year, start.month, 1, tzinfo=LOCAL_TZ), end))[-1]
    last_month = (max(a, start), b)  # the period load() computed last
    variables = {
        "robodensity-province": {"region": "320000"},
        "robodensity-drilldown": {
            "region": "320000",
            "industry": "*",
            "period": f"{macros.rfc3339nano(last_month[0])}/{macros.rfc3339nano(last_month[1])}",
        },
        "robodensity-factory": {"factory": factory},
        "robodensity-fleet": {},
        "robodensity-national": {},
    }
    ranges = {
        "robodensity-province": [(f"{(end - start).days} d", start, end)],
        "robodensity-drilldown": [(f"{(end - start).days} d", start, end)],
        "robodensity-factory": [("7 d", end - timedelta(days=7), end), (f"{(end - start).days} d", start, end)],
        "robodensity-fleet": [("24 h", datetime.now(LOCAL_TZ) - timedelta(hours=24), datetime.now(LOCAL_TZ))],
    }
    out: list[Timing] = []
    with connect(url, schema, autocommit=True) as conn:
        reader = role_names(schema).reader
        has_reader = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (reader,)).fetchone()
    # Log in as the reader, as Grafana does, so its role settings (jit = off, migration 090) apply.
    with connect(make_conninfo(url, user=reader) if has_reader else url, schema, autocommit=True) as conn:
        out.append(Timing("baseline", "SELECT 1", "-", "-", *time_query(conn, "SELECT 1", repeat)))
        for uid, model in build_all().items():
            if uid in skip:
                continue
            for label, t0, t1 in ranges.get(uid, [(f"{(end - start).days} d", start, end)]):
                for panel in panels_of(model):
                    for target in panel["targets"]:
                        sql = macros.expand(target["rawSql"], variables.get(uid, {}), time_from=t0, time_to=t1)
                        name = uid.removeprefix("robodensity-")
                        out.append(Timing(name, panel["title"], target["refId"], label, *time_query(conn, sql, repeat)))
    return out


def report(timings: list[Timing]) -> int:
    base = timings[0].p95
    print(
        f"\n{'dashboard':<10} {'range':>6} {'panel':<58} {'q':>1} {'rows':>7} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'x base':>8}  goal  {'+ Python decode p95':>19}"
    )
    over = 0
    for t in timings:
        ok = t.p95 <= GOAL_MS
        over += not ok
        print(
            f"{t.dashboard:<10} {t.range_label:>6} {t.panel[:58]:<58} {t.ref:>1} {t.rows:>7,} {t.p50:>8.1f} "
            f"{t.p95:>8.1f} {t.p95 / base:>8.0f}  {'ok' if ok else 'OVER':<4}  {t.decoded_p95:>19.1f}"
        )
    print(f"\nbaseline SELECT 1 p95 = {base:.3f} ms; {len(timings) - 1} panel queries, {over} over {GOAL_MS:.0f} ms")
    return over


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Example: .venv/bin/python -m bench.bench_dashboards --robots 500 --days 14",
    )
    ap.add_argument("--robots", type=int, default=5000)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--repeat", type=int, default=20, help="timed runs per query (after one warm-up)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--database-url", help="an existing PostgreSQL to use instead of a throwaway one")
    ap.add_argument(
        "--blocks",
        action="store_true",
        help="province scale: generate the metric blocks and densities directly (bench/province_scale.py); "
        "raw events only for the factory the factory dashboard is timed on",
    )
    ap.add_argument("--keep", action="store_true", help="keep the loaded schema (with --database-url)")
    ap.add_argument(
        "--schema",
        help="time the queries on this schema, loaded by an earlier run with --keep and the same --days "
        "(with --database-url; migrates it first, so new views and indexes are timed too)",
    )
    args = ap.parse_args(argv)
    if args.robots * args.days > BLOCKS_ABOVE and not args.schema and not args.blocks:
        print(f"{args.robots:,} robots x {args.days} days: raw events would take days; using --blocks", flush=True)
        args.blocks = True
    if (args.keep or args.schema) and not args.database_url:
        ap.error("--keep and --schema need --database-url (the throwaway server goes with the run)")
    with contextlib.ExitStack() as stack:
        url = args.database_url or stack.enter_context(embedded_postgres())
        schema = args.schema or f"bench_{uuid.uuid4().hex[:8]}"
        migrate(url, schema)
        try:
            if args.schema:
                with connect(url, schema, autocommit=True) as conn:
                    conn.execute("ANALYZE")
                start, end, factory = END - timedelta(days=args.days), END, busiest_factory(url, schema)
            elif args.blocks:
                start, end = END - timedelta(days=args.days), END
                t0 = time.perf_counter()
                steps, factory = load_scale(url, schema, spec_for(args.robots), args.days, END, args.seed)
                for step, value in steps.items():
                    print(f"{step}: {value:,.0f}", flush=True)
                print(
                    f"loaded {args.robots:,} robots x {args.days} days in {time.perf_counter() - t0:.0f} s", flush=True
                )
            else:
                start, end, factory, _ = load(url, schema, args.robots, args.days, args.seed)
            if args.keep:
                print(f"schema {schema} kept: --schema {schema} times it again", flush=True)
            skip = () if factory else ("robodensity-factory",)
            timings = run(url, schema, start, end, factory, args.repeat, skip)
        finally:
            if args.database_url and not (args.keep or args.schema):
                drop_schema(url, schema)
    return 1 if report(timings) else 0


if __name__ == "__main__":
    sys.exit(main())
