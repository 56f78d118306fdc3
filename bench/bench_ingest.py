"""Benchmark: events/s from MQTT through one collector process into PostgreSQL.

Run on demand (not part of the tests)::

    .venv/bin/python -m bench.bench_ingest                      # 1,000,000 events, 20,000/s latency phase
    .venv/bin/python -m bench.bench_ingest --events 200000 --latency-s 10
    .venv/bin/python -m bench.bench_ingest --profile            # cProfile of the collector's threads

It starts a throwaway PostgreSQL and Mosquitto (robodensity.app.embedded), a registry of
``--robots`` robots in ``--agents`` factories, and one collector (threads of this process).
A separate publisher process (multiprocessing, spawn) generates wire-contract batches of
``--batch`` events -- generation is not timed -- and then:

1. **throughput**: publishes all ``--events`` as fast as MQTT takes them; sustained
   events/s = events / (the interval stage done with the last of them - first publish), and
   also up to the last commit;
2. **raw COPY ceiling**: the same rows, read back from ``events``, binary-COPYed from Python
   into a table of the same columns without indexes, in the same run on the same server;
   for scale, the same rows COPYed into a staging table and INSERTed ... ON CONFLICT DO
   NOTHING into a table keyed by (agent, seq) (the issue's second reference figure), and
   ``Writer.flush`` alone on one connection (the collector's SQL: staging COPY, keys,
   events, acks, then the interval stage; decoding not timed, no MQTT) into a fresh schema;
3. **latency**: publishes paced at ``--rate`` events/s for ``--latency-s`` seconds; latency
   of each message = collector commit (the moment it acks) - publish.

The embedded PostgreSQL runs with fsync and synchronous_commit off (it is a throwaway
cluster): the figures are the software's, not a disk's.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import multiprocessing as mp
import os
import platform
import pstats
import random
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil
import psycopg

from robodensity.app.embedded import embedded_mosquitto, embedded_postgres
from robodensity.collector.consume import DEFAULT_WRITERS, Collector
from robodensity.collector.validate import Incoming
from robodensity.collector.write import COPY_TYPES, EVENT_COLUMNS, Committed, Writer
from robodensity.core import wire
from robodensity.core.settings import load_settings
from robodensity.storage.db import connect, migrate

SCHEMA = "bench"
GOAL_EVENTS_S = 100_000
GOAL_CEILING_RATIO = 0.5
GOAL_P50_S = 0.5
GOAL_P99_S = 2.0


@dataclass(frozen=True)
class Spec:
    events: int
    batch: int
    agents: int
    robots: int
    first_seq: int = 1
    seed: int = 1
    base: datetime | None = None
    """Timestamp of the first event; events are 10 ms apart."""


# ---------------------------------------------------------------- publisher process


def make_payloads(spec: Spec) -> list[tuple[str, str, int, bytes]]:
    """(factory, agent, message number, payload) round-robin over agents, ``spec.batch`` events each.

    Each robot changes state every ~10 of its events; a fifth of the events are counters.
    Timestamps run up to now, spaced so that they never lie in the future.
    """
    rng = random.Random(spec.seed)
    per_agent = spec.robots // spec.agents
    n_messages = spec.events // spec.batch
    base = spec.base or datetime.now(UTC) - timedelta(seconds=spec.events // 100 + 3600)
    states = [s.value for s in wire.State if s is not wire.State.OFFLINE]
    current: dict[tuple[int, int], str] = {}
    out = []
    for m in range(n_messages):
        a = m % spec.agents
        k = m // spec.agents
        factory, agent = f"f{a:04d}", f"a{a:04d}"
        events = []
        for i in range(spec.batch):
            seq = spec.first_seq + k * spec.batch + i
            r = rng.randrange(per_agent)
            ts = wire.format_ts(base + timedelta(milliseconds=10 * (m * spec.batch + i)))
            robot = {"manufacturer": "KUKA", "serial": f"S{a:04d}-{r:03d}"}
            if i % 5 == 4:
                events.append(
                    {"seq": seq, "robot": robot, "ts": ts, "type": "counter", "counter": "cycles", "value": float(seq)}
                )
            else:
                key = (a, r)
                if key not in current or rng.random() < 0.1:
                    current[key] = rng.choice(states)
                events.append({"seq": seq, "robot": robot, "ts": ts, "type": "state", "state": current[key]})
        doc = {"v": wire.VERSION, "agent": agent, "factory": factory, "events": events}
        out.append((factory, agent, k, json.dumps(doc, separators=(",", ":")).encode()))
    return out


def publisher_main(broker_url: str, spec: Spec, rate: float | None, ready: Any, go: Any, results: Any) -> None:
    """Publish the spec's payloads (paced at ``rate`` events/s when given); report publish times."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    payloads = make_payloads(spec)
    host, port = broker_url.removeprefix("mqtt://").split(":")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{os.getpid()}", protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(host, int(port))
    client.loop_start()
    ready.set()
    go.wait()
    times: list[tuple[str, int, float]] = []
    infos = []
    t0 = time.monotonic()
    per_message = spec.batch / rate if rate else 0.0
    for i, (factory, agent, k, payload) in enumerate(payloads):
        if rate:
            delay = t0 + i * per_message - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        times.append((agent, k, time.time()))
        infos.append(client.publish(wire.uplink_topic(factory, agent), payload, qos=1))
    for info in infos:
        info.wait_for_publish(120)
    client.loop_stop()
    client.disconnect()
    results.put(times)


