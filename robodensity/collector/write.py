"""Validate uplink messages and write them to PostgreSQL in one transaction per flush.

Each flush: decode every message (collector.validate; no database work, so the collector
can do it for the next flush while this one commits), resolve robots, lock the flush's agents'
rows (sorted: two collectors writing one agent serialise there and never deadlock) and read
what each has settled (``agents.committed``, an int8multirange of seqs; see
collector/ranges.py and migrations/020_committed_ranges.sql), COPY the new events straight
into ``events``, compare re-sent ones with what is stored (changed repeats are kept in
``event_conflicts``), mark the robots with new state events for the interval stage, store dead
letters, add the flush's seqs to ``committed`` and advance ``acked_through`` from it, commit.
Only then does the caller acknowledge the MQTT messages and tell each edge what is committed.

The interval stage (``Writer.build_intervals``, migrations/012_ingest_speed.sql) rebuilds the
marked robots' state intervals in a transaction of its own: the collector runs it about once
a second, ``Writer.flush`` right after the write.
"""

from __future__ import annotations

import bisect
import json
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from robodensity.collector.clocks import record_agent_clocks
from robodensity.collector.ranges import Row, Settled, multirange_text, same_event, split
from robodensity.collector.validate import Incoming, Rejected, validate_rows
from robodensity.core import clock
from robodensity.core.wire import EventRow, event_to_dict, row_to_event, seq_ranges

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
    "clock_offset_s",
)
_COLS = ", ".join(EVENT_COLUMNS)
_COMPARED = EVENT_COLUMNS[2:]
COPY_TYPES = [
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
    "float8",
]
COPY_EVENTS = f"COPY events ({_COLS}) FROM STDIN (FORMAT BINARY)"
# Sorted, so two collectors lock agents' rows in one order; ON CONFLICT DO UPDATE locks the row
# and returns its latest committed ranges even if another collector committed them meanwhile.
_LOCK_AGENTS = (
    "INSERT INTO agents (agent_id, factory_id, last_seen) "
    "SELECT a, f, %s FROM unnest(%s::text[], %s::text[]) AS u(a, f) ORDER BY a "
    "ON CONFLICT (agent_id) DO UPDATE SET last_seen = EXCLUDED.last_seen "
    "RETURNING agent_id, committed"
)
# A re-sent seq: the stored event, looked up by the events index (robot_id, ts).
_STORED = (
    f"SELECT f.i, {', '.join('e.' + c for c in _COMPARED)} "
    "FROM unnest(%s::int[], %s::bigint[], %s::timestamptz[], %s::text[], %s::bigint[]) "
    "  AS f(i, robot_id, ts, agent_id, seq) "
    "JOIN LATERAL (SELECT * FROM events e WHERE e.robot_id = f.robot_id AND e.ts = f.ts "
    "  AND e.agent_id = f.agent_id AND e.seq = f.seq LIMIT 1) e ON true"
)
# committed grows by the flush's seqs; acked_through is the end of the range holding acked_through + 1.
_SETTLE = """
UPDATE agents g SET committed = g.committed + u.m::int8multirange,
    acked_through = greatest(g.acked_through, coalesce((
        SELECT upper(r) - 1 FROM unnest(g.committed + u.m::int8multirange) r WHERE r @> g.acked_through + 1), 0))
FROM unnest(%s::text[], %s::text[]) AS u(a, m)
WHERE g.agent_id = u.a
RETURNING g.agent_id, g.acked_through
"""
POISON_ERRORS = (psycopg.errors.DataError, psycopg.errors.IntegrityError)
_FIELD_INDEX = re.compile(r"\[[0-9]+\]")
PARTITION_CHECK_S = 3600.0


