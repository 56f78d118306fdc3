"""Progress against policy targets (e.g. robot density 500 by 2025-12-31).

Times are days since the Unix epoch [days] as floats, or ``datetime64`` (converted).
"""

from __future__ import annotations

import numpy as np

_DAY_US = 86_400 * 1_000_000


def to_days(t: object) -> np.ndarray:
    """Times as float days since 1970-01-01 [days]; numbers pass through."""
    a = np.asarray(t)
    if a.dtype.kind == "M":
        return a.astype("datetime64[us]").astype(np.int64) / _DAY_US
    return a.astype(np.float64)


def target_progress(value: object, target: object) -> np.ndarray:
    """Share of the target reached.

    Parameters
    ----------
    value : array_like
        Current value, e.g. robot density [robots per 10^4 employees].
    target : array_like
        Target in the same unit.

    Returns
    -------
    numpy.ndarray of float64
        ``value / target`` [1] (1.0 = reached); NaN where the target is not positive.
    """
    v = np.asarray(value, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(t > 0, v / t, np.nan)


def linear_trend(t_days: object, values: object) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares straight line through the observations, ignoring NaNs.

    Parameters
    ----------
    t_days : array_like, shape (n,) or (..., n)
        Observation times [days since epoch] or datetime64.
    values : array_like, shape (..., n)
        Observed values [unit]; rows are fitted independently.

    Returns
    -------
    slope : numpy.ndarray of float64, shape (...)
        [unit per day].
    intercept : numpy.ndarray of float64, shape (...)
        Value of the line at day 0 (1970-01-01) [unit].
        Both NaN where fewer than two distinct times have values.
    """
    v = np.asarray(values, dtype=np.float64)
    t = np.broadcast_to(to_days(t_days), v.shape)
    ok = np.isfinite(v) & np.isfinite(t)
    n = ok.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_mean = np.where(ok, t, 0).sum(axis=-1) / n
        v_mean = np.where(ok, v, 0).sum(axis=-1) / n
        dt = np.where(ok, t - t_mean[..., None], 0)
        dv = np.where(ok, v - v_mean[..., None], 0)
        sxx = (dt * dt).sum(axis=-1)
        slope = np.where(sxx > 0, (dt * dv).sum(axis=-1) / sxx, np.nan)
    intercept = v_mean - slope * t_mean
    return slope, intercept


def month_reached(t_days: object, values: object, target: object, due: object, horizon_years: int = 25) -> np.ndarray:
    """The first month the linear trend reaches the target.

    Parameters
    ----------
    t_days : array_like
        Observation times [days since epoch] or datetime64.
    values : array_like, shape (..., n)
        Observed values [unit].
    target : array_like, shape (...)
        Target [unit], reached when the trend is at or above it.
    due : numpy.datetime64 or array_like
        Due date of the target; only bounds the search (see ``horizon_years``). Compare
        the result with ``due`` to tell whether the target is on track.
    horizon_years : int
        Projections further than this past ``due`` are NaT [years].

    Returns
    -------
    numpy.ndarray of datetime64[M], shape (...)
        The month, from the first observation on, in which the fitted trend first
        reaches the target: the first observation's month when the trend is already
        there; NaT if the trend never gets there (flat or falling while below, or fewer
        than two observations) or only more than ``horizon_years`` after ``due``.

    Examples
    --------
    >>> t = np.array(["2023-01-01", "2024-01-01"], dtype="datetime64[D]")
    >>> month_reached(t, [100.0, 200.0], 250.0, np.datetime64("2025-12-31"))
    np.datetime64('2024-07')
    """
    v = np.asarray(values, dtype=np.float64)
    td = np.broadcast_to(to_days(t_days), v.shape)
    slope, intercept = linear_trend(td, v)
    tgt = np.asarray(target, dtype=np.float64)
    t_first = np.where(np.isfinite(v), td, np.inf).min(axis=-1)
    at_first = slope * t_first + intercept
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing = np.where(slope > 0, (tgt - intercept) / slope, np.nan)
    already = at_first >= tgt
    day = np.where(already, t_first, np.where(slope > 0, np.maximum(crossing, t_first), np.nan))
    limit = to_days(np.asarray(due, dtype="datetime64[D]")) + 365.25 * horizon_years
    day = np.where(day <= limit, day, np.nan)
    out = np.full(np.shape(day), np.datetime64("NaT"), dtype="datetime64[M]")
    ok = np.isfinite(day)
    # ceil: the trend reaches the target at some moment within that day.
    days = np.ceil(np.where(ok, day, 0)).astype(np.int64)
    out[ok] = days[ok].astype("datetime64[D]").astype("datetime64[M]")
    return out if out.ndim else out[()]


def on_track(t_days: object, values: object, target: object, due: object) -> np.ndarray:
    """Whether the trend reaches the target by the due date's month.

    Returns
    -------
    numpy.ndarray of bool
        ``month_reached(...) <= month of due``; False where the trend never gets there.
    """
    m = np.asarray(month_reached(t_days, values, target, due), dtype="datetime64[M]")
    due_m = np.asarray(due, dtype="datetime64[M]")
    return ~np.isnat(m) & (m <= due_m)
