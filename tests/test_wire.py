"""The wire contract: round trips, and errors that name the field."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robodensity import wire
from robodensity.wire import (
    Batch,
    Counter,
    Event,
    Reading,
    RobotId,
    State,
    WireError,
    decode_batch,
    encode_batch,
)

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
ROBOT = RobotId("KUKA", "502133")


def _batch(*events: dict) -> bytes:
    return json.dumps({"v": 1, "agent": "a1", "factory": "f1", "events": list(events)}).encode()


def _event(**over: object) -> dict:
    e = {
        "seq": 1,
        "robot": {"manufacturer": "KUKA", "serial": "1"},
        "ts": "2026-11-23T11:00:00Z",
        "type": "state",
        "state": "IDLE",
    }
    e.update(over)
    return e


def test_a_batch_round_trips_through_the_wire() -> None:
    events = (
        Event(1, Reading.of_state(ROBOT, NOW, State.EXECUTING)),
        Event(2, Reading.of_counter(ROBOT, NOW, Counter.ENERGY_WH, 1234.5)),
        Event(3, Reading.of_alarm(ROBOT, NOW, "E42", "gripper", True)),
    )
    decoded = decode_batch(encode_batch(Batch("a1", "f1", events)), NOW)
    assert decoded.events == events
    assert decoded.errors == ()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b"\xff\xfe", "payload"),
        (b"not json", "payload"),
        (b"[1, 2]", "payload"),
        (b'{"v": 2, "agent": "a", "factory": "f", "events": []}', "v"),
        (b'{"v": 1, "agent": "a/b", "factory": "f", "events": []}', "agent"),
        (b'{"v": 1, "agent": "a", "factory": "f", "events": {}}', "events"),
        (b'{"v": 1, "agent": "a", "factory": "f", "events": [], "x": NaN}', "payload"),
    ],
)
def test_an_unusable_message_names_the_field(payload: bytes, field: str) -> None:
    with pytest.raises(WireError) as info:
        decode_batch(payload, NOW)
    assert info.value.field == field


def test_an_oversized_message_is_refused_before_parsing() -> None:
    with pytest.raises(WireError, match="over the"):
        decode_batch(b" " * (wire.MAX_PAYLOAD_BYTES + 1), NOW)


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"seq": 0}, "seq"),
        ({"seq": True}, "seq"),
        ({"seq": "7"}, "seq"),
        ({"robot": {"manufacturer": "", "serial": "1"}}, "robot.manufacturer"),
        ({"robot": "KUKA-1"}, "robot"),
        ({"ts": "2026-11-23T11:00:00"}, "ts"),
        ({"ts": "1999-12-31T23:00:00Z"}, "ts"),
        ({"ts": (NOW + timedelta(minutes=6)).isoformat()}, "ts"),
        ({"ts": 1700000000}, "ts"),
        ({"type": "telemetry"}, "type"),
        ({"state": "RUNNING"}, "state"),
        ({"type": "counter", "counter": "cycles", "value": "3"}, "value"),
        ({"type": "counter", "counter": "speed", "value": 1}, "counter"),
        ({"type": "alarm", "alarm": {"code": "E1", "text": "x", "active": "yes"}}, "alarm.active"),
        ({"quality": "excellent"}, "quality"),
    ],
)
def test_a_bad_event_is_rejected_alone_and_named(override: dict, field: str) -> None:
    good = _event(seq=2)
    decoded = decode_batch(_batch(_event(**override), good), NOW)
    assert [e.seq for e in decoded.events] == [2]
    [(_seq, err, raw)] = decoded.errors
    assert err.field == f"events[0].{field}"
    assert raw == json.loads(json.dumps(_event(**override)))


def test_an_overflowing_number_is_not_a_finite_value() -> None:
    raw = _batch(_event(type="counter", counter="cycles", value=0)).replace(b'"value": 0', b'"value": 1e999')
    [(_, err, _)] = decode_batch(raw, NOW).errors
    assert err.field == "events[0].value"


def test_a_timestamp_within_five_minutes_ahead_is_accepted() -> None:
    ts = (NOW + timedelta(minutes=4)).isoformat()
    assert decode_batch(_batch(_event(ts=ts)), NOW).events[0].reading.ts == NOW + timedelta(minutes=4)


def test_seq_ranges_fold_consecutive_numbers() -> None:
    assert wire.seq_ranges([5, 1, 2, 3, 3, 9]) == ((1, 3), (5, 5), (9, 9))


def test_an_ack_round_trips() -> None:
    ack = wire.Ack("a1", ((1, 3), (7, 7)), 3)
    assert wire.decode_ack(wire.encode_ack(ack)) == ack


def test_the_uplink_topic_names_factory_and_agent() -> None:
    assert wire.parse_uplink_topic(wire.uplink_topic("f1", "a1")) == ("f1", "a1")
    with pytest.raises(WireError):
        wire.parse_uplink_topic("robodensity/v1/f1/a1/ack")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=10,
)


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=100)
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["seq", "robot", "ts", "type", "state", "counter", "value", "alarm", "quality"]),
            json_values,
        ),
        max_size=5,
    )
)
def test_any_json_events_decode_or_fail_with_a_wire_error(events: list) -> None:
    decoded = decode_batch(_batch(*events), NOW)
    assert len(decoded.events) + len(decoded.errors) == len(events)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_the_decoder(payload: bytes) -> None:
    with contextlib.suppress(WireError):
        decode_batch(payload, NOW)
