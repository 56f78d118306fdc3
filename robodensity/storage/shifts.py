"""Factories' shift calendars: the registry files' cells, and loading a calendar for the metrics.

Three optional registry files (docs/clocks-and-shifts.md), imported with the rest of the
registry by :func:`robodensity.storage.registry.import_registry` (same checks, same
``file:line: column: problem`` errors, nothing imported unless all is good):

``shifts.csv``       factory_id, valid_from (optional), days, start, end
    One row per shift; a factory's calendar is every row with its latest ``valid_from`` on or
    before the day (so a new calendar is a new set of rows with a new ``valid_from``). ``days``:
    ``Mon-Fri``, ``Mon,Wed,Fri``, ``1-5`` (ISO: 1 is Monday), ``daily``; ``start``/``end``: local
    ``HH:MM``; an ``end`` at or before ``start`` ends the next day (a night shift), ``24:00`` is
    midnight. A shift belongs to the day it starts on.
``holidays.csv``     factory_id (``*``: every factory with a calendar), date, name (optional)
    No shift starts on a holiday.
``maintenance.csv``  factory_id, start (local ``YYYY-MM-DD HH:MM``), hours, note (optional)
    Planned maintenance: not planned busy time.

A factory without a calendar in effect is planned 24/7 (the explicit default), and every
figure says which plan it used (:data:`LABEL_24_7`, :data:`LABEL_CALENDAR`). The metrics
job turns the stored calendars into planned seconds (``metrics/shifts.py``, ``app/shift_plan.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

Parser = Callable[[str], Any]

LABEL_24_7 = "planned: 24/7"
LABEL_CALENDAR = "planned: shift calendar"
ALL_FACTORIES = "*"


def plan_label(with_calendar: int, factories: int) -> str:
    """The plan a figure over ``factories`` factories used, ``with_calendar`` of them on a shift
    calendar: 'planned: 24/7' or 'planned: shift calendars (N of M factories)'."""
    if with_calendar == 0:
        return LABEL_24_7
    others = "" if with_calendar == factories else ", the others 24/7"
    return f"planned: shift calendars ({with_calendar} of {factories} factories{others})"


OPTIONAL_TABLES = ("shifts", "holidays", "maintenance")
"""Registry tables an import may leave out without them being counted."""

_DAY_NAMES = {
    name: i
    for i, full in enumerate(("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"), 1)
    for name in (full, full[:3])
}
_TIME_RE = re.compile(r"^([01]?[0-9]|2[0-4]):([0-5][0-9])$")


def _day(token: str) -> int:
    t = token.strip().lower()
    if t.isdigit() and 1 <= int(t) <= 7:
        return int(t)
    if t in _DAY_NAMES:
        return _DAY_NAMES[t]
    raise ValueError(f"{token.strip()!r} is not a weekday (Mon..Sun or 1..7)")


def weekdays(s: str) -> str:
    """``Mon-Fri`` / ``Mon,Wed`` / ``1-5`` / ``daily`` -> the ISO weekdays as digits, ``12345``."""
    text = s.strip().lower()
    if text in ("daily", "every day", "mon-sun", "1-7"):
        return "1234567"
    if not text:
        raise ValueError("is empty; give days such as Mon-Fri, Sat or daily")
    days: set[int] = set()
    for part in re.split(r"[,\s;]+", text):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        a = _day(lo)
        b = _day(hi) if sep else a
        if b < a:
            raise ValueError(f"{part!r} runs backwards; write Sat-Sun, not Sun-Sat")
        days.update(range(a, b + 1))
    return "".join(str(d) for d in sorted(days))


def time_of_day(s: str) -> int:
    """Local ``HH:MM`` -> minutes after midnight (``24:00`` is 1440)."""
    m = _TIME_RE.match(s.strip())
    minutes = int(m.group(1)) * 60 + int(m.group(2)) if m else -1
    if not m or minutes > 1440:
        raise ValueError(f"{s.strip()!r} is not a time HH:MM from 00:00 to 24:00")
    return minutes


def local_datetime(s: str) -> datetime:
    """Local ``YYYY-MM-DD HH:MM`` (no zone: the deployment's time zone)."""
    try:
        t = datetime.fromisoformat(s.strip())
    except ValueError:
        raise ValueError(f"{s.strip()!r} is not a local time YYYY-MM-DD HH:MM") from None
    if t.tzinfo is not None:
        raise ValueError(f"{s.strip()!r} has a time zone; give local time (the deployment's zone)")
    return t


def hours(s: str) -> float:
    try:
        h = float(s.strip())
    except ValueError:
        raise ValueError(f"{s.strip()!r} is not a number of hours") from None
    if not 0 < h <= 24 * 366:
        raise ValueError(f"{h:g} hours is not between 0 and a year")
    return h


def factory_or_all(s: str) -> str | None:
    """A factory id, or None for ``*`` (every factory; stored as ``*``)."""
    text = s.strip()
    if not text:
        raise ValueError("is empty; give a factory_id or * for every factory")
    return None if text == ALL_FACTORIES else text


def table_specs(required: Parser, day: Parser) -> list[dict[str, Any]]:
    """The three optional registry tables, as ``registry.Table`` arguments (the registry's own
    ``required`` and date parsers passed in, so the cells read alike)."""
    return [
        {
            "name": "shifts",
            "columns": {
                "factory_id": required,
                "valid_from": day,
                "days": weekdays,
                "start": time_of_day,
                "end": time_of_day,
            },
            "upsert": "INSERT INTO factory_shifts (factory_id, valid_from, days, start_min, end_min) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (factory_id, valid_from, days, start_min) "
            "DO UPDATE SET end_min = EXCLUDED.end_min",
            "key": ("factory_id", "valid_from", "days", "start"),
            "defaults": {"valid_from": "2000-01-01"},
        },
        {
            "name": "holidays",
            "columns": {"factory_id": factory_or_all, "date": day, "name": str.strip},
            "upsert": "INSERT INTO factory_holidays (factory_id, day, name) VALUES (coalesce(%s, '*'), %s, %s) "
            "ON CONFLICT (factory_id, day) DO UPDATE SET name = EXCLUDED.name",
            "key": ("factory_id", "date"),
            "defaults": {"name": ""},
        },
        {
            "name": "maintenance",
            "columns": {"factory_id": required, "start": local_datetime, "hours": hours, "note": str.strip},
            "upsert": "INSERT INTO factory_maintenance (factory_id, start_at, hours, note) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (factory_id, start_at) DO UPDATE SET hours = EXCLUDED.hours, note = EXCLUDED.note",
            "key": ("factory_id", "start"),
            "defaults": {"note": ""},
        },
    ]
