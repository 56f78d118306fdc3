"""The Sparkplug B source against a real broker and the Sparkplug edge node simulator.

Each test has its own Sparkplug group (the ``topic_prefix`` fixture), so tests never
see each other's nodes. The decoder is also fuzzed without a broker.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from robodensity.core import sparkplug_b_pb2 as pb
from robodensity.core.wire import Counter, EventType, Reading, RobotId, State
from robodensity.edge.sources.sparkplug import (
    BDSEQ_METRIC,
    REBIRTH_METRIC,
    DataType,
    Outcome,
    SparkplugError,
    SparkplugHost,
    SparkplugSource,
    SparkplugSourceSettings,
    decode_payload,
    from_ms,
    subscriptions,
    to_ms,
    topic_for,
)
from robodensity.simulators.behaviour import Profile, SimClock, state_schedule
from robodensity.simulators.sparkplug_robot import CYCLES_METRIC, SparkplugRobots, device_id_for
from tests.helpers import collect_until, wait_until_async

ROBOTS = ["ACME/SN-001", "ACME/SN-002", "KUKA/KR 7"]
NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW - timedelta(hours=3)


def rid(key: str) -> RobotId:
    manufacturer, serial = key.split("/", 1)
    return RobotId(manufacturer, serial)


def ms(ts: datetime) -> datetime:
    """What survives Sparkplug's millisecond timestamps."""
    return from_ms(to_ms(ts))


def cfg(url: str, group: str, **kw: object) -> SparkplugSourceSettings:
    base: dict[str, object] = {
        "url": url,
        "group_id": group,
        "counter_metrics": {CYCLES_METRIC: Counter.CYCLES},
        "rebirth_min_interval_s": 0,
    }
    return SparkplugSourceSettings.model_validate(base | kw)


@asynccontextmanager
async def listening(settings: SparkplugSourceSettings) -> AsyncIterator[tuple[SparkplugSource, AsyncIterator[Reading]]]:
    """A connected source whose subscriptions are in place (BIRTHs are not retained)."""
    async with SparkplugSource(settings) as src:
        await asyncio.wait_for(src.subscribed.wait(), 10)
        yield src, aiter(src)


@asynccontextmanager
async def node(sim: SparkplugRobots) -> AsyncIterator[SparkplugRobots]:
    await asyncio.to_thread(sim.start)
    try:
        yield sim
    finally:
        await asyncio.to_thread(sim.stop)


def states(readings: list[Reading], robot: RobotId | None = None) -> list[Reading]:
    return [r for r in readings if r.type is EventType.STATE and (robot is None or r.robot == robot)]


def every_robot_has_state(keys: list[str]) -> Callable[[list[Reading]], bool]:
    return lambda got: all(states(got, rid(k)) for k in keys)


# -- births ------------------------------------------------------------------------------


async def test_births_give_each_robot_its_identity_state_and_counter(broker_url: str, topic_prefix: str) -> None:
    initial = {
        k: (T0 + timedelta(minutes=i, microseconds=1234), s)
        for i, (k, s) in enumerate(zip(ROBOTS, [State.EXECUTING, State.FAULT, State.IDLE], strict=True))
    }
    async with (
        listening(cfg(broker_url, topic_prefix)) as (src, it),
        node(SparkplugRobots(broker_url, topic_prefix, "cell-1", ROBOTS, initial=initial)),
    ):
        got = await collect_until(it, every_robot_has_state(ROBOTS))
    for key, (ts, state) in initial.items():
        assert [(r.ts, r.state) for r in states(got, rid(key))] == [(ms(ts), state)]
    counters = [r for r in got if r.type is EventType.COUNTER]
    assert {(r.robot, r.counter, r.value) for r in counters} <= {(rid(k), Counter.CYCLES, 0.0) for k in ROBOTS}
    assert src.bad_messages == 0 and src.bad_metrics == 0 and src.rebirth_requests == 0


