"""Bulk-load a simulated province's registry and telemetry straight into the database.

For dashboard tests and benchmarks that need months of telemetry in seconds: the
events are the ones the simulators would have sent, written with COPY under one
synthetic agent per factory, bypassing the broker.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import psycopg

from robodensity.core.wire import State
from robodensity.simulators.behaviour import PROFILES, Schedule, state_schedule
from robodensity.simulators.province import Province, Robot, write_registry_csv
from robodensity.storage.registry import import_registry, load_reference_targets


def load_province(
    conn: psycopg.Connection, province: Province, folder: Path, seed: int, start: datetime, end: datetime
) -> dict[str, Schedule]:
    """Registry, targets and state events of ``province`` over [start, end); returns the schedules."""
    import_registry(conn, write_registry_csv(province, folder)[0].parent)
    load_reference_targets(conn)
    return load_events(conn, province.robots, seed, start, end)


def load_events(
    conn: psycopg.Connection, robots: Iterable[Robot], seed: int, start: datetime, end: datetime
) -> dict[str, Schedule]:
    """State events of registered ``robots`` over [start, end) and their state intervals; the schedules."""
    ids = dict(((m, s), i) for i, m, s in conn.execute("SELECT robot_id, manufacturer, serial FROM robots"))
    schedules: dict[str, Schedule] = {}
    seqs: dict[str, int] = {}
    written: list[int] = []
    with (
        conn.transaction(),
        conn.cursor() as cur,
        cur.copy(
            "COPY events (agent_id, seq, robot_id, factory_id, ts, type, state) FROM STDIN (FORMAT BINARY)"
        ) as copy,
    ):
        copy.set_types(["text", "int8", "int8", "text", "timestamptz", "text", "text"])
        for robot in robots:
            sched = state_schedule(seed, robot.key, start, end, PROFILES.get(robot.application, PROFILES["handling"]))
            schedules[robot.key] = sched
            agent = f"sim-{robot.factory}"
            rid = ids[(robot.manufacturer, robot.serial)]
            written.append(rid)
            for ts, state in sched:
                seqs[agent] = seqs.get(agent, 0) + 1
                copy.write_row((agent, seqs[agent], rid, robot.factory, ts, "state", State(state).value))
    with conn.transaction():  # what the collector's interval stage maintains
        conn.execute(
            "SELECT rebuild_state_intervals(array_agg(robot_id), array_agg(lo)) "
            "FROM (SELECT robot_id, min(ts) AS lo FROM events WHERE robot_id = ANY(%s) GROUP BY robot_id) r",
            (written,),
        )
    return schedules
