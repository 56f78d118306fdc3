"""The metrics job: load rows from PostgreSQL, run the pure metrics core, store results.

This is the thin I/O adapter around ``metrics/``: every number is computed there. It writes
two things:

* the blocks (``robot_blocks_15m``, ``robot_blocks_daily``; rules in ``metrics/blocks.py``)
  of every local day the period touches, from which every dashboard figure is summed;
* densities per (region, industry) for every region level a factory belongs to (district,
  city, province) and for all industries together ('*').

Robots in operation come from the storage layer's one definition, ``robots_in_operation(at)``
(migrations/015_metric_blocks.sql), evaluated on the period's last local day.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
from psycopg import sql

from robodensity.core.settings import DEFAULT_TIMEZONE
from robodensity.metrics.blocks import COLUMNS, Blocks, quarter_hour_edges, robot_blocks
from robodensity.metrics.density import region_ancestors, rollup
from robodensity.metrics.state_time import attribute, group_at, seconds_in_state, utilisation
from robodensity.metrics.states import EXECUTING, N_STATES, OFFLINE, state_codes

LOCAL_TZ = ZoneInfo(DEFAULT_TIMEZONE)
"""Days of the daily blocks and of density periods are those of China Standard Time."""
ALL_INDUSTRIES = "*"
ACTIVE_WINDOW = timedelta(days=30)
"""A robot is *verified* when it was EXECUTING in the period or in the 30 days before its end."""
Progress = Callable[[str], None]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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
    robot_id: np.ndarray  # int64
    ts_us: np.ndarray  # int64 [µs since epoch]
    state: np.ndarray  # int8 codes


def _us(t: datetime) -> int:
    d = t - _EPOCH
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def _at_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=int(us))


def last_day(end: datetime) -> date:
    """The local day of the period's last moment: robots in operation are counted on it."""
    return (end - timedelta(microseconds=1)).astimezone(LOCAL_TZ).date()


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


_EVENTS_SQL = """
WITH seed AS (   -- each robot's state at the window's start
  SELECT DISTINCT ON (robot_id) robot_id, ts, state, seq FROM events
  WHERE type = 'state' AND ts < %(s)s ORDER BY robot_id, ts DESC, seq DESC
)
SELECT robot_id, ts, state, seq FROM events WHERE type = 'state' AND ts >= %(s)s AND ts < %(e)s
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
ORDER BY 1, 2, 4
"""


def load_state_events(conn: psycopg.Connection, start: datetime, end: datetime) -> StateEvents:
    """State events in [start, end), each robot's last one before start and, when that is a
    FAULT, the first event of its run; sorted by robot, time, seq."""
    rows = conn.execute(_EVENTS_SQL, {"s": start, "e": end}).fetchall()
    return StateEvents(
        robot_id=np.array([r[0] for r in rows], dtype=np.int64),
        ts_us=np.array([_us(r[1]) for r in rows], dtype=np.int64),
        state=state_codes([r[2] for r in rows]),
    )


