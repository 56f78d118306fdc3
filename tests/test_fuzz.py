"""Property-based fuzzing of the parsers not covered elsewhere (the wire contract and Sparkplug B
have their own): every input is parsed or rejected with the parser's own error, never a crash."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robodensity.core.settings import MqttJsonSourceSettings
from robodensity.core.wire import Reading, WireError
from robodensity.edge.sources.mqtt_json import parse_message
from robodensity.storage.registry import TABLES, read_table

NOW = datetime(2026, 11, 23, tzinfo=UTC)
SOURCE = MqttJsonSourceSettings(url="mqtt://127.0.0.1:1883", serial_field="robot.serial")
values = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
docs = st.recursive(
    values,
    lambda inner: st.dictionaries(
        st.sampled_from(["manufacturer", "robot", "serial", "state", "ts", "x"]), inner, max_size=5
    ),
    max_leaves=12,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=100), docs.map(lambda d: json.dumps(d).encode())))
def test_the_json_mapping_parses_or_names_the_field(payload: bytes) -> None:
    try:
        reading = parse_message(SOURCE, payload, NOW)
    except WireError as exc:
        assert exc.field
    else:
        assert isinstance(reading, Reading)


cells = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=12)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    table=st.sampled_from(TABLES),
    rows=st.lists(st.lists(cells, min_size=0, max_size=10), max_size=6),
    header_ok=st.booleans(),
)
def test_registry_files_parse_or_report_the_line(tmp_path: Path, table, rows, header_ok: bool) -> None:  # type: ignore[no-untyped-def]
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(list(table.columns) if header_ok else ["nonsense"])
    writer.writerows(rows)
    path = tmp_path / f"{table.name}.csv"
    path.write_text(buf.getvalue(), encoding="utf-8")
    good, problems = read_table(path, table)
    assert all(len(r) == len(table.columns) for r in good)
    assert all(isinstance(line, int) and table.name in why for line, why in problems)
    if not header_ok:
        assert not good and problems


# Each field of an uplink event: values the contract takes and values it refuses, or absent.
_FIELD_VALUES = {
    "seq": [1, 2, 2**63 - 1, 0, -1, 2**63, 1.0, True, "1", None],
    "robot": [
        {"manufacturer": "KUKA", "serial": "S1"},
        {"manufacturer": "ABB", "serial": "x" * 128},
        {"manufacturer": " ", "serial": "S1"},
        {"manufacturer": "KUKA", "serial": "x" * 129},
        {"manufacturer": "KUKA"},
        {"manufacturer": "KUKA", "serial": 1},
        [],
        None,
    ],
    "ts": [
        "2026-11-22T10:00:00Z",
        "2026-11-22T10:00:00.123456+08:00",
        "2026-11-22T10:00:00",
        "2026-11-22 10:00:00+00:00",
        "2026-11-23T00:06:00Z",
        "1999-12-31T23:59:59Z",
        "2026-13-01T00:00:00Z",
        "now",
        1700000000,
    ],
    "type": ["state", "counter", "alarm", "heartbeat", None, 1],
    "state": ["EXECUTING", "IDLE", "OFFLINE", "RUNNING", "idle", None, 3],
    "counter": ["cycles", "power_on_s", "energy_wh", "startups", "hours", None],
    "value": [0, 1.5, -2.0, 10**20, 10**400, True, "1", None],
    "alarm": [
        {"code": "E1", "text": "", "active": True},
        {"code": "E1", "text": "t", "active": 0},
        {"code": " ", "text": "t", "active": False},
        {"code": "E1", "active": False},
        {"code": "E1", "text": "x" * 1001, "active": True},
        "E1",
    ],
    "quality": ["good", "uncertain", "bad", "great", None],
    "extra": [1, "x", None],
}
_BASE_EVENTS = [
    {"type": "state", "state": "IDLE"},
    {"type": "counter", "counter": "cycles", "value": 7},
    {"type": "alarm", "alarm": {"code": "E1", "text": "door open", "active": True}},
]
_DELETE = object()


@st.composite
def _events(draw: st.DrawFn) -> dict:
    """A valid event of some type with up to two fields replaced by other values or removed."""
    event = {"seq": draw(st.integers(1, 9)), "robot": {"manufacturer": "KUKA", "serial": "S1"}}
    event.update(ts="2026-11-22T10:00:00Z", **draw(st.sampled_from(_BASE_EVENTS)))
    for name in draw(st.lists(st.sampled_from(sorted(_FIELD_VALUES)), max_size=2)):
        value = draw(st.sampled_from([*_FIELD_VALUES[name], _DELETE]))
        if value is _DELETE:
            event.pop(name, None)
        else:
            event[name] = value
    return event


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=st.lists(_events(), max_size=4),
    head=st.fixed_dictionaries(
        {}, optional={"v": st.sampled_from([1, 2, "1"]), "agent": st.sampled_from(["a1", "a 1", 5])}
    ),
)
def test_the_wires_fast_decoder_agrees_with_its_reference_decoder(events: list[dict], head: dict) -> None:
    from robodensity.collector.validate import Incoming, validate_message, validate_rows
    from robodensity.core import wire

    doc = {"v": 1, "agent": "a1", "factory": "f1", **head, "events": events}
    payload = json.dumps(doc).encode()
    try:
        reference: wire.DecodedBatch | None = wire.decode_batch(payload, NOW)
    except wire.WireError:
        reference = None
    fast = wire.decode_rows(payload, NOW)
    # The fast path gives up whenever the reference rejects something (and may give up on odd but
    # valid input, such as a state event with a malformed unused alarm); when it answers, it agrees.
    if reference is None or reference.errors:
        assert fast is None
    elif fast is not None:
        assert fast == (reference.agent, reference.factory, [wire.event_to_row(e) for e in reference.events])
    # And the collector, which uses both, gives the reference's verdicts.
    msg = Incoming(wire.uplink_topic("f1", "a1"), payload)
    checked = validate_message(msg, NOW)
    rows = validate_rows(msg, NOW)
    assert rows.rows == ([wire.event_to_row(e) for e in checked.batch.events] if checked.batch else [])
    assert rows.rejected == checked.rejected
