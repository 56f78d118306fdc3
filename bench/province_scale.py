"""A province at full scale straight into the metric tables: 100,000 robots x 365 days in minutes.

Raw events for 100,000 robots over a year are billions of rows and days of metrics job; the
province, drill-down and fleet dashboards never read them. So this loader writes what those
dashboards read, as the metrics job would have left it:

* the registry of a simulated province (simulators.province, ``import_registry``);
* ``robot_blocks_daily``: one block per robot and China Standard Time day, generated with
  numpy (per-robot utilisation level, daily noise, whole offline days, faults) and written
  with binary COPY built as one numpy record array per chunk of robots;
* ``region_daily`` by the metrics job's own ``refresh_region_daily`` (migration 050);
* monthly ``density`` rows (definition ``participating``) for every region x industry,
  computed in SQL from the registry and the blocks by the job's definitions: robots in
  operation and employees as registered, verified = robots with EXECUTING time in the
  month, reporting = robots with a day not wholly OFFLINE, utilisation = planned executing / planned
  time (two shifts a day);
* agents (one per factory) and dead letters, for the fleet dashboard.

Raw events (and the 15-minute and daily blocks the metrics job computes from them) only for
the factory with the most robots, over the whole period: the factory dashboard is timed on it,
in a province of full size (its robot lookups are province-wide unless an index cuts them).
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg

from robodensity.app.metrics_job import CELLS_PER_CHUNK, LOCAL_TZ, layout, store_chunk
from robodensity.simulators.load import load_events
from robodensity.simulators.province import Province, ProvinceSpec, generate, write_registry_csv
from robodensity.storage.binary_copy import CopyWriter, reader_beside
from robodensity.storage.db import connect
from robodensity.storage.registry import import_registry, load_reference_targets

DAY_S = 86_400.0
PG_EPOCH = date(2000, 1, 1)
FLOATS = ("executing_s", "idle_s", "fault_s", "out_of_service_s", "offline_s", "planned_s", "planned_executing_s")
COLUMNS = ("robot_id", "day", "factory_id", *FLOATS, "failures", "repairs", "repair_s")
CHUNK_ROBOTS = 500
PLANNED_S = 57_600.0


def _dtype(id_len: int) -> np.dtype:
    fields: list[tuple[str, str]] = [("n", ">i2"), ("l_robot", ">i4"), ("robot_id", ">i8"), ("l_day", ">i4")]
    fields += [("day", ">i4"), ("l_factory", ">i4"), ("factory_id", f"S{id_len}")]
    for name in FLOATS:
        fields += [(f"l_{name}", ">i4"), (name, ">f8")]
    fields += [("l_failures", ">i4"), ("failures", ">i4"), ("l_repairs", ">i4"), ("repairs", ">i4")]
    fields += [("l_repair_s", ">i4"), ("repair_s", ">f8")]
    return np.dtype(fields)


def blocks(
    robot_ids: np.ndarray, factory_ids: np.ndarray, first_day: date, days: int, rng: np.random.Generator
) -> np.ndarray:
    """Binary COPY tuples of robot_blocks_daily for ``robot_ids`` x ``days`` (robot-major: PK order)."""
    id_len = factory_ids.dtype.itemsize
    rec = np.zeros(len(robot_ids) * days, dtype=_dtype(id_len))
    rec["n"] = len(COLUMNS)
    for name, size in [("robot", 8), ("day", 4), ("factory", id_len), ("failures", 4), ("repairs", 4)]:
        rec[f"l_{name}"] = size
    for name in (*FLOATS, "repair_s"):
        rec[f"l_{name}"] = 8
    rec["robot_id"] = np.repeat(robot_ids, days)
    rec["factory_id"] = np.repeat(factory_ids, days)
    rec["day"] = np.tile(np.arange(days) + (first_day - PG_EPOCH).days, len(robot_ids))
    level = np.repeat(rng.beta(4, 3, len(robot_ids)), days)  # each robot's own utilisation level
    executing = np.clip(level + rng.normal(0, 0.08, level.size), 0, 0.97) * DAY_S
    failures = rng.poisson(0.15, level.size)
    fault = np.minimum(failures * rng.exponential(1800, level.size), DAY_S - executing)
    offline = np.where(rng.random(level.size) < 0.02, DAY_S, 0.0)  # whole days without telemetry
    out_of_service = np.where(rng.random(level.size) < 0.01, DAY_S - executing - fault, 0.0)
    online = offline == 0
    rec["executing_s"] = executing * online
    rec["fault_s"] = fault * online
    rec["out_of_service_s"] = out_of_service * online
    rec["offline_s"] = offline
    rec["idle_s"] = np.maximum(DAY_S - rec["executing_s"] - rec["fault_s"] - rec["out_of_service_s"] - offline, 0)
    rec["planned_s"] = PLANNED_S  # two shifts a day: planned_s = covered_s x the planned share
    rec["planned_executing_s"] = rec["executing_s"] * (PLANNED_S / DAY_S)
    rec["failures"] = failures * online
    rec["repairs"] = rec["failures"]
    rec["repair_s"] = rec["fault_s"]
    return rec


DENSITY_SQL = """
INSERT INTO density (definition, region_code, industry_code, period_start, period_end, robot_count, employee_count,
                     robot_density, verified_count, verified_density, reporting_count, coverage, domestic_share,
                     utilisation)
