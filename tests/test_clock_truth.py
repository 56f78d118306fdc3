"""Clock truth (issue 15 item 3): a controller clock that is off is corrected and flagged at the
edge, never refused; the offsets reach the database and the operators' dashboard."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from robodensity.app import metrics_job
from robodensity.collector.clocks import agent_offsets
from robodensity.collector.validate import Incoming
from robodensity.core import clock, wire
from robodensity.core.settings import OpcUaSourceSettings
from robodensity.core.wire import Reading, RobotId, State
from robodensity.dashboards import fleet, macros
from robodensity.edge.agent import EdgeAgent
from robodensity.edge.clock_truth import AgentClock, ClockTruth
from robodensity.edge.outbox import Outbox
from robodensity.edge.sources.opcua import OpcUaSource
from robodensity.simulators.mqtt_robot import MqttRobots
from robodensity.simulators.opcua_controller import OpcUaController, SimRobot
from robodensity.storage.db import connect
from tests.helpers import mqtt_json_factory, running_collector, wait_until_async
from tests.rig import rig_settings

T = datetime(2026, 6, 1, 8, tzinfo=UTC)
R = RobotId("KUKA", "S1")


def _s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


# ----------------------------------------------------------------------------- the estimator


def test_a_fast_clock_is_corrected_to_the_receive_time_and_flagged() -> None:
    truth = ClockTruth(threshold_s=2.0)
    for i in range(20):
        t = T + _s(60 * i)
        out = truth.observe(Reading.of_state(R, t + _s(3600), State.IDLE), t + _s(0.3))
        assert out.clock_corrected and out.clock_offset_s == pytest.approx(-3599.7)
        assert out.ts == t + _s(0.3)
    assert truth.offsets()[R.key] == pytest.approx(-3599.7)
    assert truth.corrected_robots == 1


def test_a_slow_clock_is_corrected_and_a_good_one_left_alone() -> None:
    truth = ClockTruth(threshold_s=2.0)
    slow, good = RobotId("ABB", "S2"), RobotId("FANUC", "S3")
    for i in range(10):
        t = T + _s(60 * i)
        out = truth.observe(Reading.of_state(slow, t - _s(600), State.EXECUTING), t + _s(0.2))
        if i < 2:  # one or two old readings alone are history, not yet a slow clock
            assert not out.clock_corrected and out.ts == t - _s(600)
        else:
            assert out.clock_offset_s == pytest.approx(600.2) and out.ts == t + _s(0.2)
        same = Reading.of_state(good, t, State.EXECUTING)
        assert truth.observe(same, t + _s(0.9)) is same


def test_the_edges_own_offline_reading_is_not_moved_and_a_late_reading_keeps_its_time() -> None:
    truth = ClockTruth(threshold_s=2.0)
    for i in range(9):
        truth.observe(Reading.of_state(R, T + _s(60 * i + 3600), State.IDLE), T + _s(60 * i))
    offline = Reading.of_state(R, T + _s(600), State.OFFLINE)  # stamped by the edge itself
    assert truth.observe(offline, T + _s(600)) is offline
    # a reading the controller buffered for 5 minutes: corrected by the estimate, not to its receive time
    late = truth.observe(Reading.of_state(R, T + _s(660 + 3600), State.EXECUTING), T + _s(960))
    assert late.ts == T + _s(660)
    # a good clock's buffered reading is history, not a clock fault
    other = Reading.of_state(RobotId("ABB", "B"), T, State.IDLE)
    assert truth.observe(other, T + _s(300)) is other


def test_a_backlog_delivered_at_once_keeps_its_own_timestamps() -> None:
    truth = ClockTruth(threshold_s=2.0)
    # an hour of changes a factory broker kept for the agent while it was down, delivered within a second
    backlog = [Reading.of_state(R, T + _s(60 * i), State.IDLE) for i in range(60)]
    out = [truth.observe(r, T + _s(3600 + i / 100)) for i, r in enumerate(backlog)]
    assert out == backlog and truth.corrected_robots == 0


def test_a_burst_of_dense_history_is_not_taken_for_a_slow_clock() -> None:
    truth = ClockTruth(threshold_s=2.0)
    # changes a second apart, two hours old, redelivered 20 ms apart: three deltas in a row lie
    # within the threshold of each other, but only for a moment of the edge's time
    backlog = [Reading.of_state(R, T + _s(i), State.IDLE) for i in range(50)]
    out = [truth.observe(r, T + _s(7200 + i / 50)) for i, r in enumerate(backlog)]
    assert out == backlog and truth.corrected_robots == 0


def test_a_clock_that_jumps_ahead_is_never_left_in_the_future() -> None:
    truth = ClockTruth(threshold_s=2.0)
    for i in range(14):
        truth.observe(Reading.of_state(R, T + _s(i), State.IDLE), T + _s(i))
    jumped = truth.observe(Reading.of_state(R, T + _s(14 + 7200), State.IDLE), T + _s(14))
    assert jumped.ts == T + _s(14) and jumped.clock_offset_s == pytest.approx(-7200)


def test_the_agent_offset_is_the_sample_with_the_shortest_round_trip() -> None:
    agent = AgentClock(threshold_s=2.0)
    agent.sample(T + _s(10), 0.0, 4.0, T)  # a slow round trip: queueing, not clock
    agent.sample(T + _s(5.05), 10.0, 10.1, T + _s(5))
    assert agent.offset_s == pytest.approx(0.1)
    assert agent.to_report() == pytest.approx(0.1)
    assert agent.to_report() is None  # at most once a minute


def test_an_agent_clock_is_called_off_only_beyond_half_its_best_round_trip(caplog: pytest.LogCaptureFixture) -> None:
    busy = AgentClock(threshold_s=2.0)
    with caplog.at_level("WARNING"):
        busy.sample(T + _s(4.0), 0.0, 6.0, T + _s(3))  # 4 s "off", but the round trip took 6 s
    assert busy.offset_s == pytest.approx(4.0) and "off the collector's" not in caplog.text
    with caplog.at_level("WARNING"):
        busy.sample(T + _s(20.0), 10.0, 10.2, T + _s(10.1))  # 10 s off within 0.2 s: a clock
    assert busy.offset_s == pytest.approx(10.0) and "off the collector's" in caplog.text


# ----------------------------------------------------------------------------- the wire


def test_the_flag_and_the_offsets_travel_on_both_decoders() -> None:
    corrected = Reading(R, T, wire.EventType.STATE, state=State.IDLE, clock_offset_s=-3600.25)
    batch = wire.Batch(
        "a1", "f1", (wire.Event(1, corrected), wire.Event(2, Reading.of_state(R, T, State.IDLE))), clock_offset_s=0.5
    )
    payload = wire.encode_batch(batch)
    body = [(e.seq, wire.event_body(e.reading)) for e in batch.events]
    assert wire.splice_batch("a1", "f1", body, 0.5) == payload
    now = T + _s(1)
    ref = wire.decode_batch(payload, now)
    assert [e.reading.clock_offset_s for e in ref.events] == [-3600.25, None]
    assert wire.decode_rows(payload, now) == ("a1", "f1", [wire.event_to_row(e) for e in ref.events])
    assert wire.batch_clock_offset(payload) == 0.5
    assert wire.batch_clock_offset(wire.encode_batch(wire.Batch("a1", "f1", ()))) is None
    assert agent_offsets([Incoming(wire.uplink_topic("f1", "a1"), payload)]) == {"a1": 0.5}
    bad = payload.replace(b"-3600.25", b'"soon"')
    assert wire.decode_rows(bad, now) is None
    assert wire.decode_batch(bad, now).errors[0][1].field == "events[0].clock_offset_s"
    ack = wire.Ack("a1", ((1, 2),), 2, T)
    assert wire.decode_ack(wire.encode_ack(ack)) == ack


# ----------------------------------------------------------------------------- end to end


def _schedule(rng: random.Random, start: datetime, end: datetime) -> list[tuple[datetime, State]]:
    """Changes from ``start`` every 3-20 minutes, never a repeat (a JSON source drops repeats)."""
    out: list[tuple[datetime, State]] = []
    t = start
    while t < end:
        choices = [s for s in (State.EXECUTING, State.EXECUTING, State.IDLE, State.FAULT) if not out or s != out[-1][1]]
        out.append((t, rng.choice(choices)))
        t += _s(rng.randrange(180, 1200))
    return out


def _utilisation(sched: list[tuple[datetime, State]], start: datetime, end: datetime) -> float:
    """Executing share of [start, end) by the true schedule."""
    ends = [t for t, _ in sched[1:]] + [end]
    busy = sum(
        (min(e, end) - max(t, start)).total_seconds()
        for (t, s), e in zip(sched, ends, strict=True)
        if s is State.EXECUTING and e > start
    )
    return busy / (end - start).total_seconds()


async def test_controllers_an_hour_fast_and_ten_minutes_slow_count_fully_and_show_their_offsets(
    pg_url: str, broker_url: str, schema: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    province, settings = mqtt_json_factory(pg_url, broker_url, schema, tmp_path, 3, 11, flush_ms=5)
    factory = province.factories[0]
    keys = [r.key for r in province.robots]
    skews = dict(zip(keys, (3600.0, -600.0, 0.0), strict=True))  # fast, slow, right
    rng = random.Random(15)
    start = datetime(2026, 6, 1, 0, tzinfo=UTC)
    end = start + timedelta(hours=6)
    # the robots run from an hour before the measured period (an agent that has been running)
    schedules = {key: _schedule(rng, start - timedelta(hours=1), end) for key in keys}
    changes = sorted((t, key, s) for key, sched in schedules.items() for t, s in sched)
    monkeypatch.setattr(clock, "_frozen", changes[0][0])  # a clock the test steps: hours pass in seconds
    with running_collector(settings, pg_url, broker_url, schema):
        sims = {key: MqttRobots(broker_url, factory.id, [key], clock_skew_s=skews[key]) for key in keys}
        for sim in sims.values():
            sim.__enter__()
        agent = EdgeAgent(settings, broker_url)
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        try:
            await wait_until_async(lambda: agent.sources[0].subscribed.is_set(), 10, "source subscription")
            for n, (t, key, state) in enumerate(changes, 1):
                # received 0.05-1.5 s after the change; acked before the clock moves on
                monkeypatch.setattr(clock, "_frozen", t + _s(rng.uniform(0.05, 1.5)))
                sims[key].publish_state(key, state, t, retain=False)
                await wait_until_async(lambda n=n: agent.stats.acked_events >= n, 10, f"ack of change {n}")
            health = await agent.health()
        finally:
            stop.set()
            await task
            for sim in sims.values():
                sim.__exit__(None, None, None)
    assert agent.clock_truth.offsets()[keys[0]] == pytest.approx(-3600, abs=2)
    assert agent.clock_truth.offsets()[keys[1]] == pytest.approx(600, abs=2)
    assert agent.agent_clock.offset_s is not None and abs(agent.agent_clock.offset_s) < 1
    assert health["clock_corrected_robots"] == 2 and health["clock_corrected_readings_total"] > 0

    monkeypatch.setattr(clock, "_frozen", end + _s(60))
    with connect(pg_url, schema) as conn:
        assert conn.execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)
        stored = conn.execute(
            "SELECT r.manufacturer || '/' || r.serial, min(e.clock_offset_s), max(e.clock_offset_s), count(*) "
            "FROM events e JOIN robots r USING (robot_id) GROUP BY 1"
        ).fetchall()
        by_key = {k: (lo, hi, n) for k, lo, hi, n in stored}
        assert {k: n for k, (*_, n) in by_key.items()} == {k: len(s) for k, s in schedules.items()}
        assert -3600 < by_key[keys[0]][0] <= by_key[keys[0]][1] < -3598
        assert 600 < by_key[keys[1]][0] <= by_key[keys[1]][1] < 602
        assert by_key[keys[2]][:2] == (None, None)
        metrics_job.compute(conn, start, end)
        conn.commit()
        got = dict(
            conn.execute(
                "SELECT r.manufacturer || '/' || r.serial, sum(b.executing_s) / (6 * 3600.0) "
                "FROM robot_blocks_15m b JOIN robots r USING (robot_id) "
                "WHERE b.bucket >= %s AND b.bucket < %s GROUP BY 1",
                (start, end),
            ).fetchall()
        )
        for key in keys:
            assert got[key] == pytest.approx(_utilisation(schedules[key], start, end), abs=0.01), key
        shown = conn.execute(macros.expand(fleet.ROBOT_CLOCKS, time_from=start, time_to=end)).fetchall()
        ahead = {f"{m}/{s}": a for m, s, _f, _a, a, *_ in shown}
        assert ahead[keys[0]] == pytest.approx(3600, abs=2) and ahead[keys[1]] == pytest.approx(-600, abs=2)
        assert keys[2] not in ahead
        agents = conn.execute(macros.expand(fleet.AGENT_CLOCKS, time_from=start, time_to=end)).fetchall()
        assert [a[0] for a in agents] == ["a1"] and abs(agents[0][2]) < 1


# ----------------------------------------------------------------------------- across a restart


def _learn_fast(truth: ClockTruth, n: int = 20) -> datetime:
    """``n`` readings of R an hour fast, a minute apart; returns the last one's true time."""
    for i in range(n):
        t = T + _s(60 * i)
        truth.observe(Reading.of_state(R, t + _s(3600), State.IDLE), t + _s(0.3))
    return t


