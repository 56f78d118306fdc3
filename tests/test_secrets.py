"""No secret appears in logs or error messages."""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from robodensity.app.embedded import EmbeddedPostgres, free_port
from robodensity.core.errors import ConfigError, DatabaseError
from robodensity.core.settings import load_settings
from robodensity.core.settings_secrets import warn_readable_by_others
from robodensity.core.wire import Reading, RobotId, State
from robodensity.edge.agent import EdgeAgent
from robodensity.storage.db import connect, migrate
from tests.certs import TestCA
from tests.helpers import running_collector, wait_until_async
from tests.rig import PacedSource, run_scenario

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


# -- no password in a settings file; private files private; PostgreSQL over TLS ----------------


@pytest.mark.parametrize(
    ("toml", "key", "instead"),
    [
        ('[database]\nurl = "postgresql://collector:{s}@db:5432/rd"\n', "database.url", "~/.pgpass"),
        ('[database]\nurl = "postgresql://u@db/rd?password={s}"\n', "database.url", "ROBODENSITY_DATABASE__URL"),
        ('[broker]\nusername = "edge"\npassword = "{s}"\n', "broker.password", "ROBODENSITY_BROKER__PASSWORD"),
        (
            '[[edge.opcua]]\nurl = "opc.tcp://127.0.0.1:4840"\nusername = "u"\npassword = "{s}"\n',
            "edge.opcua[0].password",
            "set edge.opcua[0].password_file",
        ),
    ],
)
def test_a_settings_file_holding_a_password_is_refused_naming_file_line_key_and_where_instead(
    tmp_path: Path, toml: str, key: str, instead: str
) -> None:
    path = tmp_path / "robodensity.toml"
    path.write_text(toml.format(s=SECRET))
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if SECRET in text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value).startswith(f"{path}:{line}: {key} holds a password; a settings file must not: ")
    assert instead in str(info.value) and SECRET not in str(info.value)


def test_passwords_from_the_environment_and_files_are_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "broker.password"
    secret.write_text(SECRET + "\n")
    path = tmp_path / "robodensity.toml"
    path.write_text(
        f'[database]\nurl = "postgresql://collector@db/rd"\n[broker]\nusername = "edge"\npassword_file = "{secret}"\n'
    )
    assert load_settings(path).broker.read_password() == SECRET
    monkeypatch.setenv("ROBODENSITY_DATABASE__URL", f"postgresql://collector:{SECRET}@db/rd")
    monkeypatch.setenv("ROBODENSITY_BROKER__PASSWORD", "from-env")
    settings = load_settings(path)
    assert settings.broker.read_password() == "from-env"
    assert settings.database.url is not None and SECRET in settings.database.url.get_secret_value()


def test_the_edge_warns_once_when_its_settings_or_key_files_are_readable_by_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key, secret = tmp_path / "edge.pem", tmp_path / "edge.key", tmp_path / "broker.password"
    for f, mode in ((cert, 0o644), (key, 0o644), (secret, 0o600)):
        f.write_text("x\n")
        f.chmod(mode)
    path = tmp_path / "edge.toml"
    path.write_text(
        f'[broker]\nurl = "mqtts://127.0.0.1:8883"\ncert_file = "{cert}"\nkey_file = "{key}"\n'
        f'username = "edge"\npassword_file = "{secret}"\n'
    )
    path.chmod(0o640)
    settings = load_settings(path)
    caplog.set_level(logging.WARNING)
    assert warn_readable_by_others(settings, path) == [path, key]  # a certificate is public
    (line,) = [r for r in caplog.records if "readable by group or others" in r.getMessage()]
    assert f"{path} (0640)" in line.getMessage() and f"{key} (0644)" in line.getMessage()
    assert "chmod 600" in line.getMessage()
    path.chmod(0o600)
    key.chmod(0o600)
    assert warn_readable_by_others(settings, path) == []
    assert len(caplog.records) == 1


@pytest.fixture
def tls_postgres(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A PostgreSQL cluster that accepts TLS connections only, its certificate from a test CA."""
    ca = TestCA(tmp_path / "ca")
    server = ca.issue("127.0.0.1", server=True)
    pg = EmbeddedPostgres()
    try:
        pg.init()
        for source, name in ((server.cert, "server.crt"), (server.key, "server.key")):
            shutil.copy(source, pg.data / name)
            (pg.data / name).chmod(0o600)
            if os.geteuid() == 0:
                owner = pwd.getpwnam("postgres")
                os.chown(pg.data / name, owner.pw_uid, owner.pw_gid)
        with (pg.data / "postgresql.conf").open("a") as conf:
            conf.write("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")
        (pg.data / "pg_hba.conf").write_text(
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n"
        )
        pg.start()
        yield f"postgresql://postgres@127.0.0.1:{pg.port}/postgres", ca.paths.cert
    finally:
        pg.stop()
        pg.remove()


async def test_the_collector_writes_to_postgresql_over_tls_with_verify_full(
    tls_postgres: tuple[str, Path], broker_url: str, tmp_path: Path
) -> None:
    url, ca = tls_postgres
    tls = f"{url}?sslmode=verify-full&sslrootcert={ca}"
    migrate(tls, "tls")
    with connect(tls, "tls") as conn:
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)

    async def steady(_agent: EdgeAgent, _source: PacedSource) -> None:
        return None

    (await run_scenario("collector over TLS", tls, broker_url, "tls", tmp_path, steady, n=600)).check()
    other = TestCA(tmp_path / "other-ca")
    with pytest.raises(DatabaseError, match=r"^cannot connect to PostgreSQL at 127\.0\.0\.1"):
        connect(f"{url}?sslmode=verify-full&sslrootcert={other.paths.cert}", "tls")  # not our server's CA
    with pytest.raises(DatabaseError, match="no encryption"):
        connect(f"{url}?sslmode=disable", "tls")  # the server refuses plain connections
