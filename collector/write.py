"""Validate uplink messages and write them to PostgreSQL in one transaction per flush.

Each flush: decode every message (collector.validate), resolve robots, COPY the good
events into a staging table, INSERT ... ON CONFLICT DO NOTHING into ``events`` on the
idempotency key (agent, seq), record changed repeats as conflicts, store dead letters,
advance each agent's contiguous ``acked_through``, commit. Only then does the caller
acknowledge the MQTT messages and tell each edge what is committed.
"""

from __future__ import annotations

import bisect
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import psycopg

from collector.validate import Incoming, Rejected, validate_message
from robodensity.wire import Event, event_to_dict, seq_ranges

log = logging.getLogger(__name__)

EVENT_COLUMNS = (
    "agent_id",
    "seq",
    "robot_id",
    "factory_id",
    "ts",
    "type",
    "state",
    "counter",
    "value",
    "alarm_code",
    "alarm_text",
    "alarm_active",
    "quality",
)
_COMPARED = ", ".join(c for c in EVENT_COLUMNS if c not in ("agent_id", "seq"))
STAGING_DDL = "CREATE TEMP TABLE IF NOT EXISTS staging_events (LIKE events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"


@dataclass
class Committed:
    """What one flush made durable: MQTT message ids to ack, seqs per (factory, agent)."""

    mids: list[int] = field(default_factory=list)
    seqs: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    through: dict[str, int] = field(default_factory=dict)
    inserted: int = 0
    duplicates: int = 0
    conflicts: int = 0
    dead_letters: int = 0


class RobotRegistry:
    """(manufacturer, serial) -> robot_id and its factory assignments, cached per writer."""

    def __init__(self) -> None:
        self.ids: dict[tuple[str, str], int] = {}
        self.assignments: dict[int, tuple[list[date], list[str]]] = {}

    def load(self, cur: psycopg.Cursor[Any]) -> None:
        self.ids = {(m, s): i for i, m, s in cur.execute("SELECT robot_id, manufacturer, serial FROM robots")}
        rows = cur.execute("SELECT robot_id, valid_from, factory_id FROM assignments ORDER BY 1, 2").fetchall()
        self.assignments = {}
        for rid, since, factory in rows:
            days, factories = self.assignments.setdefault(rid, ([], []))
            days.append(since)
            factories.append(factory)

    def factory_at(self, robot_id: int, day: date) -> str | None:
        """The factory a registered robot is assigned to on ``day`` (its first one before that)."""
        entry = self.assignments.get(robot_id)
        if not entry:
            return None
        i = bisect.bisect_right(entry[0], day) - 1
        return entry[1][max(i, 0)]

    def resolve_unknown(self, cur: psycopg.Cursor[Any], keys: set[tuple[str, str]], seen: datetime) -> None:
        """Record robots seen in telemetry but absent from the registry as unregistered."""
        for m, s in sorted(keys):
            cur.execute(
                "INSERT INTO robots (manufacturer, serial, registered, first_seen) VALUES (%s, %s, false, %s) "
                "ON CONFLICT (manufacturer, serial) DO NOTHING",
                (m, s, seen),
            )
        for rid, m, s in cur.execute(
            "SELECT robot_id, manufacturer, serial FROM robots WHERE (manufacturer, serial) IN "
            "(SELECT * FROM unnest(%s::text[], %s::text[]))",
            ([k[0] for k in keys], [k[1] for k in keys]),
        ):
            self.ids[(m, s)] = rid


