"""Robot density: robots in operation per 10,000 manufacturing employees.

Densities of groups are always recomputed from summed counts (total robots over total
employees), never averaged from the members' densities. An undefined density (no
employees) is NaN, never ``inf``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

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


def spread(item_factory: object, member_factory: object, member_group: object) -> tuple[np.ndarray, np.ndarray]:
    """Each item (a robot standing in a factory) once for every group its factory belongs to.

    Parameters
    ----------
    item_factory : array_like of int
        Factory of each item [index].
    member_factory, member_group : array_like of int
        Memberships: factory ``member_factory[k]`` belongs to group ``member_group[k]``.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray) of int64
        Item index and group of every (item, group) membership, items in order.

    Examples
    --------
    >>> spread([0, 1, 0], [0, 0, 1], [5, 7, 7])
    (array([0, 0, 1, 2, 2]), array([5, 7, 7, 5, 7]))
    """
    f = np.asarray(item_factory, dtype=np.int64).ravel()
    order = np.argsort(np.asarray(member_factory, dtype=np.int64), kind="stable")
    mf = np.asarray(member_factory, dtype=np.int64)[order]
    mg = np.asarray(member_group, dtype=np.int64)[order]
    lo = np.searchsorted(mf, f, side="left")
    n = np.searchsorted(mf, f, side="right") - lo
    item = np.repeat(np.arange(len(f), dtype=np.int64), n)
    offset = np.arange(int(n.sum()), dtype=np.int64) - np.repeat(np.cumsum(n) - n, n)
    return item, mg[np.repeat(lo, n) + offset]


def defined_rollup(
    item_group: object,
    item_robot: object,
    weight: object,
    flags: dict[str, object],
    n_groups: int,
    denominator: object,
) -> dict[str, np.ndarray]:
    """Numerators of a density definition summed into groups, over a denominator per group.

    Parameters
    ----------
    item_group : array_like of int
        Group of each counted item (a robot in a factory of the group; :func:`spread`).
    item_robot : array_like of int
        The robot of each item: a robot counted in a group through two factories (it moved)
        is one robot of ``robot_count``.
    weight : array_like of float
        What each item counts [robots]: 1, or the days it stood there / the period's days.
    flags : dict of str to array_like of bool
        Per item, e.g. ``reporting``, ``verified``, ``domestic``: each gives ``<name>_weight``,
        the summed weight of the flagged items [robots].
    n_groups : int
        Number of groups.
    denominator : array_like of float
        Employees of each group in the definition's scope [persons].

    Returns
    -------
    dict of str to numpy.ndarray, each of shape (n_groups,)
        ``robot_weight`` [robots] (sum of weights), ``robot_count`` (distinct robots),
        ``<flag>_weight`` and ``<flag>_count``, ``robot_density`` = robot_weight / denominator
        [robots per 10^4 employees] (NaN where no employees).
    """
    g = np.asarray(item_group, dtype=np.int64).ravel()
    robot = np.asarray(item_robot, dtype=np.int64).ravel()
    w = np.asarray(weight, dtype=np.float64).ravel()

    span = int(robot.max()) - int(robot.min()) + 1 if len(robot) else 1
    pair = g * span + (robot - (robot.min() if len(robot) else 0))  # one int64 per (group, robot)

    def counts(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        summed = np.bincount(g[mask], weights=w[mask], minlength=n_groups)
        distinct = np.unique(pair[mask]) // span
        return summed, np.bincount(distinct, minlength=n_groups).astype(np.float64)

    out: dict[str, np.ndarray] = {}
    out["robot_weight"], out["robot_count"] = counts(np.ones(len(g), dtype=bool))
    for name, flag in flags.items():
        out[f"{name}_weight"], out[f"{name}_count"] = counts(np.asarray(flag, dtype=bool).ravel())
    out["robot_density"] = robot_density(out["robot_weight"], denominator)
    return out


def industry_in(code: str, listed: Iterable[str]) -> bool:
    """Whether GB/T 4754 ``code`` is one of ``listed`` or under one of them (``3611`` under ``36``).
    A section letter is ignored: ``C36`` and ``36`` name the same division."""
    bare = code.lstrip("ABCDEFGHIJKLMNOPQRST")
    return any(bare.startswith(c.lstrip("ABCDEFGHIJKLMNOPQRST")) for c in listed)