@dataclass
class Committed:
    """What one flush made durable: MQTT message ids to ack, seqs per (factory, agent)."""

    mids: list[int] = field(default_factory=list)
    acks: list[tuple[int, int]] = field(default_factory=list)
    """(broker session, message id) of each message, for the MQTT acknowledgements."""
    seqs: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    through: dict[str, int] = field(default_factory=dict)
    inserted: int = 0
    duplicates: int = 0
    conflicts: int = 0
    dead_letters: int = 0
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)
    """Dead letters per reason: the contract field that broke, event indexes folded (events[].ts)."""
    intervals: int = 0
    """State intervals written (by ``flush``; ``write`` leaves them to the interval stage)."""
    state_robots: int = 0
    """Robots marked for the interval stage."""

    def merge(self, other: Committed) -> None:
        self.mids += other.mids
        self.acks += other.acks
        for key, seqs in other.seqs.items():
            self.seqs.setdefault(key, []).extend(seqs)
        for agent, through in other.through.items():
            self.through[agent] = max(through, self.through.get(agent, 0))
        for name in ("inserted", "duplicates", "conflicts", "dead_letters", "intervals", "state_robots"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for reason, n in other.dead_letter_reasons.items():
            self.dead_letter_reasons[reason] = self.dead_letter_reasons.get(reason, 0) + n


@dataclass
class Prepared:
    """Messages decoded and validated, ready for ``Writer.write``; built without the database."""

    now: datetime
    mids: list[int]
    accepted: list[tuple[Incoming, list[EventRow]]]
    rejected: list[Rejected]
    events: int = 0
    messages: list[Incoming] = field(default_factory=list)


def reason_key(field_name: str | None) -> str:
    return _FIELD_INDEX.sub("[]", field_name or "message")


class RobotRegistry:
    """(manufacturer, serial) -> robot_id and its factory assignments, cached per writer."""

    def __init__(self) -> None:
        self.ids: dict[tuple[str, str], int] = {}
        self.assignments: dict[int, tuple[list[date], list[str]]] = {}
        self.only_home: dict[int, str] = {}
        """Robots with a single assignment: their factory whatever the day."""

    def load(self, cur: psycopg.Cursor[Any]) -> None:
        self.ids = {(m, s): i for i, m, s in cur.execute("SELECT robot_id, manufacturer, serial FROM robots")}
        rows = cur.execute("SELECT robot_id, valid_from, factory_id FROM assignments ORDER BY 1, 2").fetchall()
        self.assignments = {}
        for rid, since, factory in rows:
            days, factories = self.assignments.setdefault(rid, ([], []))
            days.append(since)
            factories.append(factory)
        self.only_home = {rid: f[0] for rid, (_, f) in self.assignments.items() if len(f) == 1}

    def factory_at(self, robot_id: int, day: date) -> str | None:
        """The factory a registered robot is assigned to on ``day`` (its first one before that)."""
        entry = self.assignments.get(robot_id)
        if not entry:
            return None
        i = bisect.bisect_right(entry[0], day) - 1
        return entry[1][max(i, 0)]

    def resolve_unknown(self, cur: psycopg.Cursor[Any], keys: set[tuple[str, str]], seen: datetime) -> None:
        """Record robots seen in telemetry but absent from the registry as unregistered."""
        ordered = sorted(keys)  # one order for every collector: no deadlock between two of them
        cur.execute(
            "INSERT INTO robots (manufacturer, serial, registered, first_seen) "
            "SELECT m, s, false, %s FROM unnest(%s::text[], %s::text[]) AS u(m, s) "
            "ON CONFLICT (manufacturer, serial) DO NOTHING",
            (seen, [k[0] for k in ordered], [k[1] for k in ordered]),
        )
        for rid, m, s in cur.execute(
            "SELECT robot_id, manufacturer, serial FROM robots WHERE (manufacturer, serial) IN "
            "(SELECT * FROM unnest(%s::text[], %s::text[]))",
            ([k[0] for k in ordered], [k[1] for k in ordered]),
        ):
            self.ids[(m, s)] = rid


class Writer:
    def __init__(self, conn: psycopg.Connection, lifecycle: tuple[int, int] | None = None) -> None:
        """``lifecycle``: (raw_events_days, compress_after_days) to apply hourly with the partitions."""
        self.conn = conn
        self.lifecycle = lifecycle
        self.registry = RobotRegistry()
        self._partitions_at = 0.0
        with conn.cursor() as cur:
            # Short statements many times a second: compiling them (JIT) would cost more than it saves.
            cur.execute("SET jit = off")
            self.registry.load(cur)
        conn.commit()
        self.ensure_partitions()

    def ensure_partitions(self) -> None:
        """Create next months' event partitions (a no-op under TimescaleDB) and apply the raw events'
        lifecycle; hourly from flush."""
        self._partitions_at = time.monotonic()
        try:
            with self.conn.transaction():
                created = self.conn.execute("SELECT ensure_event_partitions()").fetchone()
            if created and created[0]:
                log.info("created %d event partition(s)", created[0])
        except (psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedFunction) as exc:
            log.warning("cannot create event partitions (events land in the default one): %s", exc)
        if self.lifecycle:
            try:
                with self.conn.transaction():
                    dropped = self.conn.execute(
                        "SELECT apply_event_lifecycle(make_interval(days => %s), make_interval(days => %s))",
                        self.lifecycle,
                    ).fetchone()
            except (psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedFunction) as exc:
                log.warning("cannot apply the raw events' lifecycle (retried in an hour): %s", exc)
            except psycopg.errors.TransactionRollback as exc:  # a TimescaleDB job held a lock
                log.warning("raw events' lifecycle deferred (retried in an hour): %s", _first_line(exc))
            else:
                if dropped and dropped[0]:
                    log.info("dropped %d month(s) of raw events older than %d days", dropped[0], self.lifecycle[0])

    def flush(self, messages: list[Incoming]) -> Committed:
        """Write ``messages`` in one transaction, then build the state intervals it marked."""
        committed = self.write(self.prepare(messages))
        if committed.state_robots:
            committed.intervals = self.build_intervals()[1]
        return committed

    def build_intervals(self, max_marks: int = 100_000) -> tuple[int, int, bool]:
        """The interval stage: rebuild the marked robots' state intervals, ``max_marks`` marks per
        transaction, until a transaction finds fewer; (marks, intervals written, busy: another
        collector's stage was running, so marks may be left). Raises psycopg errors for the
        caller to retry."""
        marks = intervals = 0
        while True:
            with self.conn.transaction():
                row = self.conn.execute("SELECT * FROM build_state_intervals(%s)", (max_marks,)).fetchone()
            n, built, busy = row if row else (0, 0, False)
            marks += n
            intervals += built
            if busy or n < max_marks:
                return marks, intervals, bool(busy)

    @staticmethod
    def prepare(messages: list[Incoming], now: datetime | None = None) -> Prepared:
        """Decode and validate: CPU only, safe to run while another flush commits."""
        now = now or clock.now()
        out = Prepared(now, [], [], [], messages=list(messages))
        for msg in messages:
            result = validate_rows(msg, now)
            out.mids.append(msg.mid)
            out.rejected += result.rejected
            if result.rows:
                out.accepted.append((msg, result.rows))
                out.events += len(result.rows)
        return out

    def write_isolating(self, prepared: Prepared) -> Committed:
        """``write``, but a message the database refuses (DataError, IntegrityError: a NUL character
        in a text, say) becomes dead letters instead of blocking the stream; its neighbours are
        written one message at a time. Other errors propagate for the caller to retry."""
        try:
            return self.write(prepared)
        except POISON_ERRORS as exc:
            if len(prepared.messages) <= 1:
                return self.write(self._refused(prepared, exc))
            log.warning(
                "the database refused a batch of %d messages (%s); writing them one by one",
                len(prepared.messages),
                _first_line(exc),
            )
        total = Committed()
        for msg in prepared.messages:
            one = self.prepare([msg], prepared.now)
            try:
                total.merge(self.write(one))
            except POISON_ERRORS as exc:
                total.merge(self.write(self._refused(one, exc)))
        return total

    @staticmethod
    def _refused(prepared: Prepared, exc: BaseException) -> Prepared:
        """The same messages with every event dead-lettered for the database's reason."""
        why = f"the database refused the message: {_first_line(exc)}"
        rejected = list(prepared.rejected)
        for msg, rows in prepared.accepted:
            rejected += [Rejected.of_event(msg, r[0], "database", why, event_to_dict(row_to_event(r))) for r in rows]
        return Prepared(prepared.now, list(prepared.mids), [], rejected, messages=list(prepared.messages))

    def write(self, prepared: Prepared) -> Committed:
        """Store ``prepared`` in one transaction. Raises psycopg errors for the caller to retry."""
        if time.monotonic() - self._partitions_at > PARTITION_CHECK_S:
            self.ensure_partitions()
        now = prepared.now
        out = Committed(mids=list(prepared.mids), acks=[(m.session, m.mid) for m in prepared.messages])
        rejected = list(prepared.rejected)
        with self.conn.transaction(), self.conn.cursor() as cur:
            ids = self.registry.ids
            unknown = {(r[1], r[2]) for _, rows in prepared.accepted for r in rows} - ids.keys()
            if unknown:
                self.registry.load(cur)  # imported since we last looked?
                unknown -= self.registry.ids.keys()
                if unknown:
                    self.registry.resolve_unknown(cur, unknown, now)
            rows = self._rows(prepared, out, rejected)
            for r in rejected:
                if r.agent and r.seq is not None:
                    out.seqs.setdefault((r.factory or "", r.agent), []).append(r.seq)
            parts = split(rows, self._lock(cur, out.seqs, now))
            record_agent_clocks(cur, prepared.messages, now)  # issue 15: the agents' clock offsets
            duplicates, conflicts = self._compare(cur, parts.repeats)
            out.duplicates = parts.duplicates + duplicates
            out.conflicts = self._conflicts(cur, parts.conflicts + conflicts)
            out.inserted = self._copy(cur, parts.new)
            state_lo: dict[int, datetime] = {}
            for row in parts.new:
                if row[6] is not None:
                    lo = state_lo.get(row[2])
                    if lo is None or row[4] < lo:
                        state_lo[row[2]] = row[4]
            if state_lo:
                robots = sorted(state_lo)
                cur.execute(
                    "SELECT mark_state_robots(%s::bigint[], %s::timestamptz[])", (robots, [state_lo[r] for r in robots])
                )
                out.state_robots = len(robots)
            out.dead_letters = self._dead_letters(cur, rejected, now)
            for r in rejected:
                key = reason_key(r.field)
                out.dead_letter_reasons[key] = out.dead_letter_reasons.get(key, 0) + 1
            settled: dict[str, list[int]] = {}
            for row in parts.new:
                settled.setdefault(row[0], []).append(row[1])
            for r in rejected:
                if r.agent and r.seq is not None:
                    settled.setdefault(r.agent, []).append(r.seq)
            out.through = self._settle(cur, {agent for _, agent in out.seqs if agent}, settled)
        return out

    def _rows(self, prepared: Prepared, out: Committed, rejected: list[Rejected]) -> list[Row]:
        """The accepted events as ``events`` rows, robots resolved; a robot registered to another
        factory that day is rejected."""
        registry = self.registry
        robots: dict[tuple[str, str], tuple[int, str | None, bool]] = {}  # -> (robot_id, home, moves)
        rows: list[Row] = []
        append = rows.append
        for msg, events in prepared.accepted:
            parts = msg.topic.split("/")
            factory, agent = parts[2], parts[3]
            seqs = out.seqs.setdefault((factory, agent), [])
            for r in events:
                seq, ts = r[0], r[3]
                seqs.append(seq)
                key = (r[1], r[2])
                robot = robots.get(key)
                if robot is None:
                    robot_id = registry.ids[key]
                    home = registry.only_home.get(robot_id)
                    robot = robots[key] = (robot_id, home, home is None and robot_id in registry.assignments)
                robot_id, home, moves = robot
                if moves:  # a robot that changed factories: where was it that day?
                    home = registry.factory_at(robot_id, ts.date())
                if home is not None and home != factory:
                    rejected.append(
                        Rejected.of_event(
                            msg,
                            seq,
                            "robot",
                            f"robot {key[0]}/{key[1]} is registered to factory {home}, not {factory}",
                            event_to_dict(row_to_event(r)),
                        )
                    )
                    continue
                append((agent, seq, robot_id, factory, ts, r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12]))
        return rows

    @staticmethod
    def _lock(cur: psycopg.Cursor[Any], seqs: dict[tuple[str, str], list[int]], now: datetime) -> dict[str, Settled]:
        """Lock the flush's agents' rows (creating new agents) and read what each has settled."""
        agents = sorted({agent: factory for factory, agent in seqs if agent}.items())
        if not agents:
            return {}
        cur.execute(_LOCK_AGENTS, (now, [a for a, _ in agents], [f for _, f in agents]))
        return {agent: Settled((r.lower, r.upper) for r in committed) for agent, committed in cur.fetchall()}

    @staticmethod
    def _copy(cur: psycopg.Cursor[Any], rows: list[Row]) -> int:
        if rows:
            with cur.copy(COPY_EVENTS) as copy:
                copy.set_types(COPY_TYPES)
                write_row = copy.write_row
                for row in rows:
                    write_row(row)
        return len(rows)

    @staticmethod
    def _compare(cur: psycopg.Cursor[Any], repeats: list[Row]) -> tuple[int, list[Row]]:
        """(duplicates, conflicts) among re-sent events: a repeat is a duplicate when the stored
        event with its agent, seq, robot and time has its content; otherwise (other content,
        robot or time; or a seq that was dead-lettered) it is a changed repeat."""
        if not repeats:
            return 0, []
        cur.execute(
            _STORED,
            (
                list(range(len(repeats))),
                [r[2] for r in repeats],
                [r[4] for r in repeats],
                [r[0] for r in repeats],
                [r[1] for r in repeats],
            ),
        )
        stored = {i: content for i, *content in cur.fetchall()}
        conflicts = [r for i, r in enumerate(repeats) if i not in stored or not same_event(stored[i], r[2:])]
        return len(repeats) - len(conflicts), conflicts

    @staticmethod
    def _conflicts(cur: psycopg.Cursor[Any], rows: list[Row]) -> int:
        """Keep changed repeats, never overwriting what is stored."""
        if rows:
            cur.executemany(
                "INSERT INTO event_conflicts (agent_id, seq, payload) VALUES (%s, %s, %s)",
                [(r[0], r[1], Jsonb(_payload(r))) for r in rows],
            )
            log.warning("%d repeated event key(s) with different content kept as conflicts", len(rows))
        return len(rows)

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
    def _settle(cur: psycopg.Cursor[Any], agents: set[str], settled: dict[str, list[int]]) -> dict[str, int]:
        """Add each agent's newly settled seqs to its committed ranges; its acked_through after."""
        if not agents:
            return {}
        ordered = sorted(agents)
        cur.execute(_SETTLE, (ordered, [multirange_text(settled.get(a, ())) for a in ordered]))
        return {agent: int(through) for agent, through in cur.fetchall()}


def _payload(row: Row) -> dict[str, Any]:
    return {c: (v.isoformat() if isinstance(v, datetime) else v) for c, v in zip(EVENT_COLUMNS, row, strict=True)}


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def ack_payloads(committed: Committed) -> list[tuple[str, str, tuple[tuple[int, int], ...], int]]:
    """(factory, agent, ranges, through) for each agent a flush touched."""
    return [
        (factory, agent, seq_ranges(seqs), committed.through.get(agent, 0))
        for (factory, agent), seqs in committed.seqs.items()
        if agent
    ]


def describe(committed: Committed) -> str:
    return json.dumps({k: getattr(committed, k) for k in ("inserted", "duplicates", "conflicts", "dead_letters")})