def test_restored_estimates_judge_a_backlog_delivered_right_after_a_restart() -> None:
    before = ClockTruth(threshold_s=2.0)
    last = _learn_fast(before)
    saved = before.snapshot()
    after, fresh = ClockTruth(threshold_s=2.0), ClockTruth(threshold_s=2.0)
    after.restore(saved)
    assert after.offsets() == pytest.approx(before.offsets()) and after.corrected_robots == 1
    # changes of the half hour the agent was down, stamped by the fast clock, delivered at once
    restart = last + _s(1800)
    backlog = [Reading.of_state(R, last + _s(300 * i) + _s(3600), State.EXECUTING) for i in range(1, 6)]
    judged = [after.observe(r, restart) for r in backlog]
    assert [r.ts for r in judged] == [last + _s(300 * i) + _s(0.3) for i in range(1, 6)]
    # learnt again from the backlog alone, the same changes would pile up near the restart
    unlearnt = [fresh.observe(r, restart) for r in backlog]
    assert unlearnt[0].ts == restart and unlearnt[-1].ts != last + _s(1500)


def test_a_saved_estimate_that_does_not_read_is_learnt_again(caplog: pytest.LogCaptureFixture) -> None:
    truth = ClockTruth(threshold_s=2.0)
    with caplog.at_level("WARNING"):
        truth.restore({R.key: '{"deltas": [1.0], "received": []}', "ABB/X": "not json"})
    assert truth.robots == {} and caplog.text.count("does not read") == 2