WITH months AS (
  SELECT m::date AS first, (m + interval '1 month')::date AS next
  FROM generate_series(%(start)s::date, %(end)s::date - 1, interval '1 month') m
),
per_robot AS (
  SELECT b.robot_id, m.first, sum(b.executing_s) AS executing_s, sum(b.planned_executing_s) AS planned_executing_s,
         sum(b.planned_s) AS planned_s,
         sum(b.executing_s + b.idle_s + b.fault_s + b.out_of_service_s + b.offline_s) AS covered_s,
         bool_or(b.offline_s < DOUBLE PRECISION '86400') AS reported
  FROM robot_blocks_daily b JOIN months m ON b.day >= m.first AND b.day < m.next
  GROUP BY b.robot_id, m.first
),
fleet AS (
  SELECT DISTINCT ON (r.robot_id) r.robot_id, a.factory_id, r.domestic
  FROM robots r JOIN assignments a USING (robot_id) ORDER BY r.robot_id, a.valid_from DESC
),
scoped AS (
  SELECT fr.region_code, GROUPING(fr.industry_code) AS all_ind, fr.industry_code, p.first,
         count(*) AS robots, count(*) FILTER (WHERE p.executing_s > 0) AS verified,
         count(*) FILTER (WHERE p.reported) AS reporting,
         avg(f.domestic::int) AS domestic_share, sum(p.planned_executing_s) / NULLIF(sum(p.planned_s), 0) AS utilisation
  FROM per_robot p JOIN fleet f USING (robot_id) JOIN v_factory_region fr ON fr.factory_id = f.factory_id
  GROUP BY GROUPING SETS ((fr.region_code, fr.industry_code, p.first), (fr.region_code, p.first))
),
employees AS (
  SELECT fr.region_code, GROUPING(fr.industry_code) AS all_ind, fr.industry_code, sum(h.employee_count) AS n
  FROM headcounts h JOIN v_factory_region fr USING (factory_id)
  GROUP BY GROUPING SETS ((fr.region_code, fr.industry_code), (fr.region_code))
)
SELECT 'participating', s.region_code, CASE WHEN s.all_ind = 1 THEN '*' ELSE s.industry_code END,
       (s.first::timestamp AT TIME ZONE 'Asia/Shanghai'),
       ((s.first + interval '1 month')::timestamp AT TIME ZONE 'Asia/Shanghai'),
       s.robots, e.n, s.robots * 10000.0 / NULLIF(e.n, 0), s.verified, s.verified * 10000.0 / NULLIF(e.n, 0),
       s.reporting, s.reporting::double precision / s.robots, s.domestic_share, s.utilisation
FROM scoped s
JOIN employees e ON e.region_code = s.region_code AND e.all_ind = s.all_ind
                AND e.industry_code IS NOT DISTINCT FROM s.industry_code
