"""The metrics job: load rows from PostgreSQL, run the pure metrics core, store results.

This is the I/O adapter around ``metrics/``: every number is computed there. It writes two
things:

* the blocks (``robot_blocks_15m``, ``robot_blocks_daily``; rules in ``metrics/blocks.py``)
  of every local day the period touches, from which every dashboard figure is summed;
* densities of every definition per (region, industry) for every region level a factory
  belongs to (district, city, province) and for all industries together ('*'): ``app/density_job.py``.

Columns in, columns out: state events come with binary COPY straight into numpy arrays
(:mod:`storage.binary_copy`), robots in chunks of at most :data:`CELLS_PER_CHUNK`
robot-buckets so memory stays bounded at any scale, and blocks go back with binary COPY. One
load of a chunk's events serves every bucket size (15 minutes, days) and the verification
window. ``app/metrics_follow.py`` reuses :func:`store_chunk` to refresh only what changed.

Robots in operation come from the storage layer's one definition, ``robots_in_operation(at)``
(migrations/015_metric_blocks.sql), evaluated on the period's last local day.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
from psycopg import sql

from robodensity.app import density_job, shift_plan
from robodensity.core.settings import DEFAULT_TIMEZONE
from robodensity.metrics.blocks import COLUMNS, Blocks, quarter_hour_edges, robot_blocks
from robodensity.metrics.state_time import group_at, seconds_in_state
from robodensity.metrics.states import EXECUTING, N_STATES, STATES
from robodensity.storage.binary_copy import (
    PG_EPOCH_DAYS,
    PG_EPOCH_US,
    CopyWriter,
    copy_out,
    copy_out_arrays,
    pack,
    reader_beside,
    text_dtype,
)

LOCAL_TZ = ZoneInfo(DEFAULT_TIMEZONE)
"""Days of the daily blocks and of density periods are those of China Standard Time."""
ACTIVE_WINDOW = timedelta(days=30)
"""A robot is *verified* when it was EXECUTING in the period or in the 30 days before its end."""
Progress = Callable[[str, float], None]
"""Progress callback: (what is happening, with events/s and memory; fraction done 0..1)."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _quiet(_what: str, _done: float) -> None:
    pass


@dataclass(frozen=True)
class Fleet:
    """Registered robots in operation on the period's last day, and every factory."""

    robot_id: np.ndarray  # int64, sorted
    robot_factory: np.ndarray  # int64 index into factory arrays, -1 when unassigned
    domestic: np.ndarray  # bool
    factory_id: list[str]
    region: list[str]
    industry: list[str]
    employees: np.ndarray  # int64


@dataclass(frozen=True)
class StateEvents:
    robot_id: np.ndarray  # int64 (robot ids as loaded; robot indices in a Chunk)
    ts_us: np.ndarray  # int64 [µs since epoch]
    state: np.ndarray  # int8 codes


def _us(t: datetime) -> int:
    d = t - _EPOCH
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def _at_us(us: int | np.integer) -> datetime:
    return _EPOCH + timedelta(microseconds=int(us))


def last_day(end: datetime) -> date:
    """The local day of the period's last moment: robots in operation are counted on it."""
    return (end - timedelta(microseconds=1)).astimezone(LOCAL_TZ).date()


def local_midnight(t: datetime) -> datetime:
    """The start of ``t``'s local day."""
    return datetime.combine(t.astimezone(LOCAL_TZ).date(), datetime.min.time(), LOCAL_TZ)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far [MB]."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_fleet(conn: psycopg.Connection, at: date) -> Fleet:
    factories = conn.execute(
        "SELECT f.factory_id, f.region_code, f.industry_code, coalesce(h.employee_count, 0) "
        "FROM factories f LEFT JOIN LATERAL (SELECT employee_count FROM headcounts h "
        "  WHERE h.factory_id = f.factory_id AND h.valid_from <= %(at)s "
        "  ORDER BY valid_from DESC LIMIT 1) h ON true ORDER BY f.factory_id",
        {"at": at},
    ).fetchall()
    index = {row[0]: i for i, row in enumerate(factories)}
    robots = conn.execute(
        "SELECT robot_id, domestic, factory_id FROM robots_in_operation(%s) ORDER BY robot_id", (at,)
    ).fetchall()
    return Fleet(
        robot_id=np.array([r[0] for r in robots], dtype=np.int64),
        robot_factory=np.array([index.get(r[2], -1) for r in robots], dtype=np.int64),
        domestic=np.array([r[1] for r in robots], dtype=bool),
        factory_id=[f[0] for f in factories],
        region=[f[1] for f in factories],
        industry=[f[2] for f in factories],
        employees=np.array([f[3] for f in factories], dtype=np.int64),
    )


