"""Density reports read from the density views: as a table, CSV or JSON.

Every row names its definition, its denominator's source and vintage, and its coverage
(docs/definitions.md), and beside utilisation the plan it divides by (``plan``: 'planned: 24/7'
or 'planned: shift calendars (N of M factories)', docs/clocks-and-shifts.md). The default
definition, ``participating``, is read from ``v_density``
(the dashboards' view); any other from ``v_density_defined``.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, timedelta
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from rich.table import Table

Format = Literal["table", "csv", "json"]
COLUMNS = (
    ("region_code", "Region"),
    ("region_name", "Name"),
    ("robot_count", "Robots"),
    ("employee_count", "Employees"),
    ("robot_density", "Density /10k"),
    ("target", "Target"),
    ("verified_density", "Verified /10k"),
    ("coverage", "Coverage"),
    ("utilisation", "Utilisation"),
    ("plan", "Plan"),
)
OFFICIAL_COLUMNS = (("participating_density", "Participating /10k"), ("employment_coverage", "Empl. coverage"))
DEFAULT_DEFINITION = "participating"
LABELS = (
    "definition",
    "denominator_source",
    "vintage",
    "denominator_year",
    "employment_coverage",
    "participating_density",
    "target_definition",
)
"""What each row says of its own figures, beside ``COLUMNS``, in CSV and JSON."""


def _view(definition: str) -> str:
    return "v_density" if definition == DEFAULT_DEFINITION else "v_density_defined"


def density_report(
    conn: psycopg.Connection,
    region: str,
    at: datetime | None = None,
    industry: str = "*",
    definition: str = DEFAULT_DEFINITION,
) -> list[dict[str, Any]]:
    """The region and its direct children in ``definition`` for the latest period ending at or before ``at``."""
    with conn.cursor(row_factory=dict_row) as cur:
        period = cur.execute(
            "SELECT period_start, period_end FROM density WHERE region_code = %s AND industry_code = %s "
            "AND definition = %s AND (%s::timestamptz IS NULL OR period_end <= %s) "
            "ORDER BY period_end DESC, period_start LIMIT 1",
            (region, industry, definition, at, at),
        ).fetchone()
        if period is None:
            return []
        query = sql.SQL(
            "SELECT * FROM {} WHERE (region_code = %(r)s OR parent_code = %(r)s) AND definition = %(d)s "
            "AND industry_code = %(i)s AND period_start = %(s)s AND period_end = %(e)s "
            "ORDER BY level DESC, region_code"
        ).format(sql.Identifier(_view(definition)))
        args = {"r": region, "i": industry, "d": definition, "s": period["period_start"], "e": period["period_end"]}
        return cur.execute(query, args).fetchall()


def defined_title(rows: list[dict[str, Any]], region: str) -> str:
    """The table's title: the region, the definition, the denominator's source and vintage."""
    r = rows[0]
    return f"Robot density, region {region}: {r['definition']} (denominator: {r['denominator_source']}, {r['vintage']})"


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "n/a"
    if key in ("coverage", "utilisation", "domestic_share", "employment_coverage"):
        return f"{100 * value:.1f}%"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def as_table(rows: list[dict[str, Any]], title: str) -> Table:
    """Rows as a rich table; an official-denominator definition's rows show the participating
    factories' density of the same numerator and the employment coverage beside their own."""
    table = Table(title=title)
    official = any(r.get("denominator") == "official" for r in rows)
    columns = COLUMNS + (OFFICIAL_COLUMNS if official else ())
    for key, label in columns:
        table.add_column(label, justify="left" if key.startswith("region") else "right")
    for row in rows:
        table.add_row(*(_cell(k, row.get(k)) for k, _ in columns), style="bold" if row["level"] == 1 else None)
    return table


def as_text(rows: list[dict[str, Any]], fmt: Format) -> str:
    keys = [k for k, _ in COLUMNS] + ["industry_code", "period_start", "period_end", *LABELS]
    plain = [{k: (r[k].isoformat() if isinstance(r.get(k), datetime) else r.get(k)) for k in keys} for r in rows]
    if fmt == "json":
        return json.dumps(plain, ensure_ascii=False, indent=2)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(plain)
    return buf.getvalue()