"""


def factory_telemetry(
    conn: psycopg.Connection, province: Province, first_day: date, days: int, end: datetime, seed: int
) -> tuple[str, int]:
    """Raw state events for the factory with the most robots, and its robots' 15-minute and daily
    blocks computed from them by the metrics job's own code (replacing their generated daily
    blocks), for the factory dashboard; returns the factory and its number of events."""
    robots_of = Counter(r.factory for r in province.robots)
    busiest = min(robots_of, key=lambda f: (-robots_of[f], f))
    start = datetime.combine(first_day, datetime.min.time(), LOCAL_TZ)
    load_events(conn, [r for r in province.robots if r.factory == busiest], seed, start, end)
    ids = np.array([r[0] for r in conn.execute("SELECT DISTINCT robot_id FROM events ORDER BY 1")], dtype=np.int64)
    factory_ids = [r[0] for r in conn.execute("SELECT factory_id FROM factories ORDER BY 1")]
    lay = layout(start, end)
    per_chunk = max(1, CELLS_PER_CHUNK // (len(lay.edges) - 1))
    with reader_beside(conn) as reader, conn.transaction():
        conn.execute("DELETE FROM robot_blocks_daily WHERE robot_id = ANY(%s)", (ids.tolist(),))
        with CopyWriter(conn) as writer:
            for i in range(0, len(ids), per_chunk):
                store_chunk(reader, writer, ids[i : i + per_chunk], lay, 0, start, end, factory_ids)
    n_events = conn.execute("SELECT count(*) FROM events").fetchone()
    conn.commit()
    return busiest, int(n_events[0]) if n_events else 0


def load_scale(
    url: str, schema: str, spec: ProvinceSpec, days: int, end: datetime, seed: int
) -> tuple[dict[str, float], str]:
    """Load the province into ``schema``; returns seconds per step (and the row counts), and the
    factory with raw events (the factory dashboard's)."""
    first_day = (end - timedelta(days=days)).astimezone(LOCAL_TZ).date()
    timings: dict[str, float] = {}
    province = generate(spec, seed)
    rng = np.random.default_rng(seed)
    with connect(url, schema) as conn, tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        import_registry(conn, write_registry_csv(province, Path(tmp))[0].parent)
        load_reference_targets(conn)
        conn.commit()
        timings["registry import s"] = time.perf_counter() - t0
        fleet = conn.execute(
            "SELECT DISTINCT ON (robot_id) robot_id, factory_id FROM assignments ORDER BY robot_id, valid_from DESC"
        ).fetchall()
        ids = np.array([r for r, _ in fleet], dtype=np.int64)
        factories = np.array([f.encode() for _, f in fleet])
        id_len = np.char.str_len(factories)
        t0 = time.perf_counter()
        cols = ", ".join(COLUMNS)
        with conn.cursor() as cur, cur.copy(f"COPY robot_blocks_daily ({cols}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8)
            for length in np.unique(id_len):  # fixed-width records: one factory-id length at a time
                same = id_len == length
                group_ids, group_factories = ids[same], factories[same].astype(f"S{length}")
                for i in range(0, len(group_ids), CHUNK_ROBOTS):
                    chunk = slice(i, i + CHUNK_ROBOTS)
                    copy.write(blocks(group_ids[chunk], group_factories[chunk], first_day, days, rng).tobytes())
            copy.write(b"\xff\xff")
        conn.commit()
        timings["robot_blocks_daily COPY s"] = time.perf_counter() - t0
        timings["robot_blocks_daily rows"] = len(ids) * days
        t0 = time.perf_counter()
        busiest, n_events = factory_telemetry(conn, province, first_day, days, end, seed)
        timings[f"raw events of factory {busiest} (its robots' blocks from them)"] = n_events
        timings["factory events and blocks s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        conn.execute("SELECT refresh_region_daily(%s, %s)", (first_day, first_day + timedelta(days=days)))
        conn.commit()
        timings["refresh_region_daily s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        month0 = date(first_day.year, first_day.month, 1)
        if month0 < first_day:  # whole months only
            month0 = date(month0.year + month0.month // 12, month0.month % 12 + 1, 1)
        cur = conn.execute(DENSITY_SQL, {"start": month0, "end": (end.astimezone(LOCAL_TZ)).date()})
        timings["density rows"] = cur.rowcount
        conn.commit()
        timings["density (SQL) s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        conn.execute(
            "INSERT INTO agents (agent_id, factory_id, first_seen, last_seen, acked_through, committed) "
            "SELECT 'edge-' || factory_id, factory_id, now() - interval '1 year', now() - interval '1 minute', "
            "1000000, int8multirange(int8range(1, 1000000, '[]')) FROM factories"
        )
        conn.execute(
            "INSERT INTO dead_letters (received_at, topic, agent_id, seq, reason, field, payload) "
            "SELECT now() - g * interval '1 minute', 'robodensity/v1/x/y/up', 'sim-x', g, "
            "(ARRAY['schema', 'unknown_robot', 'clock_skew'])[1 + g % 3], 'events[].ts', '\\x00' "
            "FROM generate_series(1, 5000) g"
        )
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")
        timings["agents, dead letters, VACUUM ANALYZE s"] = time.perf_counter() - t0
    return timings, busiest