async def test_identity_from_device_id_and_integer_state_codes(broker_url: str, topic_prefix: str) -> None:
    codes = {State.EXECUTING: 1, State.IDLE: 2, State.FAULT: 3, State.OUT_OF_SERVICE: 4, State.OFFLINE: 0}
    settings_ = cfg(
        broker_url,
        topic_prefix,
        device_id_pattern=r"(?P<manufacturer>[^_]+)_(?P<serial>.+)",
        state_map={str(v): k for k, v in codes.items()},
    )
    sim = SparkplugRobots(
        broker_url,
        topic_prefix,
        "cell-2",
        ROBOTS,
        state_codes=codes,
        identity_metrics=False,
        initial={k: (T0, State.FAULT) for k in ROBOTS},
    )
    # "KUKA/KR 7" travels as device "KUKA_KR_7": the rule gives serial "KR_7"
    expected = {RobotId(*device_id_for(k).split("_", 1)) for k in ROBOTS}
    async with listening(settings_) as (src, it), node(sim):
        got = await collect_until(it, lambda g: {r.robot for r in states(g)} == expected)
        sim.publish_state(ROBOTS[0], State.EXECUTING, T0 + timedelta(seconds=1))
        got += await collect_until(it, lambda g: bool(states(g)))
    assert {(r.robot, r.state) for r in states(got)[:-1]} == {(r, State.FAULT) for r in expected}
    assert states(got)[-1].state is State.EXECUTING
    assert src.bad_metrics == 0


# -- data ----------------------------------------------------------------------------------


@pytest.mark.slow
async def test_data_delivers_every_state_change_in_order(broker_url: str, topic_prefix: str) -> None:
    keys = [f"FANUC/F-{i:03d}" for i in range(8)]
    start, end = T0, T0 + timedelta(hours=1)
    busy = Profile(executing_s=120, idle_s=60, fault_s=60, out_of_service_s=120, min_s=5)
    schedules = {k: state_schedule(7, k, start, end, busy) for k in keys}
    before = {k: (start - timedelta(hours=1), State.OUT_OF_SERVICE) for k in keys}
    sim = SparkplugRobots(broker_url, topic_prefix, "line-3", keys, initial=before)
    async with listening(cfg(broker_url, topic_prefix)) as (src, it), node(sim):
        got = await collect_until(it, every_robot_has_state(keys))
        last = {rid(k): (ms(s[-1][0]), s[-1][1]) for k, s in schedules.items()}
        seen: dict[RobotId, list[tuple[datetime, State | None]]] = defaultdict(list)

        def complete(g: list[Reading]) -> bool:
            r = g[-1]
            if r.type is EventType.STATE:
                seen[r.robot].append((r.ts, r.state))
            return all(seen[k] and seen[k][-1] == v for k, v in last.items())

        clock = SimClock(start, time.monotonic() + 0.2, speed=1500.0)
        replay = asyncio.create_task(sim.replay(schedules, clock))
        got += await collect_until(it, complete, timeout=20.0)
        await replay
    for k, sched in schedules.items():
        assert seen[rid(k)] == [(ms(t), s) for t, s in sched], k
    cycles = [r.value for r in got if r.type is EventType.COUNTER and r.robot == rid(keys[0]) and r.value is not None]
    assert cycles == sorted(cycles) and cycles[-1] == sim.cycles[keys[0]]
    assert sum(len(s) for s in schedules.values()) > 100
    assert src.rebirth_requests == 0 and src.bad_messages == 0 and src.bad_metrics == 0


