"""Modbus TCP: profiles, the simulator against the profiles, faults, discovery, and a shift end to end.

The simulator (simulators/modbus_robot.py) keeps its own register tables, written from
../shared/reference/protocols/estun-modbus.md; the edge reads through its profile files.
Where they disagree, the state checks below fail.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import tomllib
from collections.abc import Iterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from typer.testing import CliRunner

from robodensity.app.cli import app
from robodensity.core import clock as core_clock
from robodensity.core.settings import load_settings
from robodensity.core.settings_modbus import ModbusSourceSettings
from robodensity.core.wire import EventType, Reading, State
from robodensity.edge.agent import EdgeAgent
from robodensity.edge.sources.modbus.discover import discover, parse_units, settings_section
from robodensity.edge.sources.modbus.profile import check_profile, format_table, load_profile
from robodensity.edge.sources.modbus.source import ModbusSource
from robodensity.metrics.state_time import seconds_in_state
from robodensity.metrics.states import EXECUTING, STATES, state_codes
from robodensity.simulators import behaviour
from robodensity.simulators.behaviour import Profile, SimClock, state_schedule
from robodensity.simulators.modbus_robot import ModbusController, ModbusRobot, estun_robots
from robodensity.storage.db import connect
from tests.helpers import running_collector, wait_until_async

SOURCE_LOG = "robodensity.edge.sources.modbus.source"
WORKING = (State.EXECUTING, State.IDLE, State.FAULT, State.OUT_OF_SERVICE)


def cfg_for(
    ctl: ModbusController, profile: str = "estun", robots: list[dict[str, Any]] | None = None, **more: Any
) -> ModbusSourceSettings:
    robots = robots or [{"unit": r.unit, "serial": r.serial} for r in ctl.robots.values()]
    return ModbusSourceSettings(
        url=ctl.url, profile=profile, robots=robots, **{"poll_interval_s": 0.05, "timeout_s": 0.3, **more}
    )


class Reader:
    """Iterates a source in a task; ``latest`` holds each robot's last state reading."""

    def __init__(self, source: ModbusSource) -> None:
        self.source = source
        self.readings: list[Reading] = []
        self.latest: dict[str, State] = {}

    async def run(self) -> None:
        async for r in self.source:
            self.readings.append(r)
            if r.type is EventType.STATE:
                self.latest[r.robot.key] = r.state  # type: ignore[assignment]

    async def until(self, want: dict[str, State], what: str, timeout_s: float = 10.0) -> None:
        await wait_until_async(lambda: all(self.latest.get(k) is s for k, s in want.items()), timeout_s, what)


@asynccontextmanager
async def reading(source: ModbusSource) -> Any:
    async with source:
        reader = Reader(source)
        task = asyncio.create_task(reader.run())
        try:
            yield reader
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


# ------------------------------------------------------------------ profiles


def test_the_built_in_profiles_check_clean_and_print_their_rule_tables() -> None:
    estun = load_profile("estun")
    assert estun.word_order == "little" and estun.string_byte_swap  # CDAB, low byte first (E1)
    assert estun.unconfirmed, "the ESTUN profile must say what is unconfirmed"
    table = format_table(estun)
    assert "error = true" in table and "-> FAULT" in table and "otherwise" in table
    plc = load_profile("cell_plc")
    assert plc.serial == "serial" and set(plc.counters) == {"cycles", "power_on_s"}
    result = CliRunner().invoke(app, ["edge", "profile", "check", "cell_plc"])
    assert result.exit_code == 0, result.output
    assert "alarm_code != 0" in result.output and "-> OUT_OF_SERVICE" in result.output


def test_a_bad_profile_names_file_line_and_key_for_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "plc.toml"
    path.write_text(
        'name = "plc"\nmanufacturer = "X"\nword_order = "middle"\n\n'
        '[[blocks]]\ntable = "holding"\naddress = 0\ncount = 4\n\n'
        "[signals]\n"
        'mode = { table = "holding", address = 0 }\n'
        'run = { table = "holding", address = 1, bit = 17 }\n'
        'far = { table = "holding", address = 10, type = "u32" }\n\n'
        '[[rules]]\nwhen = { mode = 2 }\nstate = "EXECUTING"\n\n'
        '[[rules]]\nwhen = { nothere = true }\nstate = "FAULT"\n'
    )
    profile, problems = check_profile(path)
    assert profile is None
    assert problems == [
        f'{path}:3: word_order: must be "big" (ABCD) or "little" (CDAB); got \'middle\'',
        f"{path}:12: signals.run.bit: must be an integer 0..15; got 17",
        f"{path}:13: signals.far: holding 10..11 is in no [[blocks]]: a poll never reads it",
        f"{path}:20: rules[1].when: nothere is not in [signals]",
        f"{path}:21: rules[1].state: FAULT after a rule for EXECUTING: FAULT rules come first, then OUT_OF_SERVICE",
    ]
    result = CliRunner().invoke(app, ["edge", "profile", "check", str(path)])
    assert result.exit_code == 2 and f"{path}:3: word_order" in result.output


