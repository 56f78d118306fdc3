"""The metrics job: load rows from PostgreSQL, run the pure metrics core, store results.

This is the thin I/O adapter around ``metrics/``: every number is computed there.
Densities are computed per (region, industry) for every region level a factory
belongs to (district, city, province) and for all industries together ('*').
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import psycopg

from collector import rollups
from metrics.density import region_ancestors, rollup
from metrics.state_time import seconds_in_state, utilisation
from metrics.states import EXECUTING, OFFLINE, STATES, state_codes

LOCAL_TZ = ZoneInfo("Asia/Shanghai")
"""Days and months of the daily rollups are those of China Standard Time."""
ALL_INDUSTRIES = "*"
ACTIVE_WINDOW = timedelta(days=30)
"""A robot is *verified* when it was EXECUTING in the period or in the 30 days before its end."""
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Fleet:
    """Registered robots in operation and their factories, as of the period's end."""

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
    return int(t.timestamp() * 1_000_000)


def load_fleet(conn: psycopg.Connection, start: datetime, end: datetime) -> Fleet:
    factories = conn.execute(
        "SELECT f.factory_id, f.region_code, f.industry_code, coalesce(h.employee_count, 0) "
        "FROM factories f LEFT JOIN LATERAL (SELECT employee_count FROM headcounts h "
        "  WHERE h.factory_id = f.factory_id AND h.valid_from <= %(end)s::date "
        "  ORDER BY valid_from DESC LIMIT 1) h ON true ORDER BY f.factory_id",
        {"end": end},
    ).fetchall()
    index = {row[0]: i for i, row in enumerate(factories)}
    robots = conn.execute(
        "SELECT r.robot_id, coalesce(r.domestic, false), a.factory_id FROM robots r "
        "LEFT JOIN LATERAL (SELECT factory_id FROM assignments a WHERE a.robot_id = r.robot_id "
        "  AND a.valid_from <= %(end)s::date ORDER BY valid_from DESC LIMIT 1) a ON true "
        "WHERE r.registered AND (r.commissioned IS NULL OR r.commissioned <= %(end)s::date) "
        "AND (r.decommissioned IS NULL OR r.decommissioned > %(start)s::date) ORDER BY r.robot_id",
        {"start": start, "end": end},
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


def load_state_events(conn: psycopg.Connection, start: datetime, end: datetime) -> StateEvents:
    """State events in [start, end) plus each robot's last one before start, sorted by robot, time."""
    rows = conn.execute(
        "(SELECT robot_id, ts, state, seq FROM events WHERE type = 'state' AND ts >= %(s)s AND ts < %(e)s) "
        "UNION ALL "
        "(SELECT DISTINCT ON (robot_id) robot_id, ts, state, seq FROM events "
        " WHERE type = 'state' AND ts < %(s)s ORDER BY robot_id, ts DESC, seq DESC) "
        "ORDER BY 1, 2, 4",
        {"s": start, "e": end},
    ).fetchall()
    return StateEvents(
        robot_id=np.array([r[0] for r in rows], dtype=np.int64),
        ts_us=np.array([_us(r[1]) for r in rows], dtype=np.int64),
        state=state_codes([r[2] for r in rows]),
    )


def robot_seconds(
    events: StateEvents, robot_ids: np.ndarray, start: datetime, end: datetime, bucket_s: int | None = None
) -> np.ndarray:
    """Seconds in state (robots, buckets, states) for ``robot_ids`` (sorted); other robots' events ignored."""
    idx = np.searchsorted(robot_ids, events.robot_id)
    idx_clipped = np.minimum(idx, max(len(robot_ids) - 1, 0))
    known = (idx < len(robot_ids)) & (robot_ids[idx_clipped] == events.robot_id) if len(robot_ids) else idx < 0
    return seconds_in_state(
        idx[known], events.ts_us[known], events.state[known], len(robot_ids), _us(start), _us(end), bucket_s
    )


def compute(conn: psycopg.Connection, start: datetime, end: datetime, progress: Progress = lambda _: None) -> int:
    """Compute and store daily robot rollups and densities for [start, end); returns density rows written."""
    day0 = datetime.combine(start.astimezone(LOCAL_TZ).date(), datetime.min.time(), LOCAL_TZ)
    verify_from = min(start, end - ACTIVE_WINDOW)
    progress("loading registry")
    fleet = load_fleet(conn, start, end)
    progress("loading state events")
    events = load_state_events(conn, min(day0, verify_from), end)
    progress("computing time in state")
    _store_daily(conn, events, fleet, day0, end)
    rollups.refresh(conn, start, end)  # 15-minute and daily seconds in state, for the dashboards
    window = robot_seconds(events, fleet.robot_id, start, end)[:, 0, :]
    worked = robot_seconds(events, fleet.robot_id, verify_from, end)[:, 0, EXECUTING] > 0
    progress("computing densities")
    rows = density_rows(fleet, window, worked)
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


def density_rows(fleet: Fleet, window: np.ndarray, verified: np.ndarray) -> list[dict[str, Any]]:
    """One row per (region at every level, industry or '*'), from per-robot window seconds and
    whether each robot did real work (EXECUTING) in the verification window."""
    n_fac = len(fleet.factory_id)
    reporting = window[:, OFFLINE] < window.sum(axis=1)
    util = np.nan_to_num(utilisation(window)) * reporting
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
    util_sum = np.bincount(group, weights=per_factory(util)[rows_f], minlength=len(keys))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_util = np.where(r["reporting_count"] > 0, util_sum / r["reporting_count"], np.nan)
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
                "utilisation": _num(mean_util[g]),
            }
        )
    return out


def _store_daily(conn: psycopg.Connection, events: StateEvents, fleet: Fleet, day0: datetime, end: datetime) -> None:
    ids = np.unique(np.concatenate([events.robot_id, fleet.robot_id]))
    seconds = robot_seconds(events, ids, day0, end, 86_400)
    factory_of = dict(zip(fleet.robot_id.tolist(), fleet.robot_factory.tolist(), strict=False))
    rows = []
    for i, rid in enumerate(ids.tolist()):
        f = factory_of.get(rid, -1)
        for b in range(seconds.shape[1]):
            s = seconds[i, b]
            if s[OFFLINE] < s.sum():  # a day the robot reported at all
                rows.append(
                    (
                        rid,
                        (day0 + timedelta(days=b)).date(),
                        fleet.factory_id[f] if f >= 0 else None,
                        *map(float, s),
                    )
                )
    with conn.transaction():
        conn.cursor().executemany(
            "INSERT INTO robot_daily (robot_id, day, factory_id, "
            + ", ".join(f"{s.value.lower()}_s" for s in STATES)
            + ") VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (robot_id, day) DO UPDATE SET factory_id = EXCLUDED.factory_id, "
            + ", ".join(f"{s.value.lower()}_s = EXCLUDED.{s.value.lower()}_s" for s in STATES),
            rows,
        )


def _num(x: float) -> float | None:
    return None if np.isnan(x) else float(x)
