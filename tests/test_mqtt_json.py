"""MQTT JSON as vendors publish it: state by rules over several fields, identity from the topic,
and a retained status message that is stored once however often the agent restarts."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from robodensity.core import wire
from robodensity.core.errors import ConfigError
from robodensity.core.settings import MqttJsonSourceSettings, load_settings
from robodensity.core.wire import Quality, State
from robodensity.edge.agent import EdgeAgent
from robodensity.edge.sources.mqtt_json import MqttJsonSource, parse_message
from robodensity.simulators.mqtt_robot import MqttRobots, topic_for
from robodensity.storage.db import connect
from tests.helpers import running_collector, wait_until_async

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
RULES = [
    {"when": {"status.estop": True}, "state": "FAULT"},
    {"when": {"status.alarm_code": {"not": 0}}, "state": "FAULT"},
    {"when": {"mode": "T1"}, "state": "OUT_OF_SERVICE"},
    {"when": {"mode": "AUTO", "status.running": True}, "state": "EXECUTING"},
]


def vendor_settings(**more: object) -> MqttJsonSourceSettings:
    return MqttJsonSourceSettings.model_validate(
        {
            "url": "mqtt://127.0.0.1:1883",
            "topic": "cell/+/+/status",
            "manufacturer_topic_level": 1,
            "serial_topic_level": 2,
            "state_rules": RULES,
            **more,
        }
    )


def message(mode: str, running: bool, alarm: int | None = 0, estop: bool = False) -> bytes:
    status: dict[str, object] = {"running": running, "estop": estop}
    if alarm is not None:
        status["alarm_code"] = alarm
    return json.dumps({"mode": mode, "status": status, "ts": NOW.isoformat()}).encode()


@pytest.mark.parametrize(
    ("payload", "state", "quality"),
    [
        (message("AUTO", True), State.EXECUTING, Quality.GOOD),
        (message("AUTO", False), State.IDLE, Quality.GOOD),
        (message("AUTO", True, alarm=1042), State.FAULT, Quality.GOOD),
        (message("T1", True, estop=True), State.FAULT, Quality.GOOD),  # e-stop wins over teach
        (message("T1", False), State.OUT_OF_SERVICE, Quality.GOOD),
        (message("AUTO", True, alarm=None), State.EXECUTING, Quality.UNCERTAIN),  # a field missing
    ],
)
def test_the_state_comes_from_several_fields_by_the_rule_table(payload: bytes, state: State, quality: Quality) -> None:
    reading = parse_message(vendor_settings(), payload, NOW, "cell/KUKA/KR-0042/status")
    assert (reading.robot, reading.state, reading.quality) == (wire.RobotId("KUKA", "KR-0042"), state, quality)


def test_identity_from_the_topic_or_a_fixed_manufacturer_and_clear_errors() -> None:
    fixed = vendor_settings(manufacturer="EFORT", manufacturer_topic_level=None)
    assert parse_message(fixed, message("AUTO", False), NOW, "cell/x/E-7/status").robot == wire.RobotId("EFORT", "E-7")
    with pytest.raises(wire.WireError, match=r"^topic: has no level 2"):
        parse_message(vendor_settings(), message("AUTO", False), NOW, "cell/KUKA")
    with pytest.raises(wire.WireError, match=r"^state_rules: none of the fields"):
        parse_message(vendor_settings(), json.dumps({"ts": NOW.isoformat()}).encode(), NOW, "cell/K/1/status")
    offline_rule = r"^edge.mqtt_json\[0\].state_rules\[0\].state: OFFLINE is not a rule.s state"
    with pytest.raises(ConfigError, match=offline_rule):
        load_settings(
            edge={"mqtt_json": [{"url": "mqtt://h:1883", "state_rules": [{"when": {"a": 1}, "state": "OFFLINE"}]}]}
        )


@pytest.mark.parametrize("session", ["clean", "persistent"])
async def test_a_retained_status_is_stored_once_across_agent_restarts(
    session: str, pg_url: str, broker_url: str, schema: str, tmp_path: Path
) -> None:
    factory = f"f{schema[-8:]}"
    keys = ["KUKA/K1", "KUKA/K2"]
    client_id = f"rd-{schema}" if session == "persistent" else None
    src = MqttJsonSourceSettings(url=broker_url, topic=topic_for(factory), client_id=client_id)
    settings = load_settings(
        edge={"agent_id": "rt", "factory_id": factory, "outbox_path": tmp_path / "o.sqlite", "mqtt_json": [src]},
        collector={"share_group": schema, "flush_ms": 20},
    )
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)

    async def run_agent(publish: list[tuple[str, State, datetime, bool]], until_acked: int, repeats: int) -> int:
        agent = EdgeAgent(settings, broker_url)
        source = agent.sources[0]
        assert isinstance(source, MqttJsonSource)
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        try:
            await wait_until_async(source.subscribed.is_set, 10, "subscription")
            await wait_until_async(lambda: source.repeats >= repeats, 10, f"{repeats} retained repeat(s) dropped")
            for key, state, ts, retain in publish:
                sim.publish_state(key, state, ts, retain=retain)
            await wait_until_async(lambda: agent.stats.acked_events >= until_acked, 15, f"{until_acked} acks")
        finally:
            stop.set()
            await task
        return source.repeats

    with running_collector(settings, pg_url, broker_url, schema), MqttRobots(broker_url, factory, keys) as sim:
        try:
            first = [(keys[0], State.EXECUTING, t0, True), (keys[1], State.IDLE, t0, True)]
            assert await run_agent(first, until_acked=2, repeats=0) == 0
            # Restarted: the broker has both retained messages again for a clean session, none
            # for a persistent one (retain handling); a new state of K1 marks the end either way.
            again = [(keys[0], State.FAULT, t0 + timedelta(seconds=5), False)]
            repeats = await run_agent(again, until_acked=1, repeats=2 if session == "clean" else 0)
            assert repeats == (2 if session == "clean" else 0)
        finally:
            sim.clear_retained()
    with connect(pg_url, schema) as conn:
        rows = conn.execute(
            "SELECT r.serial, e.state, count(*) FROM events e JOIN robots r USING (robot_id) "
            "GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
    assert rows == [("K1", "EXECUTING", 1), ("K1", "FAULT", 1), ("K2", "IDLE", 1)]
