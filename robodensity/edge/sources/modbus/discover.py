"""Which unit ids of a Modbus server are robots of a profile, and a settings section for them.

``modbus://HOST:502?profile=estun&units=1-8`` names the connection, the profile (default
estun) and the unit ids to try (default 1; ``1-8``, ``1,3,5`` and mixes). A unit counts as
a robot when it answers the profile's blocks and at least one state signal is known.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from robodensity.core.errors import ConfigError
from robodensity.core.settings_modbus import ModbusRobotSettings, ModbusSourceSettings, modbus_address
from robodensity.core.wire import State
from robodensity.edge.rules import evaluate, signal_names
from robodensity.edge.sources.modbus.profile import Profile, load_profile
from robodensity.edge.sources.modbus.source import ModbusSource, Robot, Unanswered


@dataclass(frozen=True)
class FoundRobot:
    unit: int
    manufacturer: str
    serial: str | None
    model: str | None
    state: State
    readable: tuple[str, ...]
    """The profile's signals that had a value."""


def parse_units(text: str) -> list[int]:
    """``1-8``, ``1,3,5``, ``1-3,9`` -> unit ids; ConfigError naming what is wrong."""
    units: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi or lo)
        except ValueError:
            raise ConfigError(f"units: {part!r} is not a unit id or a range like 1-8") from None
        if not 0 <= first <= last <= 255:
            raise ConfigError(f"units: {part!r} must be within 0..255, low to high")
        units += range(first, last + 1)
    return sorted(set(units))


def parse_discover_url(url: str) -> tuple[str, str, list[int]]:
    """(modbus://host:port, profile, units) of a discover URL."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    unknown = sorted(set(query) - {"profile", "units"})
    if unknown:
        raise ConfigError(f"{url}: unknown parameter {', '.join(unknown)}; use profile= and units=")
    plain = f"modbus://{parts.netloc}"
    try:
        modbus_address(plain)
    except ValueError as exc:
        raise ConfigError(f"{url}: {exc}") from None
    profile = query.get("profile", ["estun"])[-1]
    return plain, profile, parse_units(query.get("units", ["1"])[-1])


async def discover(url: str, timeout_s: float = 1.0) -> tuple[Profile, list[FoundRobot]]:
    """The robots behind ``url`` (a discover URL, see the module docstring)."""
    plain, profile_name, units = parse_discover_url(url)
    profile = load_profile(profile_name)
    robots = tuple(ModbusRobotSettings(unit=u, serial=f"unit-{u}") for u in units)
    settings = ModbusSourceSettings(url=plain, profile=profile_name, robots=robots, timeout_s=timeout_s)
    source = ModbusSource(settings)
    found: list[FoundRobot] = []
    async with source:
        problem = await source.connect_once()
        if problem is not None:
            raise ConfigError(f"{plain}: cannot connect: {problem}")
        for cfg in robots:
            try:
                blocks = await source.read_blocks(Robot(cfg))
            except Unanswered:
                continue
            signals = source.decoder.decode(blocks)
            state, _ = evaluate(signals, profile.rules, profile.default)
            if state is State.OFFLINE or not any(signals.get(n) is not None for n in signal_names(profile.rules)):
                continue
            serial = signals.get(profile.serial) if profile.serial else None
            model = signals.get(profile.model) if profile.model else None
            found.append(
                FoundRobot(
                    cfg.unit,
                    profile.manufacturer,
                    str(serial) if serial not in (None, "") else None,
                    str(model) if model else None,
                    state,
                    tuple(n for n, v in signals.items() if v is not None),
                )
            )
            await asyncio.sleep(0)
    return profile, found


def settings_section(url: str, profile: Profile, found: list[FoundRobot]) -> str:
    """A ready-to-paste ``[[edge.modbus]]`` section for the robots found."""
    plain, _, _ = parse_discover_url(url)
    lines = [
        "[[edge.modbus]]",
        f'url = "{plain}"',
        f'profile = "{profile.name}"',
        "robots = [",
    ]
    for r in found:
        if r.serial is not None and profile.manufacturer == "GENERIC":
            lines.append(
                f'    {{ unit = {r.unit}, manufacturer = "GENERIC" }},  # {r.serial} {r.model or ""}: put the make here'
            )
        elif r.serial is not None:
            lines.append(f"    {{ unit = {r.unit} }},  # {r.manufacturer} {r.serial} {r.model or ''}".rstrip())
        else:
            lines.append(
                f'    {{ unit = {r.unit}, serial = "NAMEPLATE-{r.unit}" }},  # {profile.name} cannot read the serial:'
                " copy it from the robot's nameplate"
            )
    lines.append("]")
    return "\n".join(lines)
