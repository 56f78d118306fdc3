"""Event storage on a real PostgreSQL: fast decoding, partitions and the idempotency key,
state intervals, dead letters, and a collector that survives database and broker
outages without losing or doubling anything."""

from __future__ import annotations

import contextlib
import json
import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from robodensity.app.embedded import embedded_mosquitto, free_port
from robodensity.collector.validate import Incoming, validate_message, validate_rows
from robodensity.collector.write import Writer
from robodensity.core import wire
from robodensity.core.settings import load_settings
from robodensity.core.wire import Batch, Counter, Event, Reading, RobotId, State, decode_rows, event_to_row
from robodensity.storage import rollups
from robodensity.storage.db import connect, drop_schema, migrate
from tests.helpers import migrate_through, running_collector, wait_until

pytestmark = pytest.mark.storage_modes
NOW = datetime.now(UTC).replace(microsecond=0)
FACTORY = "f1"


def _msg(events: list[Event], agent: str = "a1", factory: str = FACTORY, mid: int = 0) -> Incoming:
    return Incoming(wire.uplink_topic(factory, agent), wire.encode_batch(Batch(agent, factory, tuple(events))), mid)


def _state(seq: int, robot: RobotId, ts: datetime, state: State) -> Event:
    return Event(seq, Reading.of_state(robot, ts, state))


@pytest.fixture
def writer(pg_url: str, schema: str) -> Iterator[Writer]:
    with connect(pg_url, schema) as conn:
        yield Writer(conn)


def _partitions_only(storage_mode: str) -> None:
    if storage_mode != "partitions":
        pytest.skip("month partitions are the plain-PostgreSQL layout (TimescaleDB: tests/test_timescale.py)")


def _one(conn: psycopg.Connection, query: str, *args: object) -> object:
    row = conn.execute(query, args or None).fetchone()
    return row[0] if row else None


# ------------------------------------------------------------------ the fast decode path


def _valid_event(seq: int) -> dict:
    return {
        "seq": seq,
        "robot": {"manufacturer": "KUKA", "serial": f"S{seq % 3}"},
        "ts": wire.format_ts(NOW - timedelta(seconds=100 - seq)),
        "type": "state",
        "state": "IDLE",
    }


MUTATIONS: list[tuple[str, object]] = [
    ("seq", True),
    ("seq", 0),
    ("seq", 2**63),
    ("seq", 1.0),
    ("seq", "2"),
    ("robot", None),
    ("robot", []),
    ("robot.manufacturer", ""),
    ("robot.manufacturer", " "),
    ("robot.serial", "x" * 129),
    ("robot.serial", 7),
    ("ts", "2026-01-01T00:00:00"),
    ("ts", "1999-12-31T23:59:59Z"),
    ("ts", "yesterday"),
    ("ts", 1700000000),
    ("ts", wire.format_ts(NOW + timedelta(minutes=6))),
    ("ts", "2026-01-01T08:00:00+08:00"),
    ("type", "heartbeat"),
    ("type", None),
    ("type", ["state"]),
    ("state", "RUNNING"),
    ("state", None),
    ("quality", "great"),
    ("quality", "bad"),
    ("quality", None),
    ("counter", "cycles"),
    ("value", 1),
    ("value", True),
    ("value", 10**400),
    ("value", "1"),
    ("alarm", {"code": "E1", "text": "", "active": True}),
    ("alarm", {"code": "E1", "text": "t", "active": 1}),
    ("alarm", {"code": "", "text": "t", "active": False}),
    ("alarm", {"code": "E1", "text": "x" * 1001, "active": False}),
]


def _mutated(field: str, value: object) -> dict:
    e = _valid_event(2)
    if field.startswith("robot."):
        e["robot"][field.split(".")[1]] = value
    elif field in ("counter", "value"):
        e.update(type="counter", counter="cycles", value=3.5)
        e[field] = value
    elif field == "alarm":
        e.update(type="alarm", alarm=value)
    else:
        e[field] = value
    return e


