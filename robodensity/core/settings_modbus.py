"""Settings of the Modbus TCP source and the state rules that JSON mappings share.

``[[edge.modbus]]`` is one Modbus TCP connection (a robot controller, a cell PLC or a
Modbus gateway) and the robots behind it, each at its own unit id (and, for PLCs that
stack several robots in one unit, a register base). The register map is a *profile*:
a TOML file (built-in ``estun``, ``cell_plc``, or a path) that the edge checks when the
source starts (``robodensity edge profile check FILE`` checks one by hand).

:class:`StateRuleSettings` is one row of a rule table from signals to a canonical state,
shared by Modbus profiles and ``[[edge.mqtt_json]]`` mappings: the first row whose every
condition holds wins. A condition is ``name = value`` (equal) or ``name = { not = value }``.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from robodensity.core.wire import MAX_IDENT_CHARS, State

Scalar = bool | int | float | str


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NotCondition(_Section):
    """``{ not = value }``: holds when the signal is known and differs from ``value``."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)  # dumped as not_, read back
    not_: Scalar = Field(alias="not")


class StateRuleSettings(_Section):
    """When every condition holds -> ``state``. First matching rule wins."""

    when: dict[str, Scalar | NotCondition] = Field(min_length=1)
    """Signal (or JSON path) -> value it must equal, or { not = value }."""
    state: State

    @field_validator("state")
    @classmethod
    def _not_offline(cls, v: State) -> State:
        if v is State.OFFLINE:
            raise ValueError("OFFLINE is not a rule's state: it means the robot cannot be read")
        return v


def modbus_address(url: str) -> tuple[str, int]:
    """(host, port) of modbus://host[:port] (default port 502); ValueError saying what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "modbus" or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError("must be modbus://host:port")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("must have a port 1..65535") from None
    return parts.hostname, port or 502


_PROFILE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class ModbusRobotSettings(_Section):
    """One robot behind a Modbus connection."""

    unit: int = Field(ge=0, le=255)
    """Modbus unit id (station) the robot answers on."""
    serial: str | None = None
    """The robot's serial number (nameplate); required unless the profile reads it from the robot."""
    manufacturer: str | None = None
    """Unset: the profile's manufacturer."""
    base: int = Field(0, ge=0, le=65_535)
    """Added to every register address of the profile: for PLCs that stack robots in one unit."""

    @field_validator("serial", "manufacturer")
    @classmethod
    def _text(cls, v: str | None) -> str | None:
        if v is not None and not 0 < len(v.strip()) <= MAX_IDENT_CHARS:
            raise ValueError(f"must be 1..{MAX_IDENT_CHARS} characters")
        return v.strip() if v is not None else v


class ModbusSourceSettings(_Section):
    """One Modbus TCP connection and the robots it reaches."""

    url: str
    """modbus://host:port of the controller, PLC or gateway (port 502 by default)."""
    profile: str = "estun"
    """Register map: a built-in profile (estun, cell_plc) or the path of a profile TOML file."""
    robots: tuple[ModbusRobotSettings, ...] = Field(min_length=1)
    poll_interval_s: float = Field(1.0, ge=0.01, le=3600)
    """Each robot is read this often; states rarely change faster than a second."""
    jitter: float = Field(0.1, ge=0, le=0.5)
    """Each wait varies by up to this fraction of poll_interval_s, so agents do not poll in step."""
    timeout_s: float = Field(2.0, gt=0, le=60)
    """A reply later than this counts as none."""
    reconnect_max_s: float = Field(30.0, gt=0, le=3600)
    """Longest wait between reconnect attempts (the wait doubles from 1 s)."""
    counter_interval_s: float = Field(60.0, ge=0, le=86_400)
    """A counter that changes is sent at most this often (0: every change)."""

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        modbus_address(v)
        return v

    @field_validator("profile")
    @classmethod
    def _profile(cls, v: str) -> str:
        if _PROFILE_NAME.match(v):
            return v  # a built-in name: the source says which exist when it starts
        path = Path(v)
        if not path.is_file():
            raise ValueError(f"is neither a built-in profile name nor an existing file: {v}")
        return v

    @model_validator(mode="after")
    def _distinct_robots(self) -> ModbusSourceSettings:
        seen: set[tuple[int, int]] = set()
        for robot in self.robots:
            if (robot.unit, robot.base) in seen:
                raise ValueError(f"two robots at unit {robot.unit} base {robot.base}")
            seen.add((robot.unit, robot.base))
        serials = [r.serial for r in self.robots if r.serial is not None]
        if len(serials) != len(set(serials)):
            raise ValueError("two robots with the same serial")
        return self
