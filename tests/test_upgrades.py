"""Upgrades under load: a migration while collectors write, and agents and collectors of
different wire versions (refused by name, never misread)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from robodensity.core import wire
from robodensity.core.settings import load_settings
from robodensity.core.wire import Batch, Event, Reading, RobotId, State
from robodensity.edge.agent import EdgeAgent
from robodensity.storage import db
from robodensity.storage.db import Migration, connect
from tests.helpers import running_collector, wait_until, wait_until_async
from tests.rig import PacedSource, run_scenario

HOLD_S = 4.0
"""[s] a report's transaction holding the events table while the migration wants it."""
STALL_MAX_S = 2.5
"""[s] the longest the collectors may go without a commit meanwhile (lock_timeout is 1 s)."""


def _hold_events(pg_url: str, schema: str, held: threading.Event) -> None:
    """A long report: reads events in a transaction that stays open for HOLD_S."""
    with connect(pg_url, schema) as conn:
        conn.execute("SELECT count(*) FROM events").fetchone()
        held.set()
        conn.execute("SELECT pg_sleep(%s)", (HOLD_S,))
        conn.rollback()


async def _longest_stall(agent: EdgeAgent, task: asyncio.Future[list[Migration]]) -> float:
    """The longest time [s] no acknowledgement (each follows a commit) reached the agent while
    ``task`` ran; sampled every 20 ms."""
    last_count, last_at, longest = agent.stats.acked_events, time.monotonic(), 0.0
    while not task.done():
        await asyncio.sleep(0.02)  # sampling, not synchronisation
        now = time.monotonic()
        if agent.stats.acked_events != last_count:
            last_count, last_at = agent.stats.acked_events, now
        longest = max(longest, now - last_at)
    return longest


async def test_a_migration_under_load_never_holds_the_collectors_up(
    pg_url: str,
    broker_url: str,
    schema: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with connect(pg_url, schema, autocommit=True) as conn:  # populated: 200,000 events of last week
        conn.execute(
            "INSERT INTO events (agent_id, seq, robot_id, factory_id, ts, type, state)"
            " SELECT 'earlier', g, 1, 'fearlier', now() - g * interval '3 seconds', 'state', 'IDLE'"
            " FROM generate_series(1, 200000) g"
        )
    shipped = db.migrations()
    probe = Migration(39, "probe_under_load", "ALTER TABLE events ADD COLUMN probe text;")
    monkeypatch.setattr(db, "migrations", lambda: [*shipped, probe])
    caplog.set_level(logging.WARNING, logger="robodensity.storage.db")
    found: dict[str, object] = {}

    async def migrate_meanwhile(agent: EdgeAgent, _source: PacedSource) -> None:
        await wait_until_async(lambda: agent.stats.acked_events >= 300, 20, "the stream to flow")
        held = threading.Event()
        blocker = threading.Thread(target=_hold_events, args=(pg_url, schema, held), daemon=True)
        blocker.start()
        await asyncio.to_thread(held.wait, 10)
        t0 = time.monotonic()
        task = asyncio.ensure_future(asyncio.to_thread(db.migrate, pg_url, schema))
        found["stall_s"] = await _longest_stall(agent, task)
        found["applied"] = [m.version for m in await task]
        found["migrate_s"] = time.monotonic() - t0
        await asyncio.to_thread(blocker.join)

    out = await run_scenario("migration under load", pg_url, broker_url, schema, tmp_path, migrate_meanwhile, n=4500)
    out.check()  # nothing lost or doubled
    assert found["applied"] == [39]
    assert found["migrate_s"] >= HOLD_S - 1.5  # it had to wait for the report ...
    assert any("lock timeout" in r.getMessage() and "trying again" in r.getMessage() for r in caplog.records)
    assert found["stall_s"] < STALL_MAX_S, f"the collectors waited {found['stall_s']:.1f} s behind the migration"
    with connect(pg_url, schema) as conn:
        assert conn.execute("SELECT count(probe) FROM events").fetchone() == (0,)  # the column is there
    out.scenario = f"migration under load (200,000 events stored, a report holding events {HOLD_S:g} s)"
    out.extra = {k: round(v, 2) if isinstance(v, float) else v for k, v in found.items()}
    out.record()


def _old_batch(v: int, factory: str, agent: str) -> bytes:
    reading = Reading.of_state(RobotId("ABB", "OLD-1"), datetime.now(UTC), State.IDLE)
    doc = json.loads(wire.encode_batch(Batch(agent, factory, (Event(1, reading),))))
    doc["v"] = v
    return json.dumps(doc).encode()


def _client(broker_url: str, topic: str, got: list[bytes], event: threading.Event) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        got.append(bytes(msg.payload))
        event.set()

    client.on_message = on_message
    host, port = broker_url.removeprefix("mqtt://").split(":")
    client.connect(host, int(port))
    client.subscribe(topic, qos=1)
    client.loop_start()
    return client


@pytest.mark.parametrize("their_version", [0, 2])
def test_an_agent_of_another_wire_version_is_refused_by_name(
    pg_url: str, broker_url: str, schema: str, their_version: int, caplog: pytest.LogCaptureFixture
) -> None:
    factory, agent = f"f{schema[-8:]}", "older"
    got: list[bytes] = []
    answered = threading.Event()
    client = _client(broker_url, wire.ack_topic(factory, agent), got, answered)
    settings = load_settings(collector={"share_group": schema, "flush_ms": 20})
    try:
        with running_collector(settings, pg_url, broker_url, schema):
            for _ in range(2):  # a re-send: refused again, logged once
                answered.clear()
                client.publish(wire.uplink_topic(factory, agent), _old_batch(their_version, factory, agent), qos=1)
                wait_until(answered.is_set, 15, "the collector's answer")
    finally:
        client.loop_stop()
        client.disconnect()
    with pytest.raises(wire.WireError) as refused:
        wire.decode_ack(got[-1])  # never readable as an ack: nothing would be deleted
    assert f"version {their_version}" in str(refused.value) and "speaks [1]" in str(refused.value)
    with connect(pg_url, schema) as conn:
        assert conn.execute("SELECT count(*) FROM events WHERE agent_id = %s", (agent,)).fetchone() == (0,)
        reasons = [r for (r,) in conn.execute("SELECT reason FROM dead_letters WHERE field = 'v'")]
    assert len(reasons) == 2 and all(f"version {their_version}" in r and "speaks 1" in r for r in reasons)
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage() and agent in r.getMessage()]
    assert len(lines) == 1 and f"version {their_version}" in lines[0] and "speaks 1" in lines[0]


