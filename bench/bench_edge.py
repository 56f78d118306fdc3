"""Benchmark: one edge agent process reading 1,000 robots over OPC UA subscriptions.

Run on demand (not part of the tests)::

    .venv/bin/python -m bench.bench_edge                          # 1,000 robots, 30 s per phase
    .venv/bin/python -m bench.bench_edge --robots 2000 --seconds 20

Processes (multiprocessing, spawn), all on this machine:

- **simulator**: ``OpcUaController`` with ``--robots`` OPC 40010 robots; every second each
  robot changes state (EXECUTING <-> IDLE) and both counters (TotalPowerOnTime,
  TotalEnergyConsumption), spread evenly over the second. It writes only the signals that
  change: 3 notifications per robot per second (see bench_simulators).
- **bare client** (phase 1, the baseline): a plain asyncua client subscribing to the same
  9 signals per robot with one subscription (250 ms publishing interval), counting
  notifications and nothing else.
- **edge agent** (phase 2): ``EdgeAgent`` with one ``OpcUaSource`` (discovery, the same
  subscription), its SQLite outbox (synchronous=FULL) and its uplink to an embedded
  Mosquitto; a collector (``collector.consume.Collector``, threads of the orchestrating
  process) writes into an embedded PostgreSQL and sends the acks that empty the outbox.

Both phases read from the same simulator in the same run. Measured over ``--seconds`` after
``--warmup`` (the agent's discovery, snapshot and first acks are not counted): the agent
process's CPU [share of one core], OPC UA notifications/s received, readings/s, events/s
acknowledged, and the outbox backlog (events stored but not yet acknowledged) every second:
first, last, maximum and its least-squares slope [events/s]; flat means a slope within
+-1 % of the readings rate. The ratio is agent notifications/s over bare-client
notifications/s (goal >= 0.8).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import asyncua
import numpy as np

from bench.bench_simulators import SIGNALS_PER_CHANGE, client_process, simulator_process

GOAL_RATIO = 0.8
SCHEMA = "bench_edge"


# -- the agent process --------------------------------------------------------------------


def agent_process(url: str, broker_url: str, outbox: str, seconds: float, conn: Connection) -> None:
    """Run an EdgeAgent on ``url``; once connected, sample every second for ``seconds``; send samples."""
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    asyncio.run(_agent(url, broker_url, Path(outbox), seconds, conn))


async def _agent(url: str, broker_url: str, outbox: Path, seconds: float, conn: Connection) -> None:
    from robodensity.core.settings import OpcUaSourceSettings
    from robodensity.edge.agent import EdgeAgent
    from robodensity.edge.sources.opcua import OpcUaSource

    settings = _settings(outbox)
    source = OpcUaSource(OpcUaSourceSettings(url=url))
    agent = EdgeAgent(settings, broker_url, sources=[source])
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    t_connect = time.monotonic()
    while source.stats["connects"] < 1:
        await asyncio.sleep(0.1)
    connect_s = time.monotonic() - t_connect
    samples: list[tuple[float, int, int, int, int, int, float]] = []
    t0, cpu0 = time.monotonic(), time.process_time()
    for k in range(1, int(seconds) + 1):
        await asyncio.sleep(max(0.0, t0 + k - time.monotonic()))  # sampling, not synchronisation
        s = agent.stats
        samples.append(
            (
                time.monotonic() - t0,
                source.stats["notifications"],
                s.readings,
                s.stored,
                s.acked_events,
                await asyncio.to_thread(agent.backlog),
                time.process_time() - cpu0,
            )
        )
    stop.set()
    await task
    conn.send((connect_s, samples))


def _settings(outbox: Path):  # type: ignore[no-untyped-def]
    from robodensity.core.settings import load_settings

    return load_settings(
        edge={"agent_id": "bench-edge", "factory_id": "bench", "outbox_path": outbox},
        collector={"share_group": SCHEMA},
    )


# -- orchestration --------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    name: str
    notifications_s: float
    cpu: float
    readings_s: float = float("nan")
    acked_s: float = float("nan")
    backlog_first: float = float("nan")
    backlog_last: float = float("nan")
    backlog_max: float = float("nan")
    backlog_slope: float = float("nan")


def bare_phase(url: str, nodes: list[str], seconds: float, warmup: float) -> Phase:
    ctx = mp.get_context("spawn")
    end, child = ctx.Pipe()
    proc = ctx.Process(target=client_process, args=(url, nodes, child), daemon=True)
    proc.start()
    end.recv()  # subscribed
    time.sleep(warmup + seconds)  # the measured interval itself
    end.send("stop")
    samples = end.recv()
    proc.join(30)
    counted = [s for s in samples if s[0] > warmup]
    dur = counted[-1][0] - counted[0][0] + 1.0
    cpu = (counted[-1][4] - counted[0][4]) / max(1e-9, counted[-1][0] - counted[0][0])
    return Phase("bare asyncua client", sum(s[1] for s in counted) / dur, cpu)


def agent_phase(url: str, broker_url: str, outbox: Path, seconds: float, warmup: float) -> tuple[Phase, float]:
    ctx = mp.get_context("spawn")
    end, child = ctx.Pipe()
    proc = ctx.Process(target=agent_process, args=(url, broker_url, str(outbox), warmup + seconds, child), daemon=True)
    proc.start()
    connect_s, samples = end.recv()
    proc.join(60)
    w = next(i for i, s in enumerate(samples) if s[0] >= warmup)
    a, b = samples[w], samples[-1]
    dur = b[0] - a[0]
    t = np.array([s[0] for s in samples[w:]])
    backlog = np.array([s[5] for s in samples[w:]], dtype=float)
    slope = float(np.polyfit(t, backlog, 1)[0]) if len(t) > 1 else float("nan")
    phase = Phase(
        "edge agent (OpcUaSource)",
        (b[1] - a[1]) / dur,
        (b[6] - a[6]) / dur,
        (b[2] - a[2]) / dur,
        (b[4] - a[4]) / dur,
        backlog[0],
        backlog[-1],
        float(backlog.max()),
        slope,
    )
    print(f"  backlog every second [events]: {' '.join(str(int(x)) for x in backlog)}")
    return phase, connect_s


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--robots", type=int, default=1_000)
    p.add_argument("--seconds", type=float, default=30.0, help="measured seconds per phase")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring, per phase")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from robodensity.app.embedded import embedded_mosquitto, embedded_postgres
    from robodensity.collector.consume import Collector
    from robodensity.storage.db import migrate

    print(
        f"python {platform.python_version()}, asyncua {asyncua.__version__}, {os.cpu_count()} CPUs; "
        f"{args.robots:,} robots x 1 change/s = {args.robots * SIGNALS_PER_CHANGE:,} notifications/s offered"
    )
    ctx = mp.get_context("spawn")
    with (
        tempfile.TemporaryDirectory(prefix="bench-edge-") as tmp,
        embedded_postgres() as pg_url,
        embedded_mosquitto() as broker_url,
    ):
        migrate(pg_url, SCHEMA)
        collector = Collector(_settings(Path(tmp) / "outbox.sqlite"), pg_url, broker_url, SCHEMA)
        collector_stop = threading.Event()
        collector_thread = threading.Thread(target=collector.run, args=(collector_stop,), daemon=True)
        collector_thread.start()

        sim_end, sim_child = ctx.Pipe()
        sim = ctx.Process(target=simulator_process, args=("controller", args.robots, 1e6, sim_child), daemon=True)
        sim.start()
        try:
            _, url, nodes, startup = sim_end.recv()
            print(f"simulator up in {startup:.1f} s at {url}")
            sim_end.send("go")
            bare = bare_phase(url, nodes, args.seconds, args.warmup)
            agent, connect_s = agent_phase(url, broker_url, Path(tmp) / "outbox.sqlite", args.seconds, args.warmup)
            sim_end.send("stop")
            _, sim_samples = sim_end.recv()
        finally:
            sim.join(30)
            if sim.is_alive():
                sim.kill()
            collector_stop.set()
            collector_thread.join(30)
    lag = max(s[2] for s in sim_samples[-5:])
    print(f"agent discovered and subscribed in {connect_s:.1f} s; simulator writer lag at the end {lag:.2f} s")
    print(f"collector: {collector.stats.inserted:,} events inserted, {collector.stats.dead_letters} dead letters")
    print()
    print(
        f"{'phase':<26}{'notif./s':>10}{'ratio':>7}{'CPU':>6}{'readings/s':>12}{'acked/s':>9}"
        f"{'backlog first':>15}{'last':>7}{'max':>7}{'slope [ev/s]':>14}"
    )
    print(f"{bare.name:<26}{bare.notifications_s:>10,.0f}{'1.00':>7}{bare.cpu:>6.0%}")
    ratio = agent.notifications_s / bare.notifications_s if bare.notifications_s else float("nan")
    print(
        f"{agent.name:<26}{agent.notifications_s:>10,.0f}{ratio:>7.2f}{agent.cpu:>6.0%}{agent.readings_s:>12,.0f}"
        f"{agent.acked_s:>9,.0f}{agent.backlog_first:>15,.0f}{agent.backlog_last:>7,.0f}{agent.backlog_max:>7,.0f}"
        f"{agent.backlog_slope:>14,.1f}"
    )
    flat = abs(agent.backlog_slope) <= 0.01 * max(agent.readings_s, 1.0)
    print()
    print(f"backlog flat (|slope| <= 1 % of readings/s): {'yes' if flat else 'NO'}")
    print(f"goal ratio >= {GOAL_RATIO}: {'met' if ratio >= GOAL_RATIO else 'NOT met'}")
    return 0 if ratio >= GOAL_RATIO and flat else 1


if __name__ == "__main__":
    sys.exit(main())
