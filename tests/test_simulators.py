"""Simulated robots and provinces: deterministic, realistic in shape, and honest ground truth."""

from __future__ import annotations

import ast
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from robodensity.core.wire import State
from robodensity.metrics.state_time import seconds_in_state as core_seconds
from robodensity.metrics.states import STATES, state_codes
from robodensity.simulators.behaviour import (
    ShiftCalendar,
    counters,
    seconds_in_state,
    state_schedule,
    utilisation,
)
from robodensity.simulators.opcua_controller import model
from robodensity.simulators.province import ProvinceSpec, generate, load_spec, write_registry_csv

END = datetime(2026, 11, 23, tzinfo=UTC)
WEEK = END - timedelta(days=7)


def test_the_same_seed_gives_the_same_robot_life() -> None:
    assert state_schedule(3, "ABB/1", WEEK, END) == state_schedule(3, "ABB/1", WEEK, END)
    assert state_schedule(3, "ABB/1", WEEK, END) != state_schedule(4, "ABB/1", WEEK, END)


def test_robots_do_not_execute_outside_their_shifts() -> None:
    cal = ShiftCalendar(shifts_per_day=2)
    sched = state_schedule(1, "KUKA/7", WEEK, END, calendar=cal)
    points = [*sched, (END, State.OFFLINE)]
    tz = ZoneInfo(cal.tz)
    for (t0, s), (t1, _) in zip(points, points[1:]):
        if s is State.EXECUTING:
            a, b = t0.astimezone(tz), (t1 - timedelta(microseconds=1)).astimezone(tz)
            assert a.weekday() < 5 and 8 <= a.hour < 24 and b.hour >= 8 and a.date() == b.date(), (a, b)


def test_planned_maintenance_takes_the_robot_out_of_service() -> None:
    cal = ShiftCalendar(shifts_per_day=3, workdays=frozenset(range(7)), maintenance_weekday=2)
    sched = state_schedule(1, "FANUC/2", WEEK, END, calendar=cal)
    wednesday_10 = datetime(2026, 11, 18, 10, tzinfo=ZoneInfo(cal.tz))
    state_then = [s for t, s in sched if t <= wednesday_10][-1]
    assert state_then is State.OUT_OF_SERVICE


def test_counters_only_grow() -> None:
    series = counters(state_schedule(2, "ABB/9", WEEK, END), END)
    for column in (1, 2, 3):
        values = [row[column] for row in series]
        assert values == sorted(values)
    assert series[-1][1] == pytest.approx(7 * 86_400)  # powered on the whole week


def test_ground_truth_and_the_metrics_core_agree_over_a_simulated_week() -> None:
    keys = [f"SIM/{i}" for i in range(30)]
    cal = ShiftCalendar(shifts_per_day=2)
    schedules = [state_schedule(5, k, WEEK, END, calendar=cal) for k in keys]
    robot = np.concatenate([np.full(len(s), i) for i, s in enumerate(schedules)])
    ts = np.array([int(t.timestamp() * 1e6) for s in schedules for t, _ in s], dtype=np.int64)
    codes = state_codes([st for s in schedules for _, st in s])
    core = core_seconds(robot, ts, codes, len(keys), int(WEEK.timestamp() * 1e6), int(END.timestamp() * 1e6))
    for i, sched in enumerate(schedules):
        truth = seconds_in_state(sched, WEEK, END)
        assert core[i, 0] == pytest.approx([truth[s] for s in STATES])
        assert abs(core[i, 0, 0] / core[i, 0].sum() - utilisation(truth)) < 0.01


def test_a_province_aimed_at_a_density_reaches_it() -> None:
    province = generate(ProvinceSpec(density=400), seed=9)
    for f in province.factories:
        assert len(province.robots_of(f.id)) == max(1, round(400 * f.employees / 10_000))


def test_leased_robots_have_two_assignments_in_the_registry(tmp_path: Path) -> None:
    province = generate(ProvinceSpec(leased_share=0.5), seed=2)
    moved = [r for r in province.robots if r.moved_from]
    assert moved and all(r.moved_from and r.moved_from[0] != r.factory for r in moved)
    write_registry_csv(province, tmp_path)
    rows = (tmp_path / "assignments.csv").read_text().splitlines()[1:]
    assert len(rows) == len(province.robots) + len(moved)


def test_a_province_spec_loads_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        'code = "440000"\nname = "广东省"\nname_en = "Guangdong"\nrobots = 40\n'
        '[[cities]]\ncode = "440100"\nname = "广州市"\nname_en = "Guangzhou"\nfactories = 3\n'
        '[[cities]]\ncode = "440300"\nname = "深圳市"\nname_en = "Shenzhen"\nfactories = 2\n'
    )
    province = generate(load_spec(path), seed=1)
    assert {r.code for r in province.regions} == {"440000", "440100", "440300"}
    assert len(province.factories) == 5 and len(province.robots) == 40


SIMULATORS = Path(model.__file__).resolve().parents[1]
UA = "{http://opcfoundation.org/UA/2011/03/UANodeSet.xsd}"


