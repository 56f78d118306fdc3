"""Density rows of every definition, from the metrics job's fleet and period totals.

A definition (``density_definitions``, migrations/040_definitions.sql; docs/definitions.md)
names its numerator (robots in operation or verified working; in all manufacturing, key
industries or above-designated-size firms; robots or robot-days) and its denominator (the
participating factories' headcounts, or official employment statistics). For every definition
this writes one row per (region at every level a factory belongs to, industry or '*'), naming
the denominator's source and vintage and the coverage. The figures come from ``metrics/density``;
robots in operation from the one SQL rule, ``robots_in_operation(at)`` (migration 015):

* robots: those in operation on the period's last local day, where they stand then;
* robot-days: every local day of the period, each robot in operation that day counted in the
  factory it stood in, divided by the period's days: a robot leased to two factories is split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg

from robodensity.metrics.density import defined_rollup, industry_in, region_ancestors, robot_density, spread
from robodensity.metrics.reliability import utilisation
from robodensity.metrics.states import EXECUTING, OFFLINE
from robodensity.storage.shifts import plan_label

if TYPE_CHECKING:
    from robodensity.app.metrics_job import Fleet, PeriodTotals

ALL_INDUSTRIES = "*"
PARTICIPATING_SOURCE = "participating factories' headcounts (registry)"
COLUMNS = (
    "definition", "region_code", "industry_code", "period_start", "period_end", "robot_count", "employee_count",
    "robot_density", "verified_count", "verified_density", "reporting_count", "coverage", "domestic_share",
    "utilisation", "denominator_source", "vintage", "denominator_year", "robot_days", "period_days",
    "participating_employee_count", "participating_density", "employment_coverage", "plan",
)  # fmt: skip


@dataclass(frozen=True)
class Definition:
    definition: str
    numerator: str  # in_operation | verified
    scope: str  # all | key | above_designated_size
    unit: str  # robots | robot_days
    denominator: str  # participating | official


@dataclass(frozen=True)
class Counted:
    """What a definition's numerator counts: robots standing in factories, with a weight each."""

    robot: np.ndarray  # int64 robot id
    factory: np.ndarray  # int64 index into the fleet's factories
    weight: np.ndarray  # float64 [robots]: 1, or days stood there / days of the period
    domestic: np.ndarray  # bool


@dataclass(frozen=True)
class Official:
    """Official employment of one region x industry x firms, the latest year not after the period's."""

    employees: int
    source: str
    vintage: str
    year: int


@dataclass
class Context:
    """What every definition of one period reads."""

    fleet: Fleet
    totals: PeriodTotals
    verified: set[int]
    reporting: set[int]
    above_size: np.ndarray  # bool per factory
    key_lists: dict[str, list[str]]  # region -> its own key industries
    key_flagged: list[str]  # industries flagged key_manufacturing
    official: dict[tuple[str, str, str], Official]
    first_day: date
    last_day: date
    robot_days: Counted | None = None
    calendar: np.ndarray | None = None  # bool per factory: planned by a shift calendar in the period (None: none is)


def load_definitions(conn: psycopg.Connection) -> list[Definition]:
    rows = conn.execute(
        "SELECT definition, numerator, scope, unit, denominator FROM density_definitions ORDER BY definition"
    ).fetchall()
    return [Definition(*r) for r in rows]


def _official(conn: psycopg.Connection, year: int) -> dict[tuple[str, str, str], Official]:
    rows = conn.execute(
        "SELECT DISTINCT ON (region_code, industry_code, firms) region_code, industry_code, firms, employees, "
        "source, vintage, year FROM employment_statistics WHERE year <= %s "
        "ORDER BY region_code, industry_code, firms, year DESC",
        (year,),
    ).fetchall()
    return {(r[0], r[1], r[2]): Official(r[3], r[4], r[5], r[6]) for r in rows}


_ROBOT_DAYS_SQL = """
WITH b AS (   -- the days robots_in_operation's answer may change: the period's first, and the
              -- assignments, commissionings and decommissionings inside it
  SELECT %(first)s::date AS d
  UNION SELECT valid_from FROM assignments WHERE valid_from > %(first)s AND valid_from <= %(last)s
  UNION SELECT commissioned FROM robots WHERE commissioned > %(first)s AND commissioned <= %(last)s
  UNION SELECT decommissioned FROM robots WHERE decommissioned > %(first)s AND decommissioned <= %(last)s
), seg AS (
  SELECT d, coalesce(lead(d) OVER (ORDER BY d), %(last)s::date + 1) - d AS days FROM b
)
SELECT o.robot_id, o.factory_id, sum(seg.days), bool_or(o.domestic)
FROM seg CROSS JOIN LATERAL robots_in_operation(seg.d) o
WHERE o.factory_id IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2
"""