async def test_the_agent_never_reads_an_ack_of_another_version(
    broker_url: str, schema: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    factory = f"f{schema[-8:]}"
    settings = load_settings(
        edge={"agent_id": "newer", "factory_id": factory, "outbox_path": tmp_path / "o.sqlite", "batch_linger_ms": 10}
    )
    agent = EdgeAgent(settings, broker_url, sources=[])
    agent.outbox.add([Reading.of_state(RobotId("ABB", "1"), datetime.now(UTC), State.IDLE)] * 5)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    host, port = broker_url.removeprefix("mqtt://").split(":")
    client.connect(host, int(port))
    client.loop_start()
    topic = wire.ack_topic(factory, "newer")
    try:
        await wait_until_async(lambda: agent.stats.published_batches >= 1, 15, "a batch sent")
        assert agent.uplink is not None
        other = json.loads(wire.encode_ack(wire.Ack("newer", ((1, 5),), 5)))
        other["v"] = 2  # a collector of the next version: its ranges may mean something else
        for _ in range(2):
            client.publish(topic, json.dumps(other).encode(), qos=1).wait_for_publish(5)
        await wait_until_async(lambda: agent.uplink is not None and agent.uplink.version_mismatch, 15, "the ack read")
        assert agent.backlog() == 5  # nothing deleted on its word
        assert (await agent.health())["uplink_wire_version_mismatch"] == 1.0
        client.publish(topic, wire.encode_ack(wire.Ack("newer", ((1, 5),), 5)), qos=1).wait_for_publish(5)
        await wait_until_async(lambda: agent.backlog() == 0, 15, "our version's ack applied")
        assert (await agent.health())["uplink_wire_version_mismatch"] == 0.0
    finally:
        client.loop_stop()
        client.disconnect()
        stop.set()
        await task
    lines = [r.getMessage() for r in caplog.records if "wire version mismatch" in r.getMessage()]
    assert len(lines) == 1 and "version 2" in lines[0] and "speaks 1" in lines[0]
