"""The edge agent's tasks: a task that fails stops the agent and its error surfaces, never vanishes.

A real Mosquitto for the uplink and a real SQLite outbox; the sources are fakes at the
``Source`` seam the agent defines.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from robodensity.core import clock, wire
from robodensity.core.errors import SourceError
from robodensity.core.settings import Settings, load_settings
from robodensity.edge.agent import EdgeAgent


class IdleSource:
    """Yields nothing; says when the agent entered and left it. ``fail`` raises from the iterator."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.fail = fail
        self.entered = asyncio.Event()
        self.exited = asyncio.Event()

    async def __aenter__(self) -> IdleSource:
        self.entered.set()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.exited.set()

    def __aiter__(self) -> AsyncIterator[wire.Reading]:
        return self

    async def __anext__(self) -> wire.Reading:
        if self.fail is not None:
            raise self.fail
        await asyncio.Event().wait()  # idle until the agent stops
        raise StopAsyncIteration


def settings(tmp_path: Path) -> Settings:
    return load_settings(edge={"agent_id": "tasks", "outbox_path": tmp_path / "outbox.sqlite"})


async def test_an_error_in_the_ack_task_stops_the_agent_and_run_raises_it(
    broker_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = IdleSource()
    agent = EdgeAgent(settings(tmp_path), broker_url, sources=[source])
    run = asyncio.create_task(agent.run(asyncio.Event()))
    await source.entered.wait()
    assert agent.uplink is not None
    # An ack the outbox cannot apply (SQLite integers are 64-bit), handed over as the uplink's thread does.
    ack = wire.Ack(agent.cfg.agent_id, ((1, 2**70),), 0)
    agent.uplink.loop.call_soon_threadsafe(agent.uplink.on_ack, ack)
    with caplog.at_level(logging.ERROR, logger="robodensity.edge.agent"), pytest.raises(OverflowError):
        async with asyncio.timeout(30):
            await run
    assert source.exited.is_set()  # the other tasks were stopped, the source left
    assert "edge agent stopped: OverflowError" in caplog.text


async def test_a_source_that_breaks_stops_the_agent_but_a_source_error_is_retried(
    broker_url: str, tmp_path: Path
) -> None:
    flaky, broken = IdleSource(SourceError("server gone")), IdleSource(RuntimeError("bug in a source"))
    agent = EdgeAgent(settings(tmp_path), broker_url, sources=[flaky, broken])
    with pytest.raises(RuntimeError, match="bug in a source"):
        async with asyncio.timeout(30):
            await agent.run(asyncio.Event())
    assert flaky.entered.is_set() and flaky.exited.is_set()


async def test_a_source_with_settings_that_cannot_work_stops_alone(broker_url: str, tmp_path: Path) -> None:
    from robodensity.core.errors import ConfigError

    hopeless, fine = IdleSource(ConfigError("login refused 5 times in a row, giving up")), IdleSource()
    agent = EdgeAgent(settings(tmp_path), broker_url, sources=[hopeless, fine])
    stop = asyncio.Event()
    run = asyncio.create_task(agent.run(stop))
    async with asyncio.timeout(30):
        await fine.entered.wait()
        while not agent.stats.stopped_sources:
            await asyncio.sleep(0.01)
    assert not run.done() and not fine.exited.is_set()  # the other source goes on
    assert agent.stats.stopped_sources == {0: "login refused 5 times in a row, giving up"}
    assert (await agent.health())["sources_stopped"] == 1
    stop.set()
    async with asyncio.timeout(30):
        await run


class DeafSource(IdleSource):
    """A polled source over steady robots: one reading, then nothing while the values stay the same.
    It loses the first cancel it gets, as a library's ``asyncio.wait_for`` does on Python 3.11 when
    the reply it waits for arrives in the loop pass of the cancel."""

    def __init__(self) -> None:
        super().__init__()
        self.lost_cancels = 0
        self.sent = False

    async def __anext__(self) -> wire.Reading:
        if not self.sent:
            self.sent = True
            return wire.Reading(wire.RobotId("KUKA", "S1"), clock.now(), wire.EventType.STATE, state=wire.State.IDLE)
        while True:
            try:
                await asyncio.Event().wait()  # polling: no change to report
            except asyncio.CancelledError:
                if self.lost_cancels:
                    raise
                self.lost_cancels += 1


async def test_the_agent_stops_even_when_a_source_loses_its_cancel(broker_url: str, tmp_path: Path) -> None:
    source = DeafSource()
    agent = EdgeAgent(settings(tmp_path), broker_url, sources=[source])
    stop = asyncio.Event()
    run = asyncio.create_task(agent.run(stop))
    async with asyncio.timeout(30):
        while not agent.stats.readings:
            await asyncio.sleep(0.01)
    stop.set()
    async with asyncio.timeout(30):
        await run
    assert source.lost_cancels == 1 and source.exited.is_set()