# -- death ---------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["will", "clean stop"])
async def test_node_death_takes_only_its_own_robots_offline(broker_url: str, topic_prefix: str, how: str) -> None:
    mine, others = ROBOTS[:2], ["ABB/IRB-9"]
    async with (
        listening(cfg(broker_url, topic_prefix)) as (_src, it),
        node(SparkplugRobots(broker_url, topic_prefix, "other", others)) as survivor,
    ):
        dying = SparkplugRobots(broker_url, topic_prefix, "dying", mine, bd_seq=41)
        async with node(dying):  # leaving it after drop() or stop() is a no-op
            got = await collect_until(it, every_robot_has_state(mine + others))
            await asyncio.to_thread(dying.drop if how == "will" else dying.stop)
        got += await collect_until(
            it, lambda g: {r.robot for r in states(g) if r.state is State.OFFLINE} >= {rid(k) for k in mine}
        )
        # a later change of the surviving node proves nothing else went OFFLINE in between
        survivor.publish_state(others[0], State.EXECUTING, NOW)
        got += await collect_until(it, lambda g: any(r.robot == rid(others[0]) for r in states(g)))
    offline = [r for r in states(got) if r.state is State.OFFLINE]
    assert sorted(r.robot.key for r in offline) == sorted(mine)
    assert all(r.ts >= NOW - timedelta(minutes=1) for r in offline)


async def test_device_death_takes_that_robot_offline(broker_url: str, topic_prefix: str) -> None:
    async with (
        listening(cfg(broker_url, topic_prefix)) as (_src, it),
        node(SparkplugRobots(broker_url, topic_prefix, "cell-4", ROBOTS)) as sim,
    ):
        await collect_until(it, every_robot_has_state(ROBOTS))
        sim.publish_device_death(ROBOTS[1])
        got = await collect_until(it, lambda g: bool(states(g)))
    assert [(r.robot, r.state) for r in states(got)] == [(rid(ROBOTS[1]), State.OFFLINE)]


# -- rebirth -------------------------------------------------------------------------------


async def test_sequence_gap_makes_the_node_rebirth(broker_url: str, topic_prefix: str) -> None:
    async with (
        listening(cfg(broker_url, topic_prefix)) as (src, it),
        node(SparkplugRobots(broker_url, topic_prefix, "cell-5", ROBOTS)) as sim,
    ):
        await collect_until(it, every_robot_has_state(ROBOTS))
        sim.inject_gap(3)
        sim.publish_state(ROBOTS[0], State.FAULT, NOW)
        # the message after the gap still counts; then every robot is born again
        got = await collect_until(it, lambda g: len(states(g)) >= 1 + len(ROBOTS))
        await wait_until_async(lambda: sim.births == 2, 5, "the simulator's second NBIRTH")
    assert states(got)[0].robot == rid(ROBOTS[0]) and states(got)[0].state is State.FAULT
    assert {r.robot for r in states(got)[1:]} == {rid(k) for k in ROBOTS}
    assert src.rebirth_requests == 1 and sim.rebirth_requests == 1


async def test_data_before_birth_makes_the_node_rebirth(broker_url: str, topic_prefix: str) -> None:
    sim = SparkplugRobots(broker_url, topic_prefix, "cell-6", ROBOTS, birth=False)
    async with listening(cfg(broker_url, topic_prefix)) as (src, it), node(sim):
        sim.send_data_before_birth(ROBOTS[2], State.EXECUTING, NOW)
        got = await collect_until(it, every_robot_has_state(ROBOTS))
        assert src.rebirth_requests == 1 and sim.rebirth_requests == 1 and sim.births == 1
        # a device the node never announced, of a node that is born
        sim.send_data_before_birth(ROBOTS[0], State.FAULT, NOW, device_id="ghost")
        got += await collect_until(it, every_robot_has_state(ROBOTS))
        assert src.rebirth_requests == 2 and sim.births == 2
    # the DATA that came before any BIRTH gave no reading of its own: the births carry its state
    assert [r.state for r in states(got, rid(ROBOTS[2]))] == [State.EXECUTING, State.EXECUTING]


