"""The OPC 40010 signal -> canonical state table, and ISO 8601 durations."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from robodensity.core.wire import State
from robodensity.edge.normalise import (
    EMERGENCY_STOP,
    IN_CONTROL,
    ON_PATH,
    OPERATIONAL_MODE,
    PROTECTIVE_STOP,
    SIGNALS_FOR_STATE,
    SPEED_OVERRIDE,
    STATE_SIGNALS,
    TASK_PROGRAM_LOADED,
    derive_state,
    format_duration_s,
    parse_duration_s,
)

EXECUTING = dict(SIGNALS_FOR_STATE[State.EXECUTING])


@pytest.mark.parametrize("state", list(SIGNALS_FOR_STATE))
def test_signals_for_each_state_derive_that_state(state: State) -> None:
    assert derive_state(SIGNALS_FOR_STATE[state]) is state


def test_every_state_but_offline_has_signals() -> None:
    assert set(SIGNALS_FOR_STATE) == set(State) - {State.OFFLINE}


def test_nothing_known_is_offline() -> None:
    assert derive_state({}) is State.OFFLINE
    assert derive_state(dict.fromkeys(STATE_SIGNALS)) is State.OFFLINE
    assert derive_state({"TaskProgramName": "MAIN"}) is State.OFFLINE


@pytest.mark.parametrize("stop", [EMERGENCY_STOP, PROTECTIVE_STOP])
def test_any_stop_is_fault_even_when_running(stop: str) -> None:
    assert derive_state({**EXECUTING, stop: True}) is State.FAULT


@pytest.mark.parametrize("mode", [1, 2, "MANUAL_HIGH_SPEED", "2"])
def test_manual_mode_is_out_of_service(mode: object) -> None:
    assert derive_state({**EXECUTING, OPERATIONAL_MODE: mode}) is State.OUT_OF_SERVICE


@pytest.mark.parametrize("mode", [3, 4, "AUTOMATIC", "automatic_external"])
def test_automatic_modes_can_execute(mode: object) -> None:
    assert derive_state({**EXECUTING, OPERATIONAL_MODE: mode}) is State.EXECUTING


@pytest.mark.parametrize(
    "change",
    [
        {ON_PATH: False},
        {IN_CONTROL: False},
        {TASK_PROGRAM_LOADED: False},
        {SPEED_OVERRIDE: 0.0},
        {OPERATIONAL_MODE: 0},
        {ON_PATH: None},
        {SPEED_OVERRIDE: None},
        {OPERATIONAL_MODE: "UNHEARD_OF"},
    ],
)
def test_a_missing_or_false_condition_is_idle(change: dict[str, object]) -> None:
    assert derive_state({**EXECUTING, **change}) is State.IDLE


def test_missing_signal_keys_are_idle_not_executing() -> None:
    partial = {k: v for k, v in EXECUTING.items() if k != ON_PATH}
    assert derive_state(partial) is State.IDLE


@given(st.dictionaries(st.sampled_from(STATE_SIGNALS), st.one_of(st.none(), st.booleans(), st.integers(-5, 5))))
def test_derive_state_is_total(signals: dict[str, object]) -> None:
    assert derive_state(signals) in State


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("PT12345S", 12345.0), ("PT0S", 0.0), ("P1DT1H1M1.5S", 90061.5), ("PT2H", 7200.0), ("P2D", 172800.0),
     ("pt1,5s", 1.5)],
)  # fmt: skip
def test_iso_8601_durations_parse_to_seconds(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "P", "PT", "P1Y", "P1M", "12345", "PT1H2S3M", "T5S"])
def test_bad_durations_raise(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration_s(text)


@given(st.floats(0, 1e9, allow_nan=False))
def test_format_then_parse_round_trips(seconds: float) -> None:
    assert parse_duration_s(format_duration_s(seconds)) == pytest.approx(seconds, abs=1e-3)