def test_no_simulator_imports_the_edge() -> None:
    # Simulators are built from the protocol facts, so the edge's mapping mistakes cannot hide.
    offenders = []
    for path in sorted(SIMULATORS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            offenders += [
                f"{path.relative_to(SIMULATORS)}:{node.lineno} {name}"
                for name in names
                if name == "robodensity.edge" or name.startswith("robodensity.edge.")
            ]
    assert offenders == []


Key = tuple[str, int]
"""A numeric NodeId: (namespace URI, identifier)."""


def _nodeset(name: str) -> dict[Key, tuple[str, Key | None, ET.Element]]:
    """Each numeric node of a nodeset -> (its BrowseName without prefix, its parent's key, the element)."""
    root = ET.parse(model.NODESET_DIR / name).getroot()
    uris = [u.text or "" for u in root.iter(f"{UA}Uri")]

    def key(nodeid: str | None) -> Key | None:
        if nodeid is None or not nodeid.startswith("ns=") or ";i=" not in nodeid:
            return None
        ns, ident = nodeid.removeprefix("ns=").split(";i=")
        return uris[int(ns) - 1], int(ident)

    nodes = {}
    for element in root:
        k = key(element.get("NodeId"))
        if k is not None:
            nodes[k] = (element.get("BrowseName", "").split(":", 1)[-1], key(element.get("ParentNodeId")), element)
    return nodes


def test_the_opcua_simulators_node_ids_are_the_nodesets() -> None:
    nodes = {k: v for name in model.NODESETS for k, v in _nodeset(name).items()}
    rob, di, mach = model.ROBOTICS_NS, model.DI_NS, model.MACHINERY_NS
    expected = {
        (di, model.DI_DEVICE_SET): "DeviceSet",
        (rob, model.MOTION_DEVICE_SYSTEM_TYPE): "MotionDeviceSystemType",
        (rob, model.CONTROLLER_TYPE): "ControllerType",
        (rob, model.MOTION_DEVICE_TYPE): "MotionDeviceType",
        (rob, model.TASK_CONTROL_TYPE): "TaskControlType",
        (rob, model.SAFETY_STATE_TYPE): "SafetyStateType",
        (rob, model.USER_TYPE): "UserType",
        (rob, model.SYSTEM_OPERATION_TYPE): "SystemOperationType",
        (rob, model.SYSTEM_OPERATION_STATE_MACHINE_TYPE): "SystemOperationStateMachineType",
        (mach, model.MACHINERY_ITEM_STATE_TYPE): "MachineryItemState_StateMachineType",
        (rob, model.CONTROLS): "Controls",
        (rob, model.HAS_SAFETY_STATES): "HasSafetyStates",
        (rob, model.OPERATIONAL_MODE_ENUM): "OperationalModeEnumeration",
        (rob, model.EXECUTION_MODE_ENUM): "ExecutionModeEnumeration",
        (rob, model.MOTION_DEVICE_CATEGORY_ENUM): "MotionDeviceCategoryEnumeration",
    }
    assert {key: nodes[key][0] if key in nodes else None for key in expected} == expected
    for uri, states, machine in (
        (rob, model.OPERATION_STATE_IDS, (rob, model.SYSTEM_OPERATION_STATE_MACHINE_TYPE)),
        (mach, model.MACHINERY_ITEM_STATE_IDS, (mach, model.MACHINERY_ITEM_STATE_TYPE)),
    ):
        # each state is the state object of that state machine type (other types have states of the same name)
        assert {state: nodes[(uri, ident)][:2] for state, ident in states.items()} == {
            state: (state, machine) for state in states
        }
    for ident, values in (
        (model.OPERATIONAL_MODE_ENUM, model.OPERATIONAL_MODES),
        (model.EXECUTION_MODE_ENUM, model.EXECUTION_MODES),
        (model.MOTION_DEVICE_CATEGORY_ENUM, model.MOTION_DEVICE_CATEGORIES),
    ):
        fields = nodes[(rob, ident)][2].iter(f"{UA}Field")
        assert {f.get("Name"): int(f.get("Value", "-1")) for f in fields} == values
    robotics_names = {name for (uri, _), (name, _, _) in nodes.items() if uri == rob}
    assert set(model.VARIANT) <= robotics_names


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "PT0S"), (59.5, "PT59.500S"), (3600, "PT1H"), (86_400, "P1D"), (90_061.25, "P1DT1H1M1.250S")],
)
def test_the_power_on_time_is_an_iso_8601_duration(seconds: float, text: str) -> None:
    assert model.duration_string(seconds) == text


def test_a_negative_power_on_time_is_refused() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        model.duration_string(-1)


@pytest.mark.parametrize("state", list(model.SIGNALS_FOR_STATE))
def test_the_edge_reads_each_state_from_the_opcua_simulators_signals(state: State) -> None:
    # The two tables are written independently; the OPC UA round trips check the same through a server.
    from robodensity.edge.normalise import derive_state

    assert derive_state(model.SIGNALS_FOR_STATE[state]) is state
