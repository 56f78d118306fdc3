"""Reliability and ISO 22400-2 time-based KPIs from robot state events.

Events are the arrays of :mod:`metrics.state_time`: ``robot``, ``ts`` [µs since epoch or
datetime64], ``state`` codes, sorted by robot, then ts.

Mapping of canonical states to ISO 22400-2 time elements within the planned busy time
(PBT, from the shift calendar), following OPC 40001-1 Annex C:

=================  ========================================  =====================
ISO 22400-2        meaning                                   canonical states
=================  ========================================  =====================
APT                actual production time                    EXECUTING
AUBT               actual unit busy time (APT + delays)      EXECUTING, IDLE
ADOT               actual unit down time                     FAULT, OUT_OF_SERVICE, OFFLINE
=================  ========================================  =====================

Availability = APT / PBT; utilisation efficiency = APT / AUBT. A failure is a maximal run of
FAULT; its duration is the time to repair (TTR).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from metrics import state_time as _st
from metrics.states import EXECUTING, FAULT, IDLE, N_STATES, OFFLINE, OUT_OF_SERVICE

DAY_S = 86_400


class FaultIntervals(NamedTuple):
    """Maximal FAULT runs, clipped to the window; times [µs since epoch]."""

    robot: np.ndarray  # int64 [robot index]
    start: np.ndarray  # int64 [µs], the run's start clipped to the window
    end: np.ndarray  # int64 [µs], the run's end clipped to the window
    began_before: np.ndarray  # bool: the fault started before the window (left-censored)
    open_at_end: np.ndarray  # bool: the fault lasts past the window's end (right-censored)

    @property
    def duration_s(self) -> np.ndarray:
        """Observed duration of each run [s]."""
        return (self.end - self.start) / _st.US


def fault_intervals(
    robot: np.ndarray,
    ts: np.ndarray,
    state: np.ndarray,
    n_robots: int,
    start: np.datetime64 | int,
    end: np.datetime64 | int,
) -> FaultIntervals:
    """FAULT runs of each robot within [start, end).

    Parameters
    ----------
    robot, ts, state, n_robots, start, end
        As for :func:`metrics.state_time.seconds_in_state`.

    Returns
    -------
    FaultIntervals
        One row per maximal run of consecutive FAULT events of a robot that overlaps the
        window, in input order (by robot, then time). Consecutive FAULT events are one
        failure: the edge re-reports a fault without it being a new one.
    """
    r, t, s = _st._prepare(robot, ts, state)
    start_us, end_us = _st._scalar_us(start, "start"), _st._scalar_us(end, "end")
    if end_us < start_us:
        raise ValueError(f"end ({end_us}) is before start ({start_us})")
    n = len(t)
    _st._check_ranges(r, s, n_robots, n)
    empty = np.zeros(0, dtype=np.int64)
    if n == 0:
        return FaultIntervals(empty, empty, empty, empty.astype(bool), empty.astype(bool))
    a, b, _ = _st._intervals(r, t, 0, n, start_us, end_us)
    f = s == FAULT
    same_next = np.zeros(n, dtype=bool)
    same_next[:-1] = (r[1:] == r[:-1]) & f[1:]
    continues = f & same_next  # the run goes on with the next event
    begins = f.copy()
    begins[1:] &= ~continues[:-1]
    i0 = np.flatnonzero(begins)
    i1 = np.flatnonzero(f & ~continues)
    run_start, run_end = a[i0], b[i1]
    keep = run_end > run_start
    i0, i1 = i0[keep], i1[keep]
    last_of_robot = np.ones(n, dtype=bool)
    last_of_robot[:-1] = r[1:] != r[:-1]
    return FaultIntervals(
        robot=r[i0].astype(np.int64),
        start=run_start[keep] + start_us,
        end=run_end[keep] + start_us,
        began_before=t[i0] < start_us,
        open_at_end=last_of_robot[i1] | (t[np.minimum(i1 + 1, n - 1)] > end_us),
    )


def mtbf_mttr(faults: FaultIntervals, n_robots: int, operating_s: np.ndarray) -> dict[str, np.ndarray]:
    """Mean operating time between failures and mean time to repair, per robot.

    Parameters
    ----------
    faults : FaultIntervals
        From :func:`fault_intervals` over the observation window.
    n_robots : int
        Number of robots.
    operating_s : array_like, shape (n_robots,)
        Operating time of each robot in the window [s], e.g. the EXECUTING column of
        :func:`metrics.state_time.seconds_in_state` summed over buckets.

    Returns
    -------
    dict of str to numpy.ndarray, each of shape (n_robots,)
        ``failure_count`` [1]: FE, failures that began in the window;
        ``mtbf_s`` [s]: ``operating_s / (FE + 1)`` -- ISO 22400-2 averages the FE + 1
        operating periods that FE failures cut the window into, so a robot without
        failures gets its whole operating time (a lower bound), never ``inf``;
        ``mttr_s`` [s]: mean TTR of the failures whose start and end both fall in the
        window (a censored repair would bias it low); NaN where there are none;
        ``fault_s`` [s]: observed FAULT time in the window, censored runs included.

    Notes
    -----
    The ISO text is not in this repository; the (FE + 1) denominator follows the
    commonly cited ISO 22400-2:2014 formula ``MTBF = 1/(FE+1) * sum(TBF_i, i=1..FE+1)``.
    """
    op = np.asarray(operating_s, dtype=np.float64)
    if op.shape != (n_robots,):
        raise ValueError(f"operating_s must have shape ({n_robots},); got {op.shape}")
    began = ~faults.began_before
    fe = np.bincount(faults.robot[began], minlength=n_robots).astype(np.float64)
    closed = began & ~faults.open_at_end
    dur = faults.duration_s
    n_closed = np.bincount(faults.robot[closed], minlength=n_robots)
    ttr = np.bincount(faults.robot[closed], weights=dur[closed], minlength=n_robots)
    with np.errstate(divide="ignore", invalid="ignore"):
        mttr = np.where(n_closed > 0, ttr / n_closed, np.nan)
    return {
        "failure_count": fe,
        "mtbf_s": op / (fe + 1),
        "mttr_s": mttr,
        "fault_s": np.bincount(faults.robot, weights=dur, minlength=n_robots),
    }


def seconds_in_shifts(
    robot: np.ndarray,
    ts: np.ndarray,
    state: np.ndarray,
    n_robots: int,
    shift_start: np.ndarray,
    shift_end: np.ndarray,
) -> np.ndarray:
    """Time in state within a shift calendar (the planned busy time).

    Parameters
    ----------
    robot, ts, state, n_robots
        As for :func:`metrics.state_time.seconds_in_state`.
    shift_start, shift_end : array_like of int64 or datetime64
        Planned shifts [µs since epoch], sorted and not overlapping; touching shifts
        are merged.

    Returns
    -------
    numpy.ndarray of float64, shape (n_robots, len(STATES))
        Time in state during the shifts [s]; each row sums to the planned busy time.
    """
    s0, s1 = _st.to_us(shift_start).ravel(), _st.to_us(shift_end).ravel()
    if s0.shape != s1.shape:
        raise ValueError("shift_start and shift_end differ in length")
    if len(s0) == 0:
        return np.zeros((n_robots, N_STATES))
    if np.any(s1 <= s0) or np.any(s0[1:] < s1[:-1]):
        raise ValueError("shifts must be non-empty, sorted and not overlapping")
    # Merge shifts that touch, then the edges alternate: on-shift, off-shift, on-shift ...
    touch = np.flatnonzero(s0[1:] == s1[:-1])
    s0 = np.delete(s0, touch + 1)
    s1 = np.delete(s1, touch)
    edges = np.empty(2 * len(s0), dtype=np.int64)
    edges[0::2], edges[1::2] = s0, s1
    sec = _st.seconds_in_buckets(robot, ts, state, n_robots, edges)
    return sec[:, 0::2, :].sum(axis=1)


def iso22400_times(seconds: np.ndarray) -> dict[str, np.ndarray]:
    """ISO 22400-2 time elements from time in state within the planned busy time.

    Parameters
    ----------
    seconds : array_like, shape (..., len(STATES))
        Time in state during planned busy time [s], e.g. from :func:`seconds_in_shifts`.

    Returns
    -------
    dict of str to numpy.ndarray, shape (...)
        ``pbt_s`` planned busy time, ``apt_s`` actual production time (EXECUTING),
        ``aubt_s`` actual unit busy time (EXECUTING + IDLE), ``adot_s`` actual unit down
        time (FAULT + OUT_OF_SERVICE + OFFLINE), all [s].
    """
    sec = np.asarray(seconds, dtype=np.float64)
    return {
        "pbt_s": sec.sum(axis=-1),
        "apt_s": sec[..., EXECUTING],
        "aubt_s": sec[..., EXECUTING] + sec[..., IDLE],
        "adot_s": sec[..., FAULT] + sec[..., OUT_OF_SERVICE] + sec[..., OFFLINE],
    }


def _ratio(num: object, den: object) -> np.ndarray:
    n = np.asarray(num, dtype=np.float64)
    d = np.asarray(den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(d > 0, n / d, np.nan)


def availability(apt_s: object, pbt_s: object) -> np.ndarray:
    """ISO 22400-2 availability: actual production time / planned busy time.

    Parameters
    ----------
    apt_s : array_like
        Actual production time [s].
    pbt_s : array_like
        Planned busy time [s].

    Returns
    -------
    numpy.ndarray of float64
        Availability [1]; NaN where the planned busy time is 0.
    """
    return _ratio(apt_s, pbt_s)


def utilisation_efficiency(apt_s: object, aubt_s: object) -> np.ndarray:
    """ISO 22400-2 utilisation efficiency: actual production time / actual unit busy time.

    Parameters
    ----------
    apt_s : array_like
        Actual production time [s].
    aubt_s : array_like
        Actual unit busy time [s].

    Returns
    -------
    numpy.ndarray of float64
        Utilisation efficiency [1]; NaN where the busy time is 0.
    """
    return _ratio(apt_s, aubt_s)


def last_executing(
    robot: np.ndarray, ts: np.ndarray, state: np.ndarray, n_robots: int, at: np.datetime64 | int
) -> np.ndarray:
    """The last moment at or before ``at`` each robot was EXECUTING.

    Parameters
    ----------
    robot, ts, state, n_robots
        As for :func:`metrics.state_time.seconds_in_state`.
    at : numpy.datetime64 or int
        Reference time [µs since epoch when int].

    Returns
    -------
    numpy.ndarray of datetime64[us], shape (n_robots,)
        ``at`` for a robot EXECUTING at ``at``; NaT for a robot never EXECUTING by then.
    """
    r, t, s = _st._prepare(robot, ts, state)
    at_us = _st._scalar_us(at, "at")
    n = len(t)
    _st._check_ranges(r, s, n_robots, n)
    out = np.full(n_robots, np.iinfo(np.int64).min, dtype=np.int64)  # NaT
    if n:
        # Window [min ts, at]: b is when each EXECUTING stretch ended (or `at`).
        lo = min(int(t.min()), at_us)
        a, b, _ = _st._intervals(r, t, 0, n, lo, at_us)
        q = np.flatnonzero((s == EXECUTING) & (b > a))
        # Sorted by robot and time: each robot's last qualifying event is its latest.
        last = np.ones(len(q), dtype=bool)
        last[:-1] = r[q[1:]] != r[q[:-1]]
        q = q[last]
        out[r[q]] = b[q] + lo
    return out.view("datetime64[us]")


def active_robots(last_executing_ts: np.ndarray, at: np.datetime64 | int, window_s: int = 30 * DAY_S) -> np.ndarray:
    """Robots that did real work in the trailing window (the *verified* robot count).

    Parameters
    ----------
    last_executing_ts : array_like of datetime64 or int64
        Last moment each robot was EXECUTING [µs since epoch when int]; NaT (or the
        int64 minimum) for never, e.g. from :func:`last_executing`.
    at : numpy.datetime64 or int
        End of the window [µs since epoch when int].
    window_s : int
        Window length [s]; 30 days by default.

    Returns
    -------
    numpy.ndarray of bool
        True where the robot was EXECUTING at some moment in (at - window, at].
    """
    last = _st.to_us(last_executing_ts, nat_ok=True)
    at_us = _st._scalar_us(at, "at")
    never = last == np.iinfo(np.int64).min
    return ~never & (last > at_us - window_s * _st.US) & (last <= at_us)