@pytest.mark.parametrize(("field", "value"), MUTATIONS, ids=[f"{f}={v!r}"[:40] for f, v in MUTATIONS])
def test_the_fast_path_agrees_with_the_wire_module(field: str, value: object) -> None:
    events = [_valid_event(1), _mutated(field, value), _valid_event(3)]
    doc = {"v": 1, "agent": "a1", "factory": FACTORY, "events": events}
    msg = Incoming(wire.uplink_topic(FACTORY, "a1"), json.dumps(doc).encode())
    reference = validate_message(msg, NOW)
    fast = validate_rows(msg, NOW)
    expected_rows = [event_to_row(e) for e in reference.batch.events] if reference.batch else []
    assert fast.rows == expected_rows
    assert fast.rejected == reference.rejected
    if reference.rejected:
        assert decode_rows(msg.payload, NOW) is None  # errors are always the wire module's own


def test_the_fast_path_decodes_every_event_type_like_the_wire_module() -> None:
    robot = RobotId("ABB", "1-2")
    events = (
        _state(1, robot, NOW, State.EXECUTING),
        Event(2, Reading.of_counter(robot, NOW, Counter.ENERGY_WH, 12.5, wire.Quality.UNCERTAIN)),
        Event(3, Reading.of_alarm(robot, NOW, "E42", "", True)),
    )
    payload = wire.encode_batch(Batch("a1", FACTORY, events))
    fast = decode_rows(payload, NOW)
    assert fast == ("a1", FACTORY, [event_to_row(e) for e in wire.decode_batch(payload, NOW).events])


def test_a_payload_that_breaks_the_decoder_itself_is_a_dead_letter(writer: Writer) -> None:
    deep = b'{"v": 1, "events": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    huge = json.dumps({"v": 1, "agent": "a1", "factory": FACTORY, "events": [_mutated("value", 10**400)]}).encode()
    good = _msg([_state(1, RobotId("KUKA", "S1"), NOW, State.IDLE)])
    writer.flush([Incoming(good.topic, deep), Incoming(good.topic, huge), good])
    fields = writer.conn.execute("SELECT field FROM dead_letters ORDER BY id").fetchall()
    assert fields == [("payload",), ("events[0].value",)]  # the too-large number is rejected alone
    assert _one(writer.conn, "SELECT count(*) FROM events") == 1


# ------------------------------------------------------------------ partitions and the idempotency key


def test_migrations_keep_events_stored_before_partitioning(pg_url: str, storage_mode: str) -> None:
    schema = f"t_old_{random.randrange(16**8):08x}"
    try:
        migrate_through(pg_url, schema, 3)
        with connect(pg_url, schema, autocommit=True) as conn:
            conn.execute("INSERT INTO robots (manufacturer, serial) VALUES ('KUKA', 'S1')")
            conn.execute(
                "INSERT INTO events (agent_id, seq, robot_id, factory_id, ts, type, state) "
                "SELECT 'a1', s, 1, 'f1', now() - s * interval '1 day', 'state', 'IDLE' "
                "FROM generate_series(1, 100) s"
            )
        migrate(pg_url, schema)
        with connect(pg_url, schema) as conn:
            assert _one(conn, "SELECT count(*) FROM events") == 100
            assert _one(conn, "SELECT committed::text FROM agents WHERE agent_id = 'a1'") == "{[1,101)}"
            # Whatever today is, 100 days span at least three months: each row sits in its own
            # month's partition where the migration made one, and in the default otherwise.
            placed = conn.execute(
                "SELECT to_char(ts AT TIME ZONE 'UTC', '\"events_y\"YYYY\"m\"MM') AS month, "
                "tableoid::regclass::text AS part, count(*) FROM events GROUP BY 1, 2"
            ).fetchall()
            assert len({month for month, _, _ in placed}) >= 3
            assert sum(n for _, _, n in placed) == 100
            if storage_mode == "timescaledb":  # weekly chunks: 100 days make at least 14
                assert all(part.startswith("_timescaledb_internal._hyper_") for _, part, _ in placed), placed
                assert len({part for _, part, _ in placed}) >= 14
                placed = []
            assert all(part in (month, "events_default") for month, part, _ in placed), placed
            if placed:
                assert {part for _, part, _ in placed} >= {"events_default"}  # the months before the migration's
                assert len({part for _, part, _ in placed}) >= 2
            stored = conn.execute("SELECT ts FROM events WHERE seq = 5").fetchone()[0]
            writer = Writer(conn)
            result = writer.flush([_msg([_state(5, RobotId("KUKA", "S1"), stored, State.IDLE)])])
            assert (result.inserted, result.duplicates) == (0, 1)
            assert _one(conn, "SELECT count(*) FROM events") == 100
    finally:
        drop_schema(pg_url, schema)


