"""The one clock: wall time in the product, a fixed time in tests.

Everything that asks "what time is it now?" to decide something — the collector's time
window, the month partitions made ahead, the end of a default report period — asks
:func:`now`. Tests freeze it with :func:`frozen` to run the same code at a month's or a
year's boundary on any day. PostgreSQL asks the same clock: a connection made by
:func:`robodensity.storage.db.connect` while the clock is frozen carries
``robodensity.now`` (:data:`SQL_SETTING`), and the SQL function ``clock_now()`` reads it
(``now()`` otherwise).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime

SQL_SETTING = "robodensity.now"
"""The PostgreSQL setting that carries a frozen clock to SQL's ``clock_now()``."""

_frozen: datetime | None = None


def now() -> datetime:
    """The current time, timezone-aware in UTC (a frozen time while :func:`frozen` is active)."""
    return _frozen if _frozen is not None else datetime.now(UTC)


def is_frozen() -> bool:
    return _frozen is not None


@contextlib.contextmanager
def frozen(at: datetime) -> Iterator[datetime]:
    """Freeze :func:`now` (and SQL's ``clock_now()`` on new connections) at ``at``; for tests."""
    global _frozen
    if at.tzinfo is None:
        raise ValueError(f"clock.frozen needs an aware datetime; got {at.isoformat()}")
    before, _frozen = _frozen, at.astimezone(UTC)
    try:
        yield _frozen
    finally:
        _frozen = before


def sql_options() -> str:
    """libpq ``options`` that hand a frozen clock to SQL; empty when the clock runs."""
    return f"-c {SQL_SETTING}={_frozen.isoformat()}" if _frozen is not None else ""