def test_the_outbox_keeps_the_estimates_across_a_reopen(tmp_path: Path) -> None:
    truth = ClockTruth(threshold_s=2.0)
    _learn_fast(truth)
    box = Outbox(tmp_path / "outbox.sqlite")
    assert box.load_state("clock") == {} and box.save_state("clock", truth.snapshot())
    box.close()
    box = Outbox(tmp_path / "outbox.sqlite")
    assert box.load_state("clock") == truth.snapshot()
    box.close()


async def test_a_restarted_agent_keeps_a_fast_controllers_estimate(
    pg_url: str, broker_url: str, schema: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    province, settings = mqtt_json_factory(pg_url, broker_url, schema, tmp_path, 1, 12, flush_ms=5)
    key = province.robots[0].key
    start = datetime(2026, 6, 1, 8, tzinfo=UTC)
    learnt = [(start + _s(120 * i), (State.EXECUTING, State.IDLE)[i % 2]) for i in range(20)]  # last: IDLE
    restart = learnt[-1][0] + _s(1800)
    backlog = [(learnt[-1][0] + _s(300 * i), (State.EXECUTING, State.IDLE)[(i + 1) % 2]) for i in range(1, 6)]

    async def run_agent(changes: list[tuple[datetime, State]], received: datetime | None) -> EdgeAgent:
        agent = EdgeAgent(settings, broker_url)
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        try:
            await wait_until_async(lambda: agent.sources[0].subscribed.is_set(), 10, "source subscription")
            for n, (t, state) in enumerate(changes, 1):
                monkeypatch.setattr(clock, "_frozen", received or t + _s(0.3))
                sim.publish_state(key, state, t, retain=False)
                if received is None:  # one by one, as they happen
                    await wait_until_async(lambda n=n: agent.stats.acked_events >= n, 10, f"ack of change {n}")
            await wait_until_async(lambda: agent.stats.acked_events >= len(changes), 10, "acks")
        finally:
            stop.set()
            await task
        return agent

    monkeypatch.setattr(clock, "_frozen", start)
    with (
        running_collector(settings, pg_url, broker_url, schema),
        MqttRobots(broker_url, province.factories[0].id, [key], clock_skew_s=3600.0) as sim,
    ):
        first = await run_agent(learnt, None)
        assert first.clock_truth.offsets()[key] == pytest.approx(-3600, abs=1)
        again = EdgeAgent(settings, broker_url)  # what the next run starts with, before any reading
        assert again.clock_truth.offsets()[key] == pytest.approx(-3600, abs=1)
        assert again.clock_truth.corrected_robots == 1
        again.outbox.close()
        await run_agent(backlog, restart)  # the half hour it was down, delivered at once
    with connect(pg_url, schema) as conn:
        assert conn.execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)
        stored = conn.execute(
            "SELECT ts, clock_offset_s FROM events WHERE ts > %s ORDER BY ts", (learnt[-1][0] + _s(1),)
        ).fetchall()
    assert len(stored) == len(backlog)
    for (ts, offset), (t, _state) in zip(stored, backlog, strict=True):
        assert abs((ts - t).total_seconds()) < 2 and offset == pytest.approx(-3600, abs=1)


