"""The collector service: MQTT 5 shared subscription -> Writer -> acknowledgements.

Threads hand work to each other through bounded queues:

- paho's network thread only puts messages on a queue (blocking when it is full, which
  stops reading from the broker: backpressure, not loss);
- the service thread (``run``) sorts what is queued into one FIFO per agent (fair lanes,
  collector/lanes.py) and, for each free database thread, takes up to ``batch_max_events``
  worth once the oldest is ``flush_ms`` old (longer while that thread is busy), round-robin
  across agents with a per-agent cap, so one agent's backlog never delays another's commit;
  it decodes and validates the batch (``Writer.prepare``, no database);
- ``writers`` database threads, each with its own connection, write prepared batches in one
  transaction each and only after the commit acknowledge the MQTT messages (manual ack)
  and publish an Ack to each edge. Messages of one agent always go to the same database
  thread;
- the interval thread, with a connection of its own, turns the state events the commits
  marked into state intervals every ``intervals_every_ms`` (Writer.build_intervals), many
  flushes at once, and once more when the collector stops.

So decoding the next batch overlaps the commits of the last ones. A database error (the server
restarting, our backend terminated, a deadlock) rolls back; the database thread reconnects
with backoff and writes the same batch again, and nothing is acknowledged before that
succeeds. A message the database refuses as data is dead-lettered (Writer.write_isolating)
and acknowledged, so it never blocks the stream. On a broker restart paho reconnects, the
subscription is made again, and message ids of the old connection are no longer acked
(the broker redelivers those messages, or the edge re-sends them: the writes are idempotent).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from robodensity.collector.lanes import FairQueue
from robodensity.collector.validate import Incoming, Rejected
from robodensity.collector.write import Committed, Prepared, Writer, ack_payloads
from robodensity.core import clock, wire
from robodensity.core.errors import DatabaseError
from robodensity.core.mqtt import connect as mqtt_connect
from robodensity.core.mqtt import make_client
from robodensity.core.settings import Settings
from robodensity.storage.db import connect

log = logging.getLogger(__name__)

APPLICATION_NAME = "robodensity-collector"
DEFAULT_WRITERS = 2
"""Database connections per collector: PostgreSQL works on one batch while the next is decoded
and another is written (bench/bench_ingest.py --writers compares)."""
AGENT_SHARE = 0.25
"""What one agent may put into a flush while other agents' messages wait (fair lanes)."""
RETRY_MIN_S = 0.2
RETRY_MAX_S = 5.0
T = TypeVar("T")
_RETRYABLE = (psycopg.OperationalError, psycopg.InterfaceError, DatabaseError)


class _Lane:
    """One database thread: its writer (connection) and the prepared batches waiting for it."""

    def __init__(self, writer: Writer) -> None:
        self.writer = writer
        self.prepared: queue.Queue[Prepared | None] = queue.Queue(1)
        self.thread = threading.Thread()


def _lane_of(topic: str, lanes: int) -> int:
    return zlib.crc32(topic.encode()) % lanes if lanes > 1 else 0


@dataclass
class CollectorStats:
    messages: int = 0
    inserted: int = 0
    duplicates: int = 0
    conflicts: int = 0
    dead_letters: int = 0
    flushes: int = 0
    intervals: int = 0
    """State intervals written by the interval stage."""
    db_retries: int = 0
    broker_connects: int = 0
    dead_letters_by_reason: dict[str, int] = field(default_factory=dict)


