"""Failures and repairs from robot state events, and the ratios built from block sums.

Events are the arrays of :mod:`metrics.state_time`: ``robot``, ``ts`` [µs since epoch or
datetime64], ``state`` codes, sorted by robot, then ts.

Mapping of canonical states to ISO 22400-2 time elements within the planned busy time
(PBT; ``planned_s`` of the blocks), following OPC 40001-1 Annex C (APT is counted inside the
plan only: ``planned_executing_s``):

=================  ========================================  =====================
ISO 22400-2        meaning                                   canonical states
=================  ========================================  =====================
APT                actual production time                    EXECUTING
AUBT               actual unit busy time (APT + delays)      EXECUTING, IDLE
ADOT               actual unit down time                     FAULT, OUT_OF_SERVICE, OFFLINE
=================  ========================================  =====================

A failure is a maximal run of FAULT; its duration is the time to repair (TTR). The ratios
here take sums of blocks (:mod:`metrics.blocks`), so the dashboards' SQL, which sums the
same blocks and divides the same way, gives the same figures.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from robodensity.metrics import state_time as _st
from robodensity.metrics.states import FAULT


class FaultRuns(NamedTuple):
    """Maximal FAULT runs; times [µs since epoch], not clipped to any window."""

    robot: np.ndarray  # int64 [robot index]
    start: np.ndarray  # int64 [µs], the run's first FAULT event
    end: np.ndarray  # int64 [µs], the event that ended it; meaningless where not ended
    ended: np.ndarray  # bool: a later non-FAULT event of the robot ended the run (repaired)

    @property
    def duration_s(self) -> np.ndarray:
        """Time to repair of each ended run [s] (0 where not ended)."""
        return np.where(self.ended, self.end - self.start, 0) / _st.US


def fault_runs(robot: np.ndarray, ts: np.ndarray, state: np.ndarray, n_robots: int) -> FaultRuns:
    """FAULT runs of each robot in the events given.

    Parameters
    ----------
    robot, ts, state, n_robots
        As for :func:`metrics.state_time.seconds_in_state`.

    Returns
    -------
    FaultRuns
        One row per maximal run of consecutive FAULT events of a robot, by robot, then time.
        Consecutive FAULT events are one failure: the edge re-reports a fault without it
        being a new one. Of several events of a robot at one instant the last wins (the
        others last no time), as in the time in state. A run starts at its first event
        given: pass the whole run (``metrics_job`` loads the first event of a run under way
        at the window's start).
    """
    r, t, s = _st._prepare(robot, ts, state)
    n = len(t)
    _st._check_ranges(r, s, n_robots, n)
    if n:
        _st._intervals(r, t, 0, n, int(t.min()), int(t.max()))  # checks the sort order
    # Drop events superseded at the same instant by a later event of the same robot.
    keep = np.ones(n, dtype=bool)
    keep[:-1] = ~((r[1:] == r[:-1]) & (t[1:] == t[:-1]))
    r, t, s = r[keep], t[keep], s[keep]
    n = len(t)
    f = s == FAULT
    same_robot_next = np.zeros(n, dtype=bool)
    same_robot_next[:-1] = r[1:] == r[:-1]
    continues = np.zeros(n, dtype=bool)
    continues[:-1] = f[:-1] & same_robot_next[:-1] & f[1:]
    begins = f.copy()
    begins[1:] &= ~continues[:-1]
    last = f & ~continues  # the run's last FAULT event
    i0, i1 = np.flatnonzero(begins), np.flatnonzero(last)
    ended = same_robot_next[i1]
    end = np.where(ended, t[np.minimum(i1 + 1, max(n - 1, 0))], 0) if n else np.zeros(0, dtype=np.int64)
    return FaultRuns(r[i0].astype(np.int64), t[i0], end.astype(np.int64), ended)


def _ratio(num: object, den: object) -> np.ndarray:
    n = np.asarray(num, dtype=np.float64)
    d = np.asarray(den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(d > 0, n / d, np.nan)


def mtbf_s(operating_s: object, failures: object, robots: object = 1) -> np.ndarray:
    """Mean operating time between failures, ISO 22400-2 (FE + 1 periods per robot).

    Parameters
    ----------
    operating_s : array_like
        Sum of EXECUTING time [s] (``executing_s`` of the blocks).
    failures : array_like
        Sum of failures started (``failures`` of the blocks) [1].
    robots : array_like
        Robots summed over [1]: each robot's failures cut its time into FE + 1 periods,
        so the pooled figure is ``operating_s / (failures + robots)``.

    Returns
    -------
    numpy.ndarray of float64
        MTBF [s]; a robot without failures gets its whole operating time (a lower bound),
        never ``inf``; NaN where there are no robots.

    Notes
    -----
    The ISO text is not in this repository; the (FE + 1) denominator follows the commonly
    cited ISO 22400-2:2014 formula ``MTBF = 1/(FE+1) * sum(TBF_i, i=1..FE+1)``.
    """
    return _ratio(operating_s, np.asarray(failures, dtype=np.float64) + np.asarray(robots, dtype=np.float64))


def mttr_s(repair_s: object, repairs: object) -> np.ndarray:
    """Mean time to repair: repair seconds over repairs ended [s]; NaN without repairs."""
    return _ratio(repair_s, repairs)


def utilisation(apt_s: object, pbt_s: object) -> np.ndarray:
    """Utilisation on planned time, which is ISO 22400-2 availability: APT / PBT.

    One figure under two names (docs/clocks-and-shifts.md): the share of the planned busy
    time the robot spent executing. Under a 24/7 plan it is EXECUTING / covered time.

    Parameters
    ----------
    apt_s : array_like
        Actual production time [s]: EXECUTING time inside the plan (``planned_executing_s``).
    pbt_s : array_like
        Planned busy time [s] (``planned_s``).

    Returns
    -------
    numpy.ndarray of float64
        Utilisation = availability [1]; NaN where the planned busy time is 0.

    Examples
    --------
    Two shifts (16 h) planned, 12 h executing in them and 3 h of overtime (not counted):

    >>> float(utilisation(12 * 3600, 16 * 3600))
    0.75
    """
    return _ratio(apt_s, pbt_s)


availability = utilisation
"""ISO 22400-2 availability (APT / PBT): the same function as :func:`utilisation`, not a second rule."""
