"""Per-robot rollups of state_intervals: seconds per state per 15 minutes and per day.

The tables ``rollup_15m`` and ``rollup_daily`` (views ``v_robot_state_15m``,
``v_robot_state_daily``) are refreshed by ``refresh``, which the metrics job calls for the
period it computes; it recomputes the whole China Standard Time days that the period
touches, so calling it twice, or for overlapping periods, is harmless. See
migrations/006_rollups.sql for why these are tables in both storage modes.
"""

from __future__ import annotations

from datetime import datetime

import psycopg


def refresh(conn: psycopg.Connection, start: datetime, end: datetime, as_of: datetime | None = None) -> int:
    """Recompute the rollups of the local days [start, end) touches; returns 15-minute rows written.

    Open intervals count until ``as_of`` (default: now). Commits unless ``conn`` is already
    in a transaction block of the caller's.
    """
    with conn.transaction():
        row = conn.execute("SELECT refresh_rollups(%s, %s, coalesce(%s, now()))", (start, end, as_of)).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def storage_mode(conn: psycopg.Connection) -> str:
    """'timescaledb' or 'partitions': how this schema stores events."""
    row = conn.execute("SELECT storage_mode()").fetchone()
    return str(row[0]) if row else "partitions"
