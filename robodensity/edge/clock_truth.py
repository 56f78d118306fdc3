"""Clock truth at the edge: correct a controller clock that is off, never lose its robot's data.

Each reading carries the source's timestamp; the agent notes its own *receive time* when the
reading leaves the source. Their difference ``delta = receive - source`` is the controller's
clock offset plus the delivery delay (>= 0, small for change-driven readings).

Per robot (a controller's clock is the robot's; one source may front several controllers):

- the **estimate** is the median of the last ``WINDOW`` deltas: robust against a few
  buffered (late) readings and against the edge's own OFFLINE readings (delta ~ 0);
- the robot is **corrected** while ``|estimate| > threshold`` (setting ``edge.clock_threshold_s``,
  2 s: above what a source's delivery adds -- an OPC UA publishing interval, a 1 s poll -- and
  far below a robot state's length, so a synchronised controller is never touched). A clock
  *behind* (estimate > 0) must also be **steady**: at least ``MIN_SAMPLES`` deltas in the window,
  all within ``threshold`` of each other, received over at least ``MIN_SPAN_S`` of the edge's
  time (its source time advances as the receive time does, for a while).
  Late history is not steady -- a retained MQTT message, or a backlog the factory's broker
  delivers at once after the agent restarts: its source times span minutes while it arrives
  within a second -- and keeps its own (past, accepted) timestamps. Once corrected, a robot
  stays corrected while its estimate is over the threshold;
- a reading of a corrected robot whose own ``|delta| > threshold`` (stamped by the bad clock)
  gets ``ts + estimate``, never later than its receive time, and ``clock_offset_s = estimate``
  (the wire's *clock_corrected* flag). A reading with ``|delta| <= threshold`` is already
  right (an edge-stamped OFFLINE, or a clock that was just fixed) and is left alone;
- a reading stamped more than ``threshold`` *after* it was received is impossible, whatever
  the estimate (a clock that just jumped ahead, before the median follows): it gets its receive
  time and ``clock_offset_s = delta``. So nothing is ever refused by the collector's time window.

The estimates survive a restart: the agent saves :meth:`ClockTruth.snapshot` in its outbox
(every ``SAVE_EVERY_S`` and when it stops) and :meth:`ClockTruth.restore` s it when it starts,
so a backlog a factory broker delivers right after the restart is judged with the learnt
clock, not with the backlog's own (spread-out) deltas.

The agent's own clock against the collector's (:class:`AgentClock`) is measured from the acks,
NTP-style: each ack carries the collector's time ``tc``; for a batch sent at ``t0`` and acked at
``t1`` (the agent's clock) one sample is ``tc - (t0 + t1) / 2`` with round trip ``t1 - t0``; the
estimate is the sample with the shortest round trip of the last ``WINDOW`` (least queueing); it
is only called off (a warning) when it exceeds the threshold by more than half that round trip.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import statistics
import time
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from robodensity.core import wire

log = logging.getLogger(__name__)

WINDOW = 15
"""Recent deltas per robot the median is taken over (odd: a true median)."""
MIN_SAMPLES = 3
"""Readings a robot needs before a clock *behind* is believed (and they must be steady)."""
MIN_SPAN_S = 30.0
"""[s] edge time the steady deltas of a clock *behind* must span: a backlog delivered in a burst
(a factory broker's queue after the agent restarts) has steady-looking deltas for a moment,
never for this long."""
REPORT_EVERY_S = 60.0
"""[s] how often the agent puts its own offset into a batch's head."""
SAVE_EVERY_S = 60.0
"""[s] how often the agent saves the robots' estimates in its outbox (and when it stops)."""


@dataclasses.dataclass
class _Robot:
    deltas: deque[float] = dataclasses.field(default_factory=lambda: deque(maxlen=WINDOW))
    received: deque[datetime] = dataclasses.field(default_factory=lambda: deque(maxlen=WINDOW))
    estimate: float = 0.0
    corrected: bool = False


class ClockTruth:
    """Per-robot offset estimates and the correction of readings (see the module docstring)."""

    def __init__(self, threshold_s: float = 2.0) -> None:
        self.threshold_s = threshold_s
        self.robots: dict[str, _Robot] = {}
        self.corrected_readings = 0

    def observe(self, reading: wire.Reading, received: datetime) -> wire.Reading:
        """``reading`` as it should travel: corrected and flagged when its robot's clock is off."""
        delta = (received - reading.ts).total_seconds()
        robot = self.robots.get(reading.robot.key)
        if robot is None:
            robot = self.robots[reading.robot.key] = _Robot()
        robot.deltas.append(delta)
        robot.received.append(received)
        robot.estimate = statistics.median(robot.deltas)
        was = robot.corrected
        if robot.estimate < -self.threshold_s:  # ahead: a reading from the future is impossible
            robot.corrected = True
        else:  # behind, or late history? Only steady deltas (source time advancing as receive time does)
            span = (robot.received[-1] - robot.received[0]).total_seconds()
            steady = (
                len(robot.deltas) >= MIN_SAMPLES
                and max(robot.deltas) - min(robot.deltas) <= self.threshold_s
                and span >= MIN_SPAN_S
            )
            robot.corrected = robot.estimate > self.threshold_s and (was or steady)
        if robot.corrected != was:
            log.warning(
                "robot %s: its clock is %+.1f s off the edge's; %s",
                reading.robot.key,
                -robot.estimate,
                "its timestamps are corrected and flagged" if robot.corrected else "no longer corrected",
            )
        if abs(delta) <= self.threshold_s:
            return reading
        if robot.corrected:
            offset = robot.estimate
        elif delta < 0:  # stamped after it was received: a clock that jumped ahead
            offset = delta
        else:
            return reading
        self.corrected_readings += 1
        ts = min(reading.ts + timedelta(seconds=offset), received)
        return dataclasses.replace(reading, ts=ts, clock_offset_s=round(offset, 3))

    def snapshot(self) -> dict[str, str]:
        """Robot key -> its estimate's state as JSON (deltas [s], their receive times [s since
        epoch], corrected): what :meth:`restore` takes back after a restart."""
        return {
            key: json.dumps(
                {
                    "deltas": list(r.deltas),
                    "received": [t.timestamp() for t in r.received],
                    "corrected": r.corrected,
                }
            )
            for key, r in self.robots.items()
        }

    def restore(self, saved: Mapping[str, str]) -> None:
        """Take back the estimates of :meth:`snapshot`; an entry that does not read is skipped
        (its robot is learnt again, as without it) and logged."""
        for key, text in saved.items():
            try:
                state = json.loads(text)
                deltas = [float(d) for d in state["deltas"]]
                received = [datetime.fromtimestamp(float(t), UTC) for t in state["received"]]
                if not deltas or len(deltas) != len(received):
                    raise ValueError("deltas and receive times differ in number")
                robot = _Robot(deque(deltas, maxlen=WINDOW), deque(received, maxlen=WINDOW))
                robot.estimate = statistics.median(robot.deltas)
                robot.corrected = bool(state["corrected"])
            except (ValueError, KeyError, TypeError, OverflowError) as exc:
                log.warning("robot %s: its saved clock estimate does not read (%s); learning it again", key, exc)
                continue
            self.robots[key] = robot
        if saved:
            log.info(
                "clock estimates of %d robot(s) restored, %d of them corrected",
                len(self.robots),
                self.corrected_robots,
            )

    def offsets(self) -> dict[str, float]:
        """Robot key -> its estimated offset [s] (receive - source; negative: the clock is fast)."""
        return {key: r.estimate for key, r in self.robots.items()}

    @property
    def corrected_robots(self) -> int:
        return sum(r.corrected for r in self.robots.values())


class AgentClock:
    """The agent's clock against the collector's, from acks (see the module docstring)."""

    def __init__(self, threshold_s: float = 2.0) -> None:
        self.threshold_s = threshold_s
        self.samples: deque[tuple[float, float]] = deque(maxlen=WINDOW)  # (round trip, offset)
        self.offset_s: float | None = None
        self._reported_at = float("-inf")
        self._large = False

    def sample(self, collector_now: datetime, sent_mono: float, acked_mono: float, acked_wall: datetime) -> None:
        """One ack: the collector's time, when its batch was sent and acked (monotonic), and the
        agent's wall clock when it was acked."""
        rtt = max(acked_mono - sent_mono, 0.0)
        midpoint = acked_wall - timedelta(seconds=rtt / 2)
        self.samples.append((rtt, (collector_now - midpoint).total_seconds()))
        best_rtt, self.offset_s = min(self.samples)
        # The true offset lies within rtt/2 of the sample (delays need not be symmetric: a busy
        # collector queues a batch long before it commits and acks it); warn only when even the
        # most favourable reading of the sample is off by more than the threshold.
        large = abs(self.offset_s) - best_rtt / 2 > self.threshold_s
        if large != self._large:
            self._large = large
            if large:
                log.warning("this agent's clock is %+.1f s off the collector's: fix its time sync", -self.offset_s)
            else:
                log.info("this agent's clock is back within %.1f s of the collector's", self.threshold_s)

    def to_report(self) -> float | None:
        """The offset [s] to put into the next batch's head: at most every ``REPORT_EVERY_S``."""
        if self.offset_s is None or time.monotonic() - self._reported_at < REPORT_EVERY_S:
            return None
        self._reported_at = time.monotonic()
        return round(self.offset_s, 3)
