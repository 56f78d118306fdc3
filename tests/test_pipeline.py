"""Edge agent -> broker -> collector -> PostgreSQL, with real services."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from robodensity.core.settings import MqttJsonSourceSettings, load_settings
from robodensity.core.wire import State
from robodensity.edge.agent import EdgeAgent
from robodensity.simulators.mqtt_robot import MqttRobots, topic_for
from robodensity.simulators.province import CitySpec, ProvinceSpec, generate
from robodensity.storage.db import connect
from tests.helpers import import_province, running_collector, wait_until_async


async def test_states_published_on_mqtt_reach_the_database_once(
    pg_url: str, broker_url: str, schema: str, tmp_path: Path
) -> None:
    province = generate(
        ProvinceSpec(cities=(CitySpec("320400", "常州市", "Changzhou", 1),), robots=5, opcua_share=0.0), seed=7
    )
    import_province(province, pg_url, schema, tmp_path / "registry")
    factory = province.factories[0]
    keys = [r.key for r in province.robots]
    settings = load_settings(
        edge={
            "agent_id": "a1",
            "factory_id": factory.id,
            "outbox_path": tmp_path / "outbox.sqlite",
            "batch_linger_ms": 20,
            "mqtt_json": [MqttJsonSourceSettings(url=broker_url, topic=topic_for(factory.id))],
        },
        collector={"share_group": schema},
    )
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