def test_a_profile_that_lets_executing_win_over_a_fault_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "plc.toml"
    path.write_text(
        'name = "plc"\nmanufacturer = "X"\n[[blocks]]\ntable = "coil"\naddress = 0\ncount = 2\n'
        '[signals]\nrun = { table = "coil", address = 0 }\nestop = { table = "coil", address = 1 }\n'
        '[[rules]]\nwhen = { run = true }\nstate = "EXECUTING"\n'
        '[[rules]]\nwhen = { estop = true }\nstate = "FAULT"\n'
    )
    _, problems = check_profile(path)
    assert problems == [
        f"{path}:15: rules[1].state: FAULT after a rule for EXECUTING: FAULT rules come first, then OUT_OF_SERVICE"
    ]


# ------------------------------------------------------------------ simulator against profiles


@pytest.mark.parametrize("layout", ["estun", "cell_plc"])
async def test_every_state_the_simulator_writes_reads_back_through_the_profile(layout: str) -> None:
    maker = "ACME" if layout == "cell_plc" else "ESTUN"
    robots = [ModbusRobot(maker, f"S{i}", unit=i + 1) for i in range(4)]
    async with ModbusController(robots, layout=layout) as ctl:  # type: ignore[arg-type]
        # cell_plc: the serial comes from the PLC's registers, the manufacturer from the settings.
        units = [{"unit": r.unit, "manufacturer": maker} for r in robots] if layout == "cell_plc" else None
        cfg = cfg_for(ctl, layout, robots=units, counter_interval_s=0)
        for shift in range(len(WORKING)):
            want = {r.key: WORKING[(i + shift) % len(WORKING)] for i, r in enumerate(robots)}
            for key, state in want.items():
                ctl.set_state(key, state)
            if shift == 0:
                reader_cm = reading(ModbusSource(cfg))
                reader = await reader_cm.__aenter__()
            await reader.until(want, f"{layout} states, round {shift}")
        if layout == "cell_plc":
            ctl.advance_counters(robots[0].key, cycles=70_000, minutes=3)
            await wait_until_async(
                lambda: any(r.type is EventType.COUNTER and r.value == 70_000 for r in reader.readings),
                5,
                "the cycle counter (u32, high word first)",
            )
            alarms = [r for r in reader.readings if r.type is EventType.ALARM]
            assert alarms and alarms[0].alarm_code == "1042" and alarms[0].alarm_active
        await reader_cm.__aexit__(None, None, None)
    states = [r for r in reader.readings if r.type is EventType.STATE]
    assert len(states) == len(robots) * len(WORKING), "a state is sent only when it changes"


# ------------------------------------------------------------------ faults


async def _power_off(c: ModbusController) -> None:
    await c.power_off()


async def _power_on(c: ModbusController) -> None:
    await c.power_on()


async def _hang(c: ModbusController) -> None:
    c.set_hang(True)


async def _answer(c: ModbusController) -> None:
    c.set_hang(False)
    c.replies = "ok"


async def _exceptions_from_unit_2(c: ModbusController) -> None:
    c.fault_units, c.replies = {2}, "exception"


async def _short_replies(c: ModbusController) -> None:
    c.replies = "short"


FAULTS = {
    "powered off mid-run": (_power_off, _power_on, "3 robot(s) OFFLINE", {1, 2, 3}),
    "no replies (half-open, slow)": (
        _hang,
        _answer,
        "no unit answered (unit 3: no usable reply within 0.3 s); 3 robot(s) OFFLINE",
        {1, 2, 3},
    ),
    "exception replies from one unit": (_exceptions_from_unit_2, _answer, "unit 2: exception 4 to holding 0+19", {2}),
    "short replies": (_short_replies, _answer, "3 robot(s) OFFLINE", {1, 2, 3}),
}


