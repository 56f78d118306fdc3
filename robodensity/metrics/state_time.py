"""Time in state: seconds each robot (or factory) spent in each canonical state per bucket.

Input events are three parallel arrays sorted by robot, then time, as the database returns
them (``ORDER BY robot, ts``):

* ``robot`` -- robot index ``0 .. n_robots-1`` [1]
* ``ts`` -- event time, int64 [µs since the Unix epoch] or ``datetime64``
* ``state`` -- state code, int8 (:mod:`metrics.states`)

A state holds from its event until the robot's next event; the last event holds to the end
of the window. **Coverage rule** (the one used by every figure): only *covered* time counts,
from a robot's first state event on; before it nothing is known, so it is in no state at all
and the states of a bucket sum to its covered seconds, not to its length. Why: the edge
reports a lost connection as an explicit OFFLINE, so after the first event there are no
silent gaps; telemetry that starts mid-period (an agent installed later) must not read as
downtime; how many robots report is its own figure (``coverage``). The computation never sorts: it
pairs each event with its successor, clips the interval to the window, and adds it to its
bucket with one ``np.bincount``; the few intervals that span bucket edges add a head, a
tail, and whole buckets through a difference array along the bucket axis.

Buckets are given either as a fixed length aligned to ``start`` (``bucket_s``) or as
explicit edges (``edges``), e.g. 15-minute edges plus a period's odd start, or local
midnights across a daylight-saving change.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robodensity.metrics.states import EXECUTING, N_STATES

US = 1_000_000
"""Microseconds per second."""

TimeLike = np.datetime64 | int


def to_us(t: object, nat_ok: bool = False) -> np.ndarray:
    """Times as int64 [µs since epoch]; accepts int arrays (already µs) and datetime64.

    NaT raises ValueError unless ``nat_ok``; then it becomes the int64 minimum.
    """
    a = np.asarray(t)
    if a.dtype.kind == "M":
        if not nat_ok and np.isnat(a).any():
            raise ValueError("times contain NaT")
        return a.astype("datetime64[us]").view(np.int64)
    if a.dtype.kind in "iu":
        return a.astype(np.int64, copy=False)
    raise TypeError(f"times must be int64 [µs since epoch] or datetime64; got dtype {a.dtype}")


def _scalar_us(t: object, name: str) -> int:
    if isinstance(t, np.datetime64):
        return int(t.astype("datetime64[us]").astype(np.int64))
    if isinstance(t, int | np.integer) and not isinstance(t, bool):
        return int(t)
    raise TypeError(f"{name} must be np.datetime64 or int [µs since epoch]; got {t!r}")


@dataclass(frozen=True)
class _Buckets:
    """Bucket edges [µs]; ``step`` set when all but the last bucket have that length."""

    edges: np.ndarray  # int64, K+1 edges, edges[0] = start, edges[-1] = end
    step: int | None

    @property
    def n(self) -> int:
        return len(self.edges) - 1

    @property
    def start(self) -> int:
        return int(self.edges[0])

    @property
    def end(self) -> int:
        return int(self.edges[-1])

    @property
    def rel(self) -> np.ndarray:
        """Edges relative to ``start`` [µs]."""
        return self.edges - self.edges[0]

    def index(self, t: np.ndarray) -> np.ndarray:
        """Bucket of each time relative to start, in [0, span]; ``span`` itself may map to slot K."""
        if self.step is not None:
            return t // self.step
        return np.searchsorted(self.rel, t, side="right") - 1


def _uniform(start: int, end: int, bucket_s: int | None) -> _Buckets:
    if end < start:
        raise ValueError(f"end ({end}) is before start ({start})")
    if bucket_s is None:
        return _Buckets(np.array([start, end], dtype=np.int64), None)
    if bucket_s <= 0:
        raise ValueError(f"bucket_s must be positive; got {bucket_s}")
    step = int(bucket_s) * US
    k = max(1, -(-(end - start) // step))
    edges = start + step * np.arange(k + 1, dtype=np.int64)
    edges[-1] = end
    return _Buckets(edges, step)


def _explicit(edges: object) -> _Buckets:
    e = to_us(edges).ravel()
    if len(e) < 2:
        raise ValueError("edges needs at least two values (start and end)")
    if np.any(e[1:] <= e[:-1]):
        raise ValueError("edges must be strictly increasing")
    return _Buckets(e, None)


def _accumulate(
    target: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    s: np.ndarray,
    n_targets: int,
    bk: _Buckets,
    out: np.ndarray,
    may_drop: bool = False,
) -> None:
    """Add intervals [a, b) in state s to ``out`` (n_targets, K, N_STATES) [µs].

    ``a`` and ``b`` are relative to the window start [µs] with ``0 <= a <= b <= span``.
    With ``may_drop``, ``target`` -1 drops an interval.
    """
    k = bk.n
    k_all = k + 1  # one spare slot for times equal to `end` on a bucket edge
    size = n_targets * k_all * N_STATES
    ka = bk.index(a)
    # Upper edge of each interval's first bucket; past the end for a == end, which is harmless.
    if bk.step is not None:
        upper = ka + 1
        upper *= bk.step
    else:
        rel = np.append(bk.rel, bk.rel[-1])
        upper = rel[ka + 1]
    spans = b > upper
    np.minimum(b, upper, out=upper)
    w = np.subtract(upper, a, dtype=np.float64)  # exact: relative [µs] < 2**53
    del upper
    idx = target.astype(np.int64, copy=True)
    idx *= k_all
    idx += ka
    del ka
    idx *= N_STATES
    idx += s
    if may_drop:
        keep = target >= 0
        spans &= keep
        idx, w = idx[keep], w[keep]
    acc: np.ndarray = np.bincount(idx, weights=w, minlength=size)
    del idx, w
    # Intervals that run past their first bucket: tail in the last bucket, whole buckets between.
    span = np.flatnonzero(spans)
    if len(span):
        t_s, s_s, b_s = target[span].astype(np.int64), s[span], b[span]
        ka_s = bk.index(a[span])
        kb_s = bk.index(b_s)
        rel = bk.rel
        tail = b_s - rel[np.minimum(kb_s, k)]
        base = t_s * k_all
        acc += np.bincount((base + kb_s) * N_STATES + s_s, weights=tail, minlength=size)
        # +1 from the bucket after the head, -1 from the tail's bucket: cumsum counts whole buckets.
        diff = np.bincount((base + ka_s + 1) * N_STATES + s_s, minlength=size).astype(np.int64)
        diff -= np.bincount((base + kb_s) * N_STATES + s_s, minlength=size)
        whole = np.cumsum(diff.reshape(n_targets, k_all, N_STATES), axis=1)
        length = np.zeros(k_all, dtype=np.float64)
        length[:k] = np.diff(rel)
        acc += (whole * length[None, :, None]).ravel()
    out += acc.reshape(n_targets, k_all, N_STATES)[:, :k, :]


CHUNK = 1 << 16
"""Events per chunk: the temporaries of a chunk stay in the CPU cache."""


def _intervals(
    robot: np.ndarray, ts: np.ndarray, lo: int, hi: int, start: int, end: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intervals of events ``lo .. hi-1`` (sorted by robot, then ts; checked here).

    Returns ``a`` and ``b``, each event's interval clipped to the window, relative to
    ``start`` [µs], and the positions (relative to ``lo``) of the events that are their
    robot's first.
    """
    n = len(ts)
    span = end - start
    ext = min(hi + 1, n)  # the successor of the chunk's last event, when there is one
    rr, tt = robot[lo:ext], ts[lo:ext]
    change = np.flatnonzero(rr[1:] != rr[:-1])
    # Time goes backwards only where a robot starts (sparse), else the input is unsorted.
    back = np.flatnonzero(tt[1:] < tt[:-1])
    if np.any(rr[change + 1] < rr[change]) or not np.all(np.isin(back, change)):
        raise ValueError("events must be sorted by robot, then ts")
    m = hi - lo
    a = tt[:m] - start
    b = np.empty_like(a)
    b[: ext - lo - 1] = tt[1:]
    b -= start  # (the last element, if unset, is overwritten next)
    b[change[change < m]] = span
    if ext == hi:
        b[m - 1] = span
    firsts = change[change < m - 1] + 1
    if lo == 0 or robot[lo - 1] != robot[lo]:
        firsts = np.concatenate(([0], firsts))
    np.clip(a, 0, span, out=a)
    np.clip(b, 0, span, out=b)
    # b < a only where ts > end (a was clipped to the span): an empty interval.
    np.maximum(b, a, out=b)
    return a, b, firsts