_STATE_CODE = sql.SQL("CASE state {} END::int2").format(
    sql.SQL(" ").join(sql.SQL("WHEN {} THEN {}").format(s.value, i) for i, s in enumerate(STATES))
)
_EVENTS_SEED = """
WITH seed AS (   -- each robot's state at the window's start
  SELECT i.robot_id, e.ts, e.state, e.seq FROM unnest(%(ids)s::bigint[]) AS i(robot_id)
  CROSS JOIN LATERAL (
    SELECT ts, state, seq FROM events e WHERE e.robot_id = i.robot_id AND e.type = 'state' AND e.ts < %(s)s
    ORDER BY e.ts DESC, e.seq DESC LIMIT 1
  ) e
), ev AS (
  {}
  UNION ALL
  SELECT robot_id, ts, state, seq FROM seed
  UNION ALL   -- a fault under way at the start: its first event, so its repair has its whole duration
  SELECT s.robot_id, f.ts, 'FAULT', f.seq FROM seed s
  CROSS JOIN LATERAL (
    SELECT e.ts, e.seq FROM events e
    WHERE e.robot_id = s.robot_id AND e.type = 'state' AND e.state = 'FAULT' AND e.ts < s.ts
      AND e.ts > coalesce((SELECT max(n.ts) FROM events n WHERE n.robot_id = s.robot_id AND n.type = 'state'
                           AND n.state <> 'FAULT' AND n.ts < s.ts), '-infinity')
    ORDER BY e.ts, e.seq LIMIT 1
  ) f
  WHERE s.state = 'FAULT'
)
"""
_EVENTS_SQL = sql.SQL(
    _EVENTS_SEED.format(
        "SELECT robot_id, ts, state, seq FROM events\n"
        "  WHERE type = 'state' AND robot_id = ANY(%(ids)s::bigint[]) AND ts >= %(s)s AND ts < %(e)s"
    )
    + "SELECT robot_id, array_agg(ts ORDER BY ts, seq), array_agg({} ORDER BY ts, seq) FROM ev GROUP BY 1 ORDER BY 1"
).format(_STATE_CODE)
# A short window (the incremental refresh): the window's events by one index probe per robot
# (OFFSET 0 keeps the probe; a robot_id = ANY(...) filter over many robots becomes a scan of
# every event), and all of it in one row of arrays: psycopg reads a COPY row by row.
_SHORT_EVENTS_SQL = sql.SQL(
    _EVENTS_SEED.format(
        "SELECT i.robot_id, e.ts, e.state, e.seq FROM unnest(%(ids)s::bigint[]) AS i(robot_id)\n"
        "  CROSS JOIN LATERAL (SELECT ts, state, seq FROM events e WHERE e.robot_id = i.robot_id\n"
        "    AND e.type = 'state' AND e.ts >= %(s)s AND e.ts < %(e)s OFFSET 0) e"
    )
    + "SELECT 0::int8, array_append(array_agg(robot_id ORDER BY robot_id, ts, seq), 0),"
    " array_append(array_agg(ts ORDER BY robot_id, ts, seq), 'epoch'),"
    " array_append(array_agg({} ORDER BY robot_id, ts, seq), 0::int2) FROM ev"
).format(_STATE_CODE)
"""Arrays end with a dummy element: an empty one would be NULL (array_agg of no rows)."""


def id_array(ids: np.ndarray) -> str:
    """``ids`` as a PostgreSQL array literal (``%s::bigint[]``): far faster than adapting a list."""
    return "{" + ",".join(map(str, ids.tolist())) + "}"


def load_state_events(
    conn: psycopg.Connection, ids: np.ndarray, start: datetime, end: datetime, short: bool = False
) -> StateEvents:
    """State events of robots ``ids`` in [start, end), each robot's last one before start and,
    when that is a FAULT, the first event of its run; sorted by robot, time, seq. One binary
    COPY of one row per robot (its events as arrays) into numpy: no Python object per event.

    ``short``: a window of a few events per robot (the incremental refresh): one index probe per
    robot for the window and every event in one row of arrays; the same events."""
    params = {"ids": id_array(ids), "s": start, "e": end}
    if short:
        _, (robot, ts, state), _ = copy_out_arrays(conn, _SHORT_EVENTS_SQL, params, ">i8", [">i8", ">i8", ">i2"])
        return StateEvents(  # without the dummy last element
            robot[:-1].astype(np.int64), ts[:-1].astype(np.int64) + PG_EPOCH_US, state[:-1].astype(np.int8)
        )
    robots, (ts, state), counts = copy_out_arrays(conn, _EVENTS_SQL, params, ">i8", [">i8", ">i2"])
    return StateEvents(
        np.repeat(robots.astype(np.int64), counts), ts.astype(np.int64) + PG_EPOCH_US, state.astype(np.int8)
    )


