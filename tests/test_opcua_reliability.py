"""An OPC UA server restart mid-stream, with the edge agent and the collector running.

OpcUaController -> OpcUaSource -> EdgeAgent (outbox, uplink) -> Mosquitto -> collector
-> PostgreSQL, as in tests/rig.py but with the real OPC UA source. After the restart the
agent reconnects by itself, every robot's OFFLINE gap is in the database as a closed
interval, the states written after the restart arrive, and every sequence number the
agent generated is committed exactly once.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from robodensity.core.settings import OpcUaSourceSettings
from robodensity.core.wire import State
from robodensity.edge.agent import EdgeAgent
from robodensity.edge.sources.opcua import OpcUaSource
from robodensity.simulators.opcua_controller import OpcUaController, SimRobot, _free_port
from robodensity.storage.db import connect
from tests.helpers import running_collector, wait_until_async
from tests.rig import rig_settings

pytestmark = pytest.mark.slow

ROBOTS = [SimRobot("KUKA", f"KR-R{i:02d}", "KR 16") for i in range(4)] + [
    SimRobot("FANUC", f"F-R{i:02d}", "M-20iD") for i in range(4)
]


def all_in(agent: EdgeAgent, state: State) -> bool:
    return all(agent.stats.robot_state.get(r.key) is state for r in ROBOTS)


async def test_an_opc_ua_server_restart_records_the_offline_gap_and_loses_nothing(
    pg_url: str, broker_url: str, schema: str, tmp_path: Path
) -> None:
    settings = rig_settings(schema, tmp_path)
    agent_id = settings.edge.agent_id
    port = _free_port("127.0.0.1")
    source = OpcUaSource(
        OpcUaSourceSettings(
            url=f"opc.tcp://127.0.0.1:{port}", publishing_interval_ms=50, reconnect_max_s=0.5, watchdog_s=2.0
        )
    )
    ctl = OpcUaController(ROBOTS, port=port, name="restart")
    await ctl.start()
    try:
        with running_collector(settings, pg_url, broker_url, schema):
            agent = EdgeAgent(settings, broker_url, sources=[source])
            stop = asyncio.Event()
            task = asyncio.create_task(agent.run(stop))
            try:
                await wait_until_async(lambda: all_in(agent, State.IDLE), 20, "the first snapshot of every robot")
                for r in ROBOTS:
                    await ctl.set_state(r.key, State.EXECUTING, datetime.now(UTC))
                await wait_until_async(lambda: all_in(agent, State.EXECUTING), 10, "EXECUTING before the restart")

                await ctl.stop()
                stopped_at = datetime.now(UTC)
                await wait_until_async(lambda: all_in(agent, State.OFFLINE), 15, "OFFLINE for every robot")

                ctl = OpcUaController(ROBOTS, port=port, name="restart")
                await ctl.start()
                # the restarted controller's own state, read when the agent has reconnected
                await wait_until_async(lambda: all_in(agent, State.IDLE), 30, "the snapshot after the reconnect")
                after = datetime.now(UTC)
                for r in ROBOTS:
                    await ctl.set_state(r.key, State.FAULT, after)
                await wait_until_async(lambda: all_in(agent, State.FAULT), 10, "FAULT after the reconnect")
                await wait_until_async(lambda: agent.backlog() == 0, 20, "the outbox to drain")
                stored = agent.stats.stored
                assert source.stats["losses"] == 1 and source.stats["connects"] == 2
            finally:
                stop.set()
                await task
    finally:
        await ctl.stop()

    with connect(pg_url, schema) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM events WHERE agent_id = %s", (agent_id,)
        ).fetchone()
        assert row is not None
        count, distinct, lo, hi = row
        assert (count, distinct, lo, hi) == (stored, stored, 1, stored)  # every sequence number, once

        states = conn.execute(
            "SELECT r.serial, e.state, e.ts FROM events e JOIN robots r USING (robot_id) "
            "WHERE e.agent_id = %s AND e.type = 'state' ORDER BY r.serial, e.ts, e.seq",
            (agent_id,),
        ).fetchall()
        gaps = conn.execute(
            "SELECT r.serial, i.start_ts, i.end_ts FROM state_intervals i JOIN robots r USING (robot_id) "
            "WHERE i.state = 'OFFLINE' ORDER BY r.serial"
        ).fetchall()

    for r in ROBOTS:
        mine = [(state, ts) for serial, state, ts in states if serial == r.serial]
        sequence = [state for state, _ in mine]
        # before, the gap, the restarted controller's own snapshot, then what was written after
        assert sequence == ["IDLE", "EXECUTING", "OFFLINE", "IDLE", "FAULT"], (r.key, sequence)
        assert mine[-1][1] == after
    assert [serial for serial, _, _ in gaps] == sorted(r.serial for r in ROBOTS)
    for serial, start_ts, end_ts in gaps:
        assert end_ts is not None, f"{serial}: the OFFLINE gap is still open"
        assert stopped_at.timestamp() - 1 <= start_ts.timestamp() < end_ts.timestamp() <= after.timestamp(), serial
