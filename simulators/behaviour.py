"""How a simulated robot spends its time, and the ground truth it leaves behind.

A schedule is a list of ``(timestamp, State)`` changes, deterministic from a seed
and the robot's identity, so every simulator (OPC UA, MQTT) and every test that
checks a metric against the truth sees the same robot doing the same things.
Standard library only: a simulator on a gateway needs nothing more.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from robodensity.wire import State

Schedule = list[tuple[datetime, State]]


@dataclass(frozen=True)
class Profile:
    """Mean durations [s] of each state and the chance of leaving EXECUTING by fault."""

    executing_s: float = 1500.0
    idle_s: float = 420.0
    fault_s: float = 600.0
    out_of_service_s: float = 3600.0
    p_fault: float = 0.12
    p_out_of_service: float = 0.02
    min_s: float = 30.0
    """No state lasts less: slower than any controller's sampling, so none is missed."""


PROFILES: dict[str, Profile] = {
    "welding": Profile(executing_s=1800, idle_s=360, p_fault=0.15),
    "handling": Profile(executing_s=1500, idle_s=480, p_fault=0.08),
    "assembly": Profile(executing_s=1200, idle_s=420, p_fault=0.10),
    "palletising": Profile(executing_s=2400, idle_s=900, p_fault=0.05),
    "painting": Profile(executing_s=1500, idle_s=600, p_fault=0.12),
    "inspection": Profile(executing_s=900, idle_s=900, p_fault=0.04),
}


def robot_seed(seed: int, robot_key: str) -> int:
    """A stable per-robot seed (``hash()`` of a str changes between processes)."""
    return zlib.crc32(f"{seed}:{robot_key}".encode())


def state_schedule(seed: int, robot_key: str, start: datetime, end: datetime, profile: Profile = Profile()) -> Schedule:
    """State changes of one robot over [start, end), the first one at ``start``."""
    rng = random.Random(robot_seed(seed, robot_key))
    means = {
        State.EXECUTING: profile.executing_s,
        State.IDLE: profile.idle_s,
        State.FAULT: profile.fault_s,
        State.OUT_OF_SERVICE: profile.out_of_service_s,
    }
    state = State.IDLE if rng.random() < 0.3 else State.EXECUTING
    t = start
    out: Schedule = []
    while t < end:
        out.append((t, state))
        t += timedelta(seconds=max(profile.min_s, rng.expovariate(1.0 / means[state])))
        state = _next_state(rng, state, profile)
    return out


def _next_state(rng: random.Random, state: State, p: Profile) -> State:
    if state is State.EXECUTING:
        u = rng.random()
        if u < p.p_fault:
            return State.FAULT
        if u < p.p_fault + p.p_out_of_service:
            return State.OUT_OF_SERVICE
        return State.IDLE
    if state is State.IDLE:
        return State.EXECUTING if rng.random() < 0.9 else State.OUT_OF_SERVICE
    return State.IDLE


def seconds_in_state(schedule: Schedule, start: datetime, end: datetime) -> dict[State, float]:
    """Ground truth: seconds in each state over [start, end), the last state held to ``end``.

    Time before the first change counts as OFFLINE, as the metrics core counts it.
    """
    out = dict.fromkeys(State, 0.0)
    points = [(max(t, start), s) for t, s in schedule if t < end]
    if not points or points[0][0] > start:
        first = points[0][0] if points else end
        out[State.OFFLINE] += (first - start).total_seconds()
    for (t0, s), (t1, _) in zip(points, [*points[1:], (end, State.OFFLINE)], strict=False):
        out[s] += max(0.0, (t1 - t0).total_seconds())
    return out


def utilisation(truth: dict[State, float]) -> float:
    """EXECUTING over calendar time [1]."""
    total = sum(truth.values())
    return truth[State.EXECUTING] / total if total else float("nan")


@dataclass(frozen=True)
class SimClock:
    """Simulated time running ``speed`` times faster than wall time from ``start``.

    ``sim_start`` is the simulated instant that corresponds to wall-clock ``wall_start``
    (``time.monotonic()`` seconds).
    """

    sim_start: datetime
    wall_start: float
    speed: float = 1.0

    def sim_at(self, wall: float) -> datetime:
        return self.sim_start + timedelta(seconds=(wall - self.wall_start) * self.speed)

    def wall_at(self, sim: datetime) -> float:
        return self.wall_start + (sim - self.sim_start).total_seconds() / self.speed
