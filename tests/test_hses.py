"""Yaskawa HSES: the codec and state table, a shift end to end, and the UDP faults."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pytest

from robodensity.core.settings_native import HsesSourceSettings
from robodensity.core.wire import Counter, EventType, State
from robodensity.edge.sources.hses import HsesError, HsesSource, pack_request, parse_elapsed_s, parse_reply, state_of
from robodensity.simulators.hses_robot import HsesRobot
from tests.native_rig import Services, assert_matches_truth, is_state, plan, run_shift, until, with_outage


def test_state_table_follows_the_status_bits() -> None:
    play, running, teach = 1 << 6, 1 << 3, 1 << 5
    servo, alarm, error = 1 << 6, 1 << 4, 1 << 5
    assert state_of(play | running, servo) is State.EXECUTING
    assert state_of(play, servo) is State.IDLE
    assert state_of(play | running, servo | alarm) is State.FAULT
    assert state_of(play, error) is State.FAULT
    assert state_of(teach | running, servo) is State.OUT_OF_SERVICE
    assert state_of(play | running, 0) is State.OUT_OF_SERVICE  # servo off (e-stop without alarm)


def test_request_bytes_match_the_reference_example_and_bad_replies_are_refused() -> None:
    ref = "59 45 52 43 20 00 00 00 03 01 00 00 00 00 00 00 39 39 39 39 39 39 39 39 72 00 01 00 00 01 00 00"
    assert pack_request(0, 0x72, 1) == bytes.fromhex(ref)
    for bad in (b"", b"YERC" + b"\0" * 10, b"XXXX" + bytes(28), bytes.fromhex(ref)):  # the last is a request
        with pytest.raises(HsesError):
            parse_reply(bad)
    assert parse_elapsed_s(b"2026/03/02 08:00" + b"000012:34'56") == 12 * 3600 + 34 * 60 + 56
    assert parse_elapsed_s(b"2026/03/02 08:00" + b"twelve hours") is None  # unconfirmed format: skip


def settings(port: int, **kw: object) -> HsesSourceSettings:
    base: dict[str, object] = dict(
        host="127.0.0.1", port=port, serial="YR-1", poll_s=0.01, timeout_s=0.05, retries=2, reconnect_max_s=0.05
    )
    return HsesSourceSettings(**{**base, **kw})  # type: ignore[arg-type]


async def test_hses_source_survives_udp_loss_duplicates_garbage_slowness_and_power_loss(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with HsesRobot("YR-1", seed=3) as sim:
        source = HsesSource(settings(sim.port, counters_every_s=0.02))
        async with source:
            it = aiter(source)
            sim.set_state(State.FAULT)
            got = await until(it, lambda r: r.type is EventType.ALARM)
            assert got[-1].alarm_code == "4107" and got[-1].alarm_active
            got = await until(it, lambda r: r.counter is Counter.OPERATING_S)
            sim.loss, sim.duplicate = 0.3, True  # a lossy link that also duplicates: retries cover it
            for state in (State.EXECUTING, State.OUT_OF_SERVICE, State.IDLE):
                sim.set_state(state)
                got = await until(it, lambda r: r.type is EventType.STATE)
                assert got[-1].state is state  # never OFFLINE on the way
            sim.loss, sim.duplicate, sim.reorder = 0.0, False, True  # every answer comes one request late
            sim.set_state(State.EXECUTING)
            got = await until(it, lambda r: r.type is EventType.STATE)
            assert got[-1].state is State.EXECUTING  # the late answer to the earlier request is dropped
            assert source.client.stats["stale_replies"] > 0 and source.client.stats["resent"] > 0
            sim.reorder = False
            for fault, words in (("garbage", "last bad reply"), ("short", "shorter than the 32-byte header")):
                caplog.clear()
                setattr(sim, fault, True)
                await until(it, is_state(State.OFFLINE))
                assert words in caplog.text, fault
                setattr(sim, fault, False)
                await until(it, is_state(State.EXECUTING))
            sim.delay_s = 0.2  # slower than timeout_s
            await until(it, is_state(State.OFFLINE))
            sim.delay_s = 0.0
            await until(it, is_state(State.EXECUTING))
            caplog.clear()
            sim.power_off()
            await until(it, is_state(State.OFFLINE))
            assert "unreachable" in caplog.text or "no reply" in caplog.text
            await sim.power_on()
            await until(it, is_state(State.EXECUTING))
    assert source.stats["connects"] >= 5


@pytest.mark.slow
async def test_a_shift_through_hses_reaches_the_database_within_a_point_of_the_truth(
    pg_url: str, broker_url: str, schema: str, tmp_path: Path
) -> None:
    keys = [f"Yaskawa/YR-{i}" for i in range(3)]
    shift, schedules = plan(keys)
    # the first robot's controller is switched off for 25 simulated minutes mid-shift
    mid = shift.start + timedelta(hours=2)
    schedules[keys[0]] = with_outage(schedules[keys[0]], mid, mid + timedelta(minutes=25))
    sims = {k: HsesRobot(k.split("/")[1], now=shift.now) for k in keys}
    for sim in sims.values():
        await sim.power_on()
    try:
        sources = [
            HsesSource(
                settings(
                    s.port, serial=k.split("/")[1], poll_s=0.01, jitter=0, counters_every_s=0.5, reconnect_max_s=0.01
                ),
                now=shift.now,
            )
            for k, s in sims.items()
        ]
        services = Services(pg_url, broker_url, schema, tmp_path)
        measured = await run_shift(services, shift, schedules, sources, sims)
    finally:
        for sim in sims.values():
            sim.power_off()
    assert measured[keys[0]][State.OFFLINE] > 15 * 60  # the outage is an OFFLINE gap, not silence
    assert_matches_truth(measured, shift, schedules)
