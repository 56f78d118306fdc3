"""Storage facts the metrics adapters ask for.

The per-robot 15-minute and daily figures are no longer computed in the database: the
metrics job (``robodensity.app.metrics_job``) writes the blocks ``robot_blocks_15m`` and
``robot_blocks_daily`` (migrations/015_metric_blocks.sql); ``refresh_rollups`` is a no-op
kept for old callers.
"""

from __future__ import annotations

import psycopg


def storage_mode(conn: psycopg.Connection) -> str:
    """'timescaledb' or 'partitions': how this schema stores events."""
    row = conn.execute("SELECT storage_mode()").fetchone()
    return str(row[0]) if row else "partitions"
