"""How a simulated robot spends its time, and the ground truth it leaves behind.

A schedule is a list of ``(timestamp, State)`` changes, deterministic from a seed
and the robot's identity, so every simulator (OPC UA, MQTT) and every test that
checks a metric against the truth sees the same robot doing the same things.
Standard library only: a simulator on a gateway needs nothing more.
"""

from __future__ import annotations

import asyncio
import math
import random
import time as wall
import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from robodensity.core.settings import DEFAULT_TIMEZONE
from robodensity.core.wire import State

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


@dataclass(frozen=True)
class ShiftCalendar:
    """When a factory works: shifts per day from ``first_shift_hour``, working weekdays, holidays.

    Outside working time robots stand IDLE (controllers on, no program running), and a
    weekly planned maintenance window takes each robot OUT_OF_SERVICE. Times are local
    (China Standard Time by default).
    """

    shifts_per_day: int = 2
    shift_hours: float = 8.0
    first_shift_hour: float = 8.0
    workdays: frozenset[int] = frozenset(range(5))  # Monday = 0
    holidays: frozenset[date] = frozenset()
    maintenance_weekday: int | None = 5
    maintenance_hours: tuple[float, float] = (9.0, 11.0)
    tz: str = DEFAULT_TIMEZONE

    def working(self, t: datetime) -> tuple[bool, datetime]:
        """(is ``t`` working time?, when that changes next)."""
        local = t.astimezone(ZoneInfo(self.tz))
        day = datetime.combine(local.date(), time.min, local.tzinfo)
        spans = []
        for d in (day - timedelta(days=1), day):  # yesterday's third shift may run into today
            if d.date().weekday() in self.workdays and d.date() not in self.holidays:
                first = d + timedelta(hours=self.first_shift_hour)
                spans.append((first, first + timedelta(hours=self.shifts_per_day * self.shift_hours)))
        for a, b in spans:
            if a <= local < b:
                return True, min(b, day + timedelta(days=1)).astimezone(t.tzinfo)
        nxt = min([a for a, _ in spans if a > local] + [day + timedelta(days=1)])
        return False, nxt.astimezone(t.tzinfo)

    def maintenance(self, t: datetime) -> tuple[datetime, datetime] | None:
        """The planned maintenance window containing ``t``, if any."""
        if self.maintenance_weekday is None:
            return None
        local = t.astimezone(ZoneInfo(self.tz))
        if local.weekday() != self.maintenance_weekday:
            return None
        day = datetime.combine(local.date(), time.min, local.tzinfo)
        a, b = (day + timedelta(hours=h) for h in self.maintenance_hours)
        return (a.astimezone(t.tzinfo), b.astimezone(t.tzinfo)) if a <= local < b else None


def state_schedule(
    seed: int,
    robot_key: str,
    start: datetime,
    end: datetime,
    profile: Profile = Profile(),
    calendar: ShiftCalendar | None = None,
) -> Schedule:
    """State changes of one robot over [start, end), the first one at ``start``.

    Without a calendar the robot works around the clock; with one, it works in shifts,
    stands IDLE between them and is OUT_OF_SERVICE in planned maintenance.
    """
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

    def emit(at: datetime, s: State) -> None:
        if not out or out[-1][1] is not s:
            out.append((at, s))

    while t < end:
        if calendar is not None:
            window = calendar.maintenance(t)
            if window is not None:
                emit(t, State.OUT_OF_SERVICE)
                t = window[1]
                continue
            working, change = calendar.working(t)
            if not working:
                emit(t, State.IDLE)
                t = change
                continue
        else:
            change = end
        emit(t, state)
        t = min(t + timedelta(seconds=max(profile.min_s, rng.expovariate(1.0 / means[state]))), change)
        state = _next_state(rng, state, profile)
    return out


@dataclass(frozen=True)
class CounterModel:
    """How a robot's counters grow: energy by state [W], cycles per executing hour."""

    power_w: dict[State, float] = field(
        default_factory=lambda: {
            State.EXECUTING: 3500.0,
            State.IDLE: 600.0,
            State.FAULT: 400.0,
            State.OUT_OF_SERVICE: 150.0,
            State.OFFLINE: 0.0,
        }
    )
    cycles_per_hour: float = 60.0


def counters(
    schedule: Schedule,
    end: datetime,
    model: CounterModel = CounterModel(),
    start_values: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> list[tuple[datetime, float, float, float]]:
    """(ts, power_on_s, energy_wh, cycles) at every change and at ``end``: monotonic, as real counters are."""
    power_on, energy, cycles = start_values
    out = []
    points = schedule + [(end, State.OFFLINE)]
    for (t0, s), (t1, _) in zip(points, points[1:]):
        out.append((t0, power_on, energy, cycles))
        dt = max(0.0, (t1 - t0).total_seconds())
        if s is not State.OFFLINE:
            power_on += dt
        energy += model.power_w[s] * dt / 3600
        if s is State.EXECUTING:
            cycles += math.floor(dt / 3600 * model.cycles_per_hour)
    out.append((end, power_on, energy, cycles))
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


async def due_changes(schedules: Mapping[str, Schedule], clock: SimClock) -> AsyncIterator[tuple[datetime, str, State]]:
    """Every robot's ``(ts, key, state)`` change when ``clock`` reaches ``ts``, in time order (a
    robot's own order kept at equal times). Changes already due come back to back, with a turn
    for the event loop every 32 of them (a server catching up must still publish)."""
    changes = sorted(
        ((ts, key, i, state) for key, sched in schedules.items() for i, (ts, state) in enumerate(sched)),
        key=lambda c: c[:3],
    )
    behind = 0
    for ts, key, _, state in changes:
        delay = clock.wall_at(ts) - wall.monotonic()
        if delay > 0.0005:
            await asyncio.sleep(delay)
            behind = 0
        else:
            behind += 1
            if behind % 32 == 0:
                await asyncio.sleep(0)
        yield ts, key, state
