"""Mosquitto with TLS, client certificates as identities, and per-factory ACLs."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from robodensity.app.embedded import embedded_mosquitto, free_port
from robodensity.core.settings import Settings, load_settings
from robodensity.core.wire import Reading, RobotId, State
from robodensity.edge.agent import EdgeAgent
from robodensity.edge.outbox import Outbox
from robodensity.storage.db import connect
from tests.certs import TestCA
from tests.helpers import running_collector, wait_until_async

ROOT = Path(__file__).parent.parent
ACL = (ROOT / "deploy" / "mosquitto" / "robodensity.acl").read_text()


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, TestCA]]:
    folder = tmp_path_factory.mktemp("pki")
    ca = TestCA(folder)
    server = ca.issue("127.0.0.1", server=True)
    acl = folder / "robodensity.acl"
    acl.write_text(ACL)
    port = free_port()
    extra = (
        f"listener {port} 127.0.0.1\ncafile {ca.paths.cert}\ncertfile {server.cert}\nkeyfile {server.key}\n"
        f"require_certificate true\nuse_identity_as_username true\nacl_file {acl}\n"
    )
    with embedded_mosquitto(extra_conf=extra, wait_port=port):
        yield f"mqtts://127.0.0.1:{port}", ca


def _settings(url: str, ca: TestCA, identity: str, tmp: Path, factory: str, **more: object) -> Settings:
    issued = ca.issue(identity)
    return load_settings(
        broker={"url": url, "ca_file": ca.paths.cert, "cert_file": issued.cert, "key_file": issued.key},
        edge={
            "agent_id": "a1",
            "factory_id": factory,
            "outbox_path": tmp / f"{identity}-{factory}.sqlite",
            "batch_linger_ms": 10,
        },
        collector={"share_group": "collectors"},
        **more,
    )


async def _run_agent(settings: Settings, url: str, n: int, until: str) -> EdgeAgent:
    agent = EdgeAgent(settings, url, sources=[])
    now = datetime.now(UTC)
    agent.outbox.add([Reading.of_state(RobotId("ABB", str(i)), now, State.IDLE) for i in range(n)])
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    cond = {"acked": lambda: agent.stats.acked_events == n, "refused": lambda: agent.stats.refused_publishes > 0}
    try:
        await wait_until_async(cond[until], 20, until)
    finally:
        stop.set()
        await task
    return agent


async def test_a_factory_with_its_certificate_delivers_over_tls(
    tls_broker: tuple[str, TestCA], pg_url: str, schema: str, tmp_path: Path
) -> None:
    url, ca = tls_broker
    collector_settings = _settings(url, ca, "collector", tmp_path, "unused")
    with running_collector(collector_settings, pg_url, url, schema):
        agent = await _run_agent(_settings(url, ca, "f-tls-1", tmp_path, "f-tls-1"), url, 25, "acked")
    assert Outbox(agent.cfg.outbox_path).backlog() == 0
    with connect(pg_url, schema) as conn:
        assert conn.execute("SELECT count(*), min(factory_id) FROM events").fetchone() == (25, "f-tls-1")


async def test_a_factory_cannot_publish_into_another_factorys_topic_and_the_edge_says_so(
    tls_broker: tuple[str, TestCA], tmp_path: Path
) -> None:
    url, ca = tls_broker
    agent = await _run_agent(_settings(url, ca, "f-tls-2", tmp_path, "f-tls-3"), url, 3, "refused")
    assert agent.stats.refused_publishes >= 1
    assert Outbox(agent.cfg.outbox_path).backlog() == 3  # kept, not silently lost


def test_a_client_without_a_certificate_is_turned_away(tls_broker: tuple[str, TestCA]) -> None:
    url, ca = tls_broker
    port = int(url.rsplit(":", 1)[1])
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.tls_set(ca_certs=str(ca.paths.cert), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        client.connect("127.0.0.1", port)
        for _ in range(50):  # the broker closes the TLS session once it sees no certificate
            if client.loop(0.1) != mqtt.MQTT_ERR_SUCCESS:
                raise ConnectionError("closed by the broker")
