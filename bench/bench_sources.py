"""Benchmark: robots per agent process at a 1 s poll, Modbus TCP, against the bare pymodbus loop.

Run on demand (not part of the tests)::

    ./dev bench sources                                   # 500 robots on 20 connections, 3 x 20 s per phase
    .venv/bin/python -m bench.bench_sources --robots 1000 --connections 40 --seconds 30

Processes (multiprocessing, spawn), all on this machine:

- **simulator**: ``--connections`` ``ModbusController`` servers (ESTUN layout), the robots
  spread over their unit ids.
- **bare loop** (phase 1, the baseline): one pymodbus ``AsyncModbusTcpClient`` per connection
  reading each unit's block (FC03, 40001-40019: what the estun profile reads) once a second,
  with the same +-10 % jitter, and nothing else.
- **edge sources** (phase 2): one ``ModbusSource`` per connection (estun profile, 1 s poll,
  jitter 0.1): the same reads, decoded, the rule table evaluated, change detection. The
  robots do not change state, so (as on a real shop floor, most polls) no reading is yielded.

Both phases read the same simulator in the same run, each in its own process, measured over
``--seconds`` after ``--warmup``, ``--repeat`` times alternating (the best run of each counts, as
the machine's other load comes and goes): robot reads/s, the process's CPU [share of one core], CPU per
read [us], and the capacity at a 1 s poll on one core (reads/s over CPU share). The ratio is
the bare loop's CPU per read over the sources' (goal >= 0.8).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import platform
import random
import time
from datetime import date
from typing import Any

from bench.pacing import Window

ESTUN_BLOCK = (0, 19)  # offset, count: the estun profile's one block


def _layout(robots: int, connections: int) -> list[int]:
    """Units per connection."""
    return [robots // connections + (1 if i < robots % connections else 0) for i in range(connections)]


def _simulate(ports: list[int], units: list[int], ready: Any, stop: Any) -> None:
    import logging

    from robodensity.simulators.modbus_robot import ModbusController, estun_robots

    logging.getLogger("pymodbus").setLevel(logging.WARNING)

    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            for i, (port, n) in enumerate(zip(ports, units)):
                await stack.enter_async_context(ModbusController(estun_robots(n, prefix=f"C{i:03d}-"), port=port))
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.2)

    asyncio.run(main())


async def _bare(ports: list[int], units: list[int], seconds: float, warmup: float) -> dict[str, float]:
    from pymodbus.client import AsyncModbusTcpClient

    window = Window()

    async def one(port: int, n: int) -> None:
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2.0, retries=0, reconnect_delay=0)
        await client.connect()
        rng = random.Random(port)
        next_at = time.monotonic() + rng.uniform(0, 0.1)
        while True:
            for unit in range(1, n + 1):
                reply = await client.read_holding_registers(ESTUN_BLOCK[0], count=ESTUN_BLOCK[1], device_id=unit)
                if not reply.isError():
                    window.read()
            next_at = await window.next_poll(next_at, rng)

    return await window.measure([asyncio.create_task(one(p, n)) for p, n in zip(ports, units)], seconds, warmup)


async def _sources(ports: list[int], units: list[int], seconds: float, warmup: float) -> dict[str, float]:
    from robodensity.core.settings_modbus import ModbusSourceSettings
    from robodensity.edge.sources.modbus.source import ModbusSource

    sources = [
        ModbusSource(
            ModbusSourceSettings(
                url=f"modbus://127.0.0.1:{port}",
                profile="estun",
                robots=[{"unit": u, "serial": f"C{i:03d}-{u:04d}"} for u in range(1, n + 1)],
                poll_interval_s=1.0,
                jitter=0.1,
            )
        )
        for i, (port, n) in enumerate(zip(ports, units))
    ]

    async def drain(source: ModbusSource) -> None:
        async with source:
            async for _ in source:
                pass

    tasks = [asyncio.create_task(drain(s)) for s in sources]
    await asyncio.sleep(warmup)
    polls0 = [s.polls for s in sources]
    over0 = sum(s.overruns for s in sources)
    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    reads = sum((s.polls - p0) * len(s.robots) for s, p0 in zip(sources, polls0))
    over = sum(s.overruns for s in sources) - over0
    for t in tasks:
        t.cancel()
    return {"reads": reads, "cpu_s": cpu, "wall_s": wall, "overruns": over}


def _phase(kind: str, ports: list[int], units: list[int], seconds: float, warmup: float, out: Any) -> None:
    run = _bare if kind == "bare" else _sources
    out.put((kind, asyncio.run(run(ports, units, seconds, warmup))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--robots", type=int, default=500)
    ap.add_argument("--connections", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each phase, alternating; the best counts")
    args = ap.parse_args()

    from robodensity.simulators.modbus_robot import free_port

    ctx = mp.get_context("spawn")
    units = _layout(args.robots, args.connections)
    ports = [free_port() for _ in units]
    ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    sim = ctx.Process(target=_simulate, args=(ports, units, ready, stop), daemon=True)
    sim.start()
    if not ready.wait(60):
        raise SystemExit("the simulator did not start")
    results: dict[str, dict[str, float]] = {}
    try:
        for _ in range(args.repeat):  # alternating, so both see the same load; the best run of each counts
            for kind in ("bare", "sources"):
                p = ctx.Process(target=_phase, args=(kind, ports, units, args.seconds, args.warmup, out))
                p.start()
                got_kind, got = out.get(timeout=args.seconds + args.warmup + 60)
                p.join(30)
                best = results.get(got_kind)
                if best is None or got["cpu_s"] / max(got["reads"], 1) < best["cpu_s"] / max(best["reads"], 1):
                    results[got_kind] = got
    finally:
        stop.set()
        sim.join(10)
    print(
        f"Modbus TCP, {args.robots} robots on {args.connections} connections, 1 s poll, "
        f"{args.seconds:g} s measured, best of {args.repeat} alternating runs"
    )
    print(f"{date.today()} {platform.node()} Python {platform.python_version()} (cores shared with the simulator)")
    print(
        "| phase | robot reads/s | CPU [share of 1 core] | CPU per read [us] | robots at 1 s on one core | late polls |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    per_read = {}
    for kind, r in results.items():
        rate = r["reads"] / r["wall_s"]
        share = r["cpu_s"] / r["wall_s"]
        per_read[kind] = r["cpu_s"] / max(r["reads"], 1) * 1e6
        print(
            f"| {kind} | {rate:,.0f} | {share:.2f} | {per_read[kind]:.0f} | {rate / share:,.0f} | {r['overruns']:.0f} |"
        )
    ratio = per_read["bare"] / per_read["sources"]
    print(f"ratio (bare CPU per read / sources CPU per read): {ratio:.2f} (goal >= 0.8)")
    print()
    from bench import bench_hses  # the same measure for Yaskawa HSES (UDP)

    bench_hses.run(args.robots, args.seconds, args.warmup, args.repeat)


if __name__ == "__main__":
    main()
