"""kill -9 of the edge agent mid-stream: after a restart nothing is lost and no sequence is doubled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from robodensity.app.embedded import free_port
from robodensity.core.settings import load_settings
from robodensity.core.wire import State
from robodensity.simulators.mqtt_robot import MqttRobots, topic_for
from robodensity.storage.db import connect
from tests.helpers import running_collector, wait_until

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parent.parent


def _pre_subscribe(broker_url: str, client_id: str, topic: str) -> None:
    """Create the source's persistent session so the broker queues for it from now on."""
    host, port = broker_url.removeprefix("mqtt://").split(":")
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    c.connect(host, int(port), clean_start=True, properties=props)
    c.loop_start()
    c.subscribe(topic, qos=1)[1]
    wait_until(c.is_connected, 10, "pre-subscriber connection")
    info = c.publish("noop", b"", qos=1)
    info.wait_for_publish(10)
    c.disconnect()
    c.loop_stop()


def _health(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            return r.read().decode()
    except OSError:
        return ""


def _acked(port: int) -> float:
    """The agent's acked_events_total; 0 when the endpoint does not answer (an empty scrape is no ack)."""
    for line in _health(port).splitlines():
        if line.startswith("robodensity_edge_acked_events_total "):
            return float(line.split()[1])
    return 0.0


def test_kill_9_of_the_agent_loses_and_doubles_nothing(
    pg_url: str, broker_url: str, schema: str, tmp_path: Path
) -> None:
    factory, agent, source_id = f"fk{schema[-6:]}", "edge-crash", f"src-{schema}"
    health_port = free_port()
    config = tmp_path / "edge.toml"
    config.write_text(
        f'[broker]\nurl = "{broker_url}"\n'
        f'[edge]\nagent_id = "{agent}"\nfactory_id = "{factory}"\noutbox_path = "{tmp_path / "outbox.sqlite"}"\n'
        f"batch_linger_ms = 20\nack_timeout_s = 3\nhealth_port = {health_port}\n"
        f'[[edge.mqtt_json]]\nurl = "{broker_url}"\ntopic = "{topic_for(factory)}"\nclient_id = "{source_id}"\n'
    )
    _pre_subscribe(broker_url, source_id, topic_for(factory))
    cmd = [sys.executable, "-m", "robodensity.app.cli", "edge", "run", "--config", str(config)]
    settings = load_settings(collector={"share_group": schema})
    keys = [f"FANUC/K{i:03d}" for i in range(20)]
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    states = [State.EXECUTING, State.IDLE, State.FAULT]
    sent = [(k, t0 + timedelta(seconds=i), states[i % 3]) for i in range(150) for k in keys]

    with (
        running_collector(settings, pg_url, broker_url, schema),
        MqttRobots(broker_url, factory, keys) as sim,
    ):
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_until(lambda: "robodensity_edge_uplink_connected 1" in _health(health_port), 30, "agent up")
            for n, (key, ts, state) in enumerate(sent):
                sim.publish_state(key, state, ts, retain=False)
                if n == len(sent) // 3:
                    sim.flush()
                    wait_until(lambda: _acked(health_port) > 0, 30, "the first acks")
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
                if n == 2 * len(sent) // 3:
                    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            sim.flush()

            def committed() -> int:
                with connect(pg_url, schema) as conn:
                    return int(conn.execute("SELECT count(DISTINCT (robot_id, ts, state)) FROM events").fetchone()[0])

            wait_until(lambda: committed() >= len(sent), 60, "every published state in the database")
        finally:
            proc.terminate()
            assert proc.wait(20) == 0, proc.stderr.read().decode() if proc.stderr else ""

    with connect(pg_url, schema) as conn:
        rows = conn.execute(
            "SELECT r.manufacturer || '/' || r.serial, e.ts, e.state, e.seq "
            "FROM events e JOIN robots r USING (robot_id)"
        ).fetchall()
    assert {(k, ts, State(s)) for k, ts, s, _ in rows} == set(sent)  # nothing lost
    seqs = sorted(seq for *_, seq in rows)
    assert seqs == list(range(1, len(seqs) + 1))  # every sequence number once, none skipped
