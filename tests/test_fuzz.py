"""Property-based fuzzing of the parsers not covered elsewhere (the wire contract and Sparkplug B
have their own): every input is parsed or rejected with the parser's own error, never a crash."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.registry import TABLES, read_table
from edge.sources.mqtt_json import parse_message
from robodensity.settings import MqttJsonSourceSettings
from robodensity.wire import Reading, WireError

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
