"""The collector on a real PostgreSQL: idempotent writes, dead letters with reasons, acks."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from robodensity.collector.validate import Incoming
from robodensity.collector.write import Writer
from robodensity.core import wire
from robodensity.core.settings import load_settings
from robodensity.core.wire import Batch, Event, Reading, RobotId, State
from robodensity.simulators.province import CitySpec, ProvinceSpec, generate
from robodensity.storage.db import connect
from tests.helpers import import_province, running_collector, wait_until

pytestmark = pytest.mark.storage_modes
NOW = datetime.now(UTC).replace(microsecond=0)
PROVINCE = generate(ProvinceSpec(cities=(CitySpec("320100", "南京市", "Nanjing", 2),), robots=6), seed=3)
F1, F2 = PROVINCE.factories
R1 = PROVINCE.robots_of(F1.id)[0]
R2 = PROVINCE.robots_of(F2.id)[0]


@pytest.fixture
def writer(pg_url: str, schema: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    import_province(PROVINCE, pg_url, schema, tmp_path)
    with connect(pg_url, schema) as conn:
        yield Writer(conn)


def _msg(events: list[Event], factory: str = F1.id, agent: str = "a1", mid: int = 0) -> Incoming:
    return Incoming(wire.uplink_topic(factory, agent), wire.encode_batch(Batch(agent, factory, tuple(events))), mid)


def _states(n: int, first_seq: int = 1, robot: RobotId | None = None) -> list[Event]:
    robot = robot or RobotId(R1.manufacturer, R1.serial)
    return [Event(first_seq + i, Reading.of_state(robot, NOW - timedelta(minutes=n - i), State.IDLE)) for i in range(n)]


def _count(writer: Writer, table: str) -> int:
    return int(writer.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


@pytest.mark.parametrize("copies", [1, 10])
def test_replayed_batches_store_each_event_once(writer: Writer, copies: int) -> None:
    events = _states(50)
    for _ in range(copies):
        writer.flush([_msg(events)])
    writer.flush([_msg(events)] * copies)
    assert _count(writer, "events") == 50
    assert _count(writer, "event_conflicts") == 0


def test_a_repeated_key_with_other_content_is_kept_as_a_conflict(writer: Writer) -> None:
    writer.flush([_msg(_states(3))])
    other = Event(2, Reading.of_state(RobotId(R1.manufacturer, R1.serial), NOW, State.FAULT))
    result = writer.flush([_msg([other])])
    assert result.conflicts == 1
    assert writer.conn.execute("SELECT state FROM events WHERE seq = 2").fetchone()[0] == "IDLE"
    assert writer.conn.execute("SELECT payload->>'state' FROM event_conflicts").fetchone()[0] == "FAULT"


def test_acked_through_is_the_highest_contiguous_sequence(writer: Writer) -> None:
    assert writer.flush([_msg(_states(3, first_seq=1))]).through == {"a1": 3}
    assert writer.flush([_msg(_states(2, first_seq=6))]).through == {"a1": 3}
    assert writer.flush([_msg(_states(2, first_seq=4))]).through == {"a1": 7}


def _raw(factory: str, payload: bytes) -> Incoming:
    return Incoming(wire.uplink_topic(factory, "a1"), payload)


def _event_json(**over: object) -> dict:
    e = {
        "seq": 1,
        "robot": {"manufacturer": R1.manufacturer, "serial": R1.serial},
        "ts": wire.format_ts(NOW),
        "type": "state",
        "state": "IDLE",
    }
    e.update(over)
    return e


def _doc(*events: dict, factory: str = F1.id) -> bytes:
    return json.dumps({"v": 1, "agent": "a1", "factory": factory, "events": list(events)}).encode()


MALFORMED = {
    "not JSON": (b"{oops", "payload"),
    "invalid UTF-8": (b'{"v": 1, "agent": "\xff"}', "payload"),
    "over the size limit": (b" " * (wire.MAX_PAYLOAD_BYTES + 1), "payload"),
    "over the event limit": (_doc(*[{}] * (wire.MAX_BATCH_EVENTS + 1)), "events"),
    "wrong type": (_doc(_event_json(seq="1")), "events[0].seq"),
    "NaN": (
        _doc(_event_json(type="counter", counter="cycles", value=0)).replace(b'"value": 0', b'"value": NaN'),
        "payload",
    ),
    "infinity": (
        _doc(_event_json(type="counter", counter="cycles", value=0)).replace(b'"value": 0', b'"value": 1e999'),
        "events[0].value",
    ),
    "no zone": (_doc(_event_json(ts="2026-01-01T00:00:00")), "events[0].ts"),
    "future": (_doc(_event_json(ts=wire.format_ts(NOW + timedelta(minutes=10)))), "events[0].ts"),
    "before 2000": (_doc(_event_json(ts="1999-01-01T00:00:00Z")), "events[0].ts"),
    "unknown type": (_doc(_event_json(type="heartbeat")), "events[0].type"),
    "another factory in the payload": (_doc(_event_json(), factory=F2.id), "factory"),
    "robot of another factory": (
        _doc(_event_json(robot={"manufacturer": R2.manufacturer, "serial": R2.serial})),
        "robot",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_input_becomes_a_dead_letter_with_its_reason(writer: Writer, case: str) -> None:
    payload, field = MALFORMED[case]
    good = _msg(_states(2, first_seq=100))
    writer.flush([_raw(F1.id, payload), good])
    row = writer.conn.execute("SELECT field, reason, payload FROM dead_letters").fetchone()
    assert row is not None and row[0] == field, row
    assert field.split(".")[-1].split("[")[0] in row[1]
    assert bytes(row[2]) == payload or field != "payload"
    assert _count(writer, "events") == 2  # the good neighbour is stored


def test_an_unknown_robot_is_stored_and_recorded_as_unregistered(writer: Writer) -> None:
    writer.flush([_msg(_states(1, robot=RobotId("NEWCO", "X-1")))])
    row = writer.conn.execute("SELECT registered FROM robots WHERE manufacturer = 'NEWCO'").fetchone()
    assert row == (False,)
    assert _count(writer, "events") == 1


def test_two_collectors_on_a_shared_subscription_split_the_load_without_duplicates(
    pg_url: str, broker_url: str, schema: str, tmp_path: Path
) -> None:
    import_province(PROVINCE, pg_url, schema, tmp_path)
    settings = load_settings(collector={"share_group": schema, "flush_ms": 20})
    acks: list[wire.Ack] = []
    got_acks = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

    def on_ack(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        acks.append(wire.decode_ack(msg.payload))
        if acks and max(a.through for a in acks) == 2000:
            got_acks.set()

    client.on_message = on_ack
    host, port = broker_url.removeprefix("mqtt://").split(":")
    client.connect(host, int(port))
    client.subscribe(wire.ack_topic(F1.id, "a1"), qos=1)
    client.loop_start()
    try:
        with (
            running_collector(settings, pg_url, broker_url, schema) as c1,
            running_collector(settings, pg_url, broker_url, schema) as c2,
        ):
            events = _states(2000)
            for i in range(0, 2000, 20):
                client.publish(wire.uplink_topic(F1.id, "a1"), _msg(events[i : i + 20]).payload, qos=1)
            # A collector publishes its acks before it counts the commit in its stats (Collector._acknowledge):
            # the ack through 2000 can arrive while a collector has yet to count its last commit.
            wait_until(
                lambda: got_acks.is_set() and c1.stats.inserted + c2.stats.inserted >= 2000,
                30,
                "the ack through 2000 and both collectors' counts of their commits",
            )
            assert c1.stats.messages > 0 and c2.stats.messages > 0
            assert c1.stats.inserted + c2.stats.inserted == 2000
    finally:
        client.loop_stop()
        client.disconnect()
    with connect(pg_url, schema) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT seq) FROM events").fetchone() == (2000, 2000)
    assert {s for a in acks for lo, hi in a.ranges for s in range(lo, hi + 1)} == set(range(1, 2001))
