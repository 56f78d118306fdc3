"""Many factories at once: a fleet of edge agents, one of them flooding, through one collector.

Each agent is a real EdgeAgent with its own identity (factory and agent id), outbox and MQTT
session; an asyncio loop runs many of them (bench/bench_fleet.py spreads them over a few
processes, tests/test_fleet.py runs a short one in the test's process). After the run the
database is checked per agent: every generated sequence number stored exactly once, and the
latency from a reading to its commit (``events.received_at``, the writing transaction's
start, minus the reading's time) as percentiles per agent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from robodensity.core.settings import load_settings
from robodensity.core.wire import Counter, Reading, RobotId, State
from robodensity.edge.agent import EdgeAgent
from robodensity.storage.db import connect
from tests.helpers import wait_until_async

FLOODER = 0
"""The index of the agent that floods."""


@dataclass(frozen=True)
class FleetPlan:
    agents: int = 200
    robots: int = 10
    rate: float = 0.5
    """[events/s] per robot: state changes and counters."""
    seconds: float = 600.0
    flood: float = 50.0
    """The flooding agent's rate, in multiples of one agent's share."""
    flood_backlog: int = 0
    """Events already waiting in the flooder's outbox at the start (a week offline catching up)."""
    processes: int = 4
    flood_window: int = 0
    """The flooder's ``max_inflight_batches`` (and 2,000 events a batch) when not 0: a flood that
    reaches the broker and the collector at once instead of waiting in its own outbox."""

    def agent_rate(self, index: int) -> float:
        return self.robots * self.rate * (self.flood if index == FLOODER else 1.0)


def agent_id(index: int) -> str:
    return f"a{index:03d}"


def factory_id(index: int, tag: str) -> str:
    return f"{tag}{index:03d}"


class FleetSource:
    """``rate`` readings per second over ``robots`` robots for ``seconds``, stamped with the time
    they are made (so their latency can be measured), then idles."""

    def __init__(self, prefix: str, robots: int, rate: float, seconds: float) -> None:
        self.prefix, self.robots, self.rate, self.seconds = prefix, robots, rate, seconds
        self.yielded = 0
        self.done = False

    async def __aenter__(self) -> FleetSource:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def __aiter__(self) -> AsyncIterator[Reading]:
        states = (State.EXECUTING, State.IDLE, State.EXECUTING, State.FAULT)
        start = time.monotonic()
        n = int(self.rate * self.seconds)
        while self.yielded < n:
            i = self.yielded
            robot = RobotId("SIM", f"{self.prefix}-R{i % self.robots:02d}")
            ts = datetime.now(UTC)
            if i % 3 == 2:
                yield Reading.of_counter(robot, ts, Counter.CYCLES, float(i))
            else:
                yield Reading.of_state(robot, ts, states[(i // self.robots) % len(states)])
            self.yielded += 1
            ahead = self.yielded / self.rate - (time.monotonic() - start)
            if ahead > 0.005:
                await asyncio.sleep(ahead)  # pacing, not synchronisation
        self.done = True
        await asyncio.Event().wait()


def backlog_readings(prefix: str, robots: int, n: int) -> list[Reading]:
    """``n`` readings an hour old: what an agent back from an outage still has to send."""
    t0 = datetime.now(UTC) - timedelta(hours=1)
    return [
        Reading.of_state(RobotId("SIM", f"{prefix}-R{i % robots:02d}"), t0 + timedelta(milliseconds=i), State.IDLE)
        for i in range(n)
    ]


async def run_agents(
    plan: FleetPlan, indexes: list[int], broker_url: str, folder: Path, tag: str, drain_s: float = 120.0
) -> dict[str, int]:
    """Run the agents ``indexes`` of ``plan`` until their readings are all acknowledged.

    Returns the events each agent generated (its backlog included). Raises AssertionError
    when they are not all acknowledged within the plan's seconds plus ``drain_s``."""
    agents: list[EdgeAgent] = []
    sources: list[FleetSource] = []
    generated: dict[str, int] = {}
    for i in indexes:
        aid = agent_id(i)
        window = {"max_inflight_batches": plan.flood_window, "batch_max_events": 2000}
        settings = load_settings(
            broker={"keepalive_s": 10},
            edge={
                "agent_id": aid,
                "factory_id": factory_id(i, tag),
                "outbox_path": folder / f"{aid}.sqlite",
                **(window if i == FLOODER and plan.flood_window else {}),
            },
        )
        source = FleetSource(aid, plan.robots, plan.agent_rate(i), plan.seconds)
        agent = EdgeAgent(settings, broker_url, sources=[source])
        generated[aid] = 0
        if i == FLOODER and plan.flood_backlog:
            generated[aid] = len(agent.outbox.add(backlog_readings(aid, plan.robots, plan.flood_backlog)))
        agents.append(agent)
        sources.append(source)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(a.run(stop)) for a in agents]

    def drained() -> bool:
        return all(s.done for s in sources) and all(
            a.stats.stored >= s.yielded and a.backlog() == 0 for a, s in zip(agents, sources)
        )

    try:
        await wait_until_async(drained, plan.seconds + drain_s, f"{len(agents)} agents drained")
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    for a, s in zip(agents, sources):
        generated[a.cfg.agent_id] += s.yielded
    return generated


@dataclass
class AgentFigures:
    agent: str
    generated: int
    committed: int
    distinct: int
    p50_s: float
    p99_s: float
    max_s: float


def agent_figures(pg_url: str, schema: str, generated: dict[str, int], since: datetime) -> list[AgentFigures]:
    """Per agent from the database: stored, distinct seqs, reading->commit latency of the readings
    made since ``since`` (a backlog's old readings are not latency)."""
    with connect(pg_url, schema) as conn:
        rows = conn.execute(
            "SELECT agent_id, count(*), count(DISTINCT seq),"
            " percentile_disc(0.5) WITHIN GROUP (ORDER BY lat) FILTER (WHERE live),"
            " percentile_disc(0.99) WITHIN GROUP (ORDER BY lat) FILTER (WHERE live),"
            " max(lat) FILTER (WHERE live)"
            " FROM (SELECT agent_id, seq, extract(epoch FROM received_at - ts)::float8 AS lat, ts >= %s AS live"
            "       FROM events WHERE agent_id = ANY(%s)) e GROUP BY agent_id",
            (since, list(generated)),
        ).fetchall()
    found = {r[0]: r for r in rows}
    out = []
    for aid, n in sorted(generated.items()):
        r: Any = found.get(aid, (aid, 0, 0, None, None, None))
        out.append(AgentFigures(aid, n, int(r[1]), int(r[2]), r[3] or 0.0, r[4] or 0.0, r[5] or 0.0))
    return out


def check_exactly_once(figures: list[AgentFigures]) -> None:
    """Nothing lost or doubled for anyone."""
    bad = [f for f in figures if not f.generated == f.committed == f.distinct]
    assert not bad, "lost or doubled: " + ", ".join(
        f"{f.agent} generated {f.generated} committed {f.committed} distinct {f.distinct}" for f in bad[:5]
    )