# ----------------------------------------------------------------------------- OPC UA


@pytest.mark.slow
async def test_an_opc_ua_controller_an_hour_fast_is_corrected_and_nothing_is_refused(
    pg_url: str, broker_url: str, schema: str, tmp_path: Path
) -> None:
    robots = [SimRobot("KUKA", f"KR-C{i}", "KR 16") for i in range(2)]
    settings = rig_settings(schema, tmp_path)
    async with OpcUaController(robots, name="fast", clock_offset_s=3600.0) as ctl:
        source = OpcUaSource(OpcUaSourceSettings(url=ctl.url, publishing_interval_ms=50))
        with running_collector(settings, pg_url, broker_url, schema):
            agent = EdgeAgent(settings, broker_url, sources=[source])
            stop = asyncio.Event()
            task = asyncio.create_task(agent.run(stop))
            written: list[tuple[str, State, datetime]] = []
            try:

                def all_in(state: State) -> bool:
                    return all(agent.stats.robot_state.get(r.key) is state for r in robots)

                await wait_until_async(lambda: all_in(State.IDLE), 20, "the first snapshot of every robot")
                for state in (State.EXECUTING, State.FAULT, State.IDLE, State.EXECUTING):
                    for r in robots:
                        t = datetime.now(UTC)  # the true time; the controller stamps t + 1 h
                        await ctl.set_state(r.key, state, t)
                        written.append((r.serial, state, t))
                    await wait_until_async(lambda s=state: all_in(s), 10, f"{state.value} of every robot")
                await wait_until_async(lambda: agent.backlog() == 0, 20, "the outbox to drain")
            finally:
                stop.set()
                await task
    for r in robots:
        assert agent.clock_truth.offsets()[r.key] == pytest.approx(-3600, abs=2)
    with connect(pg_url, schema) as conn:
        assert conn.execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)
        stored = conn.execute(
            "SELECT r.serial, e.state, e.ts, e.clock_offset_s FROM events e JOIN robots r USING (robot_id) "
            "WHERE e.type = 'state' ORDER BY r.serial, e.ts, e.seq"
        ).fetchall()
    for serial, state, t in written:
        got = [(ts, offset) for s, st, ts, offset in stored if s == serial and st == state.value]
        ts, offset = min(got, key=lambda g: abs((g[0] - t).total_seconds()))
        assert abs((ts - t).total_seconds()) < 2, (serial, state, ts, t)  # near the truth, not an hour on
        assert offset == pytest.approx(-3600, abs=2), (serial, state)
    assert all(ts <= datetime.now(UTC) for _, _, ts, _ in stored)  # nothing left in the future
