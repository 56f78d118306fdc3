"""Many factories at once: 200 edge agents x 10 robots through one collector, one agent flooding.

Each agent has its own identity, outbox and MQTT session (tests/fleet.py); ``--processes``
processes run them with asyncio, the collector runs in a process of its own, PostgreSQL and
Mosquitto are embedded. Agent a000 sends ``--flood`` times its share, on top of a backlog
(``--flood-backlog`` events an hour old, as after a week offline) that it pushes with a wide
window. Afterwards, per agent: every generated sequence number stored exactly once, and the
reading -> commit latency (p50, p99, max), written to out/fleet-agents.csv. The RSS of the collector and of each agent
process is sampled throughout and must show no upward trend over the second half.

    .venv/bin/python -m bench.bench_fleet                      # 200 agents, 10 minutes
    .venv/bin/python -m bench.bench_fleet --seconds 60 --agents 50
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import multiprocessing as mp
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from robodensity.app.embedded import embedded_mosquitto, embedded_postgres
from robodensity.collector.consume import Collector
from robodensity.core.settings import load_settings
from robodensity.storage.db import migrate
from tests.fleet import FLOODER, FleetPlan, agent_figures, agent_id, check_exactly_once, run_agents
from tests.memory import RssSampler

SCHEMA = "fleet"
TAG = "f"
PER_AGENT = Path(__file__).parent.parent / "out" / "fleet-agents.csv"
"""Every agent's figures of the last run (generated, committed, distinct, p50/p99/max latency)."""


def _collector_main(pg: str, broker: str, schema: str, ready: Event, stop: Event, out: Any) -> None:
    collector = Collector(load_settings(collector={"share_group": schema}), pg, broker, schema)
    halt = threading.Event()

    def watch() -> None:
        collector.subscribed.wait(60)
        ready.set()
        stop.wait()
        halt.set()

    threading.Thread(target=watch, daemon=True).start()
    collector.run(halt)
    s = collector.stats
    out.put({"messages": s.messages, "inserted": s.inserted, "flushes": s.flushes, "db_retries": s.db_retries})


@contextlib.contextmanager
def collector_process(pg: str, broker: str, schema: str) -> Iterator[tuple[BaseProcess, dict[str, int]]]:
    """A collector in a process of its own (its RSS apart from the agents'); its stats at the end."""
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    out: Any = ctx.Queue()
    proc = ctx.Process(target=_collector_main, args=(pg, broker, schema, ready, stop, out), name="collector")
    proc.start()
    stats: dict[str, int] = {}
    try:
        if not ready.wait(60):
            raise SystemExit("the collector did not subscribe within 60 s")
        yield proc, stats
    finally:
        stop.set()
        if proc.is_alive():
            stats.update(out.get(timeout=120))
        proc.join()


def _agents_main(plan: FleetPlan, indexes: list[int], broker: str, folder: str, out: Any) -> None:
    import asyncio

    try:
        out.put(asyncio.run(run_agents(plan, indexes, broker, Path(folder), TAG, drain_s=600.0)))
    except BaseException as exc:  # reported to the parent, which fails the run
        out.put({"error": f"{type(exc).__name__}: {exc}"})


def run(plan: FleetPlan, sample_s: float) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    with (
        embedded_postgres() as pg,
        embedded_mosquitto() as broker,
        tempfile.TemporaryDirectory() as tmp,
    ):
        migrate(pg, SCHEMA)
        with collector_process(pg, broker, SCHEMA) as (collector, stats):
            results: Any = ctx.Queue()
            groups = [list(range(plan.agents))[k :: plan.processes] for k in range(plan.processes)]
            procs = [ctx.Process(target=_agents_main, args=(plan, g, broker, tmp, results)) for g in groups if g]
            since = datetime.now(UTC)
            t0 = time.monotonic()
            sampler = RssSampler(sample_s)
            sampler.watch("collector", collector.pid or 0)
            with sampler:
                for k, p in enumerate(procs):
                    p.start()
                    sampler.watch(f"agents-{k}", p.pid or 0)
                generated: dict[str, int] = {}
                for _ in procs:
                    got = results.get(timeout=plan.seconds + 900)
                    if "error" in got:
                        raise SystemExit(f"an agent process failed: {got['error']}")
                    generated.update(got)
                seconds = time.monotonic() - t0
                for p in procs:
                    p.join()
        figures = agent_figures(pg, SCHEMA, generated, since)
    check_exactly_once(figures)
    flooder = next(f for f in figures if f.agent == agent_id(FLOODER))
    others = [f for f in figures if f.agent != agent_id(FLOODER)]
    per_process = plan.agents / len(procs)
    agent_series = [s for name, s in sampler.series.items() if name.startswith("agents-")]
    memory = {name: s.summary() for name, s in sampler.series.items()}
    out = {
        "scenario": f"fleet {plan.agents} agents x {plan.robots} robots, {plan.seconds:.0f} s, "
        f"a000 flooding {plan.flood:g}x + {plan.flood_backlog} backlog",
        "generated": sum(generated.values()),
        "committed": sum(f.committed for f in figures),
        "distinct": sum(f.distinct for f in figures),
        "seconds": round(seconds, 1),
        "others_p99_s_median": round(statistics.median(f.p99_s for f in others), 3),
        "others_p99_s_max": round(max(f.p99_s for f in others), 3),
        "others_max_s": round(max(f.max_s for f in others), 3),
        "flooder_p99_s": round(flooder.p99_s, 3),
        "flooder_committed": flooder.committed,
        "collector_rss_mib": memory["collector"],
        "agent_rss_mib_each": round(max(s.summary()["max_mib"] for s in agent_series) / per_process, 2),
        "agent_processes_rss_mib": [memory[n] for n in sorted(memory) if n.startswith("agents-")],
        "collector": stats,
    }
    print(json.dumps(out, indent=1))
    PER_AGENT.parent.mkdir(exist_ok=True)
    with PER_AGENT.open("w", newline="") as fh:
        rows = csv.writer(fh)
        rows.writerow(["agent", "generated", "committed", "distinct", "p50_s", "p99_s", "max_s"])
        rows.writerows([f.agent, f.generated, f.committed, f.distinct, f.p50_s, f.p99_s, f.max_s] for f in figures)
    print(f"per agent: {PER_AGENT}")
    for s in sampler.series.values():
        s.check_flat()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--robots", type=int, default=10, help="robots per agent")
    parser.add_argument("--rate", type=float, default=0.5, help="events per second per robot")
    parser.add_argument("--seconds", type=float, default=600.0, help="how long the agents generate")
    parser.add_argument("--flood", type=float, default=50.0, help="a000's rate in shares")
    parser.add_argument("--flood-backlog", type=int, default=100_000, help="events a000 starts with")
    parser.add_argument("--flood-window", type=int, default=100, help="a000's in-flight batches (2,000 events)")
    parser.add_argument("--processes", type=int, default=4, help="processes running the agents")
    parser.add_argument("--sample-s", type=float, default=5.0, help="RSS sampling period")
    a = parser.parse_args()
    plan = FleetPlan(a.agents, a.robots, a.rate, a.seconds, a.flood, a.flood_backlog, a.processes, a.flood_window)
    run(plan, a.sample_s)


if __name__ == "__main__":
    main()
