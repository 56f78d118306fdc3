"""The long reliability profile, run on demand (not in CI).

One hour of a steady stream through edge agent -> Mosquitto -> collector -> PostgreSQL
with the edge's uplink cut for 5, 15 and 30 minutes; at the end every generated event
must be committed once and in order. ``--scale 0.0167`` runs the same profile in about
a minute, to check the harness.

Memory over time: the collector runs in a process of its own; the RSS of the edge agent
(this process) and of the collector is sampled every ``--sample-s`` seconds, and the fitted
trend over the second half must be flat (tests/memory.py).

    .venv/bin/python -m bench.bench_soak            # one hour
    .venv/bin/python -m bench.bench_soak --scale 0.02
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bench.bench_fleet import collector_process
from robodensity.app.embedded import embedded_mosquitto, embedded_postgres
from robodensity.edge.agent import EdgeAgent
from robodensity.storage.db import connect, migrate
from tests.faultproxy import FaultProxy
from tests.memory import RssSampler
from tests.rig import PacedSource, rig_settings, run_scenario

OUTAGES_MIN = (5, 15, 30)
HOUR_S = 3600.0


async def profile(scale: float, rate: float, sample_s: float) -> None:
    total_s = HOUR_S * scale
    outages = [m * 60 * scale for m in OUTAGES_MIN]
    quiet = (total_s - sum(outages)) / (len(outages) + 1)
    n = int(rate * total_s)
    with embedded_postgres() as pg, embedded_mosquitto() as broker, tempfile.TemporaryDirectory() as tmp:
        migrate(pg, "soak")
        port = int(broker.rsplit(":", 1)[1])
        sampler = RssSampler(sample_s)
        with FaultProxy(port) as link, collector_process(pg, broker, "soak") as (collector, _stats), sampler:
            sampler.watch("edge agent", "self")
            sampler.watch("collector", collector.pid or 0)

            async def fault(agent: EdgeAgent, source: PacedSource) -> None:
                for i, outage in enumerate(outages):
                    await asyncio.sleep(quiet)
                    print(f"[{time.strftime('%H:%M:%S')}] outage {i + 1}: {outage:.0f} s, backlog {agent.backlog()}")
                    link.partition()
                    await asyncio.sleep(outage)
                    link.heal()
                    print(f"[{time.strftime('%H:%M:%S')}] healed, backlog {agent.backlog()}")

            settings = rig_settings("soak0000", Path(tmp), max_inflight_batches=64)
            out = await run_scenario(
                f"soak {total_s:.0f} s",
                pg,
                broker,
                "soak",
                Path(tmp),
                fault,
                source=PacedSource(n, rate),
                settings=settings,
                edge_broker_url=f"mqtt://127.0.0.1:{link.port}",
                timeout_s=max(120, total_s),
                collector=False,
            )
        with connect(pg, "soak") as conn:
            row = conn.execute(
                "SELECT bool_and(ok) FROM (SELECT ts >= lag(ts) OVER (PARTITION BY robot_id ORDER BY seq) "
                "IS NOT FALSE AS ok FROM events) x"
            ).fetchone()
            in_order = row[0] if row else None
    out.check()
    print(
        f"generated {out.generated}, committed {out.stored}, distinct {out.distinct}, outbox {out.backlog}, "
        f"in order per robot: {in_order}, re-sent batches {out.resent_batches}, wall {out.seconds} s"
    )
    for name, series in sampler.series.items():
        print(f"RSS {name}: {series.summary()}")
    for series in sampler.series.values():
        series.check_flat()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="1.0 = one hour; 0.02 = 72 s")
    parser.add_argument("--rate", type=float, default=50.0, help="events per second")
    parser.add_argument("--sample-s", type=float, default=10.0, help="RSS sampling period")
    args = parser.parse_args()
    asyncio.run(profile(args.scale, args.rate, args.sample_s))


if __name__ == "__main__":
    main()
