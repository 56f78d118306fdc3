"""Exactly-once by ranges (collector/ranges.py, migrations/020): the split of a flush, the
migration of event_keys into ranges on a populated schema, two writers serialising on one
agent's row, and the raw events' lifecycle on plain PostgreSQL (migrations/021)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from robodensity.collector.ranges import Settled, multirange_text, split
from robodensity.collector.validate import Incoming
from robodensity.collector.write import Committed, Writer
from robodensity.core import clock, wire
from robodensity.core.wire import Batch, Event, Reading, RobotId, State
from robodensity.storage.db import connect, drop_schema, migrate
from tests.helpers import migrate_through, wait_until

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
ROBOT = RobotId("KUKA", "S1")


def _msg(seqs: list[int], agent: str = "a1", state: State = State.IDLE) -> Incoming:
    events = tuple(Event(s, Reading.of_state(ROBOT, T0 + timedelta(minutes=s), state)) for s in seqs)
    return Incoming(wire.uplink_topic("f1", agent), wire.encode_batch(Batch(agent, "f1", events)), 0)


def _one(conn: psycopg.Connection, query: str) -> object:
    row = conn.execute(query).fetchone()
    return row[0] if row else None


def test_a_flush_splits_into_new_repeats_duplicates_and_conflicts() -> None:
    settled = {"a": Settled([(1, 4), (7, 9)])}
    rows = [("a", s, "x") for s in (3, 4, 5, 4, 7, 9)] + [("a", 5, "y"), ("b", 1, "x")]
    out = split(rows, settled)
    assert [r[:2] for r in out.new] == [("a", 4), ("a", 5), ("a", 9), ("b", 1)]
    assert [r[1] for r in out.repeats] == [3, 7]
    assert out.duplicates == 1 and out.conflicts == [("a", 5, "y")]
    assert 0 not in Settled([(1, 4)]) and 8 not in Settled([(1, 4), (9, 10)])
    shuffled = split([("c", 5, "x"), ("c", 3, "x"), ("c", 5, "x"), ("c", 6, "x"), ("c", 3, "z")], {})
    assert [r[1] for r in shuffled.new] == [5, 3, 6] and shuffled.duplicates == 1
    assert shuffled.conflicts == [("c", 3, "z")] and shuffled.repeats == []
    assert multirange_text([7, 1, 2, 3, 3]) == "{[1,4),[7,8)}" and multirange_text([]) == "{}"


@pytest.fixture
def before_ranges(pg_url: str) -> Iterator[str]:
    """A schema at migration 015 with event keys, a gap, a dead letter and an agent without a row."""
    name = f"t_rng_{uuid.uuid4().hex[:10]}"
    try:
        migrate_through(pg_url, name, 19)
        with connect(pg_url, name, autocommit=True) as conn:
            conn.execute("INSERT INTO robots (manufacturer, serial) VALUES ('KUKA', 'S1')")
            conn.execute("INSERT INTO agents (agent_id, factory_id, acked_through) VALUES ('a1', 'f1', 3)")
            for agent, seqs in (("a1", [1, 2, 3, 4, 5, 8, 9]), ("a2", [1, 2, 3])):
                for s in seqs:
                    ts = T0 + timedelta(minutes=s)
                    conn.execute(
                        "INSERT INTO events (agent_id, seq, robot_id, factory_id, ts, type, state) "
                        "VALUES (%s, %s, 1, 'f1', %s, 'state', 'IDLE')",
                        (agent, s, ts),
                    )
                    conn.execute("INSERT INTO event_keys VALUES (%s, %s, 1, %s)", (agent, s, ts))
            conn.execute(
                "INSERT INTO dead_letters (received_at, topic, agent_id, seq, reason, field, payload) "
                "VALUES (now(), 'rd/v1/f1/a1/up', 'a1', 6, 'ts: bad', 'ts', '\\x00')"
            )
        yield name
    finally:
        drop_schema(pg_url, name)


@pytest.mark.storage_modes
def test_the_migration_turns_event_keys_into_ranges(pg_url: str, before_ranges: str) -> None:
    migrate(pg_url, before_ranges)
    with connect(pg_url, before_ranges) as conn:
        agents = conn.execute("SELECT agent_id, factory_id, committed::text, acked_through FROM agents ORDER BY 1")
        assert agents.fetchall() == [("a1", "f1", "{[1,7),[8,10)}", 6), ("a2", "f1", "{[1,4)}", 3)]
        assert _one(conn, "SELECT to_regclass('event_keys')") is None
        assert _one(conn, "SELECT backlog FROM v_agent_health WHERE agent_id = 'a1'") == 3
        writer = Writer(conn)
        again = writer.flush([_msg([4, 6, 7])])  # 4 stored, 6 dead-lettered (a changed repeat now), 7 new
        assert (again.inserted, again.duplicates, again.conflicts) == (1, 1, 1)
        assert again.through == {"a1": 9}
        assert _one(conn, "SELECT count(*) FROM events WHERE agent_id = 'a1'") == 8


def _blocked_on_a_lock(pg_url: str, schema: str) -> bool:
    with connect(pg_url, schema) as conn:
        return bool(_one(conn, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"))


@pytest.mark.storage_modes
def test_two_writers_of_one_agent_serialise_on_its_row(pg_url: str, schema: str) -> None:
    with connect(pg_url, schema) as first, connect(pg_url, schema) as second:
        one, two = Writer(first), Writer(second)
        one.flush([_msg([1])])  # the agent's row exists
        results = []
        with first.transaction():
            first.execute("SELECT 1 FROM agents WHERE agent_id = 'a1' FOR UPDATE")  # first is mid-flush
            waiter = threading.Thread(target=lambda: results.append(two.flush([_msg(list(range(1, 11)))])))
            waiter.start()
            wait_until(lambda: _blocked_on_a_lock(pg_url, schema), 30, "the second writer waiting for the row")
            # What the first writer's flush of 2..5 stores, committed while the second waits.
            one._copy(first.cursor(), one._rows(one.prepare([_msg([2, 3, 4, 5])]), Committed(), []))
            first.execute("UPDATE agents SET committed = committed + '{[2,6)}' WHERE agent_id = 'a1'")
        waiter.join(30)
        assert (results[0].inserted, results[0].duplicates) == (5, 5)
        assert results[0].through == {"a1": 10}
        stored = first.execute("SELECT count(*), count(DISTINCT seq) FROM events").fetchone()
        assert stored == (10, 10)


def test_raw_events_older_than_the_setting_go_by_whole_months_and_intervals_stay(pg_url: str) -> None:
    name = f"t_life_{uuid.uuid4().hex[:10]}"
    with clock.frozen(datetime(2027, 6, 15, 12, 0, tzinfo=UTC)):
        migrate(pg_url, name)
        try:
            with connect(pg_url, name) as conn:
                conn.execute("SELECT add_event_partition('2026-04-01'), add_event_partition('2026-05-01')")
                conn.commit()
                events = [
                    Event(1, Reading.of_state(ROBOT, datetime(2026, 4, 20, tzinfo=UTC), State.IDLE)),
                    Event(2, Reading.of_state(ROBOT, datetime(2026, 5, 20, tzinfo=UTC), State.EXECUTING)),
                    Event(3, Reading.of_state(ROBOT, datetime(2027, 6, 1, tzinfo=UTC), State.IDLE)),
                ]
                payload = wire.encode_batch(Batch("a1", "f1", tuple(events)))
                Writer(conn).flush([Incoming(wire.uplink_topic("f1", "a1"), payload, 0)])
                intervals = _one(conn, "SELECT count(*) FROM state_intervals")
                # 400 days before 2027-06-15 is 2026-05-11: April has ended before it, May has not.
                Writer(conn, lifecycle=(400, 30))
                assert _one(conn, "SELECT to_regclass('events_y2026m04')") is None
                assert _one(conn, "SELECT to_regclass('events_y2026m05')") == "events_y2026m05"
                assert conn.execute("SELECT seq FROM events ORDER BY seq").fetchall() == [(2,), (3,)]
                assert _one(conn, "SELECT count(*) FROM state_intervals") == intervals == 3
                assert _one(conn, "SELECT committed::text FROM agents") == "{[1,4)}"
        finally:
            drop_schema(pg_url, name)
