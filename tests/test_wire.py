"""The wire contract: round trips, and errors that name the field."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robodensity.core import wire
from robodensity.core.wire import (
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


def _at(field: str, value: object) -> dict:
    """A valid event with one field set to ``value`` (a dotted name reaches into robot or alarm)."""
    e = _event(type="alarm", alarm={"code": "E1", "text": "t", "active": True})
    del e["state"]
    head, _, leaf = field.partition(".")
    if leaf:
        e[head] = {**e[head], leaf: value}
    else:
        e[head] = value
    return e


_US = timedelta(microseconds=1)
LIMITS = [  # (field, the last value the contract takes, the first it refuses)
    ("seq", wire.SEQ_MIN, wire.SEQ_MIN - 1),
    ("seq", wire.SEQ_MAX, wire.SEQ_MAX + 1),
    ("robot.manufacturer", "m" * wire.MAX_TEXT_CHARS, "m" * (wire.MAX_TEXT_CHARS + 1)),
    ("robot.serial", "s" * wire.MAX_TEXT_CHARS, "s" * (wire.MAX_TEXT_CHARS + 1)),
    ("alarm.code", "c" * wire.MAX_TEXT_CHARS, "c" * (wire.MAX_TEXT_CHARS + 1)),
    ("alarm.text", "t" * wire.MAX_ALARM_TEXT_CHARS, "t" * (wire.MAX_ALARM_TEXT_CHARS + 1)),
    ("ts", wire.format_ts(wire.EARLIEST), wire.format_ts(wire.EARLIEST - _US)),
    ("ts", wire.format_ts(NOW + wire.MAX_FUTURE), wire.format_ts(NOW + wire.MAX_FUTURE + _US)),
]


@pytest.mark.parametrize(
    ("field", "last", "first_refused"), LIMITS, ids=[f"{f}-{i}" for i, (f, *_) in enumerate(LIMITS)]
)
def test_both_decoders_share_each_limit(field: str, last: object, first_refused: object) -> None:
    good, bad = _batch(_at(field, last)), _batch(_at(field, first_refused))
    assert len(decode_batch(good, NOW).events) == 1
    assert wire.decode_rows(good, NOW) == ("a1", "f1", [wire.event_to_row(e) for e in decode_batch(good, NOW).events])
    [(_, err, _)] = decode_batch(bad, NOW).errors
    assert err.field == f"events[0].{field}"
    assert wire.decode_rows(bad, NOW) is None


def test_a_batch_over_the_event_limit_is_refused_whole_by_both_decoders() -> None:
    # The smallest valid event (104 bytes with its comma): 10,000 of them just fit in a message.
    small = {"seq": 1, "robot": {"manufacturer": "K", "serial": "1"}, "ts": "2026-11-23T11Z", "type": "state"}
    compact = json.dumps({**small, "state": "IDLE"}, separators=(",", ":"))
    full = f'{{"v":1,"agent":"a1","factory":"f1","events":[{",".join([compact] * wire.MAX_BATCH_EVENTS)}]}}'
    assert len(decode_batch(full.encode(), NOW).events) == wire.MAX_BATCH_EVENTS
    assert len(wire.decode_rows(full.encode(), NOW)[2]) == wire.MAX_BATCH_EVENTS  # type: ignore[index]
    over = _batch(*[{}] * (wire.MAX_BATCH_EVENTS + 1))  # tiny events: one dead letter, not 10,001
    with pytest.raises(WireError, match="over the") as info:
        decode_batch(over, NOW)
    assert info.value.field == "events"
    assert wire.decode_rows(over, NOW) is None


texts = st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=12).filter(str.strip)
readings = st.one_of(
    st.builds(
        Reading.of_state,
        st.builds(RobotId, texts, texts),
        st.datetimes(timezones=st.just(UTC)),
        st.sampled_from(State),
        st.sampled_from(wire.Quality),
    ),
    st.builds(
        Reading.of_counter,
        st.builds(RobotId, texts, texts),
        st.datetimes(timezones=st.just(UTC)),
        st.sampled_from(Counter),
        st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**70), 2**70),
        st.sampled_from(wire.Quality),
    ),
    st.builds(
        Reading.of_alarm,
        st.builds(RobotId, texts, texts),
        st.datetimes(timezones=st.just(UTC)),
        texts,
        st.text(max_size=20),
        st.booleans(),
    ),
)


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=200)
@given(st.lists(st.tuples(st.integers(1, wire.SEQ_MAX), readings), max_size=6))
def test_splicing_stored_bodies_writes_the_same_bytes_as_encoding_the_batch(events: list) -> None:
    batch = Batch("a-1", "f.1", tuple(Event(seq, r) for seq, r in events))
    spliced = wire.splice_batch(batch.agent, batch.factory, [(seq, wire.event_body(r)) for seq, r in events])
    assert spliced == encode_batch(batch)
    assert json.loads(spliced)["events"] == [wire.event_to_dict(e) for e in batch.events]


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


def test_the_package_exports_every_public_name_of_its_modules() -> None:
    for module in (wire.contract, wire.codec):
        defined = {
            name
            for name, value in vars(module).items()
            if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
        }
        assert defined <= set(module.__all__), (module.__name__, defined - set(module.__all__))
        assert all(getattr(wire, name) is getattr(module, name) for name in module.__all__)
