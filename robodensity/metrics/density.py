"""Robot density: robots in operation per 10,000 manufacturing employees.

Densities of groups are always recomputed from summed counts (total robots over total
employees), never averaged from the members' densities. An undefined density (no
employees) is NaN, never ``inf``.
"""

from __future__ import annotations

import re

import numpy as np

PER = 10_000
"""Density is stated per this many employees."""

_REGION_RE = re.compile(r"^[1-9]\d{5}$")


def robot_density(robots: object, employees: object) -> np.ndarray:
    """Robots per 10,000 employees.

    Parameters
    ----------
    robots : array_like
        Robots in operation [robots].
    employees : array_like
        Manufacturing employees [persons].

    Returns
    -------
    numpy.ndarray of float64
        Robot density [robots per 10^4 employees]; NaN where employees <= 0 (or NaN).

    Examples
    --------
    >>> robot_density([470, 5], [10_000, 0])
    array([470.,  nan])
    """
    r = np.asarray(robots, dtype=np.float64)
    e = np.asarray(employees, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(e > 0, r / e * PER, np.nan)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / den, np.nan)


def rollup(
    group: object,
    n_groups: int,
    robots: object,
    employees: object,
    reporting: object = None,
    domestic: object = None,
) -> dict[str, np.ndarray]:
    """Sum rows (e.g. factories) into groups (regions, industries) and derive ratios.

    Parameters
    ----------
    group : array_like of int
        Group of each row [0 .. n_groups-1]; -1 drops the row.
    n_groups : int
        Number of groups; groups without rows get zero counts and NaN ratios.
    robots : array_like
        Registered robots of each row [robots].
    employees : array_like
        Employees of each row [persons].
    reporting : array_like, optional
        Robots of each row whose telemetry reports [robots].
    domestic : array_like, optional
        Robots of each row made by domestic manufacturers [robots].

    Returns
    -------
    dict of str to numpy.ndarray, each of shape (n_groups,)
        ``robot_count`` [robots], ``employee_count`` [persons],
        ``robot_density`` [robots per 10^4 employees] = total robots / total employees
        (NaN where no employees), and when given ``reporting_count`` [robots] and
        ``coverage`` = reporting / registered robots [1], ``domestic_count`` [robots] and
        ``domestic_share`` = domestic / registered robots [1]; ratios NaN where no robots.
    """
    g = np.asarray(group, dtype=np.int64).ravel()
    if len(g) and g.max(initial=-1) >= n_groups:
        raise ValueError(f"group indices must be below n_groups={n_groups}")
    if len(g) and g.min() < -1:
        raise ValueError("group indices must be >= -1")
    keep = g >= 0
    gk = g[keep]

    def total(x: object, name: str) -> np.ndarray:
        a = np.asarray(x, dtype=np.float64).ravel()
        if a.shape != g.shape:
            raise ValueError(f"{name} has {a.size} rows; group has {g.size}")
        return np.bincount(gk, weights=a[keep], minlength=n_groups)

    out: dict[str, np.ndarray] = {}
    out["robot_count"] = total(robots, "robots")
    out["employee_count"] = total(employees, "employees")
    out["robot_density"] = robot_density(out["robot_count"], out["employee_count"])
    if reporting is not None:
        out["reporting_count"] = total(reporting, "reporting")
        out["coverage"] = _ratio(out["reporting_count"], out["robot_count"])
    if domestic is not None:
        out["domestic_count"] = total(domestic, "domestic")
        out["domestic_share"] = _ratio(out["domestic_count"], out["robot_count"])
    return out


def region_ancestors(code: str) -> list[str]:
    """A GB/T 2260 region and the regions containing it, smallest first.

    Parameters
    ----------
    code : str
        Six-digit administrative division code: two digits province, two city, two
        district/county.

    Returns
    -------
    list of str
        ``"320506"`` -> ``["320506", "320500", "320000"]``; a city code gives itself and
        its province; a province code gives itself.

    Raises
    ------
    ValueError
        When ``code`` is not six digits with a non-zero province part.
    """
    if not isinstance(code, str) or not _REGION_RE.match(code):
        raise ValueError(f"not a GB/T 2260 region code (six digits, e.g. 320506): {code!r}")
    out = [code]
    if code[4:] != "00":
        out.append(code[:4] + "00")
    if code[2:] != "0000":
        out.append(code[:2] + "0000")
    return out
