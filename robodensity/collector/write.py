"""Validate uplink messages and write them to PostgreSQL in one transaction per flush.

Each flush: decode every message (collector.validate; no database work, so the collector
can do it for the next flush while this one commits), resolve robots, COPY the good events
into a staging table, insert the keys that are new into ``event_keys`` (the idempotency key
(agent, seq); see migrations/004_event_storage.sql) and those events into ``events``, record
changed repeats as conflicts, mark the robots with new state events for the interval stage,
store dead letters, advance each agent's contiguous ``acked_through``, commit. Only then does
the caller acknowledge the MQTT messages and tell each edge what is committed.

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
)
_COLS = ", ".join(EVENT_COLUMNS)
_COMPARED = [c for c in EVENT_COLUMNS if c not in ("agent_id", "seq")]
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
]
STAGING_DDL = "CREATE TEMP TABLE IF NOT EXISTS staging_events (LIKE events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
# The usual flush: each agent's sequence numbers lie beyond the highest it has stored, so no key
# can be there already and the plain insert (half the cost of a speculative ON CONFLICT insert)
# does; the unique key still guards it against another collector storing the same keys.
_INSERT_KEYS_AHEAD = (
    "INSERT INTO event_keys (agent_id, seq, robot_id, ts) SELECT agent_id, seq, robot_id, ts FROM staging_events"
)
_INSERT_KEYS = _INSERT_KEYS_AHEAD + " ON CONFLICT DO NOTHING"
_ALL_AHEAD = (
    "SELECT coalesce(bool_and(f.lo > coalesce((SELECT max(k.seq) FROM event_keys k WHERE k.agent_id = f.agent_id), "
    "0)), true) FROM unnest(%s::text[], %s::bigint[]) AS f(agent_id, lo)"
)
_INSERT_ALL = f"INSERT INTO events ({_COLS}) SELECT {_COLS} FROM staging_events"
# When some keys were there already, or one flush holds a key more than once: the first copy
# of each key whose key row this transaction wrote, i.e. whose key row has no event yet.
_INSERT_KEYS_DEDUP = (
    "INSERT INTO event_keys (agent_id, seq, robot_id, ts) "
    "SELECT DISTINCT ON (agent_id, seq) agent_id, seq, robot_id, ts FROM staging_events "
    "ORDER BY agent_id, seq, ctid ON CONFLICT DO NOTHING"
)
_INSERT_NEW = (
    f"INSERT INTO events ({_COLS}) SELECT DISTINCT ON (s.agent_id, s.seq) "
    f"{', '.join('s.' + c for c in EVENT_COLUMNS)} "
    "FROM staging_events s JOIN event_keys k USING (agent_id, seq) "
    "WHERE k.robot_id = s.robot_id AND k.ts = s.ts AND NOT EXISTS (SELECT 1 FROM events e "
    "  WHERE e.robot_id = k.robot_id AND e.ts = k.ts AND e.agent_id = k.agent_id AND e.seq = k.seq) "
    "ORDER BY s.agent_id, s.seq, s.ctid"
)
# Commit empties staging too (ON COMMIT DELETE ROWS), but a caller's outer transaction may not end there.
_TRUNCATE = "TRUNCATE staging_events"
_CONFLICTS = (
    "INSERT INTO event_conflicts (agent_id, seq, payload) "
    "SELECT s.agent_id, s.seq, to_jsonb(s) FROM staging_events s "
    "JOIN event_keys k USING (agent_id, seq) "
    "JOIN events e ON e.robot_id = k.robot_id AND e.ts = k.ts AND e.agent_id = k.agent_id AND e.seq = k.seq "
    f"WHERE ({', '.join('e.' + c for c in _COMPARED)}) IS DISTINCT FROM "
    f"({', '.join('s.' + c for c in _COMPARED)})"
)
_ADVANCE = """
WITH a AS (
    SELECT agent_id, acked_through AS t FROM agents WHERE agent_id = ANY(%(agents)s)
    ORDER BY agent_id FOR UPDATE
), b AS (   -- this flush's own run from t + 1 on is committed: no need to read it back
    SELECT a.agent_id, a.t, greatest(a.t, coalesce(max(f.hi) FILTER (WHERE f.lo <= a.t + 1), a.t)) AS base
    FROM a LEFT JOIN unnest(%(ra)s::text[], %(lo)s::bigint[], %(hi)s::bigint[]) AS f(agent_id, lo, hi) USING (agent_id)
    GROUP BY a.agent_id, a.t
), s AS (   -- per agent index range scans, whatever the planner thinks of the table sizes
    SELECT b.agent_id, k.seq FROM b CROSS JOIN LATERAL (
        SELECT seq FROM event_keys k WHERE k.agent_id = b.agent_id AND k.seq > b.base OFFSET 0) k
    UNION
    SELECT b.agent_id, d.seq FROM b CROSS JOIN LATERAL (
        SELECT seq FROM dead_letters d WHERE d.agent_id = b.agent_id AND d.seq > b.base OFFSET 0) d
), r AS (
    SELECT agent_id, seq, seq - row_number() OVER (PARTITION BY agent_id ORDER BY seq) AS grp FROM s
), m AS (
    SELECT r.agent_id, max(r.seq) AS through FROM r JOIN b USING (agent_id) WHERE r.grp = b.base GROUP BY r.agent_id
), n AS (
    SELECT b.agent_id, b.t, coalesce(m.through, b.base) AS through FROM b LEFT JOIN m USING (agent_id)
), u AS (
    UPDATE agents g SET acked_through = n.through FROM n WHERE g.agent_id = n.agent_id AND n.through > n.t
)
SELECT agent_id, through FROM n
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
    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self.registry = RobotRegistry()
        self._partitions_at = 0.0
        with conn.cursor() as cur:
            # Short statements many times a second: compiling them (JIT) would cost more than it saves.
            cur.execute("SET jit = off")
            cur.execute(STAGING_DDL)
            self.registry.load(cur)
        conn.commit()
        self.ensure_partitions()

    def ensure_partitions(self) -> None:
        """Create next months' event partitions (a no-op under TimescaleDB); hourly from flush."""
        self._partitions_at = time.monotonic()
        try:
            with self.conn.transaction():
                created = self.conn.execute("SELECT ensure_event_partitions()").fetchone()
            if created and created[0]:
                log.info("created %d event partition(s)", created[0])
        except (psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedFunction) as exc:
            log.warning("cannot create event partitions (events land in the default one): %s", exc)

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
                ids = self.registry.ids
            n_rows, dupes, state_lo = self._copy(cur, prepared, out, rejected)
            for r in rejected:
                if r.agent and r.seq is not None:
                    out.seqs.setdefault((r.factory or "", r.agent), []).append(r.seq)
            out.inserted, out.duplicates, out.conflicts = self._insert(cur, n_rows, dupes, out.seqs)
            if out.inserted and state_lo:
                robots = sorted(state_lo)
                cur.execute(
                    "SELECT mark_state_robots(%s::bigint[], %s::timestamptz[])", (robots, [state_lo[r] for r in robots])
                )
                out.state_robots = len(robots)
            out.dead_letters = self._dead_letters(cur, rejected, now)
            for r in rejected:
                key = reason_key(r.field)
                out.dead_letter_reasons[key] = out.dead_letter_reasons.get(key, 0) + 1
            out.through = self._advance(cur, out.seqs, now)
        return out

    def _copy(
        self, cur: psycopg.Cursor[Any], prepared: Prepared, out: Committed, rejected: list[Rejected]
    ) -> tuple[int, bool, dict[int, datetime]]:
        """COPY the accepted rows into staging; (rows, any key twice, earliest state ts per robot)."""
        registry = self.registry
        robots: dict[tuple[str, str], tuple[int, str | None, bool]] = {}  # -> (robot_id, home, moves)
        state_lo: dict[int, datetime] = {}
        n = 0
        with cur.copy(f"COPY staging_events ({_COLS}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(COPY_TYPES)
            write_row = copy.write_row
            for msg, rows in prepared.accepted:
                parts = msg.topic.split("/")
                factory, agent = parts[2], parts[3]
                seqs = out.seqs.setdefault((factory, agent), [])
                for r in rows:
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
                    write_row((agent, seq, robot_id, factory, ts, r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11]))
                    n += 1
                    if r[5] is not None:
                        lo = state_lo.get(robot_id)
                        if lo is None or ts < lo:
                            state_lo[robot_id] = ts
        # A key twice (a replayed message in the same flush, say) needs the de-duplicating insert.
        dupes = any(len(set(seqs)) < len(seqs) for seqs in out.seqs.values())
        return n, dupes, state_lo

    @staticmethod
    def _insert(
        cur: psycopg.Cursor[Any], n_rows: int, dupes: bool, seqs: dict[tuple[str, str], list[int]]
    ) -> tuple[int, int, int]:
        if not n_rows:
            return 0, 0, 0
        if not dupes:
            lows = sorted((agent, min(s)) for (_, agent), s in seqs.items() if s)
            ahead = cur.execute(_ALL_AHEAD, ([a for a, _ in lows], [lo for _, lo in lows])).fetchone()
            if ahead and ahead[0]:
                try:
                    with cur.connection.transaction():  # a savepoint, for the race below
                        cur.execute(_INSERT_KEYS_AHEAD)
                except psycopg.errors.UniqueViolation:
                    log.info("another collector stored some of these keys meanwhile; skipping them")
                else:
                    cur.execute(_INSERT_ALL)
                    cur.execute(_TRUNCATE)
                    return n_rows, 0, 0
        cur.execute(_INSERT_KEYS_DEDUP if dupes else _INSERT_KEYS)
        inserted = cur.rowcount
        if inserted == n_rows:  # all new, the usual case: no join needed
            cur.execute(_INSERT_ALL)
            cur.execute(_TRUNCATE)
            return inserted, 0, 0
        # Replays: look each staged key up by index. The planner has no statistics of the temp
        # table and might otherwise hash all of event_keys or events (millions of rows).
        cur.execute("SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off")
        if inserted:
            cur.execute(_INSERT_NEW)
            if cur.rowcount != inserted:
                raise RuntimeError(f"{inserted} new event keys but {cur.rowcount} new events")
        conflicts = 0
        if inserted < n_rows:
            cur.execute(_CONFLICTS)
            conflicts = cur.rowcount
            if conflicts:
                log.warning("%d repeated event key(s) with different content kept as conflicts", conflicts)
        cur.execute(_TRUNCATE)
        return inserted, n_rows - inserted - conflicts, conflicts

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
        agents = sorted({agent: factory for factory, agent in seqs if agent}.items())
        if not agents:
            return {}
        # Sorted, so two collectors lock agents rows in one order.
        cur.execute(
            "INSERT INTO agents (agent_id, factory_id, last_seen) "
            "SELECT a, f, %s FROM unnest(%s::text[], %s::text[]) AS u(a, f) ORDER BY a "
            "ON CONFLICT (agent_id) DO UPDATE SET last_seen = EXCLUDED.last_seen",
            (now, [a for a, _ in agents], [f for _, f in agents]),
        )
        runs = [(agent, lo, hi) for (_, agent), s in seqs.items() if agent for lo, hi in seq_ranges(s)]
        cur.execute(
            _ADVANCE,
            {
                "agents": [a for a, _ in agents],
                "ra": [r[0] for r in runs],
                "lo": [r[1] for r in runs],
                "hi": [r[2] for r in runs],
            },
        )
        return {agent: int(through) for agent, through in cur.fetchall()}


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