def robots_with_events(conn: psycopg.Connection) -> np.ndarray:
    """Every robot id in ``events``, sorted: one index probe per robot (a loose index scan)."""
    rows = conn.execute(
        "WITH RECURSIVE r AS ((SELECT robot_id FROM events ORDER BY robot_id LIMIT 1) UNION ALL "
        "SELECT (SELECT e.robot_id FROM events e WHERE e.robot_id > r.robot_id ORDER BY e.robot_id LIMIT 1) "
        "FROM r WHERE r.robot_id IS NOT NULL) SELECT robot_id FROM r WHERE robot_id IS NOT NULL"
    ).fetchall()
    return np.array([r[0] for r in rows], dtype=np.int64)


CELLS_PER_CHUNK = 2_000_000
"""Robot-buckets computed at once: the blocks of a chunk take about 150 MB, whatever the fleet's size."""


@dataclass(frozen=True)
class Layout:
    """The buckets of the local days a period touches: 15-minute edges (the period's start is one
    too, when off the grid) from the local midnight before the start to the end."""

    edges: np.ndarray  # int64 [µs]
    day: list[date]  # every local day
    day_starts: np.ndarray  # int64: index of each day's first 15-minute bucket
    quarter_day: np.ndarray  # int64: index into ``day`` of each 15-minute bucket
    in_period: np.ndarray  # bool: the 15-minute bucket is inside [start, end)


def layout(start: datetime, end: datetime) -> Layout:
    day0 = local_midnight(start)
    days = [day0.date()]
    while datetime.combine(days[-1] + timedelta(days=1), datetime.min.time(), LOCAL_TZ) < end:
        days.append(days[-1] + timedelta(days=1))
    day_us = np.array([_us(datetime.combine(d, datetime.min.time(), LOCAL_TZ)) for d in days], dtype=np.int64)
    edges = np.union1d(quarter_hour_edges(_us(day0), _us(day0), _us(end)), [_us(start)])
    return Layout(
        edges,
        days,
        np.searchsorted(edges[:-1], day_us),
        np.searchsorted(day_us, edges[:-1], side="right") - 1,
        edges[:-1] >= _us(start),
    )


def factories_by_day(conn: psycopg.Connection, ids: np.ndarray, factory_ids: list[str], days: list[date]) -> np.ndarray:
    """Factory of each robot on each day, an index into ``factory_ids`` (-1: none): the
    registry assignment in effect then (metrics.state_time.group_at). One binary COPY, the
    factory as its index (looked up in PostgreSQL): no Python object per assignment."""
    rows = copy_out(
        conn,
        sql.SQL(
            "SELECT a.robot_id, (a.valid_from - date '2000-01-01')::int4, (coalesce(f.i, 0) - 1)::int4 "
            "FROM assignments a LEFT JOIN unnest(%(f)s::text[]) WITH ORDINALITY AS f(factory_id, i) "
            "ON f.factory_id = a.factory_id WHERE a.robot_id = ANY(%(ids)s::bigint[]) ORDER BY 1, 2"
        ),
        {"ids": id_array(ids), "f": factory_ids},
        [("robot_id", ">i8"), ("valid_from", ">i4"), ("factory", ">i4")],
    )
    robot, valid_from, factory = rows["robot_id"], rows["valid_from"], rows["factory"]
    return group_at(
        np.searchsorted(ids, robot.astype(np.int64)),
        valid_from.astype(np.int64) + date(2000, 1, 1).toordinal(),
        factory.astype(np.int64),
        len(ids),
        np.array([d.toordinal() for d in days], dtype=np.int64),
    )


_BLOCK_TYPES = tuple(">i4" if c in ("failures", "repairs") else ">f8" for c in COLUMNS)


_READ_BACK_ROBOTS = 2048
"""Robots whose stored 15-minute blocks come back in one row of arrays (about 30 MB for a day)."""