def _select(events: StateEvents, robot_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Events of ``robot_ids`` (sorted) as (robot index, ts, state); other robots' events dropped."""
    idx = np.searchsorted(robot_ids, events.robot_id)
    idx_clipped = np.minimum(idx, max(len(robot_ids) - 1, 0))
    known = (idx < len(robot_ids)) & (robot_ids[idx_clipped] == events.robot_id) if len(robot_ids) else idx < 0
    return idx[known], events.ts_us[known], events.state[known]


def robot_seconds(
    events: StateEvents, robot_ids: np.ndarray, start: datetime, end: datetime, bucket_s: int | None = None
) -> np.ndarray:
    """Seconds in state (robots, buckets, states) for ``robot_ids`` (sorted); other robots' events ignored."""
    r, t, s = _select(events, robot_ids)
    return seconds_in_state(r, t, s, len(robot_ids), _us(start), _us(end), bucket_s)


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
    day0 = datetime.combine(start.astimezone(LOCAL_TZ).date(), datetime.min.time(), LOCAL_TZ)
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


def _factories_by_day(conn: psycopg.Connection, ids: np.ndarray, fleet: Fleet, days: list[date]) -> np.ndarray:
    """Factory of each robot on each day, an index into ``fleet.factory_id`` (-1: none): the
    registry assignment in effect then (metrics.state_time.group_at)."""
    rows = conn.execute(
        "SELECT robot_id, valid_from, factory_id FROM assignments WHERE robot_id = ANY(%s) ORDER BY 1, 2",
        (ids.tolist(),),
    ).fetchall()
    index = {f: i for i, f in enumerate(fleet.factory_id)}
    return group_at(
        np.searchsorted(ids, np.array([r[0] for r in rows], dtype=np.int64)),
        np.array([r[1].toordinal() for r in rows], dtype=np.int64),
        np.array([index.get(r[2], -1) for r in rows], dtype=np.int64),
        len(ids),
        np.array([d.toordinal() for d in days], dtype=np.int64),
    )


@dataclass(frozen=True)
class PeriodTotals:
    """What the densities need from the blocks of the period's buckets."""

    robot_id: np.ndarray  # int64, sorted: every robot with events or in operation
    robot_seconds: np.ndarray  # (robots, states) [s]: time in state in the period
    factory_seconds: np.ndarray  # (factories, states) [s]: the same attributed to factories by day


def store_blocks(
    conn: psycopg.Connection, events: StateEvents, fleet: Fleet, start: datetime, end: datetime
) -> PeriodTotals:
    """Compute the blocks of every robot with events or in operation over the local days of
    [start, end), replace the stored ones with them, and return the period's totals.

    Robots go in chunks of at most :data:`CELLS_PER_CHUNK` robot-buckets. Only (robot, bucket)
    pairs with covered time are stored: elsewhere every column is 0.
    """
    lay = layout(start, end)
    ids = np.unique(np.concatenate([events.robot_id, fleet.robot_id]))
    factory = _factories_by_day(conn, ids, fleet, lay.day)
    factory_ids = [*fleet.factory_id, None]  # index -1 -> None
    buckets = [_at_us(e) for e in lay.edges[:-1]]
    robot_seconds = np.zeros((len(ids), N_STATES))
    factory_seconds = np.zeros((len(fleet.factory_id), N_STATES))
    per_chunk = max(1, CELLS_PER_CHUNK // len(buckets))
    with conn.transaction():
        conn.execute("DELETE FROM robot_blocks_15m WHERE bucket >= %s AND bucket < %s", (buckets[0], end))
        conn.execute("DELETE FROM robot_blocks_daily WHERE day >= %s AND day <= %s", (lay.day[0], lay.day[-1]))
        for lo in range(0, len(ids), per_chunk):
            sub = ids[lo : lo + per_chunk]
            a = int(np.searchsorted(events.robot_id, sub[0], side="left"))
            b = int(np.searchsorted(events.robot_id, sub[-1], side="right"))
            part = StateEvents(events.robot_id[a:b], events.ts_us[a:b], events.state[a:b])
            quarter = robot_blocks(*_select(part, sub), len(sub), lay.edges)
            fac = factory[lo : lo + per_chunk]
            _copy(conn, "robot_blocks_15m", "bucket", sub, quarter, buckets, fac[:, lay.quarter_day], factory_ids)
            _copy(conn, "robot_blocks_daily", "day", sub, quarter.merge(lay.day_starts), lay.day, fac, factory_ids)
            seconds = quarter.seconds[:, lay.in_period]
            robot_seconds[lo : lo + per_chunk] = seconds.sum(axis=1)
            attributed = attribute(seconds, fac[:, lay.quarter_day[lay.in_period]], len(fleet.factory_id))
            factory_seconds += attributed.sum(axis=1)
    return PeriodTotals(ids, robot_seconds, factory_seconds)


def _copy(
    conn: psycopg.Connection,
    table: str,
    key: str,
    robot_id: np.ndarray,
    blocks: Blocks,
    keys: list[Any],
    factory: np.ndarray,
    factory_ids: list[str | None],
) -> None:
    cols = blocks.columns()
    robot, bucket = np.nonzero(blocks.covered_s > 0)
    values = cols[robot, bucket].tolist()
    fac = factory[robot, bucket].tolist()
    n_int = COLUMNS.index("failures")  # failures, repairs: integers
    query = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, ("robot_id", key, "factory_id", *COLUMNS)))
    )
    with conn.cursor() as cur, cur.copy(query) as cp:
        for rid, k, f, v in zip(robot_id[robot].tolist(), bucket.tolist(), fac, values, strict=True):
            v[n_int] = int(v[n_int])
            v[n_int + 1] = int(v[n_int + 1])
            cp.write_row((rid, keys[k], factory_ids[f], *v))


