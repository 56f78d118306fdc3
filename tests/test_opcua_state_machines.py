"""Robotics 1.02 / Machinery state machines: simulator, discovery, and the edge's precedence.

Real asyncua servers on free 127.0.0.1 ports; every wait is on a reading, never a sleep.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from asyncua import Client, ua

from robodensity.core.settings import OpcUaSourceSettings
from robodensity.core.wire import EventType, Quality, Reading, RobotId, State
from robodensity.edge.normalise import (
    IN_CONTROL,
    MACHINERY_ITEM_STATE,
    ON_PATH,
    OPERATION_STATE,
    OPERATIONAL_MODE,
    SIGNALS_FOR_STATE,
    STATE_MACHINES_FOR_STATE,
    derive_state,
)
from robodensity.edge.sources.opcua import OpcUaSource, discover
from robodensity.simulators.opcua_controller import MACHINERY_NS, ROBOTICS_NS, SIM_NS, OpcUaController, SimRobot
from tests.helpers import collect_until

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
ROUND_TRIP = SimRobot("ABB", "SM-ROUND", "IRB 6700")
PRECEDENCE = SimRobot("ABB", "SM-PREFER", "IRB 6700")
BAD = SimRobot("ABB", "SM-BAD", "IRB 6700")
CELL = [ROUND_TRIP, PRECEDENCE, BAD]
SEQUENCE = [
    State.EXECUTING,
    State.FAULT,
    State.IDLE,
    State.OUT_OF_SERVICE,
    State.EXECUTING,
    State.OFFLINE,
    State.IDLE,
]
shared_loop = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def robotics() -> AsyncIterator[OpcUaController]:
    async with OpcUaController(CELL, name="cell-sm") as ctl:
        yield ctl


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def robotics10() -> AsyncIterator[OpcUaController]:
    async with OpcUaController(CELL, name="cell-10", variant="robotics10") as ctl:
        yield ctl


def settings(url: str) -> OpcUaSourceSettings:
    return OpcUaSourceSettings(url=url, publishing_interval_ms=50)  # type: ignore[call-arg]


def rid(robot: SimRobot) -> RobotId:
    return RobotId(robot.manufacturer, robot.serial)


def states_of(readings: list[Reading], robot: SimRobot) -> list[Reading]:
    return [r for r in readings if r.type is EventType.STATE and r.robot == rid(robot)]


async def started(src: OpcUaSource) -> AsyncIterator[Reading]:
    it = aiter(src)
    want = {rid(r) for r in CELL}
    await collect_until(it, lambda got: want <= {r.robot for r in got if r.type is EventType.STATE})
    return it


async def next_state(it: AsyncIterator[Reading], robot: SimRobot) -> Reading:
    (reading,) = states_of(await collect_until(it, lambda g: bool(states_of(g, robot))), robot)
    return reading


# -- the model ---------------------------------------------------------------------------


def test_the_state_machine_table_derives_every_state_together_with_the_signals() -> None:
    for state, machines in STATE_MACHINES_FOR_STATE.items():
        signals: dict[str, object] = dict(SIGNALS_FOR_STATE.get(state, {}))
        signals.update({name: ua.LocalizedText(text) if text else None for name, text in machines.items()})
        assert derive_state(signals) is state


def test_the_robotics_state_machine_alone_and_its_fallbacks() -> None:
    auto, manual = 3, 1
    assert derive_state({OPERATION_STATE: "Executing"}) is State.EXECUTING
    assert derive_state({OPERATION_STATE: "Ready", OPERATIONAL_MODE: auto}) is State.IDLE
    assert derive_state({OPERATION_STATE: "Idle", OPERATIONAL_MODE: auto}) is State.IDLE
    assert derive_state({OPERATION_STATE: "Idle", OPERATIONAL_MODE: manual}) is State.OUT_OF_SERVICE
    # MachineryItemState first; an unknown (e.g. localised) text falls through to the next row
    assert derive_state({MACHINERY_ITEM_STATE: "NotExecuting", OPERATION_STATE: "Executing"}) is State.IDLE
    assert derive_state({MACHINERY_ITEM_STATE: "Ausführend", OPERATION_STATE: "Executing"}) is State.EXECUTING
    # a motion signal the server has but whose value is unknown: Executing is not provable
    assert derive_state({MACHINERY_ITEM_STATE: "Executing", ON_PATH: None, IN_CONTROL: True}) is State.IDLE


# -- the simulator's address space -------------------------------------------------------


@shared_loop
async def test_the_state_machines_are_where_the_nodesets_model_them(robotics: OpcUaController) -> None:
    await robotics.set_state(ROUND_TRIP.key, State.IDLE, T0)
    async with Client(robotics.url) as client:
        ns = await client.get_namespace_array()
        rob, mach, sim = ns.index(ROBOTICS_NS), ns.index(MACHINERY_NS), ns.index(SIM_NS)
        system = await client.nodes.objects.get_child(["2:DeviceSet", f"{sim}:cell-sm"])
        item = await system.get_child(
            [f"{rob}:MotionDevices", f"{sim}:{ROUND_TRIP.serial}", f"{mach}:MachineryBuildingBlocks"]
            + [f"{mach}:MachineryItemState", "0:CurrentState"]
        )
        op = await system.get_child(
            [f"{rob}:Controllers", f"{sim}:Controller_{ROUND_TRIP.serial}", f"{rob}:SystemOperation"]
            + [f"{rob}:SystemOperationStateMachine", "0:CurrentState"]
        )
        assert (await item.read_value()).Text == "NotExecuting"
        assert await (await item.get_child("0:Id")).read_value() == ua.NodeId(5007, mach)
        assert (await op.read_value()).Text == "Ready"
        assert await (await op.get_child("0:Id")).read_value() == ua.NodeId(5031, rob)
        sm_type = await (await op.get_parent()).read_type_definition()
        assert sm_type == ua.NodeId(1021, rob)  # SystemOperationStateMachineType


# -- the edge --------------------------------------------------------------------------


@shared_loop
async def test_discovery_reports_which_robots_have_state_machines(
    robotics: OpcUaController, robotics10: OpcUaController
) -> None:
    with_sm = await discover(settings(robotics.url))
    assert {d.state_machines for d in with_sm} == {(MACHINERY_ITEM_STATE, OPERATION_STATE)}
    without = await discover(settings(robotics10.url))
    assert {d.state_machines for d in without} == {()}
    assert len(with_sm) == len(without) == len(CELL)


@pytest.mark.parametrize("variant", ["robotics", "robotics10"])
@shared_loop
async def test_every_state_round_trips(variant: str, robotics: OpcUaController, robotics10: OpcUaController) -> None:
    ctl = robotics if variant == "robotics" else robotics10
    async with OpcUaSource(settings(ctl.url)) as src:
        it = await started(src)
        ts = T0
        for state in SEQUENCE:
            ts += timedelta(minutes=7)
            await ctl.set_state(ROUND_TRIP.key, state, ts)
            reading = await next_state(it, ROUND_TRIP)
            assert (reading.state, reading.ts) == (state, ts)
            assert reading.quality is (Quality.BAD if state is State.OFFLINE else Quality.GOOD)


@shared_loop
async def test_the_state_machines_win_over_the_signals_but_not_over_safety(robotics: OpcUaController) -> None:
    ctl, robot = robotics, PRECEDENCE
    ts = T0 + timedelta(hours=1)

    async def signals(state: State) -> None:
        """set_state: signals and state machines agree."""
        nonlocal ts
        ts += timedelta(minutes=1)
        await ctl.set_state(robot.key, state, ts)

    async def machines(**states: str) -> None:
        """Only the state machines, disagreeing with the signals."""
        nonlocal ts
        ts += timedelta(seconds=1)
        await ctl.set_state_machines(robot.key, ts, **states)

    async with OpcUaSource(settings(ctl.url)) as src:
        it = await started(src)

        async def expect(state: State) -> None:
            reading = await next_state(it, robot)
            assert (reading.state, reading.ts, reading.quality) == (state, ts, Quality.GOOD)

        # signals IDLE, state machines Executing -> EXECUTING
        await machines(machinery_item_state="Executing", operation_state="Executing")
        await expect(State.EXECUTING)
        # signals IDLE (automatic), MachineryItemState OutOfService -> OUT_OF_SERVICE
        await machines(machinery_item_state="OutOfService")
        await expect(State.OUT_OF_SERVICE)
        # signals EXECUTING, state machines NotExecuting / Ready -> IDLE
        await signals(State.EXECUTING)
        await expect(State.EXECUTING)
        await machines(machinery_item_state="NotExecuting", operation_state="Ready")
        await expect(State.IDLE)
        # MachineryItemState (NotExecuting) over the Robotics state machine (Executing): no change
        await machines(operation_state="Executing")
        # EmergencyStop/ProtectiveStop (FAULT) over any state machine: no change either
        await signals(State.FAULT)
        await expect(State.FAULT)
        await machines(machinery_item_state="Executing", operation_state="Executing")
        # readings arrive in order: had either write changed the state, this would not be next
        await signals(State.OUT_OF_SERVICE)
        await expect(State.OUT_OF_SERVICE)


@shared_loop
async def test_a_bad_state_machine_falls_back_to_the_next_source(robotics: OpcUaController) -> None:
    ctl, robot = robotics, BAD
    ts = T0 + timedelta(hours=2)
    async with OpcUaSource(settings(ctl.url)) as src:
        it = await started(src)
        await ctl.set_state_machines(robot.key, ts, machinery_item_state="Executing")
        assert (await next_state(it, robot)).state is State.EXECUTING
        # MachineryItemState Bad: the Robotics state machine (Ready) decides, flagged BAD
        await ctl.set_bad(robot.key, MACHINERY_ITEM_STATE, ts + timedelta(seconds=1))
        reading = await next_state(it, robot)
        assert (reading.state, reading.quality) == (State.IDLE, Quality.BAD)
        await ctl.set_state_machines(robot.key, ts + timedelta(seconds=2), operation_state="Executing")
        reading = await next_state(it, robot)
        assert (reading.state, reading.quality) == (State.EXECUTING, Quality.BAD)


@shared_loop
async def test_robotics10_has_no_state_machines_to_write(robotics10: OpcUaController) -> None:
    with pytest.raises(NotImplementedError, match="no state machines"):
        await robotics10.set_state_machines(ROUND_TRIP.key, T0, machinery_item_state="Executing")