def stored_quarters(conn: psycopg.Connection, ids: np.ndarray, edges: np.ndarray) -> Blocks:
    """The stored 15-minute blocks of robots ``ids`` (sorted) in the buckets of ``edges``; zeros where none.

    One index probe per robot, and per :data:`_READ_BACK_ROBOTS` robots one binary COPY row of
    one array per column (a dummy element last: array_agg of no rows is NULL); psycopg reads a
    COPY row by row, so a row per block would cost more than all the rest of a refresh."""
    dummy = {">i4": "0", ">f8": "0::float8"}
    query = sql.SQL(
        "SELECT 0::int8, array_append(array_agg(b.robot_id), 0), array_append(array_agg(b.bucket), 'epoch'), {} "
        "FROM unnest(%(ids)s::bigint[]) AS u(robot_id) CROSS JOIN LATERAL (SELECT * FROM robot_blocks_15m b "
        "WHERE b.robot_id = u.robot_id AND b.bucket >= %(s)s AND b.bucket < %(e)s OFFSET 0) b"
    ).format(
        sql.SQL(", ").join(
            sql.SQL("array_append(array_agg(b.{}), {})").format(sql.Identifier(c), sql.SQL(dummy[t]))
            for c, t in zip(COLUMNS, _BLOCK_TYPES, strict=True)
        )
    )
    parts = []
    for i in range(0, max(len(ids), 1), _READ_BACK_ROBOTS):  # no robots: one query, its dummy row
        params = {"ids": id_array(ids[i : i + _READ_BACK_ROBOTS]), "s": _at_us(edges[0]), "e": _at_us(edges[-1])}
        parts.append(copy_out_arrays(conn, query, params, ">i8", [">i8", ">i8", *_BLOCK_TYPES])[1])
    names = ["robot_id", "bucket", *COLUMNS]
    rows = {n: np.concatenate([p[j][:-1] for p in parts]) for j, n in enumerate(names)}
    r = np.searchsorted(ids, rows["robot_id"].astype(np.int64))
    b = np.searchsorted(edges, rows["bucket"].astype(np.int64) + PG_EPOCH_US, side="right") - 1
    cols = np.zeros((len(ids), len(edges) - 1, len(COLUMNS)))
    for j, c in enumerate(COLUMNS):
        cols[r, b, j] = rows[c]
    ns = N_STATES
    return Blocks(
        edges,
        cols[..., :ns].copy(),
        cols[..., ns].copy(),
        cols[..., ns + 1].copy(),
        cols[..., ns + 2].astype(np.int64),
        cols[..., ns + 3].astype(np.int64),
        cols[..., ns + 4].copy(),
    )