async def test_a_source_that_starts_late_asks_for_births(broker_url: str, topic_prefix: str) -> None:
    async with node(SparkplugRobots(broker_url, topic_prefix, "cell-7", ROBOTS, qos=1)) as sim:
        await asyncio.to_thread(sim.flush)  # acknowledged: the broker has passed the BIRTHs on to nobody
        async with listening(cfg(broker_url, topic_prefix)) as (src, it):
            sim.publish_state(ROBOTS[1], State.IDLE, NOW)
            got = await collect_until(it, every_robot_has_state(ROBOTS))
    assert src.rebirth_requests == 1 and {r.robot for r in states(got)} == {rid(k) for k in ROBOTS}


# -- the decoder without a broker ----------------------------------------------------------


def _host(**kw: object) -> SparkplugHost:
    return SparkplugHost(cfg("mqtt://127.0.0.1:1", "g", **kw), monotonic=lambda: 0.0)


def _nbirth(bd_seq: int) -> bytes:
    p = pb.Payload(timestamp=to_ms(NOW), seq=0)
    p.metrics.add(name=BDSEQ_METRIC, datatype=DataType.UINT64, long_value=bd_seq)
    return p.SerializeToString()


def _dbirth(seq: int) -> bytes:
    p = pb.Payload(timestamp=to_ms(NOW), seq=seq)
    p.metrics.add(name="Identification/Manufacturer", string_value="ACME", datatype=DataType.STRING)
    p.metrics.add(name="Identification/SerialNumber", long_value=42, datatype=DataType.UINT64)
    p.metrics.add(name="Robot/State", alias=7, string_value="IDLE", datatype=DataType.STRING)
    return p.SerializeToString()


def test_an_ndeath_of_an_earlier_session_is_ignored() -> None:
    host = _host()
    host.handle(topic_for("g", "NBIRTH", "n"), _nbirth(5), NOW)
    out = host.handle(topic_for("g", "DBIRTH", "n", "d"), _dbirth(1), NOW)
    assert [(r.robot, r.state) for r in out.readings] == [(RobotId("ACME", "42"), State.IDLE)]
    assert host.handle(topic_for("g", "NDEATH", "n"), _ndeath(4), NOW).readings == []
    out = host.handle(topic_for("g", "NDEATH", "n"), _ndeath(5), NOW)
    assert [(r.robot, r.state, r.ts) for r in out.readings] == [(RobotId("ACME", "42"), State.OFFLINE, NOW)]
    assert host.handle(topic_for("g", "NDEATH", "n"), _ndeath(5), NOW).readings == []  # only once


def test_a_new_session_without_ndeath_takes_the_old_robots_offline() -> None:
    host = _host()
    host.handle(topic_for("g", "NBIRTH", "n"), _nbirth(5), NOW)
    host.handle(topic_for("g", "DBIRTH", "n", "d"), _dbirth(1), NOW)
    # a rebirth (same bdSeq) takes nothing offline
    assert host.handle(topic_for("g", "NBIRTH", "n"), _nbirth(5), NOW).readings == []
    out = host.handle(topic_for("g", "NBIRTH", "n"), _nbirth(6), NOW + timedelta(seconds=1))
    assert [(r.robot, r.state, r.ts) for r in out.readings] == [(RobotId("ACME", "42"), State.OFFLINE, NOW)]
    p = pb.Payload(seq=1)
    p.metrics.add(alias=7, string_value="EXECUTING")
    out = host.handle(topic_for("g", "DDATA", "n", "d"), p.SerializeToString(), NOW)
    assert out.readings == [] and out.rebirth == "n"


def _ndeath(bd_seq: int) -> bytes:
    p = pb.Payload(timestamp=to_ms(NOW))
    p.metrics.add(name=BDSEQ_METRIC, datatype=DataType.UINT64, long_value=bd_seq)
    return p.SerializeToString()


