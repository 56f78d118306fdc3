"""The edge agent: sources -> outbox (durable) -> uplink, with end-to-end acks.

Four kinds of task share one event loop, all owned by one TaskGroup:
- one reader per source, putting readings on a bounded queue;
- the store, which writes queued readings to the outbox in group commits;
- the sender, which takes unsent (or timed-out) events from the outbox, publishes
  them in batches, and keeps at most ``max_inflight_batches`` unacknowledged;
- the acker: acks from the collector (handed over by the uplink's thread) delete events
  from the outbox. Nothing else does;
- the clock keeper, which saves the robots' clock estimates in the outbox every
  ``SAVE_EVERY_S`` (and the agent saves them once more when it stops), so a restarted agent
  judges a backlog with what it had learnt (edge/clock_truth.py).
A task that fails cancels the others and :meth:`EdgeAgent.run` raises its exception: no
error is lost in a task nobody awaits. A source's SourceError is not a failure: its
reader retries with backoff.

Blocking work stays off the event loop: every outbox write and batch read runs in a
worker thread (``asyncio.to_thread``) under one lock, and so do the health endpoint's
outbox queries (a count over the backlog). Opening the outbox (``EdgeAgent()``) runs on
the caller's thread, once, before any task starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol

from robodensity.core import clock, wire
from robodensity.core.errors import ConfigError, OutboxFull, SourceError
from robodensity.core.settings import Settings
from robodensity.edge.clock_truth import SAVE_EVERY_S, AgentClock, ClockTruth
from robodensity.edge.health import serve
from robodensity.edge.outbox import Outbox
from robodensity.edge.uplink import Uplink

log = logging.getLogger(__name__)
CLOCK_STATE = "clock"
"""The outbox's ``edge_state`` kind holding the robots' clock estimates."""


class Source(Protocol):
    """What the agent needs of a source. A source may also have ``settle(n)``: the agent
    calls it once the next ``n`` readings it yielded are durable in the outbox."""

    async def __aenter__(self) -> Source: ...
    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...
    def __aiter__(self) -> AsyncIterator[wire.Reading]: ...


def build_sources(settings: Settings) -> list[Source]:
    """Every source the settings name, validated, none connected."""
    sources: list[Source] = []
    if settings.edge.opcua:
        from robodensity.edge.sources.opcua import OpcUaSource

        sources += [OpcUaSource(s) for s in settings.edge.opcua]
    if settings.edge.mqtt_json:
        from robodensity.edge.sources.mqtt_json import MqttJsonSource

        last = settings.edge.outbox_path.with_name("last-readings.sqlite")  # no repeats across restarts
        sources += [MqttJsonSource(s, last_readings_path=last) for s in settings.edge.mqtt_json]
    if settings.edge.sparkplug:
        from robodensity.edge.sources.sparkplug import SparkplugSource

        sources += [SparkplugSource(s) for s in settings.edge.sparkplug]
    if settings.edge.modbus:
        from robodensity.edge.sources.modbus.source import ModbusSource

        sources += [ModbusSource(s) for s in settings.edge.modbus]
    if settings.edge.hses:
        from robodensity.edge.sources.hses import HsesSource

        sources += [HsesSource(s) for s in settings.edge.hses]
    if settings.edge.rws:
        from robodensity.edge.sources.rws import RwsSource

        sources += [RwsSource(s) for s in settings.edge.rws]
    if settings.edge.urdash:
        from robodensity.edge.sources.urdash import UrDashSource

        sources += [UrDashSource(s) for s in settings.edge.urdash]
    return sources


@dataclass
class AgentStats:
    readings: int = 0
    stored: int = 0
    published_batches: int = 0
    acked_events: int = 0
    resent_batches: int = 0
    refused_publishes: int = 0
    last_ack_at: float | None = None
    robots_seen: set[str] = field(default_factory=set)
    robot_state: dict[str, wire.State] = field(default_factory=dict)
    stopped_sources: dict[int, str] = field(default_factory=dict)
    """Sources given up for settings that cannot work, by index, with the reason."""


STOP_GRACE_S = 5.0
"""How long a cancelled task may take to end (a source logging out) before it is cancelled again."""


async def _cancel_until_done(tasks: Sequence[asyncio.Task[None]]) -> None:
    """Cancel until every task has ended. A library's ``asyncio.wait_for`` (pymodbus, on Python 3.11)
    returns a reply that lands in the loop pass of the cancel and loses the cancel; a source then
    polls on, and with steady robots it yields nothing that would let its reader notice the stop."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=STOP_GRACE_S)