def _join(a: Blocks, b: Blocks) -> Blocks:
    """Blocks of ``a``'s buckets followed by ``b``'s (``a`` ends where ``b`` starts)."""

    def cat(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.concatenate([x, y], axis=1)

    return Blocks(
        np.concatenate([a.edges[:-1], b.edges]),
        cat(a.seconds, b.seconds),
        cat(a.planned_s, b.planned_s),
        cat(a.planned_executing_s, b.planned_executing_s),
        cat(a.failures, b.failures),
        cat(a.repairs, b.repairs),
        cat(a.repair_s, b.repair_s),
    )


def pack_blocks(
    key: str,
    robot_id: np.ndarray,
    blocks: Blocks,
    keys: np.ndarray,
    factory: np.ndarray,
    factory_ids: list[str],
) -> tuple[list[memoryview], int]:
    """Binary COPY data of the rows of ``blocks`` with covered time (columns :func:`block_columns`);
    returns the parts and the rows.

    ``keys``: each bucket's key as the wire carries it (timestamptz: µs, date: days since
    2000-01-01); ``factory``: index into ``factory_ids`` per robot and bucket (-1: NULL). Rows
    go grouped by factory, each group one fixed-width block of bytes.
    """
    robot, bucket = np.nonzero(blocks.covered_s > 0)
    fac = factory[robot, bucket]
    order = np.argsort(fac, kind="stable")
    robot, bucket, fac = robot[order], bucket[order], fac[order]
    cols = [f[robot, bucket] for f in blocks.fields()]  # each column at the stored cells, in COLUMNS order
    key_type = ">i8" if key == "bucket" else ">i4"
    cuts = np.flatnonzero(np.diff(fac)) + 1
    parts = []
    for lo, hi in zip(np.r_[0, cuts].tolist(), np.r_[cuts, len(fac)].tolist(), strict=True):
        if hi == lo:
            continue
        f = int(fac[lo])
        name = factory_ids[f] if f >= 0 else None
        columns: list[tuple[str, str, object]] = [
            ("robot_id", ">i8", robot_id[robot[lo:hi]]),
            (key, key_type, keys[bucket[lo:hi]]),
            ("factory_id", "null", None) if name is None else ("factory_id", text_dtype(name), name.encode()),
        ]
        columns += [(c, t, v[lo:hi]) for c, t, v in zip(COLUMNS, _BLOCK_TYPES, cols, strict=True)]
        parts.append(pack(hi - lo, columns))
    return parts, len(robot)


def block_columns(key: str) -> list[str]:
    """The columns of a blocks table whose bucket column is ``key``."""
    return ["robot_id", key, "factory_id", *COLUMNS]


def _wire_keys(lay: Layout) -> tuple[np.ndarray, np.ndarray]:
    """The buckets' and the days' keys as binary COPY writes them."""
    days = np.array([d.toordinal() for d in lay.day], dtype=np.int64) - date(1970, 1, 1).toordinal()
    return lay.edges[:-1] - PG_EPOCH_US, days - PG_EPOCH_DAYS


@dataclass(frozen=True)
class Chunk:
    """One chunk's results: its robots, their blocks in every bucket of the layout, factories, events."""

    ids: np.ndarray  # int64, sorted
    quarter: Blocks
    factory: np.ndarray  # (robots, days): index into the factory list, -1 none
    events: StateEvents  # robot_id: index into ids
    rows: int  # 15-minute rows written


def store_chunk(
    reader: psycopg.Connection,
    writer: CopyWriter,
    ids: np.ndarray,
    lay: Layout,
    first: int,
    load_from: datetime,
    end: datetime,
    factory_ids: list[str],
    short: bool = False,
) -> Chunk:
    """Compute the blocks of robots ``ids`` (sorted) from 15-minute bucket ``first`` of ``lay``
    on, and their daily blocks of every day of ``lay``, and hand them to ``writer``.

    The 15-minute blocks before bucket ``first`` are read back from the table, so each day's
    block is the sum of all its 15-minute blocks exactly as when the whole day is computed.
    Events are loaded from ``load_from`` (at or before ``lay.edges[first]``) with ``reader``.
    The writer's transaction has deleted the rows these replace. ``short``: a window of a few
    events per robot (:func:`load_state_events`).
    """
    ev = load_state_events(reader, ids, load_from, end, short)
    ridx = np.searchsorted(ids, ev.robot_id)
    factory = factories_by_day(reader, ids, factory_ids, lay.day)
    fresh = robot_blocks(ridx, ev.ts_us, ev.state, len(ids), lay.edges[first:])
    fresh = shift_plan.apply(reader, fresh, factory[:, lay.quarter_day[first:]], factory_ids)  # planned: calendars
    quarter = fresh if first == 0 else _join(stored_quarters(reader, ids, lay.edges[: first + 1]), fresh)
    bucket_keys, day_keys = _wire_keys(lay)
    quarters, rows = pack_blocks(
        "bucket", ids, fresh, bucket_keys[first:], factory[:, lay.quarter_day[first:]], factory_ids
    )
    days, _ = pack_blocks("day", ids, quarter.merge(lay.day_starts), day_keys, factory, factory_ids)
    writer.put(
        [("robot_blocks_15m", block_columns("bucket"), quarters), ("robot_blocks_daily", block_columns("day"), days)]
    )
    return Chunk(ids, quarter, factory, StateEvents(ridx, ev.ts_us, ev.state), rows)


@dataclass(frozen=True)
class PeriodTotals:
    """What the densities need from the blocks of the period's buckets."""

    robot_id: np.ndarray  # int64, sorted: every robot with events or in operation
    robot_seconds: np.ndarray  # (robots, states) [s]: time in state in the period
    factory_seconds: np.ndarray  # (factories, states) [s]: the same attributed to factories by day
    factory_planned: np.ndarray  # (factories, 2) [s]: planned_executing_s, planned_s, attributed the same way


class Meter:
    """Events/s, rows and peak memory for progress lines."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.t0 = time.perf_counter()
        self.events = 0
        self.rows = 0

    def line(self, what: str) -> str:
        dt = max(time.perf_counter() - self.t0, 1e-9)
        return (
            f"{what}: {self.events:,} events, {self.events / dt:,.0f} events/s, "
            f"{self.rows:,} 15-minute blocks, peak RSS {peak_rss_mb():,.0f} MB"
        )

    def add(self, chunk: Chunk) -> None:
        self.events += len(chunk.events.ts_us)
        self.rows += chunk.rows

    def __call__(self, what: str, done: float) -> None:
        self.progress(self.line(what), done)


def store_blocks(
    conn: psycopg.Connection,
    reader: psycopg.Connection,
    fleet: Fleet,
    start: datetime,
    end: datetime,
    verify_from: datetime,
    meter: Meter,
) -> tuple[PeriodTotals, np.ndarray]:
    """Compute the blocks of every robot with events or in operation over the local days of
    [start, end) and replace the stored ones with them; return the period's totals and, per
    robot of ``fleet``, whether it was EXECUTING in [verify_from, end).

    Robots go in chunks of at most :data:`CELLS_PER_CHUNK` robot-buckets, one load of events
    each, read with ``reader`` while ``conn`` (its transaction) writes the chunk before. Only
    (robot, bucket) pairs with covered time are stored: elsewhere every column is 0.
    """
    lay = layout(start, end)
    load_from = min(_at_us(lay.edges[0]), verify_from)
    ids = np.union1d(robots_with_events(reader), fleet.robot_id)
    robot_seconds = np.zeros((len(ids), N_STATES))
    factory_seconds = np.zeros((len(fleet.factory_id), N_STATES))
    factory_planned = np.zeros((len(fleet.factory_id), 2))
    worked = np.zeros(len(fleet.robot_id), dtype=bool)
    per_chunk = max(1, CELLS_PER_CHUNK // (len(lay.edges) - 1))
    with conn.transaction():
        conn.execute("DELETE FROM robot_blocks_15m WHERE bucket >= %s AND bucket < %s", (_at_us(lay.edges[0]), end))
        conn.execute("DELETE FROM robot_blocks_daily WHERE day >= %s AND day <= %s", (lay.day[0], lay.day[-1]))
        with CopyWriter(conn) as writer:
            for lo in range(0, len(ids), per_chunk):
                sub = ids[lo : lo + per_chunk]
                chunk = store_chunk(reader, writer, sub, lay, 0, load_from, end, fleet.factory_id)
                seconds = chunk.quarter.seconds[:, lay.in_period]
                robot_seconds[lo : lo + per_chunk] = seconds.sum(axis=1)
                fac = chunk.factory[:, lay.quarter_day[lay.in_period]]
                keep = fac >= 0
                for s in range(N_STATES):
                    factory_seconds[:, s] += np.bincount(
                        fac[keep], weights=seconds[..., s][keep], minlength=len(fleet.factory_id)
                    )
                q = chunk.quarter
                for j, planned in enumerate((q.planned_executing_s, q.planned_s)):
                    factory_planned[:, j] += np.bincount(
                        fac[keep], weights=planned[:, lay.in_period][keep], minlength=len(fleet.factory_id)
                    )
                mine = np.flatnonzero(np.isin(fleet.robot_id, sub))
                ev = chunk.events
                verify = seconds_in_state(ev.robot_id, ev.ts_us, ev.state, len(sub), _us(verify_from), _us(end))
                worked[mine] = verify[np.searchsorted(sub, fleet.robot_id[mine]), 0, EXECUTING] > 0
                meter.add(chunk)
                meter("blocks", min(lo + per_chunk, len(ids)) / max(len(ids), 1))
    return PeriodTotals(ids, robot_seconds, factory_seconds, factory_planned), worked


def compute(conn: psycopg.Connection, start: datetime, end: datetime, progress: Progress = _quiet) -> int:
    """Compute and store the blocks and the densities of [start, end); returns density rows written."""
    meter = Meter(progress)
    meter("loading registry", 0.0)
    with reader_beside(conn) as reader:
        fleet = load_fleet(reader, last_day(end))
        totals, worked = store_blocks(conn, reader, fleet, start, end, min(start, end - ACTIVE_WINDOW), meter)
    days = (start.astimezone(LOCAL_TZ).date(), last_day(end) + timedelta(days=1))
    conn.execute("SELECT refresh_region_daily(%s, %s)", days)  # region x day aggregates (migration 050)
    conn.execute("SELECT refresh_factory_fleet()")  # robots per factory today (migration 090)
    meter("computing densities", 1.0)
    n = density_job.store(conn, start, end, fleet, totals, worked)
    meter("done", 1.0)
    return n