def test_sequence_numbers_wrap_after_255_without_a_rebirth() -> None:
    host = _host()
    host.handle(topic_for("g", "NBIRTH", "n"), _nbirth(0), NOW)
    host.handle(topic_for("g", "DBIRTH", "n", "d"), _dbirth(1), NOW)
    for seq in [*range(2, 256), 0, 1]:
        p = pb.Payload(seq=seq)
        p.metrics.add(alias=7, timestamp=to_ms(NOW), string_value="EXECUTING")
        out = host.handle(topic_for("g", "DDATA", "n", "d"), p.SerializeToString(), NOW)
        assert out.rebirth is None and len(out.readings) == 1, seq


def test_rebirth_requests_are_throttled_per_node() -> None:
    clock = [0.0]
    host = SparkplugHost(cfg("mqtt://127.0.0.1:1", "g", rebirth_min_interval_s=5), monotonic=lambda: clock[0])
    ddata = pb.Payload(seq=3).SerializeToString()
    assert host.handle(topic_for("g", "DDATA", "n", "d"), ddata, NOW).rebirth == "n"
    assert host.handle(topic_for("g", "DDATA", "n", "d"), ddata, NOW).rebirth is None
    assert host.handle(topic_for("g", "NDATA", "m"), ddata, NOW).rebirth == "m"
    clock[0] = 6.0
    assert host.handle(topic_for("g", "DDATA", "n", "d"), ddata, NOW).rebirth == "n"


def test_settings_name_what_is_wrong() -> None:
    with pytest.raises(ValidationError, match="group_id"):
        cfg("mqtt://127.0.0.1:1883", "a/b")
    with pytest.raises(ValidationError, match="serial"):
        cfg("mqtt://127.0.0.1:1883", "g", device_id_pattern="(?P<manufacturer>.+)")
    with pytest.raises(ValidationError, match="manufacturer"):
        cfg("mqtt://127.0.0.1:1883", "g", device_id_pattern="(?P<serial>.+)")
    with pytest.raises(ValidationError, match="url"):
        cfg("http://127.0.0.1", "g")
    assert subscriptions("g") == [
        f"spBv1.0/g/{t}/+/#" for t in ("NBIRTH", "NDATA", "NDEATH", "DBIRTH", "DDATA", "DDEATH")
    ]


# -- fuzzing -------------------------------------------------------------------------------

MESSAGE_TYPES = ["NBIRTH", "NDATA", "NDEATH", "DBIRTH", "DDATA", "DDEATH", "NCMD", "DCMD", "STATE", "XX"]
NODE_TOPICS = [topic_for("g", t, n) for t in ("NBIRTH", "NDATA", "NDEATH") for n in ("n1", "n2")]
DEVICE_TOPICS = [topic_for("g", t, "n1", d) for t in ("DBIRTH", "DDATA", "DDEATH") for d in ("d1", "d2")]
# mostly topics that reach the state machine, some that do not fit at all
topics = (
    st.sampled_from(NODE_TOPICS + DEVICE_TOPICS)
    | st.builds(
        lambda t, node_, dev: f"spBv1.0/g/{t}/{node_}" + (f"/{dev}" if dev else ""),
        st.sampled_from(MESSAGE_TYPES),
        st.sampled_from(["n1", "n2"]),
        st.sampled_from([None, "d1", "d2"]),
    )
    | st.text(max_size=40)
)
names = st.sampled_from(
    [
        "Robot/State",
        "Identification/Manufacturer",
        "Identification/SerialNumber",
        BDSEQ_METRIC,
        CYCLES_METRIC,
        REBIRTH_METRIC,
        "",
    ]
) | st.text(max_size=20)
u32, u64 = st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)
values = st.one_of(
    st.tuples(st.just("int_value"), u32),
    st.tuples(st.just("long_value"), u64),
    st.tuples(st.just("float_value"), st.floats(width=32)),
    st.tuples(st.just("double_value"), st.floats()),
    st.tuples(st.just("boolean_value"), st.booleans()),
    st.tuples(st.just("string_value"), st.sampled_from([s.value for s in State]) | st.text(max_size=140)),
    st.tuples(st.just("bytes_value"), st.binary(max_size=20)),
    st.none(),
)


