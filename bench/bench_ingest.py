"""Benchmark: events/s from MQTT through one collector process into PostgreSQL.

Run on demand (not part of the tests)::

    .venv/bin/python -m bench.bench_ingest                      # 1,000,000 events, 20,000/s latency phase
    .venv/bin/python -m bench.bench_ingest --events 200000 --latency-s 10
    .venv/bin/python -m bench.bench_ingest --profile            # cProfile of the collector's threads
    .venv/bin/python -m bench.bench_ingest --modes plain        # plain PostgreSQL only

It starts a throwaway PostgreSQL and Mosquitto (robodensity.app.embedded), a registry of
``--robots`` robots in ``--agents`` factories, and one collector (threads of this process).
A separate publisher process (multiprocessing, spawn) generates wire-contract batches of
``--batch`` events -- generation is not timed -- and then:

1. **throughput**: publishes all ``--events`` as fast as MQTT takes them; sustained
   events/s = events / (the interval stage done with the last of them - first publish), and
   also up to the last commit;
2. **COPY ceiling**: the same rows, read back from ``events``, binary-COPYed from Python
   into the same ``events`` table (a fresh schema's: same indexes, same partitions or
   hypertable) and, for scale, into an index-free table of the same columns; and
   ``Writer.flush`` alone on one connection (the collector's SQL: lock the agents' rows,
   COPY into events, settle the ranges, then the interval stage; decoding not timed, no MQTT);
3. **latency**: publishes paced at ``--rate`` events/s for ``--latency-s`` seconds; latency
   of each message = collector commit (the moment it acks) - publish.

4. **bytes per event** on disk: events' table, TOAST and indexes plus the agents' committed
   ranges, per event; for the state events alone; under TimescaleDB also compressed.

All of it twice, in one run: on plain PostgreSQL and on a cluster that preloads TimescaleDB
(``--modes``; skipped with a note where TimescaleDB is not installed).

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

from robodensity.app.embedded import embedded_mosquitto, embedded_postgres, timescaledb_installed
from robodensity.collector.consume import DEFAULT_WRITERS, Collector
from robodensity.collector.validate import Incoming
from robodensity.collector.write import COPY_TYPES, EVENT_COLUMNS, Committed, Writer
from robodensity.core import wire
from robodensity.core.settings import load_settings
from robodensity.storage.db import connect, drop_schema, migrate

SCHEMA = "bench"
GOAL_EVENTS_S = 150_000
GOAL_STATE_BYTES = 16
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
    """Rows/s of a bare binary COPY of stored events (same rows, same columns) from Python into
    the same ``events`` table -- a fresh schema's, with the same indexes, partitions or hypertable
    -- and into an index-free table of the same columns."""
    cols = ", ".join(EVENT_COLUMNS)
    migrate(db_url, SCHEMA + "_copy")
    with connect(db_url, SCHEMA) as conn:
        rows = conn.execute(f"SELECT {cols} FROM events ORDER BY agent_id, seq LIMIT %s", (limit,)).fetchall()
        conn.execute("CREATE TABLE copy_bare (LIKE events INCLUDING DEFAULTS)")
        conn.commit()

        def copy_into(table: str) -> float:
            t = time.perf_counter()
            with conn.cursor() as cur, cur.copy(f"COPY {table} ({cols}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(COPY_TYPES)
                for row in rows:
                    copy.write_row(row)
            conn.commit()
            return len(rows) / (time.perf_counter() - t)

        same = copy_into(f"{SCHEMA}_copy.events")
        bare = copy_into("copy_bare")
        conn.execute("DROP TABLE copy_bare")
        conn.commit()
    drop_schema(db_url, SCHEMA + "_copy")
    return same, bare, len(rows)


def bytes_per_event(db_url: str, timescale: bool) -> dict[str, float]:
    """Bytes on disk per stored event (table, TOAST and indexes; plus the agents' committed
    ranges, the idempotency state); under TimescaleDB also after compressing every chunk, and for
    the state events alone (copied into a schema of their own), since counters compress less."""
    out: dict[str, float] = {}
    with connect(db_url, SCHEMA, autocommit=True) as conn:

        def size(schema: str) -> tuple[int, int]:
            if timescale:
                q = f"SELECT public.hypertable_size('{schema}.events')"
            else:
                q = (
                    "SELECT sum(pg_total_relation_size(i.inhrelid)) FROM pg_inherits i "
                    f"WHERE i.inhparent = '{schema}.events'::regclass"
                )
            table = int(conn.execute(q).fetchone()[0])  # type: ignore[index]
            ranges = conn.execute(f"SELECT coalesce(sum(pg_column_size(committed)), 0) FROM {schema}.agents")
            n = int(conn.execute(f"SELECT count(*) FROM {schema}.events").fetchone()[0])  # type: ignore[index]
            return table + int(ranges.fetchone()[0]), n  # type: ignore[index]

        def compress(schema: str) -> None:
            conn.execute(f"SELECT public.compress_chunk(c) FROM public.show_chunks('{schema}.events') c")
            conn.execute(f"VACUUM ANALYZE {schema}.events")

        conn.execute(f"VACUUM ANALYZE {SCHEMA}.events")
        b, n = size(SCHEMA)
        out["all"] = b / n
        migrate(db_url, SCHEMA + "_states")
        conn.execute(
            f"INSERT INTO {SCHEMA}_states.events SELECT * FROM {SCHEMA}.events WHERE type = 'state' ORDER BY ts"
        )
        conn.execute(
            f"INSERT INTO {SCHEMA}_states.agents SELECT * FROM {SCHEMA}.agents"  # the same ranges
        )
        conn.execute(f"VACUUM ANALYZE {SCHEMA}_states.events")
        b, n = size(SCHEMA + "_states")
        out["state"] = b / n
        if timescale:
            compress(SCHEMA)
            b, n = size(SCHEMA)
            out["all compressed"] = b / n
            compress(SCHEMA + "_states")
            b, n = size(SCHEMA + "_states")
            out["state compressed"] = b / n
    drop_schema(db_url, SCHEMA + "_states")
    return out


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


def run_mode(args: argparse.Namespace, timescale: bool) -> dict[str, Any]:
    """Every phase on a fresh cluster: plain PostgreSQL, or one that preloads TimescaleDB."""
    out: dict[str, Any] = {}
    with embedded_postgres(timescaledb=timescale) as db_url, embedded_mosquitto() as broker_url:
        with connect(db_url, "public", autocommit=True) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        migrate(db_url, SCHEMA)
        with connect(db_url, SCHEMA) as conn:
            mode = conn.execute("SELECT storage_mode()").fetchone()[0]  # type: ignore[index]
        # Whole rounds over the agents, so each agent's sequence numbers stay contiguous across phases.
        per_round = args.batch * args.agents
        events = max(per_round, args.events // per_round * per_round)
        n_lat = max(per_round, int(args.rate * args.latency_s) // per_round * per_round)
        base = datetime.now(UTC) - timedelta(seconds=(events + n_lat) / 100 + 600)
        spec = Spec(events, args.batch, args.agents, args.robots, base=base)
        load_registry(db_url, spec)
        print(f"# {mode}: PostgreSQL {version}; generating payloads in the publisher process ...", flush=True)
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
            out["ingest"] = spec.events / (t_end - t_start)
            out["ingest_committed"] = spec.events / (t_committed - t_start)
            stages = clock.reset()
            print(
                f"# {mode} throughput: {spec.events:,} events in {t_end - t_start:.2f} s over "
                f"{collector.stats.flushes} flushes; decode+validate {stages['prepare']:.2f} s (service thread), "
                f"write+commit {stages['write']:.2f} s (database threads, summed)",
                flush=True,
            )
            print(
                f"# CPU seconds over the throughput phase ({os.cpu_count()} cores x {t_end - t_start:.1f} s wall = "
                f"{(os.cpu_count() or 1) * (t_end - t_start):.1f}): "
                + ", ".join(f"{k} {v:.1f}" for k, v in sorted(spent.items(), key=lambda kv: -kv[1])),
                flush=True,
            )
            # -- 2. a bare COPY of the same rows into the same events table (and an index-free one)
            out["copy_same"], out["copy_bare"], out["n_copied"] = copy_ceiling(db_url, min(spec.events, 500_000))
            # -- 2b. the write path alone: same kind of rows, one connection, no MQTT
            out["direct"] = direct_write(
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
            out["lat"] = latencies(times, commits, args.batch, lat_spec.first_seq)
            out["achieved"] = n_lat / (times[-1][2] - times[0][2]) if len(times) > 1 else float("nan")
        finally:
            stop.set()
            thread.join(60)
        with psycopg.connect(db_url) as conn:
            out["stored"] = conn.execute(f"SELECT count(*) FROM {SCHEMA}.events").fetchone()[0]  # type: ignore[index]
            out["intervals"] = conn.execute(f"SELECT count(*) FROM {SCHEMA}.state_intervals").fetchone()[0]  # type: ignore[index]
        # -- 4. bytes per event on disk (compressed under TimescaleDB)
        out["bytes"] = bytes_per_event(db_url, mode == "timescaledb")
        out["expected"] = spec.events + n_lat
        out["mode"] = mode
        if profiles:
            pstats.Stats(profiles[0]).sort_stats("cumulative").print_stats(25)
    return out


def report(r: dict[str, Any]) -> None:
    lat = r["lat"]
    p50, p99 = pct(lat, 0.50), pct(lat, 0.99)
    ratio = r["ingest"] / r["copy_same"]
    print()
    print(f"## {r['mode']}")
    print(f"{'measure':<48} {'value':>12} {'goal':>12}  ok")
    print("-" * 80)
    rows = [
        ("ingest MQTT -> collector -> PostgreSQL [events/s]", f"{r['ingest']:,.0f}", *(
            (f">= {GOAL_EVENTS_S:,}", r["ingest"] >= GOAL_EVENTS_S) if r["mode"] == "partitions" else ("", None))),
        ("  of which committed (intervals then lag) [ev/s]", f"{r['ingest_committed']:,.0f}", "", None),
        ("bare binary COPY, same events table+indexes [r/s]", f"{r['copy_same']:,.0f}", "", None),
        ("ingest / same-table COPY", f"{ratio:.2f}", f">= {GOAL_CEILING_RATIO}", ratio >= GOAL_CEILING_RATIO),
        ("bare binary COPY, index-free table [rows/s]", f"{r['copy_bare']:,.0f}", "", None),
        ("Writer.flush alone, 1 connection [events/s]", f"{r['direct']:,.0f}", "", None),
        (f"latency publish -> commit p50 at {r['achieved']:,.0f} ev/s [s]", f"{p50:.3f}", f"< {GOAL_P50_S}",
         p50 < GOAL_P50_S),
        (f"latency publish -> commit p99 at {r['achieved']:,.0f} ev/s [s]", f"{p99:.3f}", f"< {GOAL_P99_S}",
         p99 < GOAL_P99_S),
    ]  # fmt: skip
    for kind, b in r["bytes"].items():
        goal = f"<= {GOAL_STATE_BYTES}" if kind == "state compressed" else ""
        rows.append((f"bytes on disk per event ({kind})", f"{b:.1f}", goal, b <= GOAL_STATE_BYTES if goal else None))
    for name, value, goal, ok in rows:
        print(f"{name:<48} {value:>12} {goal:>12}  {'' if ok is None else ('yes' if ok else 'NO')}")
    print("-" * 80)
    print(
        f"stored events {r['stored']:,} (expected {r['expected']:,}), state intervals {r['intervals']:,}, "
        f"rows copied for the ceilings {r['n_copied']:,}, latency samples {len(lat):,} "
        f"(mean {statistics.fmean(lat) if lat else float('nan'):.3f} s)"
    )


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
    ap.add_argument("--modes", default="plain,timescaledb", help="plain and/or timescaledb (comma separated)")
    args = ap.parse_args(argv)

    print(
        f"# bench_ingest on {platform.node()}: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"{args.events:,} events in batches of {args.batch}, {args.agents} agents, {args.robots} robots, "
        f"{args.writers} database thread(s)"
    )
    ok = True
    for mode in args.modes.split(","):
        if mode == "timescaledb" and not timescaledb_installed():
            print("# timescaledb: not installed beside PostgreSQL (./dev bench installs it): skipped")
            continue
        result = run_mode(args, mode == "timescaledb")
        report(result)
        ok = ok and result["stored"] == result["expected"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
