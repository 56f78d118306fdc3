"""The collector service: MQTT 5 shared subscription -> Writer -> acknowledgements.

paho's network thread only puts messages on a bounded queue (blocking when it is full,
which stops reading from the broker: backpressure, not loss). The service thread takes
what is queued, up to ``batch_max_events`` worth or ``flush_ms`` old, writes it in one
transaction, and only after the commit acknowledges the MQTT messages (manual ack) and
publishes an Ack to each edge. A database error rolls back and retries the same
messages; the broker redelivers anything unacknowledged after a collector crash.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass

import paho.mqtt.client as mqtt
import psycopg

from collector.db import connect
from collector.validate import Incoming
from collector.write import Committed, Writer, ack_payloads
from robodensity import wire
from robodensity.errors import DatabaseError
from robodensity.mqtt import connect as mqtt_connect
from robodensity.mqtt import make_client
from robodensity.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class CollectorStats:
    messages: int = 0
    inserted: int = 0
    duplicates: int = 0
    conflicts: int = 0
    dead_letters: int = 0
    flushes: int = 0
    db_retries: int = 0


class Collector:
    def __init__(self, settings: Settings, db_url: str, broker_url: str, schema: str = "robodensity") -> None:
        self.settings = settings
        self.cfg = settings.collector
        self.db_url = db_url
        self.broker_url = broker_url
        self.schema = schema
        self.stats = CollectorStats()
        self.subscribed = threading.Event()
        self._queue: queue.Queue[Incoming] = queue.Queue(self.cfg.queue_max_messages)
        self._stop = threading.Event()
        self._events_hint = 0
        client_id = self.cfg.client_id or f"collector-{uuid.uuid4().hex[:8]}"
        self.client = make_client(settings.broker, broker_url, client_id, manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message

    # -- paho thread ---------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        if getattr(reason, "is_failure", False):
            log.error("broker refused the collector: %s", reason)
            return
        topic = f"$share/{self.cfg.share_group}/{wire.TOPIC_ROOT}/+/+/up"
        client.subscribe(topic, qos=1)
        self.subscribed.set()
        log.info("collector subscribed to %s", topic)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        item = Incoming(msg.topic, msg.payload, msg.mid if msg.qos else 0)
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                log.warning("collector queue full (%d messages): the database is behind", self._queue.maxsize)

    # -- service thread ------------------------------------------------------------
    def run(self, stop: threading.Event | None = None) -> None:
        """Consume until ``stop`` is set; writes what it has taken before returning."""
        stop = stop or threading.Event()
        writer = self._writer()
        # Only a collector with a stable client id has a session worth keeping.
        mqtt_connect(
            self.client,
            self.settings.broker,
            self.broker_url,
            clean_start=not self.cfg.client_id,
            receive_maximum=min(65535, self.cfg.queue_max_messages),
            session_expiry_s=None if self.cfg.client_id else 0,
        )
        pending: list[Incoming] = []
        try:
            while not stop.is_set() or pending or not self._queue.empty():
                if not pending:
                    pending = self._take(stop)
                if not pending:
                    continue
                try:
                    committed = writer.flush(pending)
                except (psycopg.OperationalError, psycopg.InterfaceError, DatabaseError) as exc:
                    self.stats.db_retries += 1
                    log.error(
                        "database unavailable, retrying %d message(s): %s",
                        len(pending),
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                    )
                    if stop.wait(1.0):
                        break  # unacknowledged: the broker redelivers them
                    writer = self._writer(retry=True)
                    continue
                self._acknowledge(committed)
                pending = []
        finally:
            self._stop.set()
            self.client.disconnect()
            self.client.loop_stop()
            writer.conn.close()

    def _writer(self, retry: bool = False) -> Writer:
        while True:
            try:
                return Writer(connect(self.db_url, self.schema))
            except (DatabaseError, psycopg.OperationalError) as exc:
                if not retry:
                    raise
                log.error("%s; retrying in 1 s", exc)
                time.sleep(1.0)

    def _take(self, stop: threading.Event) -> list[Incoming]:
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        items = [first]
        budget = self.cfg.batch_max_events
        size = len(first.payload)
        deadline = time.monotonic() + self.cfg.flush_ms / 1000
        # A payload of ~100 bytes per event is a cheap, decode-free size estimate.
        while size < budget * 100 and time.monotonic() < deadline:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            items.append(item)
            size += len(item.payload)
        return items

    def _acknowledge(self, committed: Committed) -> None:
        for mid in committed.mids:
            if mid:
                self.client.ack(mid, 1)
        for factory, agent, ranges, through in ack_payloads(committed):
            payload = wire.encode_ack(wire.Ack(agent, ranges, through))
            self.client.publish(wire.ack_topic(factory, agent), payload, qos=1)
        s = self.stats
        s.messages += len(committed.mids)
        s.inserted += committed.inserted
        s.duplicates += committed.duplicates
        s.conflicts += committed.conflicts
        s.dead_letters += committed.dead_letters
        s.flushes += 1