def test_events_go_to_monthly_partitions_and_old_months_to_the_default(writer: Writer, storage_mode: str) -> None:
    _partitions_only(storage_mode)
    robot = RobotId("KUKA", "S1")
    old = datetime(2025, 3, 10, tzinfo=UTC)
    writer.flush([_msg([_state(1, robot, NOW, State.IDLE), _state(2, robot, old, State.IDLE)])])
    where = dict(writer.conn.execute("SELECT seq, tableoid::regclass::text FROM events").fetchall())
    assert where[1] == f"events_y{NOW:%Y}m{NOW:%m}"
    assert where[2] == "events_default"
    writer.conn.execute("SELECT add_event_partition('2025-03-01')")  # moves the default's March rows
    assert _one(writer.conn, "SELECT tableoid::regclass::text FROM events WHERE seq = 2") == "events_y2025m03"
    assert _one(writer.conn, "SELECT count(*) FROM events") == 2
    writer.conn.commit()


def test_a_repeated_key_in_another_month_is_a_conflict_not_a_second_event(writer: Writer) -> None:
    robot = RobotId("KUKA", "S1")
    writer.flush([_msg([_state(1, robot, NOW, State.IDLE)])])
    moved = _state(1, robot, NOW - timedelta(days=45), State.IDLE)
    again = writer.flush([_msg([moved]), _msg([moved])])  # and twice within one flush
    assert (again.inserted, again.conflicts, again.duplicates) == (0, 2, 0)
    assert _one(writer.conn, "SELECT count(*) FROM events") == 1
    assert _one(writer.conn, "SELECT ts FROM events") == NOW


def test_a_key_twice_in_one_flush_stores_the_first_and_keeps_the_other_as_a_conflict(writer: Writer) -> None:
    robot = RobotId("KUKA", "S1")
    first, other = _state(1, robot, NOW, State.IDLE), _state(1, robot, NOW, State.FAULT)
    result = writer.flush([_msg([first, first]), _msg([other])])
    assert (result.inserted, result.duplicates, result.conflicts) == (1, 1, 1)
    assert _one(writer.conn, "SELECT state FROM events") == "IDLE"


def test_old_partitions_are_dropped_and_their_seqs_stay_settled(writer: Writer, storage_mode: str) -> None:
    _partitions_only(storage_mode)
    robot = RobotId("KUKA", "S1")
    writer.conn.execute("SELECT add_event_partition('2024-01-01')")
    writer.conn.commit()
    writer.flush(
        [_msg([_state(1, robot, datetime(2024, 1, 5, tzinfo=UTC), State.IDLE), _state(2, robot, NOW, State.IDLE)])]
    )
    assert _one(writer.conn, "SELECT drop_event_partitions(interval '1 year')") == 1
    assert _one(writer.conn, "SELECT committed::text FROM agents") == "{[1,3)}"
    assert writer.conn.execute("SELECT seq FROM events").fetchall() == [(2,)]
    writer.conn.commit()


# ------------------------------------------------------------------ state intervals


def _reference_intervals(events: list[Event]) -> list[tuple[int, datetime, datetime | None, str]]:
    """What the intervals must be, from all state events: (robot, start, end, state) per robot."""
    out = []
    robots = sorted({e.reading.robot.serial for e in events})
    for serial in robots:
        mine = sorted((e.reading.ts, e.seq, e.reading.state) for e in events if e.reading.robot.serial == serial)
        last_at: dict[datetime, State] = {}
        for ts, _, state in mine:
            last_at[ts] = state  # the last by seq wins at one instant
        starts: list[tuple[datetime, State]] = []
        for ts in sorted(last_at):
            if not starts or starts[-1][1] != last_at[ts]:
                starts.append((ts, last_at[ts]))
        for i, (ts, state) in enumerate(starts):
            end = starts[i + 1][0] if i + 1 < len(starts) else None
            out.append((serial, ts, end, state.value))
    return out


