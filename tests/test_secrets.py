"""No secret appears in logs or error messages."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from robodensity.app.embedded import free_port
from robodensity.core.errors import ConfigError, DatabaseError
from robodensity.core.settings import load_settings
from robodensity.core.wire import Reading, RobotId, State
from robodensity.edge.agent import EdgeAgent
from robodensity.storage.db import connect
from tests.helpers import running_collector, wait_until_async

SECRET = "s3cr3t-hunter2"


def _with_password(url: str, user: str = "postgres") -> str:
    return url.replace(f"//{user}@", f"//{user}:{SECRET}@")


def test_a_failed_database_connection_does_not_echo_the_password() -> None:
    url = f"postgresql://collector:{SECRET}@127.0.0.1:{free_port()}/robodensity"
    with pytest.raises(DatabaseError) as info:
        connect(url)
    assert SECRET not in str(info.value)
    assert "127.0.0.1" in str(info.value)


async def test_a_full_run_logs_no_secret(
    pg_url: str, broker_url: str, schema: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = load_settings(
        database={"url": _with_password(pg_url)},
        broker={"url": broker_url, "username": "edge", "password": SECRET},
        edge={
            "agent_id": "sec",
            "factory_id": f"f{schema[-8:]}",
            "outbox_path": tmp_path / "o.sqlite",
            "batch_linger_ms": 10,
        },
        collector={"share_group": schema},
    )
    db_url = settings.database.url.get_secret_value() if settings.database.url else ""
    with running_collector(settings, db_url, broker_url, schema):
        agent = EdgeAgent(settings, broker_url, sources=[])
        agent.outbox.add([Reading.of_state(RobotId("ABB", "1"), datetime.now(UTC), State.IDLE)] * 5)
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        await wait_until_async(lambda: agent.stats.acked_events == 5, 20, "acks")
        stop.set()
        await task
    assert caplog.records  # something was logged
    assert SECRET not in caplog.text
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())


def test_a_password_file_is_read_only_when_connecting_and_never_shown(tmp_path: Path) -> None:
    secret = tmp_path / "factory.password"
    secret.write_text(SECRET + "\n")
    source = {"url": "mqtts://10.0.0.9:8883", "username": "edge", "password_file": str(secret)}
    settings = load_settings(edge={"mqtt_json": [source]})
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())
    assert settings.edge.mqtt_json[0].read_password() == SECRET
    secret.unlink()  # gone by the time of a reconnect: a ConfigError naming the key, not the secret
    with pytest.raises(ConfigError, match=rf"^password_file: file {secret} does not exist$"):
        settings.edge.mqtt_json[0].read_password()
