"""Planned busy time from a factory's shift calendar (ISO 22400-2 PBT), per bucket.

A calendar (docs/clocks-and-shifts.md; imported by ``storage/shifts.py``) is weekly shifts in
versions (each from its ``valid_from`` day), holidays, and planned maintenance. On a local day
``d`` the version in effect is the latest with ``valid_from <= d``; before the first version
the factory is planned 24/7. No shift starts on a holiday; a shift whose end is at or before
its start ends the next day (and ``start == end`` is a 24-hour shift). Planned maintenance is
taken out of whatever the shifts planned. Times are local (``zone``); buckets are UTC µs.

The metrics job stores ``planned_s = covered_s * planned_fraction`` per robot and 15-minute
bucket (``app/shift_plan.py``): exact whenever shift boundaries fall on the 15-minute grid, as
they do in practice (06:00, 14:00, 22:00, 07:30 ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np

US = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=ZoneInfo("UTC"))


@dataclass(frozen=True)
class Shift:
    weekdays: frozenset[int]  # ISO: 1 Monday .. 7 Sunday
    start_min: int  # [min] after local midnight
    end_min: int  # [min] after local midnight; <= start_min: the next day


@dataclass(frozen=True)
class Calendar:
    versions: tuple[tuple[date, tuple[Shift, ...]], ...] = ()
    """(valid_from, shifts), sorted by valid_from."""
    holidays: frozenset[date] = frozenset()
    maintenance: tuple[tuple[datetime, float], ...] = field(default=())
    """(local start, hours) of planned maintenance."""


def _us(local: datetime, zone: ZoneInfo) -> int:
    d = local.replace(tzinfo=zone) - _EPOCH
    return (d.days * 86_400 + d.seconds) * US + d.microseconds


def _merge(intervals: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted, disjoint [start, end) of the union of ``intervals``."""
    out: list[list[int]] = []
    for a, b in sorted(i for i in intervals if i[1] > i[0]):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    arr = np.array(out, dtype=np.int64).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def _subtract(a: np.ndarray, b: np.ndarray, cut_a: np.ndarray, cut_b: np.ndarray) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in zip(a.tolist(), b.tolist(), strict=True):
        for c0, c1 in zip(cut_a.tolist(), cut_b.tolist(), strict=True):
            if c1 <= lo or c0 >= hi:
                continue
            if c0 > lo:
                out.append((lo, c0))
            lo = max(lo, c1)
            if lo >= hi:
                break
        if lo < hi:
            out.append((lo, hi))
    return out


def planned_intervals(calendar: Calendar, start_us: int, end_us: int, zone: ZoneInfo) -> tuple[np.ndarray, np.ndarray]:
    """Planned busy time as sorted, disjoint [start, end) intervals [µs since epoch] around
    [start_us, end_us) (they may reach beyond it)."""
    first = (_EPOCH + timedelta(microseconds=start_us)).astimezone(zone).date() - timedelta(days=1)
    last = (_EPOCH + timedelta(microseconds=end_us)).astimezone(zone).date()
    starts = [v for v, _ in calendar.versions]
    spans: list[tuple[int, int]] = []
    d = first
    while d <= last:
        midnight = datetime.combine(d, time())
        i = int(np.searchsorted(np.array([s.toordinal() for s in starts]), d.toordinal(), side="right")) - 1
        if i < 0:  # before the first calendar: 24/7
            spans.append((_us(midnight, zone), _us(midnight + timedelta(days=1), zone)))
        elif d not in calendar.holidays:
            for s in calendar.versions[i][1]:
                if d.isoweekday() in s.weekdays:
                    length = (s.end_min - s.start_min) % 1440 or 1440
                    begin = midnight + timedelta(minutes=s.start_min)
                    spans.append((_us(begin, zone), _us(begin + timedelta(minutes=length), zone)))
        d += timedelta(days=1)
    a, b = _merge(spans)
    if calendar.maintenance:
        cut_a, cut_b = _merge([(_us(t, zone), _us(t + timedelta(hours=h), zone)) for t, h in calendar.maintenance])
        a, b = _merge(_subtract(a, b, cut_a, cut_b))
    return a, b


def planned_seconds(calendar: Calendar, edges: np.ndarray, zone: ZoneInfo) -> np.ndarray:
    """Planned busy time in each bucket.

    Parameters
    ----------
    calendar : Calendar
    edges : array_like of int64, shape (n_buckets + 1,)
        Strictly increasing bucket edges [µs since epoch].
    zone : ZoneInfo
        The local time of the calendar's days and times.

    Returns
    -------
    ndarray of float64, shape (n_buckets,) [s]: at most each bucket's length.

    Examples
    --------
    Two shifts (06:00-14:00, 14:00-22:00) Monday to Friday: 16 h on a Monday, none on Sunday.

    >>> z = ZoneInfo("Asia/Shanghai")
    >>> weekdays = frozenset(range(1, 6))
    >>> cal = Calendar(((date(2026, 1, 1), (Shift(weekdays, 360, 840), Shift(weekdays, 840, 1320))),))
    >>> sun, mon, tue = (_us(datetime(2026, 6, d), z) for d in (7, 8, 9))
    >>> (planned_seconds(cal, np.array([sun, mon, tue]), z) / 3600).tolist()
    [0.0, 16.0]
    """
    t = np.asarray(edges, dtype=np.int64)
    a, b = planned_intervals(calendar, int(t[0]), int(t[-1]), zone)
    if len(a) == 0:
        return np.zeros(len(t) - 1)
    lens = b - a
    before = np.concatenate(([0], np.cumsum(lens)))
    j = np.searchsorted(a, t, side="right")
    k = np.maximum(j - 1, 0)
    cumulative = np.where(j > 0, before[k] + np.minimum(np.maximum(t - a[k], 0), lens[k]), 0)
    return np.diff(cumulative).astype(np.float64) / US


def planned_fraction(calendar: Calendar, edges: np.ndarray, zone: ZoneInfo) -> np.ndarray:
    """:func:`planned_seconds` as a share of each bucket's length [1], from 0 to 1."""
    t = np.asarray(edges, dtype=np.int64)
    return planned_seconds(calendar, t, zone) / (np.diff(t) / US)