def run_publisher(broker_url: str, spec: Spec, rate: float | None = None) -> tuple[Any, Any, Any, Any]:
    ctx = mp.get_context("spawn")
    ready, go, results = ctx.Event(), ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=publisher_main, args=(broker_url, spec, rate, ready, go, results), daemon=True)
    proc.start()
    if not ready.wait(600):
        raise RuntimeError("the publisher did not get ready")
    return proc, go, results, ready


# ---------------------------------------------------------------- database side


def load_registry(db_url: str, spec: Spec, schema: str = SCHEMA, regions: bool = True) -> None:
    per_agent = spec.robots // spec.agents
    with connect(db_url, schema) as conn, conn.transaction():
        if regions:
            conn.execute("INSERT INTO regions (code, name) VALUES ('320000', 'bench')")
            conn.execute("INSERT INTO industries (code, name) VALUES ('36', 'bench')")
        conn.execute(
            "INSERT INTO factories SELECT 'f' || lpad(a::text, 4, '0'), 'bench', '320000', '36' "
            "FROM generate_series(0, %s - 1) a",
            (spec.agents,),
        )
        conn.execute(
            "INSERT INTO robots (manufacturer, serial, commissioned) "
            "SELECT 'KUKA', 'S' || lpad(a::text, 4, '0') || '-' || lpad(r::text, 3, '0'), '2020-01-01' "
            "FROM generate_series(0, %s - 1) a, generate_series(0, %s - 1) r",
            (spec.agents, per_agent),
        )
        conn.execute("INSERT INTO assignments SELECT robot_id, 'f' || substr(serial, 2, 4), '2020-01-01' FROM robots")