def compute(conn: psycopg.Connection, start: datetime, end: datetime, progress: Progress = lambda _: None) -> int:
    """Compute and store the blocks and the densities of [start, end); returns density rows written."""
    day0 = datetime.combine(start.astimezone(LOCAL_TZ).date(), datetime.min.time(), LOCAL_TZ)
    verify_from = min(start, end - ACTIVE_WINDOW)
    progress("loading registry")
    fleet = load_fleet(conn, last_day(end))
    progress("loading state events")
    events = load_state_events(conn, min(day0, verify_from), end)
    progress("computing blocks")
    totals = store_blocks(conn, events, fleet, start, end)
    worked = robot_seconds(events, fleet.robot_id, verify_from, end)[:, 0, EXECUTING] > 0
    progress("computing densities")
    rows = density_rows(fleet, totals, worked)
    with conn.transaction():
        conn.execute("DELETE FROM density WHERE period_start = %s AND period_end = %s", (start, end))
        conn.cursor().executemany(
            "INSERT INTO density (region_code, industry_code, period_start, period_end, robot_count, "
            "employee_count, robot_density, verified_count, verified_density, reporting_count, coverage, "
            "domestic_share, utilisation) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    r["region_code"],
                    r["industry_code"],
                    start,
                    end,
                    r["robot_count"],
                    r["employee_count"],
                    r["robot_density"],
                    r["verified_count"],
                    r["verified_density"],
                    r["reporting_count"],
                    r["coverage"],
                    r["domestic_share"],
                    r["utilisation"],
                )
                for r in rows
            ],
        )
    return len(rows)


def density_rows(fleet: Fleet, totals: PeriodTotals, verified: np.ndarray) -> list[dict[str, Any]]:
    """One row per (region at every level, industry or '*').

    Robots, employees, verified and reporting robots are those of ``fleet`` (in operation on
    the period's last day); a robot *reports* when it has covered time not OFFLINE in the
    period. Utilisation is the blocks' sum of ``executing_s`` over their sum of covered time,
    over the buckets of the period attributed to the region's factories.
    """
    n_fac = len(fleet.factory_id)
    window = totals.robot_seconds[np.searchsorted(totals.robot_id, fleet.robot_id)]
    reporting = window.sum(axis=1) - window[:, OFFLINE] > 0
    by_factory = totals.factory_seconds
    on = fleet.robot_factory >= 0
    fac = fleet.robot_factory[on]

    def per_factory(x: np.ndarray) -> np.ndarray:
        return np.bincount(fac, weights=x[on].astype(np.float64), minlength=n_fac)

    robots = per_factory(np.ones(len(fleet.robot_id)))
    keys: dict[tuple[str, str], int] = {}
    members: list[tuple[int, int]] = []  # (factory row, group)
    for i, (region, industry) in enumerate(zip(fleet.region, fleet.industry, strict=False)):
        for code in region_ancestors(region):
            for ind in (ALL_INDUSTRIES, industry):
                members.append((i, keys.setdefault((code, ind), len(keys))))
    rows_f = np.array([m[0] for m in members], dtype=np.int64)
    group = np.array([m[1] for m in members], dtype=np.int64)
    r = rollup(
        group,
        len(keys),
        robots[rows_f],
        fleet.employees[rows_f],
        reporting=per_factory(reporting)[rows_f],
        domestic=per_factory(fleet.domestic)[rows_f],
    )
    verified_g = rollup(group, len(keys), per_factory(verified)[rows_f], fleet.employees[rows_f])
    group_seconds = np.stack(
        [np.bincount(group, weights=by_factory[rows_f, j], minlength=len(keys)) for j in range(by_factory.shape[1])],
        axis=-1,
    )
    util = utilisation(group_seconds)
    out = []
    for (code, ind), g in keys.items():
        out.append(
            {
                "region_code": code,
                "industry_code": ind,
                "robot_count": int(r["robot_count"][g]),
                "employee_count": int(r["employee_count"][g]),
                "robot_density": _num(r["robot_density"][g]),
                "verified_count": int(verified_g["robot_count"][g]),
                "verified_density": _num(verified_g["robot_density"][g]),
                "reporting_count": int(r["reporting_count"][g]),
                "coverage": _num(r["coverage"][g]),
                "domestic_share": _num(r["domestic_share"][g]),
                "utilisation": _num(util[g]),
            }
        )
    return out


def _num(x: float) -> float | None:
    return None if np.isnan(x) else float(x)