class EdgeAgent:
    def __init__(self, settings: Settings, broker_url: str, sources: Sequence[Source] | None = None) -> None:
        self.settings = settings
        self.cfg = settings.edge
        self.broker_url = broker_url
        self.sources = list(sources) if sources is not None else build_sources(settings)
        self.outbox = Outbox(self.cfg.outbox_path, self.cfg.outbox_max_bytes)
        self.stats = AgentStats()
        self._queue: asyncio.Queue[tuple[int, wire.Reading]] = asyncio.Queue(10_000)
        self._lock = asyncio.Lock()  # one outbox operation at a time
        self._acked = asyncio.Event()
        # At most one ack per published batch, and the sender stops at max_inflight_batches.
        self._acks: asyncio.Queue[wire.Ack] = asyncio.Queue()
        self._inflight: dict[int, tuple[float, set[int]]] = {}  # first seq -> (sent, unacked seqs)
        self.uplink: Uplink | None = None
        self.clock_truth = ClockTruth(self.cfg.clock_threshold_s)  # controllers' clocks (issue 15)
        self.clock_truth.restore(self.outbox.load_state(CLOCK_STATE))  # as the last run left them
        self.agent_clock = AgentClock(self.cfg.clock_threshold_s)  # this agent's against the collector's

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; what is stored stays stored for the next run.

        Raises the exception of a task that failed (an ExceptionGroup when several did),
        after stopping the others."""
        loop = asyncio.get_running_loop()
        self.uplink = Uplink(self.settings, self.broker_url, loop, self._acks.put_nowait, self._on_refused)
        self.uplink.start()
        health = await serve(self.cfg.health_port, self.health) if self.cfg.health_port else None
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(self._read(i, s), name=f"read {s!r}") for i, s in enumerate(self.sources)]
                tasks += [tg.create_task(self._store(), name="store"), tg.create_task(self._send(), name="send")]
                tasks.append(tg.create_task(self._apply_acks(), name="acks"))
                tasks.append(tg.create_task(self._keep_clocks(), name="clock estimates"))
                try:
                    await stop.wait()
                finally:  # stopped, a task failed, or run() was cancelled: the tasks end before the group
                    await _cancel_until_done(tasks)
        except BaseExceptionGroup as group:
            log.error("edge agent stopped: %s", "; ".join(f"{e!r}" for e in group.exceptions))
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None  # what failed, not a group of one
            raise
        finally:
            if health is not None:
                health.close()
            await asyncio.to_thread(self.uplink.stop)  # joins paho's thread
            try:
                await self._save_clocks()
            except Exception as exc:  # never in place of what stopped the agent
                log.error("the robots' clock estimates were not saved: %r; the last saved ones stay", exc)
            await asyncio.to_thread(self.outbox.close)

    def backlog(self) -> int:
        """Events in the outbox (a count over them: on the caller's thread, for tests and benches)."""
        return self.outbox.backlog()

    async def health(self) -> dict[str, float]:
        """The numbers the health endpoint serves (edge/health.py names them)."""
        async with self._lock:
            backlog, oldest_age_s, size = await asyncio.to_thread(self._outbox_gauges)
        s, up = self.stats, self.uplink
        return {
            "robots_online": sum(st is not wire.State.OFFLINE for st in s.robot_state.values()),
            "robots_seen": len(s.robots_seen),
            "sources_stopped": len(s.stopped_sources),
            "backlog_events": backlog,
            "oldest_unacked_age_seconds": oldest_age_s,
            "readings_total": s.readings,
            "acked_events_total": s.acked_events,
            "published_batches_total": s.published_batches,
            "resent_batches_total": s.resent_batches,
            "refused_publishes_total": s.refused_publishes,
            "uplink_reconnects_total": up.reconnects if up else 0,
            "uplink_connected": float(bool(up and up.connected.is_set())),
            "uplink_wire_version_mismatch": float(bool(up and up.version_mismatch)),
            "outbox_bytes": size,
            "outbox_dropped_counters_total": self.outbox.dropped_counters,
            "outbox_disk_full": float(self.outbox.disk_full),
            "last_ack_timestamp_seconds": s.last_ack_at or 0.0,
            "clock_offset_seconds": self.agent_clock.offset_s or 0.0,
            "clock_corrected_robots": self.clock_truth.corrected_robots,
            "clock_corrected_readings_total": self.clock_truth.corrected_readings,
        }

    def _outbox_gauges(self) -> tuple[int, float, int]:
        """Backlog (a count over every stored event), age of the oldest, bytes: for a worker thread."""
        return self.outbox.backlog(), self.outbox.oldest_age_s(), self.outbox.size_bytes()

    # -- readers and store ---------------------------------------------------------
    async def _read(self, index: int, source: Source) -> None:
        backoff = 1.0
        while True:
            try:
                async with source:
                    backoff = 1.0
                    async for reading in source:
                        self.stats.readings += 1
                        await self._queue.put((index, self.clock_truth.observe(reading, clock.now())))
            except SourceError as exc:
                log.error("source failed: %s; retrying in %.0f s", exc, backoff)
            except ConfigError as exc:
                # Settings that cannot work (a login refused again and again): this source stops,
                # the factory's other controllers go on; health shows it until the settings are fixed.
                log.error("source %d stopped: %s; the other sources go on", index, exc)
                self.stats.stopped_sources[index] = str(exc)
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)

    async def _store(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < 5_000:
                batch.append(self._queue.get_nowait())
            readings = [r for _, r in batch]
            seqs = await self._store_durably(readings)
            self.stats.stored += len(seqs)
            for r in readings:
                if r.state is not None:
                    self.stats.robots_seen.add(r.robot.key)
                    self.stats.robot_state[r.robot.key] = r.state
            # Durable now: a source may release what it holds for redelivery (MQTT acks).
            for index, n in Counter(i for i, _ in batch).items():
                settle = getattr(self.sources[index], "settle", None)
                if settle is not None:
                    settle(n)

    async def _store_durably(self, readings: list[wire.Reading]) -> list[int]:
        """``outbox.add``; while the outbox or its disk is full, again every second (the queue
        behind it fills and the sources wait: nothing is acknowledged to them meanwhile)."""
        first = True
        while True:
            try:
                async with self._lock:
                    return await asyncio.to_thread(self.outbox.add, readings)
            except OutboxFull as exc:
                if first and not self.outbox.disk_full:  # a full disk the outbox has said once already
                    log.error("%s; holding %d reading(s), trying again every second", exc, len(readings))
                first = False
            await asyncio.sleep(1.0)  # a retry period, not synchronisation

    # -- sender and acks -------------------------------------------------------------
    async def _send(self) -> None:
        assert self.uplink is not None
        linger = self.cfg.batch_linger_ms / 1000
        while True:
            self._expire_inflight()
            if not self.uplink.connected.is_set() or len(self._inflight) >= self.cfg.max_inflight_batches:
                await self._wait_ack(0.5)
                continue
            async with self._lock:
                rows = await asyncio.to_thread(self.outbox.take, self.cfg.batch_max_events, self.cfg.ack_timeout_s)
            if not rows:
                await asyncio.sleep(linger or 0.05)
                continue
            payload = wire.splice_batch(self.cfg.agent_id, self.cfg.factory_id, rows, self.agent_clock.to_report())
            try:
                self.uplink.publish(payload)
            except Exception as exc:
                log.error("%s; %d event(s) stay in the outbox", exc, len(rows))
                async with self._lock:
                    await asyncio.to_thread(self.outbox.unsend, [s for s, _ in rows])
                await asyncio.sleep(1.0)
                continue
            self._inflight[rows[0][0]] = (time.monotonic(), {s for s, _ in rows})
            self.stats.published_batches += 1
            if len(rows) < self.cfg.batch_max_events and linger:
                await asyncio.sleep(linger)

    async def _wait_ack(self, timeout: float) -> None:
        self._acked.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._acked.wait()

    def _expire_inflight(self) -> None:
        cutoff = time.monotonic() - self.cfg.ack_timeout_s
        for first in [k for k, (sent, _) in self._inflight.items() if sent < cutoff]:
            del self._inflight[first]  # its events become eligible for a re-send in the outbox
            self.stats.resent_batches += 1

    async def _apply_acks(self) -> None:
        while True:
            ack = await self._acks.get()
            async with self._lock:
                deleted = await asyncio.to_thread(self.outbox.acknowledge, ack.ranges)
            self.stats.acked_events += deleted
            self.stats.last_ack_at = time.time()
            for first, (sent, pending) in list(self._inflight.items()):
                pending -= {s for s in pending if any(lo <= s <= hi for lo, hi in ack.ranges)}
                if not pending:
                    del self._inflight[first]
                    if ack.now is not None:
                        self.agent_clock.sample(ack.now, sent, time.monotonic(), clock.now())
            self._acked.set()

    # -- clock estimates -------------------------------------------------------------
    async def _keep_clocks(self) -> None:
        while True:
            await asyncio.sleep(SAVE_EVERY_S)  # a save period, not synchronisation
            await self._save_clocks()

    async def _save_clocks(self) -> None:
        """Save the robots' clock estimates (taken on the loop, written in a worker thread)."""
        snapshot = self.clock_truth.snapshot()
        async with self._lock:
            await asyncio.to_thread(self.outbox.save_state, CLOCK_STATE, snapshot)

    def _on_refused(self, _mid: int) -> None:
        self.stats.refused_publishes += 1
