"""Benchmark: seconds in state per robot per day, numpy core vs DuckDB vs polars.

Run on demand (not part of the tests)::

    .venv/bin/python -m bench.bench_metrics                 # 10,000 robots x 1,000 events
    .venv/bin/python -m bench.bench_metrics --small         # 1,000 robots x 100 events
    .venv/bin/python -m bench.bench_metrics --robots 2000 --events 500 --days 7 --repeat 5

The events are generated sorted by robot, then time, as the database returns them
(``ORDER BY robot, ts``). Each implementation computes the same thing -- each event's state
holds until the robot's next event, the last to the window's end; only covered time counts
(nothing before a robot's first event: the coverage rule of metrics/state_time.py);
intervals split at day edges -- and the three results must agree.

What is timed: the computation from in-memory columns to a dense (robot, day, state) array
[s]. Not timed: generating the data, loading it into DuckDB (a table) and polars (a frame).
DuckDB and polars use all cores; numpy runs on one.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from robodensity.metrics.state_time import seconds_in_state
from robodensity.metrics.states import N_STATES

US = 1_000_000
DAY_S = 86_400


@dataclass(frozen=True)
class Events:
    robot: np.ndarray  # int32 [robot index]
    ts: np.ndarray  # int64 [µs since epoch]
    state: np.ndarray  # int8 [state code]
    n_robots: int
    start: int  # [µs since epoch]
    end: int  # [µs since epoch]

    @property
    def n_days(self) -> int:
        return -(-(self.end - self.start) // (DAY_S * US))


def make_events(n_robots: int, n_events: int, days: int, seed: int = 1) -> Events:
    """Events sorted by robot, then time: each robot's first event falls in the first
    hour before the window (so the window starts in a known state) or in its first day
    (so its first hours are not covered); gaps are exponential with a mean of days / n_events."""
    rng = np.random.default_rng(seed)
    start = int(np.datetime64("2024-03-01T00:00", "us").astype(np.int64))
    end = start + days * DAY_S * US
    mean_gap = days * DAY_S * US / n_events
    first = start + rng.integers(-3600 * US, DAY_S * US, n_robots)
    ts = rng.exponential(mean_gap, (n_robots, n_events)).astype(np.int64)
    ts += 1  # strictly increasing per robot: no ties, so every engine orders alike
    ts[:, 0] = first
    np.cumsum(ts, axis=1, out=ts)
    # Mostly EXECUTING and IDLE, some FAULT, rare OUT_OF_SERVICE and OFFLINE.
    state = rng.choice(N_STATES, size=n_robots * n_events, p=[0.55, 0.3, 0.08, 0.03, 0.04]).astype(np.int8)
    robot = np.repeat(np.arange(n_robots, dtype=np.int32), n_events)
    return Events(robot, ts.ravel(), state, n_robots, start, end)


# ---------------------------------------------------------------- implementations


def run_numpy(ev: Events) -> np.ndarray:
    return seconds_in_state(ev.robot, ev.ts, ev.state, ev.n_robots, ev.start, ev.end, DAY_S)


def _dense(ev: Events, robot: np.ndarray, k: np.ndarray, state: np.ndarray, us: np.ndarray) -> np.ndarray:
    out = np.zeros((ev.n_robots, ev.n_days, N_STATES))
    out[robot.astype(np.int64), k.astype(np.int64), state.astype(np.int64)] = us / US
    return out


DUCKDB_SQL = """
WITH ev AS (
    SELECT robot, state,
           greatest(ts, $start) AS a,
           least(coalesce(lead(ts) OVER (PARTITION BY robot ORDER BY ts), $end), $end) AS b
    FROM events
), iv AS (
    SELECT * FROM ev WHERE b > a
), split AS (  -- one row per interval and day it touches
    SELECT robot, state, a, b, unnest(range((a - $start) // $step, (b - 1 - $start) // $step + 1)) AS k
    FROM iv
)
SELECT robot, k, state,
       sum(least(b, $start + (k + 1) * $step) - greatest(a, $start + k * $step))::DOUBLE AS us
FROM split
GROUP BY ALL
"""


def duckdb_runner(ev: Events) -> Callable[[], np.ndarray]:
    import duckdb

    con = duckdb.connect()
    columns = {"robot": ev.robot, "ts": ev.ts, "state": ev.state}
    con.register("events_np", columns)
    con.execute("CREATE TABLE events AS SELECT * FROM events_np")
    con.unregister("events_np")
    params = {"start": ev.start, "end": ev.end, "step": DAY_S * US}

    def run() -> np.ndarray:
        r = con.execute(DUCKDB_SQL, params).fetchnumpy()
        return _dense(ev, r["robot"], r["k"], r["state"], np.asarray(r["us"]))

    return run


def polars_runner(ev: Events) -> Callable[[], np.ndarray]:
    import polars as pl

    df = pl.DataFrame({"robot": ev.robot, "ts": ev.ts, "state": ev.state})
    start, end, step = ev.start, ev.end, DAY_S * US
    robot, ts = pl.col("robot"), pl.col("ts")

    def run() -> np.ndarray:
        lf = df.lazy()
        # The frame is sorted by robot, then ts: the next event is the next row of the same robot.
        nxt = pl.when(robot.shift(-1) == robot).then(ts.shift(-1)).otherwise(pl.lit(end))
        iv = lf.select(robot, pl.col("state"), a=ts.clip(start, end), b=nxt.clip(start, end))
        a, b = pl.col("a"), pl.col("b")
        res = (
            iv.filter(b > a)
            .with_columns(k=pl.int_ranges((a - start) // step, (b - 1 - start) // step + 1))
            .explode("k")
            .with_columns(
                us=pl.min_horizontal(b, start + (pl.col("k") + 1) * step)
                - pl.max_horizontal(a, start + pl.col("k") * step)
            )
            .group_by("robot", "k", "state")
            .agg(pl.col("us").sum())
            .collect()
        )
        return _dense(ev, res["robot"].to_numpy(), res["k"].to_numpy(), res["state"].to_numpy(), res["us"].to_numpy())

    return run


# ---------------------------------------------------------------- measuring


@dataclass
class Timing:
    name: str
    cold_s: float
    best_s: float
    result: np.ndarray


def time_it(name: str, fn: Callable[[], np.ndarray], repeat: int) -> Timing:
    times = []
    result = np.empty(0)
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return Timing(name, times[0], min(times), result)


def numpy_peak_bytes(ev: Events) -> int:
    """Peak memory the numpy path allocates beyond its inputs (tracemalloc sees numpy's buffers)."""
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    run_numpy(ev)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak - base


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--robots", type=int, default=10_000)
    p.add_argument("--events", type=int, default=1_000, help="events per robot")
    p.add_argument("--days", type=int, default=30, help="window length [days], one bucket per day")
    p.add_argument("--repeat", type=int, default=3, help="runs per implementation; best and first reported")
    p.add_argument("--small", action="store_true", help="quick run: 1,000 robots x 100 events")
    p.add_argument("--only", choices=["numpy", "duckdb", "polars"], action="append", help="run only these")
    args = p.parse_args(argv)
    if args.small:
        args.robots, args.events = 1_000, 100
    impls = args.only or ["numpy", "duckdb", "polars"]

    ev = make_events(args.robots, args.events, args.days)
    n = len(ev.ts)
    print(
        f"{args.robots:,} robots x {args.events:,} events = {n:,} events, {ev.n_days} day buckets; "
        f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} CPUs"
    )
    runners: dict[str, Callable[[], np.ndarray]] = {}
    for name in impls:
        t0 = time.perf_counter()
        if name == "numpy":
            runners[name] = lambda: run_numpy(ev)
        elif name == "duckdb":
            runners[name] = duckdb_runner(ev)
        else:
            runners[name] = polars_runner(ev)
        print(f"  set up {name} in {time.perf_counter() - t0:.2f} s (not timed)")

    timings = [time_it(name, fn, args.repeat) for name, fn in runners.items()]
    ref = next((t for t in timings if t.name == "numpy"), None)

    print()
    print(f"{'implementation':<15}{'best [s]':>10}{'first [s]':>11}{'events/s':>14}{'numpy faster by':>17}")
    for t in timings:
        ratio = f"{t.best_s / ref.best_s:.1f}x" if ref is not None and t is not ref else "-"
        print(f"{t.name:<15}{t.best_s:>10.3f}{t.cold_s:>11.3f}{n / t.best_s:>14,.0f}{ratio:>17}")

    ok = True
    if ref is not None:
        peak = numpy_peak_bytes(ev)
        inputs = ev.robot.nbytes + ev.ts.nbytes + ev.state.nbytes
        mib = 2**20
        print(f"\nnumpy peak memory beyond inputs: {peak / mib:,.0f} MiB (inputs {inputs / mib:,.0f} MiB)")
        sums = ref.result.sum(axis=-1)
        lengths = np.minimum(DAY_S, (ev.end - ev.start) / US - DAY_S * np.arange(ev.n_days))
        sums_ok = bool(np.all(sums <= lengths[None, :] + 1e-3))
        print(f"states sum to at most the day length (covered time) for every robot and day: {sums_ok}")
        ok &= bool(sums_ok)
        for t in timings:
            if t is ref:
                continue
            err = float(np.max(np.abs(t.result - ref.result)))
            agree = err <= 1e-3  # [s]; all three work in integer µs
            ok &= agree
            print(f"{t.name} agrees with numpy: {agree} (max abs difference {err:.2g} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