def subsidy_evidence(conn: psycopg.Connection, factory: str, since: date, until: date) -> dict[str, Any]:
    """Evidence for a subsidy claim: the factory's density the day before ``since`` and on ``until``
    (robots in operation then, the storage layer's ``robots_in_operation``), and the utilisation
    (on planned time: planned executing / planned time of the daily blocks) of its robots listed
    under a subsidy programme over [since, until), with the factory's plan."""
    from robodensity.metrics.density import robot_density

    def at(day: date) -> tuple[int, int]:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM robots_in_operation(%(d)s) o WHERE o.factory_id = %(f)s), "
            "(SELECT employee_count FROM headcounts WHERE factory_id = %(f)s AND valid_from <= %(d)s "
            " ORDER BY valid_from DESC LIMIT 1)",
            {"f": factory, "d": day},
        ).fetchone()
        return (int(row[0]), int(row[1] or 0)) if row else (0, 0)

    before, after = at(since - timedelta(days=1)), at(until)
    density = robot_density([before[0], after[0]], [before[1], after[1]])
    programmes = conn.execute(
        "SELECT r.subsidy_programme, count(DISTINCT r.robot_id), sum(d.planned_executing_s), sum(d.planned_s) "
        "FROM robots r LEFT JOIN v_robot_blocks_daily d ON d.robot_id = r.robot_id AND d.day >= %s AND d.day < %s "
        "WHERE r.subsidy_programme IS NOT NULL AND EXISTS (SELECT 1 FROM assignments a "
        "  WHERE a.robot_id = r.robot_id AND a.factory_id = %s) GROUP BY 1 ORDER BY 1",
        (since, until, factory),
    ).fetchall()
    plan = conn.execute("SELECT plan FROM v_factory_plan WHERE factory_id = %s", (factory,)).fetchone()
    return {
        "factory_id": factory,
        "plan": plan[0] if plan else None,
        "before": {
            "date": (since - timedelta(days=1)).isoformat(),
            "robot_count": before[0],
            "employee_count": before[1],
            "robot_density": _finite(density[0]),
        },
        "after": {
            "date": until.isoformat(),
            "robot_count": after[0],
            "employee_count": after[1],
            "robot_density": _finite(density[1]),
        },
        "programmes": [
            {"programme": p, "robot_count": n, "utilisation": (float(e) / float(t)) if t else None}
            for p, n, e, t in programmes
        ],
    }


def _finite(x: float) -> float | None:
    return None if x != x else float(x)


def target_outlook(conn: psycopg.Connection, region: str, industry: str = "*") -> dict[str, Any] | None:
    """Progress toward the region's density target, the linear trend of its density history
    projected to the due date, and the month the trend reaches the target (metrics.targets)."""
    import numpy as np

    from robodensity.metrics.targets import linear_trend, month_reached, target_progress, to_days

    rows = conn.execute(
        "SELECT period_end, robot_density, target, target_due FROM v_density "
        "WHERE region_code = %s AND industry_code = %s AND robot_density IS NOT NULL ORDER BY period_end",
        (region, industry),
    ).fetchall()
    if not rows or rows[-1][2] is None:
        return None
    t = np.array([r[0].replace(tzinfo=None) for r in rows], dtype="datetime64[us]")
    values = np.array([r[1] for r in rows], dtype=float)
    target, due = float(rows[-1][2]), np.datetime64(rows[-1][3], "D")
    slope, intercept = linear_trend(t, values)
    reached = month_reached(t, values, target, due)
    projected = float(slope * to_days(due) + intercept)
    return {
        "region_code": region,
        "industry_code": industry,
        "periods": len(rows),
        "latest": float(values[-1]),
        "latest_at": rows[-1][0].isoformat(),
        "target": target,
        "due": str(due),
        "progress": float(target_progress(values[-1], target)),
        "trend_per_year": _finite(float(slope) * 365.25),
        "projected_at_due": _finite(projected),
        "month_reached": None if np.isnat(reached) else str(reached),
        "on_track": bool(not np.isnat(reached) and reached <= due.astype("datetime64[M]")),
    }