def copy_ceiling(db_url: str, limit: int) -> tuple[float, float, int]:
    """Rows/s of a binary COPY of stored events (same rows, same columns) into an index-free
    table; and rows/s of the same COPY into a staging table followed by INSERT ... ON CONFLICT
    DO NOTHING into a table with the (agent_id, seq) primary key."""
    cols = ", ".join(EVENT_COLUMNS)
    with connect(db_url, SCHEMA) as conn:
        rows = conn.execute(f"SELECT {cols} FROM events ORDER BY agent_id, seq LIMIT %s", (limit,)).fetchall()
        conn.execute("CREATE TABLE copy_ceiling (LIKE events INCLUDING DEFAULTS)")
        conn.execute("CREATE TABLE copy_keyed (LIKE events INCLUDING DEFAULTS, PRIMARY KEY (agent_id, seq))")
        conn.commit()

        def copy_into(table: str) -> None:
            with conn.cursor() as cur, cur.copy(f"COPY {table} ({cols}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(COPY_TYPES)
                for row in rows:
                    copy.write_row(row)

        t = time.perf_counter()
        copy_into("copy_ceiling")
        conn.commit()
        raw = len(rows) / (time.perf_counter() - t)
        conn.execute("TRUNCATE copy_ceiling")
        conn.commit()
        t = time.perf_counter()
        copy_into("copy_ceiling")
        conn.execute(f"INSERT INTO copy_keyed ({cols}) SELECT {cols} FROM copy_ceiling ON CONFLICT DO NOTHING")
        conn.commit()
        keyed = len(rows) / (time.perf_counter() - t)
        conn.execute("DROP TABLE copy_ceiling, copy_keyed")
        conn.commit()
    return raw, keyed, len(rows)


def direct_write(db_url: str, spec: Spec, batch_events: int) -> float:
    """Events/s of Writer.write plus the interval stage after each (one connection, no MQTT,
    decoding not timed) in a fresh schema."""
    schema = SCHEMA + "_direct"
    migrate(db_url, schema)
    msgs = [Incoming(wire.uplink_topic(f, a), p) for f, a, _, p in make_payloads(spec)]
    per = max(1, batch_events // spec.batch)
    with connect(db_url, schema) as conn:
        for sql in (
            "INSERT INTO regions (code, name) VALUES ('320000', 'bench')",
            "INSERT INTO industries (code, name) VALUES ('36', 'bench')",
        ):
            conn.execute(sql)
        conn.commit()
    load_registry(db_url, spec, schema, regions=False)
    with connect(db_url, schema) as conn:
        writer = Writer(conn)
        prepared = [Writer.prepare(msgs[i : i + per]) for i in range(0, len(msgs), per)]
        t = time.perf_counter()
        for p in prepared:
            writer.write(p)
            writer.build_intervals()
        return spec.events / (time.perf_counter() - t)


# ---------------------------------------------------------------- phases


def start_collector(
    db_url: str, broker_url: str, profile: bool, writers: int
) -> tuple[Collector, threading.Event, threading.Thread, list[Any], list[tuple[float, Committed]]]:
    settings = load_settings(collector={"share_group": "bench", "queue_max_messages": 400})
    collector = Collector(settings, db_url, broker_url, SCHEMA, writers=writers)
    commits: list[tuple[float, Committed]] = []
    collector.on_commit = lambda committed: commits.append((time.time(), committed))
    stop = threading.Event()
    profiles: list[Any] = []

    def target() -> None:
        prof = cProfile.Profile() if profile else None
        if prof:
            profiles.append(prof)
            prof.enable()
        collector.run(stop)
        if prof:
            prof.disable()

    thread = threading.Thread(target=target, name="collector", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not collector.subscribed.is_set():
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the collector did not subscribe")
        time.sleep(0.05)
    return collector, stop, thread, profiles, commits


def wait_intervals(db_url: str, timeout_s: float) -> float:
    """When the interval stage has built every robot the commits marked (state_marks empty)."""
    deadline = time.monotonic() + timeout_s
    with connect(db_url, SCHEMA, autocommit=True) as conn:
        while conn.execute("SELECT EXISTS (SELECT 1 FROM state_marks)").fetchone() != (False,):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the interval stage did not catch up in {timeout_s} s")
            time.sleep(0.005)
    return time.time()


def wait_inserted(collector: Collector, target: int, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while collector.stats.inserted < target:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {collector.stats.inserted} of {target} events stored after {timeout_s} s")
        time.sleep(0.005)
    return time.time()


def latencies(
    times: list[tuple[str, int, float]], commits: list[tuple[float, Committed]], batch: int, first_seq: int
) -> list[float]:
    committed_at: dict[tuple[str, int], float] = {}
    for t, c in commits:
        for (_, agent), seqs in c.seqs.items():
            for k in {(s - first_seq) // batch for s in seqs if s >= first_seq}:
                committed_at.setdefault((agent, k), t)
    return [committed_at[(agent, k)] - t for agent, k, t in times if (agent, k) in committed_at]


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


class CpuClock:
    """CPU seconds of this process (the collector), PostgreSQL (all its processes), Mosquitto and
    the publisher over a phase: what the machine's cores went to."""

    def __init__(self, publisher_pid: int) -> None:
        self.procs = {"collector": [psutil.Process()], "publisher": [psutil.Process(publisher_pid)]}
        me = psutil.Process()
        for proc in psutil.process_iter(["name", "username"]):
            if proc.info["name"] and "mosquitto" in proc.info["name"] and proc.ppid() in (me.pid, 1, me.ppid()):
                self.procs.setdefault("mosquitto", []).append(proc)
            elif proc.info["name"] in ("postgres", "postmaster"):
                self.procs.setdefault("postgres", []).append(proc)
        self.start = self._read()

    def _read(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, procs in self.procs.items():
            total = 0.0
            for proc in procs:
                try:
                    t = proc.cpu_times()
                    total += t.user + t.system
                except psutil.Error:
                    pass
            out[name] = total
        return out

    def refresh_postgres(self) -> None:
        """Backends start with each connection: pick up the new ones (all their CPU counts)."""
        known = {p.pid for p in self.procs.get("postgres", [])}
        for proc in psutil.process_iter(["name"]):
            if proc.info["name"] in ("postgres", "postmaster") and proc.pid not in known:
                self.procs.setdefault("postgres", []).append(proc)

    def spent(self) -> dict[str, float]:
        self.refresh_postgres()
        now = self._read()
        return {k: now.get(k, 0.0) - self.start.get(k, 0.0) for k in now}


class StageClock:
    """Seconds spent in Writer.prepare (service thread) and Writer.write_isolating (database thread)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {"prepare": 0.0, "write": 0.0}
        self._orig = (Writer.prepare, Writer.write_isolating)
        clock = self

        def prepare(messages: list[Any], now: datetime | None = None) -> Any:
            t = time.perf_counter()
            try:
                return clock._orig[0](messages, now)
            finally:
                clock.seconds["prepare"] += time.perf_counter() - t

        def write_isolating(writer: Writer, prepared: Any) -> Committed:
            t = time.perf_counter()
            try:
                return clock._orig[1](writer, prepared)
            finally:
                clock.seconds["write"] += time.perf_counter() - t

        Writer.prepare = staticmethod(prepare)  # type: ignore[method-assign]
        Writer.write_isolating = write_isolating  # type: ignore[method-assign]

    def reset(self) -> dict[str, float]:
        out = dict(self.seconds)
        self.seconds = {k: 0.0 for k in self.seconds}
        return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=500, help="events per MQTT message (the edge sends up to 500)")
    ap.add_argument("--agents", type=int, default=50)
    ap.add_argument("--robots", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=20_000, help="events/s of the latency phase")
    ap.add_argument("--latency-s", type=float, default=20)
    ap.add_argument("--writers", type=int, default=DEFAULT_WRITERS, help="database threads of the collector")
    ap.add_argument("--profile", action="store_true", help="print a cProfile of the collector's service thread")
    args = ap.parse_args(argv)

    print(
        f"# bench_ingest on {platform.node()}: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"{args.events:,} events in batches of {args.batch}, {args.agents} agents, {args.robots} robots, "
        f"{args.writers} database thread(s)"
    )
    with embedded_postgres() as db_url, embedded_mosquitto() as broker_url:
        with connect(db_url, "public", autocommit=True) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        migrate(db_url, SCHEMA)
        # Whole rounds over the agents, so each agent's sequence numbers stay contiguous across phases.
        per_round = args.batch * args.agents
        args.events = max(per_round, args.events // per_round * per_round)
        n_lat = max(per_round, int(args.rate * args.latency_s) // per_round * per_round)
        base = datetime.now(UTC) - timedelta(seconds=(args.events + n_lat) / 100 + 600)
        spec = Spec(args.events, args.batch, args.agents, args.robots, base=base)
        load_registry(db_url, spec)
        print(f"# PostgreSQL {version}; generating payloads in the publisher process ...", flush=True)
        proc, go, results, _ = run_publisher(broker_url, spec)
        clock = StageClock()
        collector, stop, thread, profiles, commits = start_collector(db_url, broker_url, args.profile, args.writers)
        try:
            # -- 1. throughput
            clock.reset()
            cpu = CpuClock(proc.pid)
            t_start = time.time()
            go.set()
            t_committed = wait_inserted(collector, spec.events, 600)
            t_end = wait_intervals(db_url, 120)
            spent = cpu.spent()
            results.get(timeout=120)
            proc.join(30)
            ingest = spec.events / (t_end - t_start)
            ingest_committed = spec.events / (t_committed - t_start)
            flushes = collector.stats.flushes
            stages = clock.reset()
            print(
                f"# throughput: {spec.events:,} events in {t_end - t_start:.2f} s over {flushes} flushes; "
                f"decode+validate {stages['prepare']:.2f} s (service thread), "
                f"write+commit {stages['write']:.2f} s (database threads, summed)",
                flush=True,
            )
            print(
                f"# CPU seconds over the throughput phase ({os.cpu_count()} cores x {t_end - t_start:.1f} s wall = "
                f"{(os.cpu_count() or 1) * (t_end - t_start):.1f}): "
                + ", ".join(f"{k} {v:.1f}" for k, v in sorted(spent.items(), key=lambda kv: -kv[1])),
                flush=True,
            )
            # -- 2. raw COPY ceiling of the same rows
            ceiling, keyed, n_copied = copy_ceiling(db_url, min(spec.events, 500_000))
            # -- 2b. the write path alone: same kind of rows, one connection, no MQTT
            direct = direct_write(
                db_url, Spec(min(spec.events, 300_000), args.batch, args.agents, args.robots, base=base), 20_000
            )
            # -- 3. latency at a paced rate
            lat_spec = Spec(
                n_lat,
                args.batch,
                args.agents,
                args.robots,
                first_seq=spec.events // spec.agents + 1,
                seed=2,
                base=base + timedelta(seconds=spec.events / 100),
            )
            proc, go, results, _ = run_publisher(broker_url, lat_spec, rate=args.rate)
            commits.clear()
            before = collector.stats.inserted
            go.set()
            wait_inserted(collector, before + n_lat, 600)
            times = results.get(timeout=120)
            proc.join(30)
            lat = latencies(times, commits, args.batch, lat_spec.first_seq)
            achieved = n_lat / (times[-1][2] - times[0][2]) if len(times) > 1 else float("nan")
        finally:
            stop.set()
            thread.join(60)
        with psycopg.connect(db_url) as conn:
            stored = conn.execute(f"SELECT count(*) FROM {SCHEMA}.events").fetchone()[0]  # type: ignore[index]
            intervals = conn.execute(f"SELECT count(*) FROM {SCHEMA}.state_intervals").fetchone()[0]  # type: ignore[index]

    p50, p99 = pct(lat, 0.50), pct(lat, 0.99)
    ratio = ingest / ceiling
    print()
    print(f"{'measure':<44} {'value':>14} {'goal':>14}  ok")
    print("-" * 80)
    rows = [
        (
            "ingest MQTT -> collector -> PostgreSQL [events/s]",
            f"{ingest:,.0f}",
            f">= {GOAL_EVENTS_S:,}",
            ingest >= GOAL_EVENTS_S,
        ),
        ("  of which committed (intervals then lag) [ev/s]", f"{ingest_committed:,.0f}", "", None),
        ("raw binary COPY of the same rows [rows/s]", f"{ceiling:,.0f}", "", None),
        ("ingest / raw COPY ceiling", f"{ratio:.2f}", f">= {GOAL_CEILING_RATIO}", ratio >= GOAL_CEILING_RATIO),
        ("staging COPY + INSERT ON CONFLICT [rows/s]", f"{keyed:,.0f}", "", None),
        ("ingest / staging COPY + ON CONFLICT", f"{ingest / keyed:.2f}", "", None),
        ("Writer.flush alone, 1 connection [events/s]", f"{direct:,.0f}", "", None),
        ("ingest / Writer.flush alone", f"{ingest / direct:.2f}", "", None),
        (
            f"latency publish -> commit p50 at {achieved:,.0f} ev/s [s]",
            f"{p50:.3f}",
            f"< {GOAL_P50_S}",
            p50 < GOAL_P50_S,
        ),
        (
            f"latency publish -> commit p99 at {achieved:,.0f} ev/s [s]",
            f"{p99:.3f}",
            f"< {GOAL_P99_S}",
            p99 < GOAL_P99_S,
        ),
    ]
    for name, value, goal, ok in rows:
        print(f"{name:<44} {value:>14} {goal:>14}  {'' if ok is None else ('yes' if ok else 'NO')}")
    print("-" * 80)
    print(
        f"stored events {stored:,} (expected {spec.events + n_lat:,}), state intervals {intervals:,}, "
        f"rows copied for the ceiling {n_copied:,}, latency samples {len(lat):,} "
        f"(mean {statistics.fmean(lat) if lat else float('nan'):.3f} s)"
    )
    if profiles:
        pstats.Stats(profiles[0]).sort_stats("cumulative").print_stats(25)
    return 0 if stored == spec.events + n_lat else 1


if __name__ == "__main__":
    raise SystemExit(main())