class Collector:
    def __init__(
        self,
        settings: Settings,
        db_url: str,
        broker_url: str,
        schema: str = "robodensity",
        writers: int = DEFAULT_WRITERS,
    ) -> None:
        """``writers`` database connections write in parallel, each agent always on the same one."""
        self.settings = settings
        self.cfg = settings.collector
        self.db_url = db_url
        self.broker_url = broker_url
        self.schema = schema
        self.stats = CollectorStats()
        self.subscribed = threading.Event()
        self.on_commit: Callable[[Committed], None] | None = None
        """Called in the database thread after each commit and its acks (benchmarks, tests)."""
        self._queue: queue.Queue[Incoming] = queue.Queue(self.cfg.queue_max_messages)
        self.writers = max(1, writers)
        self._lanes: list[_Lane] = []
        self._ack_lock = threading.Lock()
        self._stop = threading.Event()
        self._session = 0
        self._db_error: BaseException | None = None
        self._dirty = threading.Event()
        """Set when a commit marked robots for the interval stage (and at start: a previous run's marks)."""
        self._dirty.set()
        self._refused_versions: set[tuple[str, str, str]] = set()
        self._last_commit = threading.Event()
        """Set once every database thread has written its last batch: the interval stage's final pass."""
        client_id = self.cfg.client_id or f"collector-{uuid.uuid4().hex[:8]}"
        self.client = make_client(settings.broker, broker_url, client_id, manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    # -- paho thread ---------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        if getattr(reason, "is_failure", False):
            log.error("broker refused the collector: %s", reason)
            return
        self._session += 1
        self.stats.broker_connects += 1
        client.subscribe(self._topic(), qos=1)

    def _on_subscribe(self, _c: mqtt.Client, _u: object, _mid: int, reasons: list[ReasonCode], _p: Properties) -> None:
        """``subscribed`` once the broker has granted the subscription (its SUBACK), not when it is sent:
        a message published in between would find nobody subscribed."""
        refused = [r for r in reasons if r.is_failure]
        if refused:
            log.error("broker refused the collector's subscription to %s: %s", self._topic(), refused[0])
            return
        self.subscribed.set()
        log.info("collector subscribed to %s", self._topic())

    def _topic(self) -> str:
        return f"$share/{self.cfg.share_group}/{wire.TOPIC_ROOT}/+/+/up"

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        self.subscribed.clear()
        if not self._stop.is_set():
            log.warning("collector lost the broker (%s); paho reconnects", reason)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        item = Incoming(msg.topic, bytes(msg.payload), msg.mid if msg.qos else 0, self._session)
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                log.warning("collector queue full (%d messages): the database is behind", self._queue.maxsize)

    # -- service thread ------------------------------------------------------------
    def run(self, stop: threading.Event | None = None) -> None:
        """Consume until ``stop`` is set; writes what it has taken before returning.

        Raises DatabaseError when the database cannot be reached at start.
        """
        stop = stop or threading.Event()
        lanes: list[_Lane] = []
        try:
            for i in range(self.writers):
                lane = _Lane(self._writer())
                lane.thread = threading.Thread(
                    target=self._db_loop, args=(lane, stop), name=f"collector-db-{i}", daemon=True
                )
                lanes.append(lane)
        except BaseException:
            for lane in lanes:
                lane.writer.conn.close()
            raise
        try:
            interval_writer = self._writer()
        except BaseException:
            for lane in lanes:
                lane.writer.conn.close()
            raise
        intervals = threading.Thread(
            target=self._interval_loop, args=(interval_writer,), name="collector-intervals", daemon=True
        )
        for lane in lanes:
            lane.thread.start()
        intervals.start()
        self._lanes = lanes
        # One agent always goes to one lane: its robots are not rebuilt by two transactions.
        waiting = [FairQueue() for _ in lanes]
        unsubscribed = False
        try:
            # Only a collector with a stable client id has a session worth keeping.
            mqtt_connect(
                self.client,
                self.settings.broker,
                self.broker_url,
                clean_start=not self.cfg.client_id,
                receive_maximum=min(65535, self.cfg.queue_max_messages),
                session_expiry_s=None if self.cfg.client_id else 0,
            )
            while (
                all(lane.thread.is_alive() for lane in lanes)
                and intervals.is_alive()
                and (not stop.is_set() or not self._queue.empty() or any(waiting))
            ):
                if stop.is_set() and not unsubscribed:
                    # Take no more; write what is queued (acked, so not redelivered to another).
                    self.client.unsubscribe(self._topic())
                    unsubscribed = True
                self._intake(waiting, self._wait_s(waiting))
                self._schedule(waiting, draining=stop.is_set())
        finally:
            for lane in lanes:
                self._hand_over(lane, None)
            for lane in lanes:
                lane.thread.join()
            self._last_commit.set()
            intervals.join()
            self._stop.set()
            self.client.disconnect()
            self.client.loop_stop()
        if self._db_error is not None:
            raise self._db_error

    @staticmethod
    def _hand_over(lane: _Lane, prepared: Prepared | None) -> None:
        while lane.thread.is_alive():
            try:
                lane.prepared.put(prepared, timeout=0.2)
                return
            except queue.Full:
                continue

    def _budget(self) -> int:
        return self.cfg.batch_max_events * 100  # ~100 bytes per event: a decode-free size estimate

    def _intake(self, waiting: list[FairQueue], wait_s: float) -> None:
        """Move what paho queued into the agents' FIFOs (waiting up to ``wait_s`` for the first)."""
        try:
            item = self._queue.get(timeout=wait_s)
        except queue.Empty:
            return
        lanes = len(waiting)
        for _ in range(self.cfg.queue_max_messages):
            waiting[_lane_of(item.topic, lanes)].put(item)
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
        waiting[_lane_of(item.topic, lanes)].put(item)

    def _ready(self, lane: _Lane, fifo: FairQueue, draining: bool) -> bool:
        """A batch is due for this lane: it is free and its messages waited ``flush_ms`` or fill a batch.
        While the thread is busy the batch keeps growing: bigger transactions when the database is
        the bottleneck, short waits when it is not."""
        if not fifo or lane.prepared.full():
            return False
        due = time.monotonic() - fifo.oldest >= self.cfg.flush_ms / 1000
        return draining or due or fifo.bytes >= self._budget()

    def _schedule(self, waiting: list[FairQueue], draining: bool) -> None:
        """Hand each free lane its next batch, filled round-robin across its agents (fair lanes)."""
        budget = self._budget()
        for lane, fifo in zip(self._lanes, waiting):
            if self._ready(lane, fifo, draining):
                items = fifo.take(budget, max(1, int(budget * AGENT_SHARE)))
                prepared = Writer.prepare(items)
                self._refuse_versions(prepared.rejected)
                self._hand_over(lane, prepared)

    def _refuse_versions(self, rejected: list[Rejected]) -> None:
        """A batch of another wire version is dead-lettered (naming both versions) and never
        acknowledged, so its events wait in the agent's outbox; the agent is told on its ack
        topic, and the log says it once per agent and version."""
        for r in rejected:
            if r.field != "v" or r.agent is None or r.factory is None:
                continue
            self.client.publish(wire.ack_topic(r.factory, r.agent), wire.encode_refusal(r.agent, r.reason), qos=1)
            if (r.factory, r.agent, r.reason) not in self._refused_versions:
                self._refused_versions.add((r.factory, r.agent, r.reason))
                log.error("agent %s/%s refused: %s; upgrade one side", r.factory, r.agent, r.reason)

    def _wait_s(self, waiting: list[FairQueue]) -> float:
        """How long the service thread may wait for new messages before a batch is due."""
        wait = 0.2
        for lane, fifo in zip(self._lanes, waiting):
            if fifo:
                left = self.cfg.flush_ms / 1000 - (time.monotonic() - fifo.oldest)
                wait = min(wait, max(left, 0.002) if not lane.prepared.full() else 0.005)
        return wait

    # -- database thread -----------------------------------------------------------
    def _db_loop(self, lane: _Lane, stop: threading.Event) -> None:
        try:
            while True:
                prepared = lane.prepared.get()
                if prepared is None:
                    return
                committed, lane.writer = self._write(lane.writer, prepared, stop)
                if committed is None:
                    return  # stopping while the database is away: unacknowledged, so redelivered
                with self._ack_lock:
                    self._acknowledge(committed)
                if committed.state_robots:
                    self._dirty.set()
        except BaseException as exc:  # surfaced by run()
            self._db_error = exc
            log.exception("collector database thread failed")
        finally:
            lane.writer.conn.close()

    def _interval_loop(self, writer: Writer) -> None:
        """The interval stage: every ``intervals_every_ms`` while commits mark robots, and once
        after the last commit. Marks not built when the database is away wait in state_marks."""
        every = self.cfg.intervals_every_ms / 1000
        try:
            while True:
                last = self._last_commit.wait(every)
                if self._dirty.is_set():
                    self._dirty.clear()
                    try:
                        # Retried while the database is away, until the collector stops.
                        built, writer = self._retrying(
                            writer, Writer.build_intervals, "the state intervals", self._last_commit
                        )
                    except psycopg.Error as exc:  # not the connection: ingestion goes on, marks stay
                        log.error("state intervals not built, the marks stay for the next try: %s", exc)
                        built = (0, 0, True)
                    if built is not None:
                        with self._ack_lock:
                            self.stats.intervals += built[1]
                        if built[2]:  # another collector's stage was at work, or an error: again next time
                            self._dirty.set()
                if last:
                    return
        except BaseException as exc:  # surfaced by run()
            self._db_error = exc
            log.exception("collector interval thread failed")
        finally:
            writer.conn.close()

    def _write(self, writer: Writer, prepared: Prepared, stop: threading.Event) -> tuple[Committed | None, Writer]:
        return self._retrying(writer, lambda w: w.write_isolating(prepared), f"{len(prepared.mids)} message(s)", stop)

    def _retrying(
        self, writer: Writer, action: Callable[[Writer], T], what: str, stop: threading.Event
    ) -> tuple[T | None, Writer]:
        """``action(writer)``; on a lost or failing connection, a new writer with backoff and again.
        (None, writer) when ``stop`` is set while the database is away."""
        delay = RETRY_MIN_S
        while True:
            try:
                return action(writer), writer
            except _RETRYABLE as exc:
                with self._ack_lock:
                    self.stats.db_retries += 1
                log.error(
                    "database unavailable, retrying %s: %s",
                    what,
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                )
            fresh = None
            while fresh is None:
                if stop.wait(delay):
                    return None, writer
                delay = min(delay * 2, RETRY_MAX_S)
                try:
                    writer.conn.close()
                    fresh = self._writer()
                except _RETRYABLE as exc:
                    log.error("%s; retrying in %.1f s", str(exc).splitlines()[0], delay)
            writer = fresh

    def _writer(self) -> Writer:
        conn = connect(self.db_url, self.schema, application_name=APPLICATION_NAME)
        try:
            return Writer(conn, (self.cfg.raw_events_days, self.cfg.compress_after_days))
        except BaseException:
            conn.close()
            raise

    def _acknowledge(self, committed: Committed) -> None:
        session = self._session
        for msg_session, mid in committed.acks:
            if mid and msg_session == session:
                self.client.ack(mid, 1)
        for factory, agent, ranges, through in ack_payloads(committed):
            payload = wire.encode_ack(wire.Ack(agent, ranges, through, clock.now()))  # now: agents check clocks
            self.client.publish(wire.ack_topic(factory, agent), payload, qos=1)
        s = self.stats
        s.messages += len(committed.mids)
        s.inserted += committed.inserted
        s.duplicates += committed.duplicates
        s.conflicts += committed.conflicts
        s.dead_letters += committed.dead_letters
        for reason, n in committed.dead_letter_reasons.items():
            s.dead_letters_by_reason[reason] = s.dead_letters_by_reason.get(reason, 0) + n
        s.flushes += 1
        if self.on_commit is not None:
            self.on_commit(committed)
