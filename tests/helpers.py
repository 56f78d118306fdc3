"""Small tools the tests share: waiting on conditions, running services in threads."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from robodensity.collector.consume import Collector
from robodensity.core.settings import MqttJsonSourceSettings, Settings, load_settings
from robodensity.core.wire import Reading
from robodensity.simulators.mqtt_robot import topic_for
from robodensity.simulators.province import CitySpec, Province, ProvinceSpec, generate, write_registry_csv
from robodensity.storage.db import connect, migrations
from robodensity.storage.registry import import_registry


def wait_until(cond: Callable[[], bool], timeout_s: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


async def wait_until_async(
    cond: Callable[[], bool | Awaitable[bool]], timeout_s: float = 30.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        res = cond()
        if isinstance(res, Awaitable):
            res = await res
        if res:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)


@contextmanager
def running_collector(settings: Settings, pg_url: str, broker_url: str, schema: str) -> Iterator[Collector]:
    collector = Collector(settings, pg_url, broker_url, schema)
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            collector.run(stop)
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)

    thread = threading.Thread(target=target, name="collector", daemon=True)
    thread.start()
    wait_until(lambda: collector.subscribed.is_set() or bool(errors), 15, "collector subscription")
    try:
        yield collector
    finally:
        stop.set()
        thread.join(30)
    if errors:
        raise errors[0]


def import_province(province: Province, pg_url: str, schema: str, folder: Path) -> None:
    write_registry_csv(province, folder)
    with connect(pg_url, schema) as conn:
        import_registry(conn, folder)
        conn.commit()


def mqtt_json_factory(
    pg_url: str, broker_url: str, schema: str, tmp_path: Path, robots: int, seed: int, **collector: object
) -> tuple[Province, Settings]:
    """A one-factory province, imported, and the settings of agent ``a1`` reading its robots' JSON
    on ``broker_url`` (and of a collector in share group ``schema``)."""
    province = generate(
        ProvinceSpec(cities=(CitySpec("320400", "常州市", "Changzhou", 1),), robots=robots, opcua_share=0.0), seed=seed
    )
    import_province(province, pg_url, schema, tmp_path / "registry")
    factory = province.factories[0].id
    settings = load_settings(
        edge={
            "agent_id": "a1",
            "factory_id": factory,
            "outbox_path": tmp_path / "outbox.sqlite",
            "batch_linger_ms": 20,
            "mqtt_json": [MqttJsonSourceSettings(url=broker_url, topic=topic_for(factory))],
        },
        collector={"share_group": schema, **collector},
    )
    return province, settings


async def collect_until(
    it: AsyncIterator[Reading], done: Callable[[list[Reading]], bool], timeout: float = 10.0
) -> list[Reading]:
    """Readings from ``it`` until ``done(readings)``; fails after ``timeout`` seconds."""
    got: list[Reading] = []

    async def run() -> None:
        async for reading in it:
            got.append(reading)
            if done(got):
                return

    try:
        await asyncio.wait_for(run(), timeout)
    except TimeoutError:
        pytest.fail(f"condition not met within {timeout}s; got {len(got)} readings: {got[-5:]}")
    return got


def migrate_through(pg_url: str, schema: str, last: int) -> None:
    """Create ``schema`` as migrations up to ``last`` left it: where a migration's test starts."""
    with connect(pg_url, schema, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for m in migrations():
            if m.version <= last:
                conn.execute(m.sql.encode())
                conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (m.version, m.name))