def _robot_days(conn: psycopg.Connection, fleet: Fleet, first: date, last: date) -> Counted:
    """Days each robot in operation stood in each factory over the local days [first, last].

    ``robots_in_operation`` is asked once per stretch of days over which its answer cannot
    change (nothing assigned, commissioned or decommissioned inside it), not once per day."""
    rows = conn.execute(_ROBOT_DAYS_SQL, {"first": first, "last": last}).fetchall()
    index = {f: i for i, f in enumerate(fleet.factory_id)}
    days = (last - first).days + 1
    return Counted(
        np.array([r[0] for r in rows], dtype=np.int64),
        np.array([index[r[1]] for r in rows], dtype=np.int64),
        np.array([float(r[2]) / days for r in rows], dtype=np.float64),
        np.array([r[3] for r in rows], dtype=bool),
    )


def _key_industries(ctx: Context, region: str) -> list[str]:
    for code in region_ancestors(region):
        if code in ctx.key_lists:
            return ctx.key_lists[code]
    return ctx.key_flagged


def _in_scope(d: Definition, ctx: Context) -> Callable[[int, str], bool]:
    if d.scope == "above_designated_size":
        return lambda i, _region: bool(ctx.above_size[i])
    if d.scope == "key":
        return lambda i, region: industry_in(ctx.fleet.industry[i], _key_industries(ctx, region))
    return lambda _i, _region: True


def _denominator(d: Definition, ctx: Context, region: str, industry: str) -> Official | None:
    firms = "above_designated_size" if d.scope == "above_designated_size" else "all"
    if industry != ALL_INDUSTRIES or d.scope != "key":
        return ctx.official.get((region, industry, firms))
    parts = [ctx.official.get((region, code, firms)) for code in _key_industries(ctx, region)]
    found = [p for p in parts if p is not None]
    if not found or len(found) < len(parts):  # a key industry without statistics: no honest denominator
        return None
    return Official(
        sum(p.employees for p in found),
        "; ".join(dict.fromkeys(p.source for p in found)),
        "; ".join(dict.fromkeys(p.vintage for p in found)),
        max(p.year for p in found),
    )


def definition_rows(d: Definition, ctx: Context) -> list[dict[str, Any]]:
    """One row per (region, industry or '*') of definition ``d`` (see the module's docstring)."""
    fleet = ctx.fleet
    in_scope = _in_scope(d, ctx)
    keys: dict[tuple[str, str], int] = {}
    members: list[tuple[int, int]] = []  # (factory, group)
    for i, (region, industry) in enumerate(zip(fleet.region, fleet.industry, strict=True)):
        for code in region_ancestors(region):
            if in_scope(i, code):
                for ind in (ALL_INDUSTRIES, industry):
                    members.append((i, keys.setdefault((code, ind), len(keys))))
    m_fac = np.array([m[0] for m in members], dtype=np.int64)
    m_group = np.array([m[1] for m in members], dtype=np.int64)
    n = len(keys)
    if d.unit == "robot_days":
        assert ctx.robot_days is not None
        counted = ctx.robot_days
    else:
        on = fleet.robot_factory >= 0
        counted = Counted(fleet.robot_id[on], fleet.robot_factory[on], np.ones(int(on.sum())), fleet.domestic[on])
    verified = np.isin(counted.robot, list(ctx.verified))
    if d.numerator == "verified":
        counted = Counted(*(a[verified] for a in (counted.robot, counted.factory, counted.weight, counted.domestic)))
        verified = verified[verified]
    item, group = spread(counted.factory, m_fac, m_group)
    employees = np.bincount(m_group, weights=fleet.employees[m_fac].astype(np.float64), minlength=n)
    flags = {
        "verified": verified[item],
        "reporting": np.isin(counted.robot, list(ctx.reporting))[item],
        "domestic": counted.domestic[item],
    }
    part = defined_rollup(group, counted.robot[item], counted.weight[item], flags, n, employees)
    planned = ctx.totals.factory_planned  # utilisation on planned time: APT / PBT, one rule (metrics.reliability)
    util = utilisation(*(np.bincount(m_group, weights=planned[m_fac, j], minlength=n) for j in (0, 1)))
    calendar = ctx.calendar if ctx.calendar is not None else np.zeros(len(fleet.factory_id), dtype=bool)
    with_calendar = np.bincount(m_group, weights=calendar[m_fac].astype(np.float64), minlength=n).astype(np.int64)
    factories = np.bincount(m_group, minlength=n)
    period_days = (ctx.last_day - ctx.first_day).days + 1
    out = []
    for (code, ind), g in keys.items():
        source, vintage, year, den = PARTICIPATING_SOURCE, f"headcounts in effect on {ctx.last_day}", None, employees[g]
        if d.denominator == "official":
            official = _denominator(d, ctx, code, ind)
            if official is None:
                continue
            source, vintage, year, den = official.source, official.vintage, official.year, float(official.employees)
        weight = part["robot_weight"][g]
        out.append(
            {
                "definition": d.definition,
                "region_code": code,
                "industry_code": ind,
                "robot_count": int(part["robot_count"][g]),
                "employee_count": int(den),
                "robot_density": _num(robot_density(weight, den)),
                "verified_count": int(part["verified_count"][g]),
                "verified_density": _num(robot_density(part["verified_weight"][g], den)),
                "reporting_count": int(part["reporting_count"][g]),
                "coverage": _num(part["reporting_weight"][g] / weight if weight > 0 else np.nan),
                "domestic_share": _num(part["domestic_weight"][g] / weight if weight > 0 else np.nan),
                "utilisation": _num(util[g]),
                "denominator_source": source,
                "vintage": vintage,
                "denominator_year": year,
                "robot_days": float(weight * period_days) if d.unit == "robot_days" else None,
                "period_days": period_days if d.unit == "robot_days" else None,
                "participating_employee_count": int(employees[g]),
                "participating_density": _num(part["robot_density"][g]),
                "employment_coverage": _num(employees[g] / den if den > 0 else np.nan),
                "plan": plan_label(int(with_calendar[g]), int(factories[g])),
            }
        )
    return out