@pytest.mark.parametrize("fault", FAULTS)
async def test_a_fault_is_logged_makes_its_robots_offline_and_recovers_without_a_restart(
    fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    start, end, line, affected = FAULTS[fault]
    robots = estun_robots(3)
    async with ModbusController(robots) as ctl, reading(ModbusSource(cfg_for(ctl))) as reader:
        ctl.set_state(robots[1].key, State.EXECUTING)
        before = {r.key: r.state for r in robots}
        await reader.until(before, "states before the fault")
        n = len(reader.readings)
        with caplog.at_level(logging.INFO, logger=SOURCE_LOG):
            await start(ctl)
            down = {r.key: State.OFFLINE for r in robots if r.unit in affected}
            await reader.until(down, f"OFFLINE for {sorted(down)}")
            assert any(line in rec.getMessage() for rec in caplog.records), [r.getMessage() for r in caplog.records]
            await end(ctl)
            await reader.until(before, "recovery", timeout_s=15)
    gap = [r for r in reader.readings[n:] if r.type is EventType.STATE and r.state is State.OFFLINE]
    assert {r.robot.key for r in gap} == set(down), "exactly the robots affected are OFFLINE, once each"
    assert all(r.quality.value == "bad" for r in gap)


async def test_a_controller_powered_off_leaves_an_offline_gap_in_postgres_and_the_agent_carries_on(
    pg_url: str, broker_url: str, schema: str, tmp_path: Path
) -> None:
    robots = estun_robots(2, prefix="PO")
    edge = {"agent_id": "po", "factory_id": "f-poweroff", "outbox_path": tmp_path / "o.sqlite", "batch_linger_ms": 20}
    settings = load_settings(edge=edge, collector={"share_group": schema, "flush_ms": 20})
    async with ModbusController(robots) as ctl:
        ctl.set_state(robots[0].key, State.EXECUTING)
        source = ModbusSource(cfg_for(ctl))
        with running_collector(settings, pg_url, broker_url, schema):
            agent = EdgeAgent(settings, broker_url, sources=[source])
            stop = asyncio.Event()
            task = asyncio.create_task(agent.run(stop))
            try:
                states = agent.stats.robot_state
                await wait_until_async(lambda: len(states) == 2, 10, "both robots read")
                await ctl.power_off()
                await wait_until_async(lambda: set(states.values()) == {State.OFFLINE}, 10, "OFFLINE")
                await ctl.power_on()
                await wait_until_async(lambda: State.OFFLINE not in states.values(), 15, "back without a restart")
                await wait_until_async(lambda: agent.backlog() == 0, 15, "all acknowledged")
                assert not task.done() and source.reconnects >= 1
            finally:
                stop.set()
                await task
    with connect(pg_url, schema) as conn:
        rows = conn.execute(
            "SELECT r.serial, e.state FROM events e JOIN robots r USING (robot_id) ORDER BY r.serial, e.ts"
        ).fetchall()
    assert rows == [
        ("PO0001", "EXECUTING"),
        ("PO0001", "OFFLINE"),
        ("PO0001", "EXECUTING"),
        ("PO0002", "IDLE"),
        ("PO0002", "OFFLINE"),
        ("PO0002", "IDLE"),
    ]


# ------------------------------------------------------------------ discovery


async def test_discover_finds_each_robot_and_prints_a_settings_section_that_loads(tmp_path: Path) -> None:
    assert parse_units("1-3,7") == [1, 2, 3, 7]
    robots = [ModbusRobot("ACME", f"PLC-R{i}", unit=i, model="KR16") for i in (1, 2, 5)]
    async with ModbusController(robots, layout="cell_plc") as ctl:
        url = f"{ctl.url}?profile=cell_plc&units=1-6"
        profile, found = await discover(url, timeout_s=0.5)
    assert [(r.unit, r.serial, r.model) for r in found] == [(r.unit, r.serial, "KR16") for r in robots]
    section = settings_section(url, profile, found)
    doc = tomllib.loads(section)
    settings = ModbusSourceSettings(**doc["edge"]["modbus"][0])
    assert [r.unit for r in settings.robots] == [1, 2, 5]
    async with ModbusController(estun_robots(2)) as ctl:
        profile, found = await discover(f"{ctl.url}?units=1-2", timeout_s=0.5)
    assert [r.serial for r in found] == [None, None]
    assert "copy it from the robot's nameplate" in settings_section(f"{ctl.url}?units=1-2", profile, found)


def test_the_discover_command_takes_a_modbus_url_and_prints_the_section() -> None:
    loop = asyncio.new_event_loop()
    ctl = ModbusController(estun_robots(3))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(ctl.power_on(), loop).result(10)
    try:
        result = CliRunner().invoke(app, ["edge", "discover", f"{ctl.url}?profile=estun&units=1-3"])
    finally:
        asyncio.run_coroutine_threadsafe(ctl.power_off(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
    assert result.exit_code == 0, result.output
    assert f'url = "{ctl.url}"' in result.output and 'serial = "NAMEPLATE-3"' in result.output
    bad = CliRunner().invoke(app, ["edge", "discover", f"{ctl.url}?units=1-300"])
    assert bad.exit_code == 2 and "units: '1-300' must be within 0..255" in bad.output


# ------------------------------------------------------------------ a shift end to end

TZ = ZoneInfo("Asia/Shanghai")
START = datetime(2025, 3, 3, 8, 0, tzinfo=TZ)  # a Monday morning shift, in the past on any test day
END = START + timedelta(hours=8)
WALL_S = 30.0
"""Wall seconds the shift takes: 960 simulated seconds per wall second, so a 20 ms poll is 19 s."""
CALM = Profile(executing_s=2400, idle_s=900, fault_s=900, out_of_service_s=2400, p_fault=0.1, min_s=300)
"""States of minutes, not seconds: each change costs up to a poll (and the shared test machine's
scheduling delays) of error, and the check is on utilisation, not on catching short states."""


@pytest.fixture
def shift_robots() -> Iterator[tuple[list[ModbusRobot], list[ModbusRobot]]]:
    yield estun_robots(6, prefix="SH"), [ModbusRobot("GENERIC", f"PLC{i}", unit=i) for i in (1, 2, 3, 4)]


@pytest.mark.slow
async def test_a_shift_through_modbus_reaches_postgres_within_a_point_of_the_truth(
    pg_url: str,
    broker_url: str,
    schema: str,
    tmp_path: Path,
    shift_robots: tuple[list[ModbusRobot], ...],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    estun, plc = shift_robots
    everyone = estun + plc
    schedules = {r.key: state_schedule(12, r.key, START, END, CALM) for r in everyone}
    assert sum(len(s) for s in schedules.values()) > 100
    clock = SimClock(START, time.monotonic() + 1.0, speed=(END - START).total_seconds() / WALL_S)

    # A polling source stamps readings with the edge's clock: here, the simulated shift's. The
    # clock check's threshold is above what a poll's few wall milliseconds become at this speed.
    monkeypatch.setattr(core_clock, "now", lambda: clock.sim_at(time.monotonic()))
    edge = {"agent_id": "mb", "factory_id": "f-modbus", "outbox_path": tmp_path / "o.sqlite", "batch_linger_ms": 20}
    settings = load_settings(
        edge={**edge, "clock_threshold_s": 300},
        collector={"share_group": schema, "flush_ms": 20},
    )
    async with (
        ModbusController(estun) as a,
        ModbusController(plc, layout="cell_plc") as b,
    ):
        sources = [
            ModbusSource(cfg_for(a, poll_interval_s=0.02)),
            ModbusSource(cfg_for(b, "cell_plc", poll_interval_s=0.02)),
        ]
        with running_collector(settings, pg_url, broker_url, schema):
            agent = EdgeAgent(settings, broker_url, sources=sources)
            stop = asyncio.Event()
            task = asyncio.create_task(agent.run(stop))
            try:
                await asyncio.gather(
                    a.replay({r.key: schedules[r.key] for r in estun}, clock),
                    b.replay({r.key: schedules[r.key] for r in plc}, clock),
                )
                await asyncio.sleep(max(0.0, clock.wall_at(END) - time.monotonic()) + 0.1)  # pacing: the shift's end
                await wait_until_async(lambda: agent.backlog() == 0, 20, "every reading acknowledged")
            finally:
                stop.set()
                await task
    assert all(s.overruns < s.polls * 0.2 for s in sources), "the polls could not keep their pace"
    with connect(pg_url, schema) as conn:
        rows = conn.execute(
            "SELECT r.manufacturer || '/' || r.serial, e.ts, e.state FROM events e JOIN robots r USING (robot_id) "
            "WHERE e.state IS NOT NULL ORDER BY 1, 2"
        ).fetchall()
    index = {r.key: i for i, r in enumerate(everyone)}
    assert {k for k, _, _ in rows} == set(index)
    robot = np.array([index[k] for k, _, _ in rows], dtype=np.int32)
    ts = np.array([round(t.timestamp() * 1e6) for _, t, _ in rows], dtype=np.int64)
    order = np.lexsort((ts, robot))
    codes = state_codes([s for _, _, s in rows])[order]
    us = (round(START.timestamp() * 1e6), round(END.timestamp() * 1e6))
    measured = seconds_in_state(robot[order], ts[order], codes, len(everyone), *us)[:, 0, :]
    total = (END - START).total_seconds()
    for r in everyone:
        truth = behaviour.seconds_in_state(schedules[r.key], START, END)
        got = measured[index[r.key], EXECUTING] / total
        assert abs(got - behaviour.utilisation(truth)) < 0.01, (r.key, got, behaviour.utilisation(truth))
        for code, state in enumerate(STATES):
            assert abs(measured[index[r.key], code] - truth[state]) / total < 0.01, (r.key, state)
