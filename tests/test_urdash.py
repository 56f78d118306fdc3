"""UR Dashboard Server: the state table, versions, a shift end to end, and the TCP faults."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from pathlib import Path

import pytest

from robodensity.core.settings_native import UrDashSourceSettings
from robodensity.core.wire import EventType, State
from robodensity.edge.sources.polled import identify, reply_within
from robodensity.edge.sources.urdash import DashboardClient, UrDashSource, state_of
from robodensity.simulators.urdash_robot import UrDashRobot
from tests.faultproxy import FaultProxy
from tests.native_rig import Services, assert_matches_truth, is_state, plan, run_shift, until, with_outage


def test_state_table_follows_the_dashboard_names() -> None:
    assert state_of("RUNNING", "NORMAL", "PLAYING") is State.EXECUTING
    assert state_of("RUNNING", "REDUCED", "STOPPED") is State.IDLE
    assert state_of("RUNNING", "PROTECTIVE_STOP", "PLAYING") is State.FAULT
    assert state_of("POWER_OFF", "ROBOT_EMERGENCY_STOP", "STOPPED") is State.FAULT
    assert state_of("POWER_OFF", "NORMAL", "STOPPED") is State.OUT_OF_SERVICE
    assert state_of("RUNNING", "NORMAL", "PLAYING", "MANUAL") is State.OUT_OF_SERVICE
    assert state_of("RUNNING", "SOME_NEW_MODE", "PLAYING") is State.EXECUTING  # a newer name is no fault


def settings(port: int, **kw: object) -> UrDashSourceSettings:
    base: dict[str, object] = dict(host="127.0.0.1", port=port, poll_s=0.01, timeout_s=0.2, reconnect_max_s=0.05)
    return UrDashSourceSettings(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(("version", "serial"), [("5.11", "20205500123"), ("3.15", "20185500042"), ("3.5", None)])
async def test_identity_and_state_across_software_versions(version: str, serial: str | None) -> None:
    async with UrDashRobot("20205500123" if serial is None else serial, version=version) as sim:
        sim.set_state(State.EXECUTING)
        if serial is None:  # before 3.12 there is no 'get serial number': the settings must say it
            with pytest.raises(Exception, match="set serial in the settings"):
                await identify(UrDashSource(settings(sim.port)))
            identity, sample = await identify(UrDashSource(settings(sim.port, serial="UR-OLD-1")))
            assert identity.serial == "UR-OLD-1" and identity.model == ""
        else:
            identity, sample = await identify(UrDashSource(settings(sim.port)))
            assert (identity.serial, identity.model) == (serial, "UR10")
        assert identity.software.startswith(version) and sample.state is State.EXECUTING


async def test_urdash_source_recovers_from_half_open_garbage_cut_slow_and_power_loss(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with UrDashRobot("20205500123") as sim:
        sim.banner = "Connected: Universal Robots Dashboard Server v2"  # another version's banner
        with FaultProxy(sim.port) as proxy:
            source = UrDashSource(settings(proxy.port))
            async with source:
                it = aiter(source)
                sim.set_state(State.EXECUTING)
                await until(it, is_state(State.EXECUTING))
                for fault, words in (
                    ("half-open", ("no reply to",)),
                    ("garbage", ("unexpected reply",)),
                    ("cut", ("connection closed",)),
                    ("slow", ("no reply to",)),
                    ("power", ("connection closed", "connection lost")),  # seen through the proxy
                ):
                    caplog.clear()
                    if fault == "half-open":
                        proxy.blackhole()
                    elif fault == "slow":
                        sim.delay_s = 0.5
                    elif fault == "power":
                        await sim.power_off()
                    else:
                        setattr(sim, fault, True)
                    await until(it, is_state(State.OFFLINE))
                    proxy.heal()
                    sim.delay_s, sim.garbage, sim.cut = 0.0, False, False
                    if fault == "power":
                        await sim.power_on()
                    await until(it, is_state(State.EXECUTING))
                    line = next(r.getMessage() for r in caplog.records if "robot OFFLINE" in r.getMessage())
                    assert any(w in line for w in words), (fault, line)  # one line naming the cause
    assert source.stats["connects"] == 6


@pytest.mark.slow
async def test_a_shift_through_the_ur_dashboard_reaches_the_database_within_a_point_of_the_truth(
    pg_url: str, broker_url: str, schema: str, tmp_path: Path
) -> None:
    keys = [f"Universal Robots/2020550010{i}" for i in range(3)]
    shift, schedules = plan(keys, seed=5)
    mid = shift.start + timedelta(hours=1)
    schedules[keys[1]] = with_outage(schedules[keys[1]], mid, mid + timedelta(minutes=25))
    sims = {k: UrDashRobot(k.split("/")[1]) for k in keys}
    for sim in sims.values():
        await sim.power_on()
    try:
        sources = [
            UrDashSource(settings(s.port, poll_s=0.01, jitter=0, reconnect_max_s=0.01), now=shift.now)
            for s in sims.values()
        ]
        services = Services(pg_url, broker_url, schema, tmp_path)
        measured = await run_shift(services, shift, schedules, sources, sims)
    finally:
        for sim in sims.values():
            await sim.power_off()
    assert measured[keys[1]][State.OFFLINE] > 15 * 60
    assert_matches_truth(measured, shift, schedules)


async def test_a_stop_arriving_with_a_reply_is_not_lost() -> None:
    """The agent stops its readers by cancelling them. A cancel that lands in the loop pass in which a
    reply arrives must still end the reader (Python 3.11's wait_for returned the reply instead, and a
    reader polling every 10 ms kept the agent from ever stopping)."""
    client = DashboardClient("127.0.0.1", 0, timeout_s=5.0)
    reader = asyncio.StreamReader()
    client._reader = reader
    task = asyncio.ensure_future(client._line(5.0, "'robotmode'"))
    await asyncio.sleep(0)  # the task waits for the line
    reader.feed_data(b"Robotmode: RUNNING\n")  # the reply, and the stop, in one pass of the loop
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_reply_in_when_a_stalled_loop_handles_the_timeout_is_no_outage() -> None:
    """A gateway's event loop stalls past a reply's deadline while the reply sits in the socket: the
    reply wins, the robot is not reported OFFLINE (``asyncio.timeout`` would time it out)."""
    accepted: asyncio.Future[asyncio.StreamWriter] = asyncio.get_running_loop().create_future()

    async def serve(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        accepted.set_result(w)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
    controller = await accepted
    try:
        task = asyncio.ensure_future(reply_within(reader.readuntil(b"\n"), 0.05))
        for _ in range(3):
            await asyncio.sleep(0)  # the read is under way, its deadline set
        controller.write(b"Robotmode: RUNNING\n")  # into the gateway's socket, on time
        time.sleep(0.2)  # the loop stalls (a blocking call) past the deadline
        assert await task == b"Robotmode: RUNNING\n"
    finally:
        writer.close()
        controller.close()
        server.close()


class ChangesMidRead(UrDashRobot):
    """Goes from EXECUTING to FAULT right after it has answered the safety query, when ``armed``: the
    source's read straddles the change (old safety NORMAL, new program PAUSED: IDLE, were it believed)."""

    armed = False

    def reply(self, command: str) -> str:
        answer = super().reply(command)
        if self.armed and command.strip().lower() in ("safetystatus", "safetymode"):
            self.armed = False
            self.set_state(State.FAULT)
        return answer


async def test_a_read_that_straddles_a_change_is_read_again() -> None:
    async with ChangesMidRead("20205500123") as sim:
        sim.set_state(State.EXECUTING)
        source = UrDashSource(settings(sim.port))
        async with source:
            it = aiter(source)
            await until(it, is_state(State.EXECUTING))
            sim.armed = True
            got = await until(it, is_state(State.FAULT))
    assert not sim.armed  # the change did happen mid-read
    assert [r.state for r in got if r.type is EventType.STATE] == [State.FAULT]