def context(
    conn: psycopg.Connection, start: datetime, end: datetime, fleet: Fleet, totals: PeriodTotals, verified: np.ndarray
) -> Context:
    from robodensity.app.metrics_job import LOCAL_TZ, last_day

    worked = totals.robot_id[totals.robot_seconds[:, EXECUTING] > 0]
    window = totals.robot_seconds
    speaking = totals.robot_id[window.sum(axis=1) - window[:, OFFLINE] > 0]
    index = {f: i for i, f in enumerate(fleet.factory_id)}
    above = np.zeros(len(fleet.factory_id), dtype=bool)
    for factory_id, flag in conn.execute("SELECT factory_id, above_designated_size FROM factories").fetchall():
        if factory_id in index:
            above[index[factory_id]] = flag
    key_lists: dict[str, list[str]] = {}
    for region, industry in conn.execute("SELECT region_code, industry_code FROM key_industries ORDER BY 1, 2"):
        key_lists.setdefault(region, []).append(industry)
    flagged = [c for (c,) in conn.execute("SELECT code FROM industries WHERE key_manufacturing ORDER BY code")]
    last = last_day(end)
    calendar = np.zeros(len(fleet.factory_id), dtype=bool)
    for (factory_id,) in conn.execute(
        "SELECT factory_id FROM factory_shifts WHERE valid_from <= %(last)s "
        "UNION SELECT factory_id FROM factory_maintenance "
        "WHERE start_at < (%(end)s AT TIME ZONE %(zone)s) AND start_at + hours * interval '1 hour' > "
        "(%(start)s AT TIME ZONE %(zone)s)",
        {"last": last, "start": start, "end": end, "zone": str(LOCAL_TZ)},
    ):
        if factory_id in index:
            calendar[index[factory_id]] = True
    return Context(
        fleet=fleet,
        totals=totals,
        verified={*fleet.robot_id[verified].tolist(), *worked.tolist()},
        reporting=set(speaking.tolist()),
        above_size=above,
        key_lists=key_lists,
        key_flagged=flagged,
        official=_official(conn, last.year),
        first_day=start.astimezone(LOCAL_TZ).date(),
        last_day=last,
        calendar=calendar,
    )


def store(
    conn: psycopg.Connection, start: datetime, end: datetime, fleet: Fleet, totals: PeriodTotals, verified: np.ndarray
) -> int:
    """Compute and store the density rows of every definition for [start, end); returns the rows
    of the default definition ('participating') written."""
    ctx = context(conn, start, end, fleet, totals, verified)
    definitions = load_definitions(conn)
    if any(d.unit == "robot_days" for d in definitions):
        ctx.robot_days = _robot_days(conn, fleet, ctx.first_day, ctx.last_day)
    rows = [r for d in definitions for r in definition_rows(d, ctx)]
    placeholders = ", ".join(["%s"] * len(COLUMNS))
    with conn.transaction():
        conn.execute("DELETE FROM density WHERE period_start = %s AND period_end = %s", (start, end))
        conn.cursor().executemany(
            f"INSERT INTO density ({', '.join(COLUMNS)}) VALUES ({placeholders})",
            [tuple({**r, "period_start": start, "period_end": end}[c] for c in COLUMNS) for r in rows],
        )
    return sum(r["definition"] == "participating" for r in rows)


def _num(x: float | np.floating[Any] | np.ndarray) -> float | None:
    v = float(x)
    return None if np.isnan(v) else v
