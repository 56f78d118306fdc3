"""``variant="vendor"``: the robots as plain vendor variables, the way many real controllers show them.

    Objects/Cell/Robot_<Serial>/{Manufacturer, Serial, Model, Mode, Running, Fault}
        Mode: "AUTO" | "MANUAL" | "OFF"; Running, Fault: Boolean   (namespace VENDOR_NS)

:data:`VENDOR_MAPPING_TOML` is the mapping file an edge source needs to read them.
"""

from __future__ import annotations

from collections.abc import Sequence

from asyncua import Server, ua

from robodensity.core.wire import State
from robodensity.simulators.opcua_controller.builder import NodeBatch, node_id, sanitise
from robodensity.simulators.opcua_controller.model import VENDOR_NS, SimRobot

VENDOR_SIGNALS_FOR_STATE: dict[State, dict[str, object]] = {
    State.EXECUTING: {"Mode": "AUTO", "Running": True, "Fault": False},
    State.IDLE: {"Mode": "AUTO", "Running": False, "Fault": False},
    State.FAULT: {"Mode": "AUTO", "Running": False, "Fault": True},
    State.OUT_OF_SERVICE: {"Mode": "MANUAL", "Running": False, "Fault": False},
}
"""How each canonical state looks in the vendor's own variables (OFFLINE: Bad status)."""

VENDOR_VARIANT = {
    "Mode": ua.VariantType.String,
    "Running": ua.VariantType.Boolean,
    "Fault": ua.VariantType.Boolean,
}
"""The vendor state variables and their variant types."""

VENDOR_MAPPING_TOML = f"""\
# Mapping for the simulator's vendor variant (see the edge's OPC UA mapping files).
namespace = "{VENDOR_NS}"
robots = "Cell"
default = "IDLE"
category = "ARTICULATED_ROBOT"

[identity]
manufacturer = "Manufacturer"
serial = "Serial"
model = "Model"

[signals]
Mode = "Mode"
Running = "Running"
Fault = "Fault"

[[rules]]
when = {{ Fault = true }}
state = "FAULT"

[[rules]]
when = {{ Mode = "MANUAL" }}
state = "OUT_OF_SERVICE"

[[rules]]
when = {{ Mode = "OFF" }}
state = "OUT_OF_SERVICE"

[[rules]]
when = {{ Mode = "AUTO", Running = true }}
state = "EXECUTING"
"""
"""A mapping file for ``variant="vendor"``: write it to a file for ``mapping_file``."""


async def build_vendor(server: Server, robots: Sequence[SimRobot]) -> dict[str, dict[str, ua.NodeId]]:
    """Add ``Objects/Cell`` with ``robots``; returns robot key -> state variable -> its node."""
    idx = await server.register_namespace(VENDOR_NS)
    batch = NodeBatch(idx)
    cell = batch.obj(
        node_id(ua.ObjectIds.ObjectsFolder), "Cell", ua.QualifiedName("Cell", idx), ref=ua.ObjectIds.Organizes
    )
    string = node_id(ua.ObjectIds.String)
    nodes: dict[str, dict[str, ua.NodeId]] = {}
    for r in robots:
        tag = sanitise(f"{r.manufacturer}_{r.serial}")
        robot = batch.obj(cell, f"Robot.{tag}", ua.QualifiedName(f"Robot_{r.serial}", idx))
        for name, text in (("Manufacturer", r.manufacturer), ("Serial", r.serial), ("Model", r.model)):
            batch.var(robot, ua.QualifiedName(name, idx), text, ua.VariantType.String, string)
        nodes[r.key] = {}
        for name, value in VENDOR_SIGNALS_FOR_STATE[State.IDLE].items():
            vt = VENDOR_VARIANT[name]
            dtype = node_id(ua.ObjectIds.Boolean if vt is ua.VariantType.Boolean else ua.ObjectIds.String)
            nodes[r.key][name] = batch.var(robot, ua.QualifiedName(name, idx), value, vt, dtype)
    await batch.commit(server)
    return nodes
