"""Reconciliation: the registry's robots (bottom-up) against the installations-based stock (top-down).

For each year with installation statistics for the region (``robodensity stats import``):

* **registered**: robots in operation on 31 December (the one rule, ``robots_in_operation``)
  standing in the region's participating factories;
* **verified**: of the region's robots, those with EXECUTING time in the year (daily blocks);
* **top-down**: operational stock by the IFR method (12-year service life, ``metrics/stock.py``)
  from the region's installations;
* **coverage**: the participating factories' headcount over official manufacturing employment
  (region, '*', the year or the latest before it). If robots were spread like employment, the
  registry would hold ``top-down x coverage`` robots: ``expected_registered``. The gap
  ``top-down - registered`` splits into the part coverage explains (robots in factories not
  participating: ``top-down x (1 - coverage)``) and the rest, ``unexplained``.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import psycopg

from robodensity.core.errors import RoboDensityError
from robodensity.metrics.stock import ifr_operational_stock


def _installations(conn: psycopg.Connection, region: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rows = conn.execute(
        "SELECT year, installations, source || ', ' || vintage FROM installation_statistics "
        "WHERE region_code = %s ORDER BY year",
        (region,),
    ).fetchall()
    if not rows:
        raise RoboDensityError(
            f"no installation statistics for region {region}; import them: robodensity stats import installations.csv"
        )
    years = np.arange(rows[0][0], rows[-1][0] + 1)
    given = {r[0]: r[1] for r in rows}
    installs = np.array([given.get(int(y), np.nan) for y in years], dtype=np.float64)  # a missing year: NaN stock
    return years, installs, list(dict.fromkeys(r[2] for r in rows))


def _bottom_up(conn: psycopg.Connection, region: str, year: int) -> tuple[int, int, int, dict[str, Any] | None]:
    """Registered robots on 31 December, verified robots in the year, participating headcount,
    and official manufacturing employment (with its source) for the region."""
    end = date(year, 12, 31)
    registered, verified, headcount = conn.execute(
        "SELECT (SELECT count(*) FROM robots_in_operation(%(end)s) o JOIN factories f USING (factory_id) "
        "        WHERE region_within(f.region_code, %(r)s)), "
        "       (SELECT count(DISTINCT b.robot_id) FROM robot_blocks_daily b JOIN factories f USING (factory_id) "
        "        WHERE region_within(f.region_code, %(r)s) AND b.day BETWEEN %(start)s AND %(end)s "
        "          AND b.executing_s > 0), "
        "       (SELECT coalesce(sum(h.employee_count), 0) FROM factories f CROSS JOIN LATERAL ("
        "          SELECT employee_count FROM headcounts h WHERE h.factory_id = f.factory_id AND valid_from <= %(end)s "
        "          ORDER BY valid_from DESC LIMIT 1) h WHERE region_within(f.region_code, %(r)s))",
        {"r": region, "start": date(year, 1, 1), "end": end},
    ).fetchone() or (0, 0, 0)
    official = conn.execute(
        "SELECT employees, source, vintage, year FROM employment_statistics WHERE region_code = %s "
        "AND industry_code = '*' AND firms = 'all' AND year <= %s ORDER BY year DESC LIMIT 1",
        (region, year),
    ).fetchone()
    stats = None if official is None else dict(zip(("employees", "source", "vintage", "year"), official, strict=True))
    return int(registered), int(verified), int(headcount), stats


def reconcile(conn: psycopg.Connection, region: str) -> dict[str, Any]:
    """The reconciliation of ``region`` by year (see the module's docstring) as a JSON-ready dict."""
    years, installs, sources = _installations(conn, region)
    stock = ifr_operational_stock(years, installs)
    out = []
    for y, top in zip(years.tolist(), stock.tolist(), strict=True):
        registered, verified, headcount, official = _bottom_up(conn, region, y)
        top_down = None if np.isnan(top) else top
        coverage = headcount / official["employees"] if official and official["employees"] > 0 else None
        expected = top_down * coverage if top_down is not None and coverage is not None else None
        out.append(
            {
                "year": y,
                "registered": registered,
                "verified": verified,
                "top_down_stock": top_down,
                "gap": None if top_down is None else top_down - registered,
                "registry_share_of_stock": registered / top_down if top_down else None,
                "employment_coverage": coverage,
                "participating_employees": headcount,
                "official_employment": official,
                "explained_by_coverage": None if top_down is None or coverage is None else top_down * (1 - coverage),
                "expected_registered": expected,
                "unexplained": None if expected is None else registered - expected,
            }
        )
    return {
        "region_code": region,
        "method": "IFR operational stock: installations of the last 12 years (metrics/stock.py)",
        "installations_source": sources,
        "years": out,
    }
