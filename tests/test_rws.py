"""ABB RWS: the state table, RobotWare 6 and 7, sessions, a shift end to end, and the faults."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from robodensity.core.errors import ConfigError
from robodensity.core.settings_native import RwsSourceSettings
from robodensity.core.wire import EventType, State
from robodensity.edge.sources.polled import identify
from robodensity.edge.sources.rws import RwsSource, state_of
from robodensity.simulators.rws_controller import RwsController
from tests.certs import TestCA
from tests.faultproxy import FaultProxy
from tests.helpers import wait_until_async
from tests.native_rig import Services, assert_matches_truth, is_state, plan, run_shift, until, with_outage


def test_state_table_follows_the_panel_and_rapid() -> None:
    assert state_of("motoron", "AUTO", "running") is State.EXECUTING
    assert state_of("motoron", "AUTO", "stopped") is State.IDLE
    assert state_of("guardstop", "AUTO", "running") is State.FAULT
    assert state_of("emergencystop", "MANR", "stopped") is State.FAULT
    assert state_of("motoron", "MANR", "running") is State.OUT_OF_SERVICE
    assert state_of("motoroff", "AUTO", "stopped") is State.OUT_OF_SERVICE


def settings(url: str, **kw: object) -> RwsSourceSettings:
    base: dict[str, object] = dict(url=url, poll_s=0.02, timeout_s=0.3, refresh_s=0.3, reconnect_max_s=0.05)
    return RwsSourceSettings(**{**base, **kw})  # type: ignore[arg-type]


async def test_robotware_7_over_https_with_basic_auth_subscribes_and_logs_out(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "pki")
    issued = ca.issue("127.0.0.1", server=True)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(issued.cert, issued.key)
    async with RwsController("OmniCore-7", robotware=7, tls=tls) as sim:
        assert sim.url.startswith("https://")
        cfg = settings(sim.url, robotware=7, ca_file=ca.paths.cert)
        identity, _ = await identify(RwsSource(cfg))
        assert (identity.manufacturer, identity.serial, identity.software) == ("ABB", "OmniCore-7", "7.10.0")
        source = RwsSource(cfg)
        async with source:
            it = aiter(source)
            await until(it, is_state(State.IDLE))
            assert source.subscribed
            sim.set_state(State.EXECUTING)
            await until(it, is_state(State.EXECUTING))
            sim.set_state(State.FAULT)
            got = await until(it, lambda r: r.type is EventType.ALARM)
            assert (got[-1].alarm_code, got[-1].alarm_active) == ("20010", True)
    assert sim.logins == 2 and sim.logouts == 2 and not sim.sessions  # one session each, given back


async def test_one_session_survives_an_outage_and_a_slow_or_garbled_controller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with RwsController("IRC5-6") as sim:
        with FaultProxy(sim.http_port) as proxy:
            source = RwsSource(settings(f"http://127.0.0.1:{proxy.port}", subscribe=False))
            async with source:
                it = aiter(source)
                sim.set_state(State.EXECUTING)
                await until(it, is_state(State.EXECUTING))
                for fault, words in (("half-open", "no answer in"), ("slow", "no answer in"), ("garbage", "not JSON")):
                    caplog.clear()
                    if fault == "half-open":
                        proxy.blackhole()
                    elif fault == "slow":
                        sim.delay_s = 0.6
                    else:
                        sim.garbage = True
                    await until(it, is_state(State.OFFLINE))
                    line = next(r.getMessage() for r in caplog.records if "robot OFFLINE" in r.getMessage())
                    assert words in line, (fault, line)  # one line naming the controller and the cause
                    proxy.heal()
                    sim.delay_s, sim.garbage = 0.0, False
                    await until(it, is_state(State.EXECUTING))
                assert sim.logins == 1  # the session cookie was kept through every outage
                caplog.clear()
                await sim.power_off()  # a restart: sessions are gone, a new login follows
                await until(it, is_state(State.OFFLINE))
                await sim.power_on()
                sim.set_state(State.IDLE)
                await until(it, is_state(State.IDLE))
        # the restart cost a new session (two when a request raced the restart), not one per try
        assert 2 <= sim.logins <= 3, sim.login_paths
        assert sim.logouts == 1 and len(sim.sessions) == sim.logins - 2  # the source gave its session back


async def test_a_full_session_pool_is_waited_out_and_wrong_credentials_are_not_hammered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with RwsController("IRC5-6", max_sessions=1) as sim:
        other = httpx.AsyncClient(base_url=sim.url, auth=httpx.DigestAuth("Default User", "robotics"))
        assert (await other.get("/rw/system", params={"json": "1"})).status_code == 200  # takes the only session
        source = RwsSource(settings(sim.url))
        async with source:
            it = aiter(source)
            task = asyncio.ensure_future(until(it, is_state(State.IDLE), timeout=10))
            # the source's first login is refused (and logged) in its own time: wait for that, not a while
            await wait_until_async(lambda: "session limit" in caplog.text, 10, "the session limit logged")
            assert not task.done()
            await other.get("/logout")
            await other.aclose()
            await task
    refused_before = sim.refused
    caplog.clear()
    async with RwsController("IRC5-6") as sim:
        source = RwsSource(settings(sim.url, username="intruder", login_retry_s=0.2, login_attempts=3))
        t0 = time.monotonic()
        with pytest.raises(ConfigError, match="login refused 3 times"):
            async with source:
                await until(aiter(source), lambda r: False, timeout=10)
        assert time.monotonic() - t0 >= 0.4  # two waits of login_retry_s between three tries
        assert sim.refused == 3 and sim.logins == 0
        assert "login refused" in caplog.text
    assert refused_before == 0


@pytest.mark.slow
async def test_a_shift_through_rws_subscriptions_reaches_the_database_within_a_point_of_the_truth(
    pg_url: str, broker_url: str, schema: str, tmp_path: Path
) -> None:
    keys = [f"ABB/IRB-{i}" for i in range(3)]
    shift, schedules = plan(keys, seed=9)
    mid = shift.start + timedelta(hours=3)
    schedules[keys[2]] = with_outage(schedules[keys[2]], mid, mid + timedelta(minutes=25))
    sims = {k: RwsController(k.split("/")[1]) for k in keys}
    for sim in sims.values():
        await sim.power_on()
    try:
        sources = [
            RwsSource(settings(s.url, refresh_s=1.0, reconnect_max_s=0.01, timeout_s=1.0), now=shift.now)
            for s in sims.values()
        ]
        services = Services(pg_url, broker_url, schema, tmp_path)
        measured = await run_shift(services, shift, schedules, sources, sims)
        assert all(s.subscriptions >= 1 for s in sims.values())  # pushed, not polled
    finally:
        for sim in sims.values():
            await sim.power_off()
    assert measured[keys[2]][State.OFFLINE] > 15 * 60
    assert_matches_truth(measured, shift, schedules)
