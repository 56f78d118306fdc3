"""The edge agent's OPC UA source: OPC 40010 (Robotics) discovery and subscriptions.

Life (see STYLE.md, one life for every source)::

    source = OpcUaSource(settings)       # settings checked when they loaded; no network
    async with source:                   # connects, discovers robots, subscribes
        async for reading in source:     # forever; reconnects on its own
            ...

One module per role (STYLE.md section 11, after Telegraf's ``plugins/common/opcua``):

- :mod:`.connect`: the client, security policy, certificates, trust list, login;
- :mod:`.mapping`: node ids, vendor mapping files, values of signals -> readings (no I/O);
- :mod:`.discover`: OPC 40010 discovery by browsing, or the robots a mapping file names;
- :mod:`.subscribe`: :class:`OpcUaSource`, its subscription, watchdog and reconnection.

Readings:

- state: derived by :func:`edge.normalise.derive_state` from the robot's signals and,
  where the server has them, the CurrentState of its state machines (OPC 40001-1
  MachineryItemState, OPC 40010-1 1.02 operation state machines). A state machine decides
  over the parameter signals, the safety signals (FAULT) over both; without state machines
  (Robotics 1.0) the signals alone (see the table in :mod:`edge.normalise`). Emitted only
  when the (state, quality) pair changes; the first one after each (re)connect is always
  emitted. ``ts`` is the SourceTimestamp of the signal change. The notifications of one
  publish response are grouped per robot and timestamp and applied in timestamp order, so
  several changes of one robot inside one publishing interval all come out, in order, each
  exactly once.
- counters: ``TotalPowerOnTime`` (ISO 8601 DurationString) -> POWER_ON_S,
  ``TotalEnergyConsumption`` -> ENERGY_WH, on change.
- a Bad status on a state signal makes it unknown and the reading's quality BAD.
- on connection loss: one OFFLINE reading per known robot, then reconnection (see
  :mod:`.subscribe`).

Controllers that expose vendor variables instead of OPC 40010 are read through a TOML
mapping file (``mapping_file``, see :func:`load_mapping`).

Security: with ``security_policy`` the client signs and encrypts with its ``certificate``
/ ``private_key`` and accepts only a server whose certificate is in ``trust_dir`` (time
range checked too). Without a policy only loopback URLs are allowed (checked by
:class:`core.settings.OpcUaSourceSettings`).
"""

from robodensity.edge.sources.opcua.connect import LoginRefused
from robodensity.edge.sources.opcua.discover import discover
from robodensity.edge.sources.opcua.mapping import DiscoveredRobot, VendorMapping, load_mapping, node_id
from robodensity.edge.sources.opcua.subscribe import OpcUaSource, monitored_item

__all__ = [
    "DiscoveredRobot",
    "LoginRefused",
    "OpcUaSource",
    "VendorMapping",
    "discover",
    "load_mapping",
    "monitored_item",
    "node_id",
]
