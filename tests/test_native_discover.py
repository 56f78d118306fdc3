"""``robodensity edge discover`` for hses://, rws://, rws7:// and urdash://: a robot table and a
settings section that loads as it is printed; and each simulator replaying a behaviour schedule."""

from __future__ import annotations

import asyncio
import re
import threading
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from robodensity.app.cli import app
from robodensity.core.settings import load_settings
from robodensity.core.settings_native import HsesSourceSettings, RwsSourceSettings, UrDashSourceSettings
from robodensity.edge.sources.hses import HsesSource
from robodensity.edge.sources.rws import RwsSource
from robodensity.edge.sources.urdash import UrDashSource
from robodensity.simulators.hses_robot import HsesRobot
from robodensity.simulators.rws_controller import RwsController
from robodensity.simulators.urdash_robot import UrDashRobot
from tests.native_rig import until

runner = CliRunner()
FAST: dict[str, Any] = {"poll_s": 0.01, "timeout_s": 0.3, "reconnect_max_s": 0.02, "jitter": 0}


@contextmanager
def running(sim: Any) -> Iterator[Any]:
    """A simulator on its own event loop in a thread (the CLI runs its own loop)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(sim.__aenter__(), loop).result(10)
    try:
        yield sim
    finally:
        asyncio.run_coroutine_threadsafe(sim.__aexit__(None, None, None), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def discover(url: str) -> tuple[str, dict[str, Any]]:
    result = runner.invoke(app, ["edge", "discover", url], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    section = result.output[result.output.index("# ") :]
    return result.output, tomllib.loads(section)


def test_discover_prints_each_native_robot_and_a_section_that_loads() -> None:
    with (
        running(HsesRobot("unused")) as hses,
        running(UrDashRobot("20205500123")) as ur,
        running(RwsController("IRC5-SYS")) as rws,
    ):
        out, toml = discover(f"hses://127.0.0.1:{hses.port}")
        assert "Yaskawa" in out and "GP25-A00" in out and "power_on_s" in out
        assert toml["edge"]["hses"][0]["port"] == hses.port
        out, toml = discover(f"urdash://127.0.0.1:{ur.port}")
        assert re.search(r"Universal Robots\s*│\s*UR10\s*│\s*20205500123", out)
        out, toml2 = discover(f"rws://127.0.0.1:{rws.http_port}")
        assert "ABB" in out and "IRB 6700" in out and "state, alarms" in out
        assert rws.logins == 1 and not rws.sessions  # discovery gives its session back
    settings = load_settings(edge={**toml["edge"], **toml2["edge"]})
    assert settings.edge.urdash[0].port == ur.port and settings.edge.rws[0].robotware == 6


def test_discover_names_an_unreachable_robot_in_one_line() -> None:
    result = runner.invoke(app, ["edge", "discover", "urdash://127.0.0.1:1"])
    assert result.exit_code != 0
    assert "cannot connect" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("kind", ["hses", "urdash", "rws"])
async def test_each_simulator_replays_a_schedule_that_its_source_reads_in_order(kind: str) -> None:
    from robodensity.core.wire import EventType, State
    from robodensity.simulators import hses_robot, rws_controller, urdash_robot
    from robodensity.simulators.behaviour import SimClock

    states = [State.EXECUTING, State.FAULT, State.IDLE, State.OUT_OF_SERVICE, State.OFFLINE, State.EXECUTING]
    t0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    at = [0.0, 0.25, 0.5, 0.75, 1.0, 2.2]  # switched off long enough for HSES's 3 tries of 0.3 s
    schedule = [(t0 + timedelta(seconds=a), s) for a, s in zip(at, states)]
    sim: Any
    if kind == "hses":
        sim, replay = HsesRobot("R1"), hses_robot.replay
    elif kind == "urdash":
        sim, replay = UrDashRobot("20205500123"), urdash_robot.replay
    else:
        sim, replay = RwsController("IRC5-1"), rws_controller.replay
    # A TCP controller switched off is seen at once (the connection closes): a reply slower than 0.3 s on
    # a busy machine must not read as an outage in the middle of the sequence. HSES (UDP) sees the outage
    # only by its timeouts, and retries a slow reply (3 tries) before it says OFFLINE.
    tcp = {**FAST, "timeout_s": 2.0}
    async with sim:
        source: Any
        if kind == "hses":
            source = HsesSource(HsesSourceSettings(host="127.0.0.1", port=sim.port, serial="R1", **FAST))
        elif kind == "urdash":
            source = UrDashSource(UrDashSourceSettings(host="127.0.0.1", port=sim.port, **tcp))
        else:
            source = RwsSource(RwsSourceSettings(url=sim.url, **tcp))
        async with source:
            it = aiter(source)
            await until(it, lambda r: r.type is EventType.STATE)  # connected
            task = asyncio.create_task(replay({"k": sim}, {"k": schedule}, SimClock(t0, time.monotonic() + 0.1)))
            seen: list[State] = []

            def done(r: Any) -> bool:
                if r.type is EventType.STATE and (not seen or seen[-1] is not r.state):
                    seen.append(r.state)
                return seen[-len(states) :] == states

            try:
                await until(it, done, timeout=10)
            except TimeoutError:
                raise AssertionError(f"{kind}: read {[s.name for s in seen]}, not the replay in order") from None
            await task