def _stored_intervals(conn: psycopg.Connection) -> list[tuple[str, datetime, datetime | None, str]]:
    return conn.execute(
        "SELECT r.serial, i.start_ts, i.end_ts, i.state FROM state_intervals i JOIN robots r USING (robot_id) "
        "ORDER BY r.serial, i.start_ts"
    ).fetchall()


def _random_states(rng: random.Random, n: int, robots: list[RobotId], step_s: int = 30) -> list[Event]:
    t0 = NOW - timedelta(hours=6)
    events = []
    for seq in range(1, n + 1):
        ts = t0 + timedelta(seconds=rng.randrange(0, 6 * 3600, step_s))  # repeats of one instant happen
        events.append(_state(seq, rng.choice(robots), ts, rng.choice(list(State))))
    return events


@pytest.mark.parametrize(
    ("seed", "step_s", "most"),
    [
        (1, 30, 60),
        (2, 30, 60),
        (3, 600, 60),
        (4, 600, 3),
        (5, 1800, 3),
        (6, 1800, 1),
    ],
)
def test_intervals_built_from_shuffled_batches_match_a_full_rebuild(
    writer: Writer, seed: int, step_s: int, most: int
) -> None:
    rng = random.Random(seed)
    robots = [RobotId("KUKA", f"S{i}") for i in range(3)]
    events = _random_states(rng, 300, robots, step_s)  # coarse steps: many events at one instant
    shuffled = events[:]
    rng.shuffle(shuffled)
    i = 0
    while i < len(shuffled):
        n = rng.randint(1, most)  # small batches: late events fall inside stored intervals
        chunk = shuffled[i : i + n]
        writer.flush([_msg(chunk), _msg(chunk[: n // 3])])  # with some repeats
        i += n
        # After every flush, not only at the end: a later rebuild could hide a wrong one.
        assert _stored_intervals(writer.conn) == _reference_intervals(shuffled[:i])
        writer.conn.commit()
    assert _stored_intervals(writer.conn) == _reference_intervals(events)


def test_in_order_states_extend_the_open_interval_and_offline_closes_it(writer: Writer) -> None:
    robot = RobotId("KUKA", "S1")
    t0 = NOW - timedelta(hours=1)
    writer.flush([_msg([_state(1, robot, t0, State.IDLE)])])
    writer.flush([_msg([_state(2, robot, t0 + timedelta(minutes=5), State.IDLE)])])
    assert _stored_intervals(writer.conn) == [("S1", t0, None, "IDLE")]
    writer.flush([_msg([_state(3, robot, t0 + timedelta(minutes=10), State.OFFLINE)])])
    assert _stored_intervals(writer.conn) == [
        ("S1", t0, t0 + timedelta(minutes=10), "IDLE"),
        ("S1", t0 + timedelta(minutes=10), None, "OFFLINE"),
    ]
    # A late event inside the closed interval splits it.
    writer.flush([_msg([_state(4, robot, t0 + timedelta(minutes=7), State.FAULT)])])
    assert _stored_intervals(writer.conn) == [
        ("S1", t0, t0 + timedelta(minutes=7), "IDLE"),
        ("S1", t0 + timedelta(minutes=7), t0 + timedelta(minutes=10), "FAULT"),
        ("S1", t0 + timedelta(minutes=10), None, "OFFLINE"),
    ]


def test_a_later_event_at_an_interval_start_can_merge_it_with_the_one_before(writer: Writer) -> None:
    robot = RobotId("KUKA", "S1")
    t0 = NOW - timedelta(hours=1)
    t1 = t0 + timedelta(minutes=5)
    writer.flush([_msg([_state(1, robot, t0, State.IDLE), _state(2, robot, t1, State.FAULT)])])
    writer.flush([_msg([_state(3, robot, t1, State.IDLE)])])  # the last at t1 by seq: IDLE again
    assert _stored_intervals(writer.conn) == [("S1", t0, None, "IDLE")]


def test_counters_and_alarms_make_no_intervals(writer: Writer) -> None:
    robot = RobotId("KUKA", "S1")
    writer.flush(
        [
            _msg(
                [
                    Event(1, Reading.of_counter(robot, NOW, Counter.CYCLES, 3.0)),
                    Event(2, Reading.of_alarm(robot, NOW, "E1", "x", True)),
                ]
            )
        ]
    )
    assert _stored_intervals(writer.conn) == []


# ------------------------------------------------------------------ event counts and storage mode


def test_event_counts_per_quarter_hour_are_a_view_in_both_modes(writer: Writer) -> None:
    robot = RobotId("KUKA", "S1")
    t0 = datetime(2026, 1, 5, 2, 0, tzinfo=UTC)
    writer.flush(
        [
            _msg(
                [
                    _state(1, robot, t0, State.IDLE),
                    _state(2, robot, t0 + timedelta(minutes=1), State.IDLE),
                    Event(3, Reading.of_counter(robot, t0 + timedelta(minutes=20), Counter.CYCLES, 1.0)),
                ]
            )
        ]
    )
    if rollups.storage_mode(writer.conn) == "timescaledb":
        writer.conn.commit()
        writer.conn.autocommit = True  # a continuous aggregate is refreshed outside a transaction
        writer.conn.execute("CALL public.refresh_continuous_aggregate('events_15m', NULL, NULL)")
        writer.conn.autocommit = False
    rows = writer.conn.execute("SELECT bucket, type, event_count FROM v_event_counts_15m ORDER BY 1, 2").fetchall()
    assert rows == [(t0, "state", 2), (t0 + timedelta(minutes=15), "counter", 1)]


def test_the_storage_mode_is_the_runs_and_events_are_a_hypertable_exactly_under_timescaledb(
    writer: Writer, storage_mode: str
) -> None:
    assert rollups.storage_mode(writer.conn) == storage_mode
    hypertables = _one(
        writer.conn,
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relname = 'events' AND n.nspname = current_schema() AND EXISTS ("
        "  SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') AND c.relkind = 'r'",
    )
    assert hypertables == (1 if storage_mode == "timescaledb" else 0)  # a partitioned table otherwise
    writer.flush([_msg([_state(1, RobotId("KUKA", "S1"), NOW, State.IDLE)])])
    assert _one(writer.conn, "SELECT count(*) FROM events") == 1


# ------------------------------------------------------------------ dead letters


def test_a_message_the_database_refuses_becomes_dead_letters_and_its_neighbours_are_stored(writer: Writer) -> None:
    good = _msg([_state(1, RobotId("KUKA", "S1"), NOW, State.IDLE)])
    poison = _msg([_state(2, RobotId("KUKA", "S\x00"), NOW, State.IDLE)])
    bad_json = Incoming(good.topic, b"{")
    result = writer.write_isolating(writer.prepare([good, poison, bad_json]))
    assert result.inserted == 1
    assert result.dead_letter_reasons == {"database": 1, "payload": 1}
    assert result.through == {"a1": 2}  # the refused event is answered too: the edge stops re-sending it
    by_reason = writer.conn.execute(
        "SELECT reason, dead_letters FROM v_dead_letters_by_reason ORDER BY reason"
    ).fetchall()
    assert by_reason == [("database", 1), ("payload", 1)]


def test_dead_letters_are_counted_per_field_with_event_indexes_folded(writer: Writer) -> None:
    doc = {
        "v": 1,
        "agent": "a1",
        "factory": FACTORY,
        "events": [_mutated("ts", "yesterday") | {"seq": s} for s in (1, 2)] + [_mutated("state", "X")],
    }
    writer.flush([Incoming(wire.uplink_topic(FACTORY, "a1"), json.dumps(doc).encode())])
    rows = writer.conn.execute("SELECT reason, dead_letters FROM v_dead_letters_by_reason ORDER BY 1").fetchall()
    assert rows == [("events[].state", 1), ("events[].ts", 2)]


# ------------------------------------------------------------------ the collector through outages


class Publisher:
    """A raw MQTT client: publishes uplink batches, collects the collector's acks."""

    def __init__(self, broker_url: str, factory: str = FACTORY, agent: str = "a1") -> None:
        self.factory, self.agent = factory, agent
        self.acked: set[int] = set()
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_ack
        self.client.on_connect = lambda c, *_: c.subscribe(wire.ack_topic(factory, agent), qos=1)
        host, port = broker_url.removeprefix("mqtt://").split(":")
        self.client.reconnect_delay_set(0.1, 1)
        self.client.connect(host, int(port))
        self.client.loop_start()

    def _on_ack(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        ack = wire.decode_ack(msg.payload)
        with self.lock:
            self.acked.update(s for lo, hi in ack.ranges for s in range(lo, hi + 1))

    def publish(self, payload: bytes) -> None:
        info = self.client.publish(wire.uplink_topic(self.factory, self.agent), payload, qos=1)
        info.wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _batches(first: int, n_batches: int, size: int) -> list[bytes]:
    robot = RobotId("KUKA", "S1")
    out = []
    for b in range(n_batches):
        seqs = range(first + b * size, first + (b + 1) * size)
        events = [
            _state(s, robot, NOW - timedelta(seconds=100_000 - s), State.IDLE if s % 2 else State.EXECUTING)
            for s in seqs
        ]
        out.append(_msg(events).payload)
    return out


def _count(pg_url: str, schema: str) -> int:
    with connect(pg_url, schema) as conn:
        return int(_one(conn, "SELECT count(*) FROM events"))  # type: ignore[arg-type]


def test_events_arrive_once_when_the_collector_loses_its_database_backend(
    pg_url: str, broker_url: str, schema: str
) -> None:
    settings = load_settings(collector={"share_group": schema, "flush_ms": 20})
    publisher = Publisher(broker_url)
    try:
        with running_collector(settings, pg_url, broker_url, schema) as collector:
            for p in _batches(1, 10, 100):
                publisher.publish(p)
            wait_until(lambda: _count(pg_url, schema) == 1000, 30, "the first half stored")
            with connect(pg_url, schema, autocommit=True) as admin:
                killed = admin.execute(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = 'robodensity-collector' AND pid <> pg_backend_pid()"
                ).fetchone()
            assert killed and killed[0] >= 1
            for p in _batches(1001, 10, 100):
                publisher.publish(p)
            wait_until(lambda: _count(pg_url, schema) == 2000, 30, "the second half stored")
            wait_until(lambda: len(publisher.acked) == 2000, 30, "acks for every event")
            assert collector.stats.db_retries >= 1
    finally:
        publisher.close()
    with connect(pg_url, schema) as conn:
        stored = conn.execute("SELECT count(*), count(DISTINCT seq), max(seq) FROM events").fetchone()
        assert stored == (2000, 2000, 2000)
        assert _one(conn, "SELECT acked_through FROM agents WHERE agent_id = 'a1'") == 2000


def test_the_collector_waits_for_a_database_that_is_locked_and_then_writes_everything(
    pg_url: str, broker_url: str, schema: str
) -> None:
    settings = load_settings(collector={"share_group": schema, "flush_ms": 20})
    publisher = Publisher(broker_url)
    try:
        with running_collector(settings, pg_url, broker_url, schema):
            with connect(pg_url, schema) as blocker:
                blocker.execute("LOCK TABLE agents IN EXCLUSIVE MODE")
                for p in _batches(1, 5, 100):
                    publisher.publish(p)
                wait_until(lambda: _waiting(pg_url), 30, "the collector blocked on the lock")
                assert _count(pg_url, schema) == 0
                blocker.rollback()
            wait_until(lambda: len(publisher.acked) == 500, 30, "acks for every event")
    finally:
        publisher.close()
    assert _count(pg_url, schema) == 500


def _waiting(pg_url: str) -> bool:
    with connect(pg_url, "public") as conn:
        return bool(
            _one(
                conn,
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                "'robodensity-collector' AND wait_event_type = 'Lock'",
            )
        )


def test_the_collector_resumes_after_a_broker_restart(pg_url: str, schema: str) -> None:
    port = free_port()
    settings = load_settings(collector={"share_group": schema, "flush_ms": 20})
    with contextlib.ExitStack() as stack:
        first_broker = contextlib.ExitStack()
        stack.callback(first_broker.close)
        broker_url = first_broker.enter_context(embedded_mosquitto(port))
        collector = stack.enter_context(running_collector(settings, pg_url, broker_url, schema))
        publisher = Publisher(broker_url)
        stack.callback(publisher.close)
        for p in _batches(1, 5, 100):
            publisher.publish(p)
        wait_until(lambda: len(publisher.acked) == 500, 30, "acks before the restart")
        first_broker.close()
        wait_until(lambda: not collector.subscribed.is_set(), 30, "the collector noticing the broker is gone")
        stack.enter_context(embedded_mosquitto(port))
        wait_until(collector.subscribed.is_set, 60, "the collector subscribing again")
        wait_until(lambda: publisher.client.is_connected(), 30, "the publisher reconnecting")
        for p in _batches(501, 5, 100):
            publisher.publish(p)
        wait_until(lambda: _count(pg_url, schema) == 1000, 30, "events after the restart stored")
        assert collector.stats.broker_connects >= 2
    with connect(pg_url, schema) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT seq) FROM events").fetchone() == (1000, 1000)


def test_two_collectors_writing_one_robot_build_the_same_intervals_as_a_full_rebuild(
    pg_url: str, broker_url: str, schema: str
) -> None:
    rng = random.Random(7)
    robots = [RobotId("KUKA", f"S{i}") for i in range(3)]
    events = _random_states(rng, 1200, robots)
    rng.shuffle(events)  # out of order, and split between collectors and their database threads
    # Interval stages every 10 ms: they run while both collectors commit marks for the same robots.
    settings = load_settings(collector={"share_group": schema, "flush_ms": 5, "intervals_every_ms": 10})
    publisher = Publisher(broker_url)
    try:
        with (
            running_collector(settings, pg_url, broker_url, schema) as c1,
            running_collector(settings, pg_url, broker_url, schema) as c2,
            connect(pg_url, schema, autocommit=True) as conn,
        ):
            for i in range(0, len(events), 20):
                publisher.publish(_msg(sorted(events[i : i + 20], key=lambda e: e.seq)).payload)
            # a collector acks before it counts the commit in its stats (Collector._acknowledge)
            wait_until(
                lambda: len(publisher.acked) == len(events) and c1.stats.inserted + c2.stats.inserted == len(events),
                30,
                "acks for every event, counted",
            )
            assert c1.stats.inserted > 0 and c2.stats.inserted > 0
            # Built by the running stages, not only by the final pass when the collectors stop. A stage
            # leaves a mark committed while it ran for the next stage (012), even when the intervals it
            # wrote already hold that mark's events: so wait for both, marks first (every event is acked,
            # so no mark can come after the last one is consumed).
            wait_until(
                lambda: (
                    _one(conn, "SELECT count(*) FROM state_marks") == 0
                    and _stored_intervals(conn) == _reference_intervals(events)
                ),
                30,
                "the interval stages to consume every mark",
            )
    finally:
        publisher.close()
    with connect(pg_url, schema) as conn:
        assert _stored_intervals(conn) == _reference_intervals(events)


def test_dead_letters_are_acknowledged_and_never_block_the_stream(pg_url: str, broker_url: str, schema: str) -> None:
    settings = load_settings(collector={"share_group": schema, "flush_ms": 20})
    publisher = Publisher(broker_url)
    try:
        with running_collector(settings, pg_url, broker_url, schema) as collector:
            publisher.publish(b"not json")
            publisher.publish(_msg([_state(1, RobotId("KUKA", "nul\x00"), NOW, State.IDLE)]).payload)
            for p in _batches(2, 3, 100):
                publisher.publish(p)
            wait_until(lambda: len(publisher.acked) == 301, 30, "acks for every event, the refused one too")
            # The collector counts a commit's messages before its dead letters (Collector._acknowledge):
            # wait for both, or the last commit's dead letters may not be counted yet.
            wait_until(
                lambda: collector.stats.messages == 5 and sum(collector.stats.dead_letters_by_reason.values()) >= 2,
                30,
                "every message acknowledged and its dead letters counted",
            )
            assert collector.stats.dead_letters_by_reason == {"payload": 1, "database": 1}
    finally:
        publisher.close()
    assert _count(pg_url, schema) == 300
