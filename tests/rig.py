"""A test rig for fault scenarios: a paced source -> edge agent -> broker -> collector -> PostgreSQL.

After the scenario it checks the contract: for the agent, the set of committed sequence
numbers equals the set generated (nothing lost), each is stored once (nothing doubled),
the outbox drains, and the agent's in-memory queues stayed within their bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from robodensity.core.settings import Settings, load_settings
from robodensity.core.wire import Counter, Reading, RobotId, State
from robodensity.edge.agent import EdgeAgent
from robodensity.storage.db import connect
from tests.helpers import running_collector, wait_until_async

RESULTS = Path(__file__).parent.parent / "out" / "reliability-results.jsonl"


class PacedSource:
    """Yields ``n`` state readings for ``robots`` robots at ``rate`` per second, then idles."""

    def __init__(self, n: int, rate: float, robots: int = 20, counter_every: int | None = None) -> None:
        self.n, self.rate, self.robots, self.counter_every = n, rate, robots, counter_every
        self.yielded = 0
        self.t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)

    async def __aenter__(self) -> PacedSource:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def __aiter__(self) -> AsyncIterator[Reading]:
        states = (State.EXECUTING, State.IDLE, State.FAULT)
        start = time.monotonic()
        while self.yielded < self.n:
            i = self.yielded
            robot = RobotId("SIM", f"R{i % self.robots:03d}")
            ts = self.t0 + timedelta(milliseconds=i)
            if self.counter_every and i % self.counter_every:
                yield Reading.of_counter(robot, ts, Counter.ENERGY_WH, float(i))
            else:
                yield Reading.of_state(robot, ts, states[i % 3])
            self.yielded += 1
            ahead = self.yielded / self.rate - (time.monotonic() - start)
            if ahead > 0.01:
                await asyncio.sleep(ahead)  # pacing, not synchronisation
        await asyncio.Event().wait()


@dataclass
class Outcome:
    scenario: str
    generated: int
    stored: int
    distinct: int
    backlog: int
    seconds: float
    resent_batches: int
    reconnects: int
    max_rss_mb: float
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        assert self.stored == self.generated, f"{self.scenario}: stored {self.stored} of {self.generated}"
        assert self.distinct == self.generated, f"{self.scenario}: {self.distinct} distinct of {self.generated}"
        assert self.backlog == 0, f"{self.scenario}: outbox still holds {self.backlog}"

    def record(self) -> None:
        RESULTS.parent.mkdir(exist_ok=True)
        with RESULTS.open("a") as fh:
            fh.write(json.dumps(self.__dict__) + "\n")


def rig_settings(schema: str, tmp_path: Path, **edge: Any) -> Settings:
    return load_settings(
        broker={"keepalive_s": 5},
        edge={
            "agent_id": "rig",
            "factory_id": f"f{schema[-8:]}",
            "outbox_path": tmp_path / "outbox.sqlite",
            "batch_linger_ms": 20,
            "batch_max_events": 100,
            "ack_timeout_s": 2.0,
            **edge,
        },
        collector={"share_group": schema, "flush_ms": 20},
    )


Fault = Callable[[EdgeAgent, PacedSource], Awaitable[None]]


async def run_scenario(
    name: str,
    pg_url: str,
    broker_url: str,
    schema: str,
    tmp_path: Path,
    fault: Fault,
    n: int = 3000,
    rate: float = 300.0,
    edge_broker_url: str | None = None,
    collector_db_url: str | None = None,
    settings: Settings | None = None,
    timeout_s: float = 50.0,
    source: PacedSource | None = None,
    collector: bool = True,
) -> Outcome:
    """Run ``fault`` against the rig. ``collector=False``: the fault runs the collector itself."""
    settings = settings or rig_settings(schema, tmp_path)
    source = source or PacedSource(n, rate)
    n = source.n
    t0 = time.monotonic()
    with (
        running_collector(settings, collector_db_url or pg_url, broker_url, schema)
        if collector
        else contextlib.nullcontext()
    ):
        agent = EdgeAgent(settings, edge_broker_url or broker_url, sources=[source])
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        try:
            await fault(agent, source)
            await wait_until_async(
                lambda: agent.stats.stored >= n and agent.backlog() == 0,
                timeout_s,
                f"{name}: all {n} events acknowledged",
            )
            assert len(agent._inflight) <= settings.edge.max_inflight_batches
            backlog = agent.backlog()
            stats = agent.stats
            reconnects = agent.uplink.reconnects if agent.uplink else 0
        finally:
            stop.set()
            await task
    with connect(pg_url, schema) as conn:
        stored, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT seq) FROM events WHERE agent_id = %s", (settings.edge.agent_id,)
        ).fetchone()
        top = conn.execute("SELECT max(seq) FROM events").fetchone()[0]
    out = Outcome(
        name,
        n,
        int(stored),
        int(distinct),
        backlog,
        round(time.monotonic() - t0, 1),
        stats.resent_batches,
        reconnects,
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        {"max_seq": top},
    )
    out.record()
    return out


async def until_stored(agent: EdgeAgent, count: int, timeout_s: float = 30.0) -> None:
    await wait_until_async(lambda: agent.stats.stored >= count, timeout_s, f"{count} events stored")
