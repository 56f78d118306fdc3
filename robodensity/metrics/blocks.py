"""Additive building blocks per robot and bucket: the one place figures come from.

The metrics job computes these once per robot and bucket (15 minutes, local day) and stores
them; every figure users see (utilisation, availability, MTBF, MTTR, density's utilisation)
is a ratio of sums of these columns, so dashboards, reports and the bulletin agree exactly.

Columns (:data:`COLUMNS`), per robot and bucket:

``executing_s``, ``idle_s``, ``fault_s``, ``out_of_service_s``, ``offline_s`` [s]
    Time in each state, covered time only (:mod:`metrics.state_time`: from the robot's
    first state event on). Their sum is the covered time ``covered_s``.
``planned_s`` [s]
    Covered time the robot was planned to run (ISO 22400-2 planned busy time, PBT): 24/7
    (``planned_s == covered_s``) unless its factory has a shift calendar, which shrinks it
    (``app/shift_plan.py``: covered time x the planned share of the bucket).
``planned_executing_s`` [s]
    EXECUTING time inside the planned time (actual production time, APT): by the same rule,
    ``executing_s`` x the planned share of the bucket, so 24/7 gives ``executing_s`` and
    overtime (EXECUTING outside the plan) counts in neither this nor ``planned_s``.
``failures`` [1]
    FAULT runs (:func:`metrics.reliability.fault_runs`) *starting* in the bucket.
``repairs`` [1], ``repair_s`` [s]
    FAULT runs *ending* in the bucket (a later non-FAULT event), and their whole durations,
    start to end, wherever they started. Every repaired failure is counted once, in one
    bucket, with its full time to repair, so sums over any set of buckets are exact; a
    bucket's block is final once the bucket is past, and a fault still open at the
    computation's end is in no repair (right-censored) until a later run sees it end.

Figures from sums over any robots and buckets (:mod:`metrics.reliability`):
utilisation = ISO 22400-2 availability = planned_executing_s / planned_s (APT / PBT;
``executing_s / covered_s`` under 24/7); MTBF = executing_s / (failures + robots); MTTR = repair_s / repairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robodensity.metrics import state_time as _st
from robodensity.metrics.reliability import fault_runs
from robodensity.metrics.states import EXECUTING, STATES

QUARTER_HOUR_S = 900
"""Length of the short blocks [s]."""
STATE_COLUMNS: tuple[str, ...] = tuple(f"{s.value.lower()}_s" for s in STATES)
"""``executing_s`` ... ``offline_s``, in the order of :data:`metrics.states.STATES`."""
COLUMNS: tuple[str, ...] = (*STATE_COLUMNS, "planned_s", "planned_executing_s", "failures", "repairs", "repair_s")
"""Every block column, in the order of :meth:`Blocks.fields`; the tables have the same names
(``planned_executing_s`` last there: migration 080 added it), and the job names them in its COPYs."""


@dataclass(frozen=True)
class Blocks:
    """Blocks of ``n_robots`` robots over ``n_buckets`` buckets."""

    edges: np.ndarray  # int64, n_buckets + 1 bucket edges [µs since epoch]
    seconds: np.ndarray  # float64 (n_robots, n_buckets, len(STATES)) [s]
    planned_s: np.ndarray  # float64 (n_robots, n_buckets) [s]
    planned_executing_s: np.ndarray  # float64 (n_robots, n_buckets) [s]
    failures: np.ndarray  # int64 (n_robots, n_buckets) [1]
    repairs: np.ndarray  # int64 (n_robots, n_buckets) [1]
    repair_s: np.ndarray  # float64 (n_robots, n_buckets) [s]

    @property
    def covered_s(self) -> np.ndarray:
        """Covered time [s], shape (n_robots, n_buckets): the sum of the states."""
        return self.seconds.sum(axis=-1)

    def fields(self) -> list[np.ndarray]:
        """Each column, shape (n_robots, n_buckets), in the order of :data:`COLUMNS` (views, native dtypes)."""
        return [
            *np.moveaxis(self.seconds, -1, 0),
            self.planned_s,
            self.planned_executing_s,
            self.failures,
            self.repairs,
            self.repair_s,
        ]

    def columns(self) -> np.ndarray:
        """All columns stacked on a last axis, shape (n_robots, n_buckets, len(COLUMNS))."""
        return np.stack([f.astype(np.float64) for f in self.fields()], axis=-1)

    def merge(self, starts: np.ndarray) -> Blocks:
        """Blocks of coarser buckets: bucket ``starts[i]`` up to ``starts[i+1]`` become one.

        Parameters
        ----------
        starts : array_like of int
            Indices of the buckets that start a coarse bucket, increasing, ``starts[0] == 0``
            (e.g. the first 15-minute bucket of each local day).
        """
        idx = np.asarray(starts, dtype=np.int64)
        if len(idx) == 0 or idx[0] != 0 or np.any(np.diff(idx) <= 0) or idx[-1] >= len(self.edges) - 1:
            raise ValueError("starts must be increasing bucket indices beginning with 0")

        def s(a: np.ndarray) -> np.ndarray:
            return np.add.reduceat(a, idx, axis=1)

        return Blocks(
            np.append(self.edges[idx], self.edges[-1]),
            s(self.seconds),
            s(self.planned_s),
            s(self.planned_executing_s),
            s(self.failures),
            s(self.repairs),
            s(self.repair_s),
        )


def quarter_hour_edges(origin: int, start: int, end: int) -> np.ndarray:
    """15-minute bucket edges over [start, end) on the grid through ``origin`` [µs].

    ``start`` and ``end`` are edges too, so a period that starts or ends off the grid has its
    own (shorter) first or last bucket: sums over the period's buckets are exactly the period.
    """
    if end <= start:
        raise ValueError(f"end ({end}) must be after start ({start})")
    step = QUARTER_HOUR_S * _st.US
    first = origin + -(-(start - origin) // step) * step
    grid = np.arange(first, end, step, dtype=np.int64)
    return np.unique(np.concatenate(([start], grid, [end])).astype(np.int64))


def robot_blocks(robot: np.ndarray, ts: np.ndarray, state: np.ndarray, n_robots: int, edges: np.ndarray) -> Blocks:
    """Blocks of each robot in each bucket.

    Parameters
    ----------
    robot, ts, state, n_robots
        As for :func:`metrics.state_time.seconds_in_state`: events sorted by robot, then time,
        with each robot's state at the first edge given by an event before it (and, for a
        FAULT then, the first event of that run, so its repair has its whole duration).
    edges : array_like of int64 or datetime64, shape (n_buckets + 1,)
        Strictly increasing bucket edges [µs since epoch], e.g. :func:`quarter_hour_edges`.

    Returns
    -------
    Blocks
        See the module's docstring for each column's rule.

    Examples
    --------
    A robot EXECUTING from 0, FAULT from 10 to 25 minutes, two 15-minute buckets:

    >>> m = 60_000_000
    >>> b = robot_blocks([0, 0, 0], [0, 10 * m, 25 * m], [0, 2, 0], 1, [0, 15 * m, 30 * m])
    >>> b.seconds[0, :, 2].tolist(), b.failures[0].tolist(), b.repairs[0].tolist(), b.repair_s[0].tolist()
    ([300.0, 600.0], [1, 0], [0, 1], [0.0, 900.0])
    """
    seconds = _st.seconds_in_buckets(robot, ts, state, n_robots, edges)
    bk = _st._explicit(edges)
    k = bk.n
    runs = fault_runs(robot, ts, state, n_robots)

    def per_bucket(t: np.ndarray, use: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        inside = use & (t >= bk.start) & (t < bk.end)
        cell = runs.robot[inside] * k + np.searchsorted(bk.edges, t[inside], side="right") - 1
        w = None if weights is None else weights[inside]
        return np.bincount(cell, weights=w, minlength=n_robots * k).reshape(n_robots, k)

    every = np.ones(len(runs.robot), dtype=bool)
    return Blocks(
        edges=bk.edges,
        seconds=seconds,
        planned_s=seconds.sum(axis=-1),  # 24/7: every covered second is planned
        planned_executing_s=seconds[..., EXECUTING].copy(),  # ... and so every EXECUTING second
        failures=per_bucket(runs.start, every).astype(np.int64),
        repairs=per_bucket(runs.end, runs.ended).astype(np.int64),
        repair_s=per_bucket(runs.end, runs.ended, runs.duration_s).astype(np.float64),
    )
