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
from robodensity.core.settings import Settings
from robodensity.core.wire import Reading
from robodensity.simulators.province import Province, write_registry_csv
from robodensity.storage.db import connect
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