class Writer:
    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self.registry = RobotRegistry()
        with conn.cursor() as cur:
            cur.execute(STAGING_DDL)
            self.registry.load(cur)
        conn.commit()

    def flush(self, messages: list[Incoming]) -> Committed:
        """Write ``messages`` in one transaction. Raises psycopg errors for the caller to retry."""
        now = datetime.now(UTC)
        out = Committed()
        rows: list[tuple[Any, ...]] = []
        rejected: list[Rejected] = []
        with self.conn.transaction(), self.conn.cursor() as cur:
            accepted = []
            for msg in messages:
                result = validate_message(msg, now)
                out.mids.append(msg.mid)
                rejected += result.rejected
                if result.batch is not None:
                    accepted.append((msg, result.batch))
            unknown = {
                (e.reading.robot.manufacturer, e.reading.robot.serial) for _, b in accepted for e in b.events
            } - self.registry.ids.keys()
            if unknown:
                self.registry.load(cur)  # imported since we last looked?
                unknown -= self.registry.ids.keys()
                if unknown:
                    self.registry.resolve_unknown(cur, unknown, now)
            for msg, batch in accepted:
                key = (msg.factory, msg.agent)
                seqs = out.seqs.setdefault(key, [])
                for event in batch.events:
                    row = self._row(msg, event)
                    if isinstance(row, Rejected):
                        rejected.append(row)
                    else:
                        rows.append(row)
                    seqs.append(event.seq)
            for r in rejected:
                if r.agent and r.seq is not None:
                    out.seqs.setdefault((r.factory or "", r.agent), []).append(r.seq)
            out.inserted, out.duplicates, out.conflicts = self._insert(cur, rows)
            out.dead_letters = self._dead_letters(cur, rejected, now)
            out.through = self._advance(cur, out.seqs, now)
        return out

    def _row(self, msg: Incoming, event: Event) -> tuple[Any, ...] | Rejected:
        r = event.reading
        robot_id = self.registry.ids[(r.robot.manufacturer, r.robot.serial)]
        home = self.registry.factory_at(robot_id, r.ts.date())
        if home is not None and home != msg.factory:
            return Rejected.of_event(
                msg,
                event.seq,
                "robot",
                f"robot {r.robot.key} is registered to factory {home}, not {msg.factory}",
                event_to_dict(event),
            )
        return (
            msg.agent,
            event.seq,
            robot_id,
            msg.factory,
            r.ts,
            r.type.value,
            r.state.value if r.state else None,
            r.counter.value if r.counter else None,
            r.value,
            r.alarm_code,
            r.alarm_text,
            r.alarm_active,
            r.quality.value,
        )

    @staticmethod
    def _insert(cur: psycopg.Cursor[Any], rows: list[tuple[Any, ...]]) -> tuple[int, int, int]:
        if not rows:
            return 0, 0, 0
        cols = ", ".join(EVENT_COLUMNS)
        with cur.copy(f"COPY staging_events ({cols}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(
                [
                    "text",
                    "int8",
                    "int8",
                    "text",
                    "timestamptz",
                    "text",
                    "text",
                    "text",
                    "float8",
                    "text",
                    "text",
                    "bool",
                    "text",
                ]
            )
            for row in rows:
                copy.write_row(row)
        cur.execute(f"INSERT INTO events ({cols}) SELECT {cols} FROM staging_events ON CONFLICT DO NOTHING")
        inserted = cur.rowcount
        conflicts = 0
        if inserted < len(rows):
            cur.execute(
                "INSERT INTO event_conflicts (agent_id, seq, payload) "
                "SELECT s.agent_id, s.seq, to_jsonb(s) FROM staging_events s "
                "JOIN events e USING (agent_id, seq) "
                f"WHERE ({', '.join('e.' + c for c in _COMPARED.split(', '))}) IS DISTINCT FROM "
                f"({', '.join('s.' + c for c in _COMPARED.split(', '))})"
            )
            conflicts = cur.rowcount
            if conflicts:
                log.warning("%d repeated event key(s) with different content kept as conflicts", conflicts)
        cur.execute("TRUNCATE staging_events")
        return inserted, len(rows) - inserted - conflicts, conflicts

    @staticmethod
    def _dead_letters(cur: psycopg.Cursor[Any], rejected: list[Rejected], now: datetime) -> int:
        if rejected:
            cur.executemany(
                "INSERT INTO dead_letters (received_at, topic, agent_id, seq, reason, field, payload) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                [(now, r.topic, r.agent, r.seq, r.reason, r.field, r.payload) for r in rejected],
            )
            for r in rejected[:5]:
                log.warning("dead letter from %s: %s", r.topic, r.reason)
        return len(rejected)

    @staticmethod
    def _advance(cur: psycopg.Cursor[Any], seqs: dict[tuple[str, str], list[int]], now: datetime) -> dict[str, int]:
        """Raise each agent's acked_through over the contiguous run of stored or dead-lettered seqs."""
        through = {}
        for (factory, agent), _ in sorted(seqs.items()):
            cur.execute(
                "INSERT INTO agents (agent_id, factory_id, last_seen) VALUES (%s, %s, %s) "
                "ON CONFLICT (agent_id) DO UPDATE SET last_seen = EXCLUDED.last_seen",
                (agent, factory, now),
            )
            row = cur.execute(
                "WITH base AS (SELECT acked_through AS t FROM agents WHERE agent_id = %(a)s FOR UPDATE), "
                "s AS (SELECT seq FROM events, base WHERE agent_id = %(a)s AND seq > base.t "
                "      UNION SELECT seq FROM dead_letters, base WHERE agent_id = %(a)s AND seq > base.t), "
                "r AS (SELECT seq, seq - row_number() OVER (ORDER BY seq) AS grp FROM s) "
                "UPDATE agents SET acked_through = coalesce("
                "  (SELECT max(seq) FROM r, base WHERE grp = base.t), acked_through) "
                "WHERE agent_id = %(a)s RETURNING acked_through",
                {"a": agent},
            ).fetchone()
            through[agent] = int(row[0]) if row else 0
        return through


def ack_payloads(committed: Committed) -> list[tuple[str, str, tuple[tuple[int, int], ...], int]]:
    """(factory, agent, ranges, through) for each agent a flush touched."""
    return [
        (factory, agent, seq_ranges(seqs), committed.through.get(agent, 0))
        for (factory, agent), seqs in committed.seqs.items()
        if agent
    ]


def describe(committed: Committed) -> str:
    return json.dumps({k: getattr(committed, k) for k in ("inserted", "duplicates", "conflicts", "dead_letters")})
