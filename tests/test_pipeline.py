"""Edge agent -> broker -> collector -> PostgreSQL, with real services."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from robodensity.core.wire import State
from robodensity.edge.agent import EdgeAgent
from robodensity.simulators.mqtt_robot import MqttRobots
from robodensity.storage.db import connect
from tests.helpers import mqtt_json_factory, running_collector, wait_until_async


async def test_states_published_on_mqtt_reach_the_database_once(
    pg_url: str, broker_url: str, schema: str, tmp_path: Path
) -> None:
    province, settings = mqtt_json_factory(pg_url, broker_url, schema, tmp_path, 5, 7)
    factory = province.factories[0]
    keys = [r.key for r in province.robots]
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    sent = [
        (key, t0 + timedelta(minutes=i), s)
        for i, s in enumerate([State.IDLE, State.EXECUTING, State.FAULT])
        for key in keys
    ]
    with (
        running_collector(settings, pg_url, broker_url, schema),
        MqttRobots(broker_url, factory.id, keys) as sim,
    ):
        agent = EdgeAgent(settings, broker_url)
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        source = agent.sources[0]
        await wait_until_async(lambda: source.subscribed.is_set(), 10, "source subscription")
        for key, ts, state in sent:
            sim.publish_state(key, state, ts, retain=False)
        await wait_until_async(lambda: agent.stats.acked_events >= len(sent), 20, "acks for every event")
        stop.set()
        await task
    with connect(pg_url, schema) as conn:
        rows = conn.execute(
            "SELECT r.manufacturer || '/' || r.serial, e.ts, e.state, e.seq FROM events e "
            "JOIN robots r USING (robot_id) ORDER BY e.seq"
        ).fetchall()
    assert sorted((k, ts, State(s)) for k, ts, s, _ in rows) == sorted(sent)
    assert [seq for *_, seq in rows] == list(range(1, len(sent) + 1))
