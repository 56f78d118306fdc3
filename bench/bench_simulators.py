"""Benchmark: how many robots one simulator process emulates at 1 Hz over OPC UA.

Run on demand (not part of the tests)::

    .venv/bin/python -m bench.bench_simulators                        # N = 1,000 2,000 3,000 4,000 6,000 8,000
    .venv/bin/python -m bench.bench_simulators --robots 2000 --seconds 20
    .venv/bin/python -m bench.bench_simulators --robots 3000 --robots 5000 --only controller

For each N, two kinds of server run in turn, each in a process of its own (spawn), with one
subscribed asyncua client in another process:

- **controller**: ``simulators.opcua_controller.OpcUaController`` with N OPC 40010 robots;
  every second each robot changes state (EXECUTING <-> IDLE, ``set_state``) and its counters
  (``set_counters``: TotalPowerOnTime +1 s, TotalEnergyConsumption). The controller writes
  only the signals that change: OnPath plus the two counters, 3 notifications per change.
  The client monitors all 9 signals of each robot, as the edge agent does.
- **bare**: a plain ``asyncua.Server`` with N objects of 3 plain variables (Boolean, String,
  Double) made with asyncua's own API, written with ``Server.write_attribute_value`` at the
  same times: the same 3 notifications per change, without our address space or code.

Changes are spread evenly over each second (robot i at i/N s). SourceTimestamp is the wall
time the change was due, so the client's lag (receive - SourceTimestamp) includes the
writer's. Per N and kind the table shows achieved changes/s, notifications/s the client
received, the writer's lag (how late the last writes of the run were), the client's lag in
the first and last two seconds, CPU of both processes, and whether it kept up: achieved
>= 97 % of N changes/s, client lag at the end < 1 s and not growing (< 0.5 s more than at
the start). The first ``--warmup`` seconds are not counted. Start-up is reported, not timed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import math
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Any, cast

import asyncua
from asyncua import Client, Server, ua

GOAL_ROBOTS = 2_000
KEEP_UP_RATIO = 0.97
MAX_LAG_S = 1.0
MAX_LAG_GROWTH_S = 0.5
PUBLISHING_INTERVAL_MS = 250
SIGNALS_PER_CHANGE = 3  # OnPath + TotalPowerOnTime + TotalEnergyConsumption


# -- the simulator process ----------------------------------------------------------------


class _Writer:
    """One change of one robot: what each kind of server does every second per robot."""

    async def change(self, i: int, second: int, ts: datetime) -> None:
        raise NotImplementedError


class _ControllerWriter(_Writer):
    def __init__(self, ctl: Any, keys: Sequence[str]) -> None:
        from robodensity.core.wire import State

        self.ctl, self.keys = ctl, keys
        self.states = (State.EXECUTING, State.IDLE)

    async def change(self, i: int, second: int, ts: datetime) -> None:
        key = self.keys[i]
        await self.ctl.set_state(key, self.states[second % 2], ts)
        await self.ctl.set_counters(key, ts, power_on_s=float(second + 1), energy_wh=0.5 * (second + 1))


class _BareWriter(_Writer):
    def __init__(self, server: Server, nodes: Sequence[tuple[ua.NodeId, ua.NodeId, ua.NodeId]]) -> None:
        self.server, self.nodes = server, nodes

    async def change(self, i: int, second: int, ts: datetime) -> None:
        state, power, energy = self.nodes[i]
        now = datetime.now(UTC)
        for node, value in (
            (state, ua.Variant(second % 2 == 0, ua.VariantType.Boolean)),
            (power, ua.Variant(f"PT{second + 1}S", ua.VariantType.String)),
            (energy, ua.Variant(0.5 * (second + 1), ua.VariantType.Double)),
        ):
            dv = ua.DataValue(value, SourceTimestamp=cast(Any, ts), ServerTimestamp=cast(Any, now))
            await self.server.write_attribute_value(node, dv)


async def _start_controller(n: int) -> tuple[Any, _Writer, list[str]]:
    from robodensity.simulators.opcua_controller import OpcUaController, SimRobot
    from robodensity.simulators.opcua_controller.model import (
        STATE_SIGNALS,
        TOTAL_ENERGY_CONSUMPTION,
        TOTAL_POWER_ON_TIME,
    )

    robots = [SimRobot("ABB", f"IRB-{i:05d}", "IRB 6700") for i in range(n)]
    ctl = OpcUaController(robots, name="bench")
    await ctl.start()
    monitored = (*STATE_SIGNALS, TOTAL_POWER_ON_TIME, TOTAL_ENERGY_CONSUMPTION)
    nodes = [ctl._nodes[r.key][s].to_string() for r in robots for s in monitored]
    return ctl, _ControllerWriter(ctl, [r.key for r in robots]), nodes


async def _start_bare(n: int) -> tuple[Any, _Writer, list[str]]:
    from robodensity.simulators.opcua_controller import _free_port

    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{_free_port('127.0.0.1')}")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace("urn:bench:bare")
    written: list[tuple[ua.NodeId, ua.NodeId, ua.NodeId]] = []
    folder = None
    for i in range(n):
        if i % 50 == 0:  # asyncua scans a parent's references per child: keep parents narrow
            folder = await server.nodes.objects.add_folder(ns, f"Group{i // 50}")
        assert folder is not None
        robot = await folder.add_object(ns, f"Robot{i}")
        state = await robot.add_variable(ns, "Running", False, ua.VariantType.Boolean)
        power = await robot.add_variable(ns, "PowerOn", "PT0S", ua.VariantType.String)
        energy = await robot.add_variable(ns, "Energy", 0.0, ua.VariantType.Double)
        written.append((state.nodeid, power.nodeid, energy.nodeid))
    await server.start()
    nodes = [node.to_string() for triple in written for node in triple]
    return server, _BareWriter(server, written), nodes


def _quiet() -> None:
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("asyncua").setLevel(logging.ERROR)


def simulator_process(kind: str, n: int, seconds: float, conn: Connection) -> None:
    """Start a server of ``kind`` with ``n`` robots, wait for "go", run, send per-second samples."""
    _quiet()
    asyncio.run(_simulate(kind, n, seconds, conn))


async def _simulate(kind: str, n: int, seconds: float, conn: Connection) -> None:
    t0 = time.perf_counter()
    server, writer, nodes = await (_start_controller(n) if kind == "controller" else _start_bare(n))
    gc.collect()
    gc.freeze()  # the address space lives as long as the process: keep GC passes off it
    url = server.url if kind == "controller" else server.endpoint.geturl()
    conn.send(("ready", url, nodes, time.perf_counter() - t0))
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, conn.recv)  # "go": the client has subscribed
    stop = asyncio.Event()
    # "stop" ends the run early (bench_edge) or, after "done", lets the server go (here).
    stopper = loop.run_in_executor(None, conn.recv)
    stopper.add_done_callback(lambda _: stop.set())
    try:
        samples = await _pace(writer, n, seconds, stop)
        conn.send(("done", samples))
        await stop.wait()
    finally:
        await server.stop()


async def _pace(writer: _Writer, n: int, seconds: float, stop: asyncio.Event) -> list[tuple[float, int, float, float]]:
    """Change robot i at ``start + second + i/n``; per second of the run: (t, changes, lag, cpu)."""
    total = int(n * seconds)
    start_mono = time.monotonic() + 0.2
    start_wall = time.time() + 0.2
    samples: list[tuple[float, int, float, float]] = []
    done, window_done, window_lag, next_sample = 0, 0, 0.0, 1.0
    cpu0 = time.process_time()
    while done < total and not stop.is_set():
        now = time.monotonic()
        elapsed = now - start_mono
        while elapsed >= next_sample:
            samples.append((next_sample, window_done, window_lag, time.process_time() - cpu0))
            window_done, window_lag, next_sample = 0, 0.0, next_sample + 1.0
        due = min(total, math.floor(elapsed * n) + 1) if elapsed >= 0 else 0
        if done >= due:
            await asyncio.sleep(max(0.0, (done / n) - elapsed))
            continue
        window_lag = max(window_lag, elapsed - done / n)
        # At most 256 changes back to back: the server's publish tasks must run in between.
        for k in range(done, min(due, done + 256)):
            second, i = divmod(k, n)
            ts = datetime.fromtimestamp(start_wall + k / n, UTC)
            await writer.change(i, second, ts)
        window_done += min(due, done + 256) - done
        done = min(due, done + 256)
        await asyncio.sleep(0)
    samples.append((time.monotonic() - start_mono, window_done, window_lag, time.process_time() - cpu0))
    return samples


# -- the client process -------------------------------------------------------------------


def client_process(url: str, nodes: Sequence[str], conn: Connection) -> None:
    """Subscribe to ``nodes``; send per-second (t, notifications, mean lag, max lag, cpu) on "stop"."""
    _quiet()
    asyncio.run(_client(url, nodes, conn))


async def _client(url: str, nodes: Sequence[str], conn: Connection) -> None:
    from robodensity.edge.sources.opcua import monitored_item  # the same request the edge makes, nothing else of it

    client = Client(url, timeout=30)
    await client.connect()
    t_start = time.monotonic()
    window: dict[str, float] = {"n": 0, "lag_sum": 0.0, "lag_max": 0.0}
    samples: list[tuple[float, int, float, float, float]] = []
    cpu0 = time.process_time()

    async def on_publish(result: ua.PublishResult) -> None:
        now = datetime.now(UTC)
        for data in result.NotificationMessage.NotificationData or []:
            if isinstance(data, ua.DataChangeNotification):
                for item in data.MonitoredItems:
                    ts = item.Value.SourceTimestamp
                    if ts is not None:
                        lag = (now - (ts if ts.tzinfo else ts.replace(tzinfo=UTC))).total_seconds()
                        window["lag_sum"] += lag
                        window["lag_max"] = max(window["lag_max"], lag)
                    window["n"] += 1

    params = ua.CreateSubscriptionParameters()
    params.RequestedPublishingInterval = float(PUBLISHING_INTERVAL_MS)
    params.RequestedMaxKeepAliveCount = 20
    params.RequestedLifetimeCount = 2400
    params.MaxNotificationsPerPublish = 0
    params.PublishingEnabled = True
    result = await client.uaclient.create_subscription(params, on_publish)
    node_ids = [ua.NodeId.from_string(s) for s in nodes]
    for start in range(0, len(node_ids), 1000):
        items = [monitored_item(node_ids[h], h, 1000) for h in range(start, min(start + 1000, len(node_ids)))]
        cp = ua.CreateMonitoredItemsParameters()
        cp.SubscriptionId = result.SubscriptionId
        cp.ItemsToCreate = items
        cp.TimestampsToReturn = ua.TimestampsToReturn.Both
        await client.uaclient.create_monitored_items(cp)
    # The initial values of every item arrive first; let them pass before counting.
    await asyncio.sleep(2 * PUBLISHING_INTERVAL_MS / 1000)  # not synchronisation: a settling time
    conn.send("subscribed")
    loop = asyncio.get_running_loop()
    stop = loop.run_in_executor(None, conn.recv)
    t_start = time.monotonic()
    window.update(n=0, lag_sum=0.0, lag_max=0.0)
    cpu0 = time.process_time()
    while not stop.done():
        await asyncio.wait([stop], timeout=1.0)
        n = int(window["n"])
        mean = window["lag_sum"] / n if n else 0.0
        samples.append((time.monotonic() - t_start, n, mean, window["lag_max"], time.process_time() - cpu0))
        window.update(n=0, lag_sum=0.0, lag_max=0.0)
    await client.disconnect()
    conn.send(samples)


# -- orchestration ----------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    kind: str
    robots: int
    startup_s: float
    changes_s: float
    notifications_s: float
    writer_lag_s: float
    lag_first_s: float
    lag_last_s: float
    server_cpu: float
    client_cpu: float

    @property
    def kept_up(self) -> bool:
        return (
            self.changes_s >= KEEP_UP_RATIO * self.robots
            and self.lag_last_s < MAX_LAG_S
            and self.lag_last_s - self.lag_first_s < MAX_LAG_GROWTH_S
        )


def run_one(kind: str, n: int, seconds: float, warmup: float) -> Result:
    ctx = mp.get_context("spawn")
    sim_end, sim_conn = ctx.Pipe()
    sim = ctx.Process(target=simulator_process, args=(kind, n, seconds + warmup, sim_conn), daemon=True)
    sim.start()
    client = None
    try:
        _, url, nodes, startup = sim_end.recv()
        cli_end, cli_conn = ctx.Pipe()
        client = ctx.Process(target=client_process, args=(url, nodes, cli_conn), daemon=True)
        client.start()
        cli_end.recv()  # subscribed
        sim_end.send("go")
        _, sim_samples = sim_end.recv()
        cli_end.send("stop")
        cli_samples = cli_end.recv()
        sim_end.send("stop")
    finally:
        for proc in (client, sim):
            if proc is not None:
                proc.join(30)
                if proc.is_alive():
                    proc.kill()
    return summarise(kind, n, startup, warmup, sim_samples, cli_samples)


def summarise(
    kind: str,
    n: int,
    startup: float,
    warmup: float,
    sim: list[tuple[float, int, float, float]],
    cli: list[tuple[float, int, float, float, float]],
) -> Result:
    counted = [s for s in sim if s[0] > warmup]
    dur = counted[-1][0] - warmup if counted else 1.0
    changes = sum(s[1] for s in counted)
    cpu = (counted[-1][3] - next(s[3] for s in sim if s[0] >= warmup)) / dur if counted else 0.0
    lagged = [c for c in cli if c[0] > warmup and c[1]]
    notes = sum(c[1] for c in lagged)
    cdur = (lagged[-1][0] - lagged[0][0] + 1.0) if lagged else 1.0
    first = statistics.fmean(c[2] for c in lagged[:2]) if lagged else math.inf
    last = statistics.fmean(c[2] for c in lagged[-2:]) if lagged else math.inf
    ccpu = (lagged[-1][4] - lagged[0][4]) / max(1e-9, lagged[-1][0] - lagged[0][0]) if len(lagged) > 1 else 0.0
    return Result(
        kind,
        n,
        startup,
        changes / dur,
        notes / cdur,
        max((s[2] for s in sim[-2:]), default=0.0),
        first,
        last,
        cpu,
        ccpu,
    )


def print_row(r: Result) -> None:
    print(
        f"{r.kind:<11}{r.robots:>7,}{r.startup_s:>10.1f}{r.changes_s:>12,.0f}{r.notifications_s:>13,.0f}"
        f"{r.writer_lag_s:>11.2f}{r.lag_first_s:>11.2f}{r.lag_last_s:>10.2f}"
        f"{r.server_cpu:>9.0%}{r.client_cpu:>9.0%}{'yes' if r.kept_up else 'NO':>9}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--robots", type=int, action="append", help="N to try (repeatable); default a ladder")
    p.add_argument("--seconds", type=float, default=12.0, help="measured seconds per N and kind")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    p.add_argument("--only", choices=["controller", "bare"], action="append", help="run only these kinds")
    args = p.parse_args(argv)
    ladder = sorted(args.robots or [1_000, 2_000, 3_000, 4_000, 6_000, 8_000])
    kinds = args.only or ["controller", "bare"]
    print(
        f"python {platform.python_version()}, asyncua {asyncua.__version__}, {os.cpu_count()} CPUs; "
        f"1 change/robot/s = {SIGNALS_PER_CHANGE} notifications; "
        f"{args.seconds:.0f} s measured after {args.warmup:.0f} s"
    )
    print()
    print(
        f"{'kind':<11}{'robots':>7}{'start [s]':>10}{'changes/s':>12}{'notif./s':>13}"
        f"{'write lag':>11}{'lag first':>11}{'lag last':>10}{'srv CPU':>9}{'cli CPU':>9}{'kept up':>9}"
    )
    results: list[Result] = []
    behind: set[str] = set()
    for n in ladder:
        for kind in kinds:
            if kind in behind:
                continue
            r = run_one(kind, n, args.seconds, args.warmup)
            results.append(r)
            print_row(r)
            if not r.kept_up:
                behind.add(kind)
        if behind >= set(kinds):
            break
    print()
    best = {k: max((r.robots for r in results if r.kind == k and r.kept_up), default=0) for k in kinds}
    for k in kinds:
        print(f"{k}: kept up with at most {best[k]:,} robots of those tried")
    if "controller" in best and "bare" in best and best["bare"]:
        print(f"controller / bare: {best['controller'] / best['bare']:.2f}")
    if "controller" in best and max(ladder) >= GOAL_ROBOTS:
        met = best["controller"] >= GOAL_ROBOTS
        print(f"goal >= {GOAL_ROBOTS:,} robots per simulator process: {'met' if met else 'NOT met'}")
        return 0 if met else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