@st.composite
def metrics(draw: st.DrawFn) -> pb.Payload.Metric:
    m = pb.Payload.Metric()
    if draw(st.booleans()):
        m.name = draw(names)
    if draw(st.booleans()):
        m.alias = draw(st.integers(0, 8) | u64)
    if draw(st.booleans()):
        m.timestamp = draw(st.sampled_from([to_ms(NOW), 0]) | u64)
    if draw(st.booleans()):
        m.datatype = draw(st.integers(0, 40))
    m.is_null = draw(st.integers(0, 9)) == 0
    value = draw(values)
    if value is not None:
        setattr(m, value[0], value[1])
    elif draw(st.booleans()):
        m.template_value.metrics.add(name="x", int_value=1)
    return m


def _good(name: str, alias: int, **value: Any) -> pb.Payload.Metric:
    return pb.Payload.Metric(name=name, alias=alias, timestamp=to_ms(NOW), **value)


# metrics that fit the mapping, so the fuzzing also reaches the readings
good_metrics = st.sampled_from(
    [
        _good("Robot/State", 3, string_value="EXECUTING"),
        _good("Robot/State", 3, string_value="FAULT"),
        _good(CYCLES_METRIC, 4, long_value=7),
        _good(BDSEQ_METRIC, 0, long_value=1),
        pb.Payload.Metric(alias=3, string_value="IDLE"),
        pb.Payload.Metric(alias=4, double_value=float("nan")),
    ]
)


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    p = pb.Payload()
    if draw(st.booleans()):
        p.timestamp = draw(st.sampled_from([to_ms(NOW)]) | u64)
    if draw(st.integers(0, 4)):
        p.seq = draw(st.integers(0, 6) | st.integers(0, 300) | u64)
    p.metrics.extend(draw(st.lists(good_metrics | metrics(), max_size=6)))
    return p.SerializeToString()


def _handle_or_refuse(host: SparkplugHost, topic: str, data: bytes) -> None:
    try:
        out = host.handle(topic, data, NOW)
    except SparkplugError:
        return
    assert isinstance(out, Outcome)
    for r in out.readings:
        assert isinstance(r, Reading) and r.ts.tzinfo is not None
        assert r.robot.manufacturer.strip() and r.robot.serial.strip()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(topics, st.binary(max_size=200)), min_size=1, max_size=8))
def test_arbitrary_bytes_never_crash_the_decoder(messages: list[tuple[str, bytes]]) -> None:
    host = _host(counter_metrics={CYCLES_METRIC: Counter.CYCLES})
    for topic, data in messages:
        _handle_or_refuse(host, topic, data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.booleans(), st.lists(st.tuples(topics, payloads()), min_size=1, max_size=12))
def test_arbitrary_sparkplug_payloads_never_crash_the_decoder(born: bool, messages: list[tuple[str, bytes]]) -> None:
    host = _host(
        counter_metrics={CYCLES_METRIC: Counter.CYCLES}, device_id_pattern=r"(?P<serial>d\d)", manufacturer="ACME"
    )
    if born:  # start from a node and a robot that are known, as most messages in the field do
        host.handle(topic_for("g", "NBIRTH", "n1"), _nbirth(1), NOW)
        host.handle(topic_for("g", "DBIRTH", "n1", "d1"), _dbirth(1), NOW)
    for topic, data in messages:
        _handle_or_refuse(host, topic, data)


@given(st.binary(max_size=300))
def test_decode_payload_returns_a_payload_or_refuses(data: bytes) -> None:
    try:
        assert isinstance(decode_payload(data), pb.Payload)
    except SparkplugError as exc:
        assert exc.field == "payload"
