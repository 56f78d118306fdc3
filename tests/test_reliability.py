"""Fault scenarios: break links and kill processes on purpose; nothing is lost or doubled.

Every scenario runs the same rig (tests/rig.py): a paced source -> edge agent -> broker
-> collector -> PostgreSQL, and checks that the committed sequence numbers equal the
generated ones, each once, and that the outbox drains. Figures go to
out/reliability-results.jsonl; docs/reliability.md tabulates a run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from robodensity.app.embedded import embedded_mosquitto, free_port, running_postgres
from robodensity.edge.agent import EdgeAgent
from robodensity.storage.db import connect, migrate
from tests.faultproxy import FaultProxy
from tests.helpers import wait_until_async
from tests.rig import Fault, Outcome, PacedSource, rig_settings, run_scenario, until_stored

ROOT = Path(__file__).parent.parent

pytestmark = pytest.mark.slow


def _port(url: str) -> int:
    return int(urlsplit(url).port or 0)


@pytest.fixture
def edge_link(broker_url: str) -> Iterator[FaultProxy]:
    """A fault proxy between the edge agent and the broker."""
    with FaultProxy(_port(broker_url)) as proxy:
        yield proxy


OverLink = Callable[..., Awaitable[Outcome]]


@pytest.fixture
def over_edge_link(edge_link: FaultProxy, pg_url: str, broker_url: str, schema: str, tmp_path: Path) -> OverLink:
    """run_scenario with the edge agent connected to the broker through ``edge_link``."""

    async def run(name: str, fault: Fault, **options: Any) -> Outcome:
        return await run_scenario(
            name,
            pg_url,
            broker_url,
            schema,
            tmp_path,
            fault,
            edge_broker_url=f"mqtt://127.0.0.1:{edge_link.port}",
            **options,
        )

    return run


@pytest.mark.parametrize("seconds", [5, 30, 120])
async def test_a_partition_between_edge_and_broker(
    seconds: int,
    edge_link: FaultProxy,
    over_edge_link: OverLink,
) -> None:
    async def fault(agent: EdgeAgent, source: PacedSource) -> None:
        await until_stored(agent, 500)
        edge_link.partition()
        await asyncio.sleep(seconds)  # the outage itself
        edge_link.heal()

    out = await over_edge_link(f"edge-broker partition {seconds} s", fault, n=3000, rate=3000 / (seconds + 4))
    out.check()


async def test_a_blackholed_link_between_edge_and_broker(edge_link: FaultProxy, over_edge_link: OverLink) -> None:
    async def fault(agent: EdgeAgent, source: PacedSource) -> None:
        await until_stored(agent, 500)
        edge_link.blackhole()
        await asyncio.sleep(8)
        edge_link.heal()

    out = await over_edge_link("edge-broker blackhole 8 s", fault)
    out.check()


async def test_a_flapping_link_between_edge_and_broker(edge_link: FaultProxy, over_edge_link: OverLink) -> None:
    async def fault(agent: EdgeAgent, source: PacedSource) -> None:
        await until_stored(agent, 300)
        for _ in range(6):
            edge_link.partition()
            await asyncio.sleep(0.7)
            edge_link.heal()
            await asyncio.sleep(0.7)

    out = await over_edge_link("edge-broker flapping 6x", fault)
    out.check()


@pytest.mark.storage_modes
async def test_the_collector_loses_its_database_mid_stream(
    pg_url: str, broker_url: str, schema: str, tmp_path: Path
) -> None:
    with FaultProxy(_port(pg_url)) as db_link:

        async def fault(agent: EdgeAgent, source: PacedSource) -> None:
            for _ in range(3):
                await until_stored(agent, agent.stats.stored + 400)
                db_link.partition()
                await asyncio.sleep(2)
                db_link.heal()

        db_url = pg_url.replace(f":{_port(pg_url)}/", f":{db_link.port}/")
        out = await run_scenario(
            "collector-database reset 3x", pg_url, broker_url, schema, tmp_path, fault, collector_db_url=db_url
        )
    out.check()


async def test_the_broker_is_killed_and_restarted(pg_url: str, schema: str, tmp_path: Path) -> None:
    port = free_port()
    broker = embedded_mosquitto(port)
    url = broker.__enter__()
    try:

        async def fault(agent: EdgeAgent, source: PacedSource) -> None:
            nonlocal broker
            await until_stored(agent, 800)
            _kill(port, signal.SIGKILL)
            broker.__exit__(None, None, None)
            await asyncio.sleep(1)
            broker = embedded_mosquitto(port)
            broker.__enter__()

        out = await run_scenario("broker kill -9 and restart", pg_url, url, schema, tmp_path, fault)
    finally:
        broker.__exit__(None, None, None)
    out.check()


async def test_a_hung_broker_sigstop(pg_url: str, schema: str, tmp_path: Path) -> None:
    port = free_port()
    with embedded_mosquitto(port) as url:

        async def fault(agent: EdgeAgent, source: PacedSource) -> None:
            await until_stored(agent, 800)
            _kill(port, signal.SIGSTOP)
            await asyncio.sleep(6)
            _kill(port, signal.SIGCONT)

        out = await run_scenario("broker SIGSTOP 6 s", pg_url, url, schema, tmp_path, fault)
    out.check()


async def test_an_expired_broker_session(
    edge_link: FaultProxy, schema: str, tmp_path: Path, over_edge_link: OverLink
) -> None:
    settings = rig_settings(schema, tmp_path).model_copy(deep=True)
    settings = settings.model_copy(update={"broker": settings.broker.model_copy(update={"session_expiry_s": 1})})

    async def fault(agent: EdgeAgent, source: PacedSource) -> None:
        await until_stored(agent, 500)
        edge_link.partition()
        await asyncio.sleep(4)  # longer than the session expiry: the broker forgets the ack subscription
        edge_link.heal()

    out = await over_edge_link("expired broker session", fault, settings=settings)
    out.check()


def _kill(port: int, sig: signal.Signals) -> None:
    """Signal the mosquitto process listening on ``port``."""
    pids = subprocess.run(["pgrep", "-f", "mosquitto -c"], capture_output=True, text=True).stdout.split()
    for pid in pids:
        try:
            conf = Path(f"/proc/{pid}/cmdline").read_text().split("\0")[2]
        except (OSError, IndexError):
            continue
        if f"listener {port} " in Path(conf).read_text():
            os.kill(int(pid), sig)
            return
    raise AssertionError(f"no mosquitto listens on {port}")


async def test_a_full_outbox_drops_counters_and_keeps_every_state(
    edge_link: FaultProxy, pg_url: str, schema: str, tmp_path: Path, over_edge_link: OverLink
) -> None:
    settings = rig_settings(schema, tmp_path, outbox_max_bytes=1 << 20)
    source = PacedSource(16_000, rate=4000, counter_every=4)  # 3 counters for every state change

    async def fault(agent: EdgeAgent, src: PacedSource) -> None:
        edge_link.partition()  # nothing leaves: the outbox fills up
        await until_stored(agent, src.n, 40)
        assert agent.outbox.dropped_counters > 0
        edge_link.heal()

    out = await over_edge_link("full outbox (1 MiB, 16,000 events)", fault, source=source, settings=settings)
    assert out.backlog == 0 and out.stored == out.distinct < out.generated  # dropped counters never arrive
    with connect(pg_url, schema) as conn:
        states = conn.execute("SELECT count(*) FROM events WHERE type = 'state'").fetchone()[0]
        counters = conn.execute("SELECT count(*) FROM events WHERE type = 'counter'").fetchone()[0]
    assert states == 16_000 // 4  # every state change
    assert 0 < counters < 12_000  # the oldest counters made room


async def test_postgres_killed_mid_stream(broker_url: str, tmp_path: Path) -> None:
    with running_postgres() as pg:
        migrate(pg.url, "rel")

        async def fault(agent: EdgeAgent, source: PacedSource) -> None:
            for _ in range(2):
                await until_stored(agent, agent.stats.stored + 600)
                await asyncio.to_thread(pg.kill)
                await asyncio.to_thread(pg.start)

        out = await run_scenario("PostgreSQL kill -9 twice", pg.url, broker_url, "rel", tmp_path, fault)
    out.check()


@pytest.mark.storage_modes
async def test_the_collector_killed_between_commit_and_ack(
    pg_url: str, broker_url: str, schema: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "ROBODENSITY_DATABASE__URL": pg_url,
        "ROBODENSITY_BROKER__URL": broker_url,
        "ROBODENSITY_COLLECTOR__SHARE_GROUP": schema,
        "ROBODENSITY_COLLECTOR__CLIENT_ID": f"c-{schema}",
        "ROBODENSITY_COLLECTOR__FLUSH_MS": "20",
    }
    cmd = [sys.executable, "-m", "robodensity.app.cli", "collector", "run", "--schema", schema]
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        procs.append(subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    async def fault(agent: EdgeAgent, source: PacedSource) -> None:
        start()
        for _ in range(3):
            acked = agent.stats.acked_events  # what the collectors killed before acknowledged
            await until_stored(agent, agent.stats.stored + 500)
            await wait_until_async(lambda a=acked: agent.stats.acked_events > a, 30, "acks from the new collector")
            procs[-1].send_signal(signal.SIGKILL)  # wherever it is: between COPY, commit and ack
            procs[-1].wait()
            start()

    try:
        out = await run_scenario(
            "collector kill -9 three times", pg_url, broker_url, schema, tmp_path, fault, collector=False
        )
    finally:
        for p in procs:
            p.terminate()
            p.wait(20)
    out.check()