def _check_ranges(robot: np.ndarray, state: np.ndarray, n_robots: int, n: int) -> None:
    if not (len(robot) == len(state) == n):
        raise ValueError(f"robot, ts and state differ in length: {len(robot)}, {n}, {len(state)}")
    if n == 0:
        return
    # Sorted by robot (checked chunk by chunk), so the ends bound the indices.
    if robot[0] < 0 or robot[-1] >= n_robots:
        raise ValueError(f"robot indices must be in 0..{n_robots - 1}")
    smin, smax = int(state.min()), int(state.max())
    if smin < 0 or smax >= N_STATES:
        raise ValueError(f"state codes must be in 0..{N_STATES - 1}; got {smin}..{smax}")


def _prepare(robot: object, ts: object, state: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r = np.asarray(robot)
    if r.dtype.kind not in "iu":
        raise TypeError(f"robot must be an integer array; got dtype {r.dtype}")
    s = np.asarray(state)
    if s.dtype.kind not in "iu":
        raise TypeError(f"state must be integer codes (metrics.states.state_codes); got dtype {s.dtype}")
    t = to_us(ts)
    if not (r.ndim == s.ndim == t.ndim == 1):
        raise ValueError("robot, ts and state must be one-dimensional")
    return r, t, s


def _seconds(robot: object, ts: object, state: object, n_robots: int, bk: _Buckets) -> np.ndarray:
    r, t, s = _prepare(robot, ts, state)
    n = len(t)
    _check_ranges(r, s, n_robots, n)
    out = np.zeros((n_robots, bk.n, N_STATES), dtype=np.float64)
    # Chunks of consecutive events cover a contiguous range of robots: accumulate each
    # into that slice of `out`, so temporaries stay small and cache-resident. Time before a
    # robot's first event is not covered: it is in no state (the coverage rule above).
    for lo in range(0, n, CHUNK):
        hi = min(lo + CHUNK, n)
        a, b, _firsts = _intervals(r, t, lo, hi, bk.start, bk.end)
        rr = r[lo:hi]
        r0 = int(rr[0])
        n_chunk = int(rr[-1]) - r0 + 1
        _accumulate(rr - r0, a, b, s[lo:hi], n_chunk, bk, out[r0 : r0 + n_chunk])
    out /= US
    return out


def seconds_in_state(
    robot: np.ndarray,
    ts: np.ndarray,
    state: np.ndarray,
    n_robots: int,
    start: np.datetime64 | int,
    end: np.datetime64 | int,
    bucket_s: int | None = None,
) -> np.ndarray:
    """Seconds each robot spent in each state per bucket over [start, end).

    Parameters
    ----------
    robot : array_like of int
        Robot index of each event [0 .. n_robots-1].
    ts : array_like of int64 or datetime64
        Event time [µs since epoch].
    state : array_like of int
        State code of each event (:func:`metrics.states.state_codes`).
        All three sorted by robot, then ts.
    n_robots : int
        Number of robots; robots without events have no covered time (all zeros).
    start, end : numpy.datetime64 or int
        Window [µs since epoch when int].
    bucket_s : int, optional
        Bucket length [s], aligned to ``start`` (a day bucket is 86400 s from ``start``;
        align ``start`` to midnight in the zone wanted). None: one bucket for the window.

    Returns
    -------
    numpy.ndarray of float64, shape (n_robots, n_buckets, len(STATES))
        Time in state [s]. For each robot and bucket the states sum to the bucket's covered
        time: its length from the robot's first event on; the last bucket is clipped at ``end``.

    Notes
    -----
    Each event's state holds until the robot's next event; the last one holds to ``end``.
    Events before ``start`` set the state at ``start`` (pass the last event before the
    window); a moment before a robot's first event is not covered (counted in no state).
    Events at the same time: the later one in the input wins.

    Examples
    --------
    A robot EXECUTING 0-30 min, then IDLE to the end of a one-hour window:

    >>> s = seconds_in_state([0, 0], [0, 1_800_000_000], [0, 1], 1, 0, 3_600_000_000)
    >>> s[0, 0, :2]
    array([1800., 1800.])

    Covered from its first event (at 45 min) only:

    >>> seconds_in_state([0], [2_700_000_000], [1], 1, 0, 3_600_000_000)[0, 0].sum()
    np.float64(900.0)
    """
    bk = _uniform(_scalar_us(start, "start"), _scalar_us(end, "end"), bucket_s)
    return _seconds(robot, ts, state, n_robots, bk)


def seconds_in_buckets(
    robot: np.ndarray, ts: np.ndarray, state: np.ndarray, n_robots: int, edges: np.ndarray
) -> np.ndarray:
    """:func:`seconds_in_state` with explicit bucket edges.

    Parameters
    ----------
    edges : array_like of int64 or datetime64, shape (n_buckets + 1,)
        Strictly increasing bucket edges [µs since epoch]; the window is
        [edges[0], edges[-1]).

    Returns
    -------
    numpy.ndarray of float64, shape (n_robots, n_buckets, len(STATES))
        Time in state [s]; for each robot and bucket the states sum to its covered time
        (``diff(edges)`` once the robot's first event is before the bucket).
    """
    return _seconds(robot, ts, state, n_robots, _explicit(edges))


def utilisation(seconds: np.ndarray) -> np.ndarray:
    """Utilisation under a 24/7 plan: EXECUTING time over covered calendar time.

    With shift calendars the figure is :func:`metrics.reliability.utilisation` of the blocks'
    ``planned_executing_s`` and ``planned_s``; the two agree whenever every covered second is
    planned (the blocks' 24/7 default).

    Parameters
    ----------
    seconds : array_like, shape (..., len(STATES))
        Time in state [s], e.g. from :func:`seconds_in_state`.

    Returns
    -------
    numpy.ndarray of float64, shape (...)
        EXECUTING / sum of all states [1]; NaN where no time is covered.
    """
    sec = np.asarray(seconds, dtype=np.float64)
    total = sec.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, sec[..., EXECUTING] / total, np.nan)


