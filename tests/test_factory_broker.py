"""A factory's own broker with TLS and passwords, read by the MQTT JSON and Sparkplug B sources.

Mosquitto gets a second listener with TLS (a server certificate from a throwaway CA) and a
password file made by ``mosquitto_passwd``; the simulated robots publish on the plain
listener of the same broker, so the sources must log in over TLS to see them.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from robodensity.app.embedded import embedded_mosquitto, free_port
from robodensity.core.errors import SourceConnectError
from robodensity.core.settings import MqttJsonSourceSettings, SparkplugSourceSettings
from robodensity.core.wire import State
from robodensity.edge.sources.mqtt_json import MqttJsonSource
from robodensity.edge.sources.sparkplug import SparkplugSource
from robodensity.simulators.mqtt_robot import MqttRobots, topic_for
from tests.certs import TestCA

USER, PASSWORD = "robodensity", "factory-s3cret"


@dataclass(frozen=True)
class FactoryBroker:
    plain_url: str  # anonymous, where the robots publish
    tls_url: str  # TLS and the password file
    ca_file: Path
    password_file: Path


@pytest.fixture(scope="module")
def factory_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FactoryBroker]:
    folder = tmp_path_factory.mktemp("factory-broker")
    ca = TestCA(folder)
    server = ca.issue("127.0.0.1", server=True)
    passwords = folder / "mosquitto.passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), USER, PASSWORD], check=True)
    passwords.chmod(0o600)
    secret = folder / "edge.password"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    port = free_port()
    # Mosquitto's security settings are global unless per_listener_settings comes first, which the
    # embedded broker's base configuration does not allow: a user name is checked on both listeners.
    extra = (
        f"listener {port} 127.0.0.1\ncafile {ca.paths.cert}\ncertfile {server.cert}\nkeyfile {server.key}\n"
        f"password_file {passwords}\n"
    )
    with embedded_mosquitto(extra_conf=extra, wait_port=port) as plain:
        yield FactoryBroker(plain, f"mqtts://127.0.0.1:{port}", ca.paths.cert, secret)


def _json_source(broker: FactoryBroker, factory: str, password_file: Path) -> MqttJsonSource:
    return MqttJsonSource(
        MqttJsonSourceSettings(
            url=broker.tls_url,
            topic=topic_for(factory),
            ca_file=broker.ca_file,
            username=USER,
            password_file=password_file,
        )
    )


async def test_a_json_source_logs_in_over_tls_with_a_password_file_and_reads(factory_broker: FactoryBroker) -> None:
    factory = f"fb{uuid.uuid4().hex[:8]}"
    source = _json_source(factory_broker, factory, factory_broker.password_file)
    now = datetime.now(UTC).replace(microsecond=0)
    async with source:
        await asyncio.wait_for(source.subscribed.wait(), 10)
        with MqttRobots(factory_broker.plain_url, factory, ["ABB/TLS-1"]) as robots:
            robots.publish_state("ABB/TLS-1", State.EXECUTING, now, retain=False)
            robots.flush()
            reading = await asyncio.wait_for(anext(aiter(source)), 10)
    assert (reading.robot.key, reading.state, reading.ts) == ("ABB/TLS-1", State.EXECUTING, now)


async def test_a_wrong_password_is_one_clear_line(factory_broker: FactoryBroker, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    source = _json_source(factory_broker, "fb-wrong", wrong)
    async with source:
        with pytest.raises(SourceConnectError) as info:
            await asyncio.wait_for(anext(aiter(source)), 10)
    text = str(info.value)
    assert text.startswith(f"MQTT broker {factory_broker.tls_url} refused user 'robodensity': ")
    assert "Bad user name or password" in text or "Not authorized" in text
    assert "\n" not in text and "not-the-password" not in text
    assert not source.subscribed.is_set()


async def test_a_sparkplug_source_logs_in_with_the_same_keys(factory_broker: FactoryBroker) -> None:
    settings = SparkplugSourceSettings(
        url=factory_broker.tls_url,
        group_id=f"g{uuid.uuid4().hex[:8]}",
        ca_file=factory_broker.ca_file,
        username=USER,
        password_file=factory_broker.password_file,
    )
    async with SparkplugSource(settings) as source:
        await asyncio.wait_for(source.subscribed.wait(), 10)  # subscribed: logged in over TLS
