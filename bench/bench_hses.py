"""Benchmark: Yaskawa HSES robots per agent process at a 1 s poll, against a bare asyncio datagram loop.

Run on demand (not part of the tests); ``./dev bench sources`` runs it after the Modbus part::

    ./dev bench hses                                   # 500 robots, 3 x 20 s per phase
    .venv/bin/python -m bench.bench_hses --robots 1000 --seconds 30

Processes (multiprocessing, spawn), all on this machine:

- **simulator**: ``--robots`` ``HsesRobot`` controllers, one UDP port each, all EXECUTING.
- **bare loop** (phase 1, the baseline): one connected asyncio datagram endpoint per robot
  sending the 0x72 status request (a fixed 32-byte datagram, the request id counting up) once
  a second with the same +-10 % jitter, awaiting the reply, checking its length and id: no
  retries, no parsing, nothing else.
- **edge sources** (phase 2): one ``HsesSource`` per robot (1 s poll, jitter 0.1): the same
  request, the reply parsed, the state derived, change detection (the robots do not change
  state, so as on most polls of a real shop floor no reading is yielded).

Both phases read the same simulator, each in its own process, measured over ``--seconds``
after ``--warmup``, ``--repeat`` times alternating (the best run of each counts): robot reads/s,
the process's CPU [share of one core], CPU per read [us], the capacity at a 1 s poll on one core
(reads/s over CPU share), and the ratio of the bare loop's CPU per read over the sources'.
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

REQUEST = bytes.fromhex("5945524320000000030100000000000039393939393939397200010000010000")
"""0x72 status, instance 1, all attributes (request id at byte 11), from the protocol reference."""


def _simulate(n: int, ports: Any, ready: Any, stop: Any) -> None:
    from robodensity.core.wire import State
    from robodensity.simulators.hses_robot import HsesRobot

    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            for i in range(n):
                robot = await stack.enter_async_context(HsesRobot(f"B{i:04d}"))
                robot.set_state(State.EXECUTING)
                ports.append(robot.port)
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.2)

    asyncio.run(main())


class _Bare(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.waiter: asyncio.Future[bytes] | None = None

    def datagram_received(self, data: bytes, addr: object) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(data)


async def _bare(ports: list[int], seconds: float, warmup: float) -> dict[str, float]:
    window = Window()
    loop = asyncio.get_running_loop()

    async def one(port: int) -> None:
        transport, proto = await loop.create_datagram_endpoint(_Bare, remote_addr=("127.0.0.1", port))
        rng = random.Random(port)
        next_at = time.monotonic() + rng.uniform(0, 1.0)
        rid = 0
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        while True:
            request = bytearray(REQUEST)
            request[11] = rid = (rid + 1) & 0xFF
            proto.waiter = loop.create_future()
            transport.sendto(bytes(request))
            with contextlib.suppress(TimeoutError):
                reply = await asyncio.wait_for(proto.waiter, 0.8)
                if len(reply) >= 40 and reply[11] == rid:
                    window.read()
            next_at = await window.next_poll(next_at, rng)

    return await window.measure([asyncio.create_task(one(p)) for p in ports], seconds, warmup)


async def _sources(ports: list[int], seconds: float, warmup: float) -> dict[str, float]:
    from robodensity.core.settings_native import HsesSourceSettings
    from robodensity.edge.sources.hses import HsesSource

    sources = [
        HsesSource(HsesSourceSettings(host="127.0.0.1", port=p, serial=f"B{i:04d}", poll_s=1.0, jitter=0.1))
        for i, p in enumerate(ports)
    ]

    async def drain(source: HsesSource) -> None:
        await asyncio.sleep(random.uniform(0, 1.0))  # spread the first polls, as the bare loop does
        async with source:
            async for _ in source:
                pass

    tasks = [asyncio.create_task(drain(s)) for s in sources]
    await asyncio.sleep(warmup)
    polls0 = sum(s.stats["polls"] for s in sources)
    lost0 = sum(s.stats["losses"] for s in sources)
    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    reads = sum(s.stats["polls"] for s in sources) - polls0
    lost = sum(s.stats["losses"] for s in sources) - lost0
    for t in tasks:
        t.cancel()
    return {"reads": reads, "cpu_s": cpu, "wall_s": wall, "overruns": lost}


def _phase(kind: str, ports: list[int], seconds: float, warmup: float, out: Any) -> None:
    run = _bare if kind == "bare" else _sources
    out.put((kind, asyncio.run(run(ports, seconds, warmup))))


def run(robots: int, seconds: float, warmup: float, repeat: int) -> None:
    """Both phases, alternating ``repeat`` times; prints a Markdown table."""
    ctx = mp.get_context("spawn")
    manager = ctx.Manager()
    ports = manager.list()
    ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    sim = ctx.Process(target=_simulate, args=(robots, ports, ready, stop), daemon=True)
    sim.start()
    if not ready.wait(120):
        raise SystemExit("the simulator did not start")
    port_list = list(ports)
    results: dict[str, dict[str, float]] = {}
    try:
        for _ in range(repeat):
            for kind in ("bare", "sources"):
                p = ctx.Process(target=_phase, args=(kind, port_list, seconds, warmup, out))
                p.start()
                got_kind, got = out.get(timeout=seconds + warmup + 120)
                p.join(30)
                best = results.get(got_kind)
                if best is None or got["cpu_s"] / max(got["reads"], 1) < best["cpu_s"] / max(best["reads"], 1):
                    results[got_kind] = got
    finally:
        stop.set()
        sim.join(10)
        manager.shutdown()
    print(f"Yaskawa HSES, {robots} robots (one UDP endpoint each), 1 s poll, {seconds:g} s measured, best of {repeat}")
    print(f"{date.today()} {platform.node()} Python {platform.python_version()} (cores shared with the simulator)")
    header = "| phase | robot reads/s | CPU [share of 1 core] | CPU per read [us] | robots at 1 s on one core |"
    print(header + " late/lost |")
    print("|---|---:|---:|---:|---:|---:|")
    per_read = {}
    for kind, r in results.items():
        rate = r["reads"] / r["wall_s"]
        share = r["cpu_s"] / r["wall_s"]
        per_read[kind] = r["cpu_s"] / max(r["reads"], 1) * 1e6
        print(
            f"| {kind} | {rate:,.0f} | {share:.2f} | {per_read[kind]:.0f} | {rate / share:,.0f} | {r['overruns']:.0f} |"
        )
    print(f"ratio (bare CPU per read / sources CPU per read): {per_read['bare'] / per_read['sources']:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--robots", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each phase, alternating; the best counts")
    args = ap.parse_args()
    run(args.robots, args.seconds, args.warmup, args.repeat)


if __name__ == "__main__":
    main()