def attribute(values: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Sum robots' per-bucket values (time in state, block columns) into groups (factories).

    Parameters
    ----------
    values : array_like, shape (n_robots, n_buckets, ...)
        Per robot and bucket, e.g. time in state [s] (last axis the states) or one block column.
    group : array_like of int, shape (n_robots,) or (n_robots, n_buckets)
        Group of each robot (per bucket when robots move, :func:`group_at`) [0 .. n_groups-1];
        -1 means not assigned: the value is dropped.
    n_groups : int
        Number of groups.

    Returns
    -------
    numpy.ndarray of float64, shape (n_groups, n_buckets, ...)
        Sums per group and bucket.

    Notes
    -----
    Granularity is the bucket: a robot moved mid-bucket is counted wholly at the group
    given for that bucket (:func:`group_at` gives it per bucket).
    """
    val = np.asarray(values, dtype=np.float64)
    n_robots, n_buckets = val.shape[:2]
    rest = val.shape[2:]
    g = np.asarray(group, dtype=np.int64)
    if g.shape == (n_robots,):
        g = np.broadcast_to(g[:, None], (n_robots, n_buckets))
    if g.shape != (n_robots, n_buckets):
        raise ValueError(f"group must have shape {(n_robots,)} or {(n_robots, n_buckets)}; got {g.shape}")
    if np.any(g >= n_groups):
        raise ValueError(f"group indices must be below n_groups={n_groups}")
    keep = g >= 0
    k = np.broadcast_to(np.arange(n_buckets)[None, :], g.shape)
    cell = (g * n_buckets + k)[keep]
    flat = val[keep].reshape(len(cell), int(np.prod(rest, dtype=np.int64)))
    out = np.empty((n_groups * n_buckets, flat.shape[1]), dtype=np.float64)
    for j in range(flat.shape[1]):
        out[:, j] = np.bincount(cell, weights=flat[:, j], minlength=n_groups * n_buckets)
    return out.reshape((n_groups, n_buckets, *rest))


def group_at(
    assign_robot: np.ndarray,
    assign_from: np.ndarray,
    assign_group: np.ndarray,
    n_robots: int,
    at: np.ndarray,
) -> np.ndarray:
    """The group (factory) of each robot at each moment, from its assignment history.

    Parameters
    ----------
    assign_robot : array_like of int
        Robot of each assignment [0 .. n_robots-1].
    assign_from : array_like of int64
        When the assignment starts (any sortable integer time, e.g. a day number or [µs]).
    assign_group : array_like of int
        Group from then until the robot's next assignment [0 ..]; -1 for "not assigned".
        The three sorted by robot, then ``assign_from``.
    n_robots : int
        Number of robots.
    at : array_like of int64, shape (n_times,)
        Moments, in the unit of ``assign_from``.

    Returns
    -------
    numpy.ndarray of int64, shape (n_robots, n_times)
        Group of each robot at each moment; -1 before its first assignment. With
        :func:`attribute` this attributes a robot that moves to the group it was in per
        bucket: exact when moves happen at bucket edges (assignments start at local midnight,
        and blocks are 15-minute and daily buckets).
    """
    ar = np.asarray(assign_robot, dtype=np.int64)
    af = np.asarray(assign_from, dtype=np.int64)
    ag = np.asarray(assign_group, dtype=np.int64)
    t = np.asarray(at, dtype=np.int64)
    if not (len(ar) == len(af) == len(ag)):
        raise ValueError("assign_robot, assign_from and assign_group differ in length")
    if len(ar) and (ar.min() < 0 or ar.max() >= n_robots):
        raise ValueError(f"assign_robot indices must be in 0..{n_robots - 1}")
    if len(ar) > 1 and np.any((ar[1:] < ar[:-1]) | ((ar[1:] == ar[:-1]) & (af[1:] < af[:-1]))):
        raise ValueError("assignments must be sorted by robot, then assign_from")
    out = np.full((n_robots, len(t)), -1, dtype=np.int64)
    if len(ar) == 0 or len(t) == 0:
        return out
    # One sorted key per (robot, time): a single searchsorted finds every robot's assignment.
    lo = min(int(af.min()), int(t.min()))
    width = max(int(af.max()), int(t.max())) - lo + 1
    akey = ar * width + (af - lo)
    qkey = np.arange(n_robots, dtype=np.int64)[:, None] * width + (t - lo)[None, :]
    pos = np.searchsorted(akey, qkey, side="right") - 1
    ok = (pos >= 0) & (ar[np.maximum(pos, 0)] == np.arange(n_robots)[:, None])
    out[ok] = ag[pos[ok]]
    return out
