"""Planned time of the metric blocks from the factories' shift calendars (issue 15 item 4).

The metrics job calls :func:`apply` on each chunk's 15-minute blocks: a robot's ``planned_s``
in a bucket becomes its covered time there times the planned share of the bucket in the
calendar of the factory it stood in (``metrics/shifts.py``), and its ``planned_executing_s``
its EXECUTING time there times the same share (exact on the 15-minute grid: a bucket is then
wholly planned or not at all); a factory without a calendar keeps 24/7 (``planned_s ==
covered_s``, ``planned_executing_s == executing_s``), the explicit default. ``v_factory_plan`` says which
plan each factory's figures use.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from datetime import date, datetime
from zoneinfo import ZoneInfo

import numpy as np
import psycopg

from robodensity.core.settings import DEFAULT_TIMEZONE
from robodensity.metrics.blocks import Blocks
from robodensity.metrics.shifts import Calendar, Shift, planned_fraction
from robodensity.metrics.states import EXECUTING
from robodensity.storage.shifts import ALL_FACTORIES

ZONE = ZoneInfo(DEFAULT_TIMEZONE)
"""The calendars' local time: the metrics job's days are China Standard Time too."""


def load_calendars(conn: psycopg.Connection, factory_ids: list[str]) -> dict[str, Calendar]:
    """The calendar of each of ``factory_ids`` that has shifts or maintenance; others are 24/7."""
    shifts: dict[str, dict[date, list[Shift]]] = defaultdict(lambda: defaultdict(list))
    for f, valid_from, days, start, end in conn.execute(
        "SELECT factory_id, valid_from, days, start_min, end_min FROM factory_shifts "
        "WHERE factory_id = ANY(%s) ORDER BY 1, 2, 3, 4",
        (factory_ids,),
    ):
        shifts[f][valid_from].append(Shift(frozenset(int(d) for d in days), start, end))
    maintenance: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
    for f, start, h in conn.execute(
        "SELECT factory_id, start_at, hours FROM factory_maintenance WHERE factory_id = ANY(%s) ORDER BY 1, 2",
        (factory_ids,),
    ):
        maintenance[f].append((start, h))
    holidays: dict[str, set[date]] = defaultdict(set)
    for f, day in conn.execute(
        "SELECT factory_id, day FROM factory_holidays WHERE factory_id = ANY(%s) OR factory_id = %s",
        (factory_ids, ALL_FACTORIES),
    ):
        holidays[f].add(day)
    return {
        f: Calendar(
            versions=tuple((d, tuple(s)) for d, s in sorted(shifts[f].items())) if f in shifts else (),
            holidays=frozenset(holidays[f] | holidays[ALL_FACTORIES]),
            maintenance=tuple(maintenance[f]),
        )
        for f in sorted(set(shifts) | set(maintenance))
    }


def apply(conn: psycopg.Connection, blocks: Blocks, factory: np.ndarray, factory_ids: list[str]) -> Blocks:
    """``blocks`` with ``planned_s`` and ``planned_executing_s`` from the calendars.

    factory : array of int, shape (robots, buckets)
        Index into ``factory_ids`` of the factory each robot stood in during each bucket; -1 none.
    """
    present = sorted({factory_ids[i] for i in np.unique(factory).tolist() if i >= 0})
    calendars = load_calendars(conn, present) if present else {}
    if not calendars:
        return blocks
    share = np.ones((len(factory_ids) + 1, len(blocks.edges) - 1))  # the last row: no factory (-1)
    for i, f in enumerate(factory_ids):
        if f in calendars:
            share[i] = planned_fraction(calendars[f], blocks.edges, ZONE)
    cell = share[factory, np.arange(share.shape[1])]
    return dataclasses.replace(
        blocks, planned_s=blocks.covered_s * cell, planned_executing_s=blocks.seconds[..., EXECUTING] * cell
    )
