"""The hses://, rws://, rws7:// and urdash:// schemes of ``robodensity edge discover``."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlsplit

from rich.markup import escape

from robodensity.app.cli.common import console
from robodensity.core.errors import ConfigError

SCHEMES = ("hses", "rws", "rws7", "urdash")
NAMEPLATE = "FROM-THE-NAMEPLATE"
"""Stands in for a serial number the protocol cannot read, in a printed settings section."""


def settings_section(url: str, identity_serial: str, model: str) -> str:
    """A ready-to-paste ``[[edge.<scheme>]]`` section for ``url`` (TOML)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port
    if parts.scheme == "hses":
        lines = ["[[edge.hses]]", f'host = "{host}"']
        lines += [f'serial = "{identity_serial}"  # from the nameplate: HSES cannot read one']
        lines += [f"port = {port}"] if port else []
    elif parts.scheme in ("rws", "rws7"):
        v7 = parts.scheme == "rws7"
        web = f"{'https' if v7 else 'http'}://{host}" + (f":{port}" if port else "")
        lines = ["[[edge.rws]]", f'url = "{web}"', f"robotware = {7 if v7 else 6}"]
        lines += [f'serial = "{identity_serial}"  # the system name stands in: put the robot\'s nameplate serial']
        lines += ['# password_file = "/etc/robodensity/abb.password"  # unset: ABB\'s default password']
    else:
        lines = ["[[edge.urdash]]", f'host = "{host}"'] + ([f"port = {port}"] if port else [])
    return "\n".join([f"# {model or 'robot'} at {url}", *lines])


def discover_native(url: str, username: str | None = None, password: str | None = None) -> None:
    """Connect once, print the robot with what it can read, and its settings section."""
    from rich.table import Table

    from robodensity.core.settings_native import HsesSourceSettings, RwsSourceSettings, UrDashSourceSettings
    from robodensity.edge.sources.polled import PolledSource, identify

    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    host = parts.hostname
    if not host or parts.path not in ("", "/"):
        raise ConfigError(f"{url}: must be {parts.scheme}://HOST or {parts.scheme}://HOST:PORT")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"{url}: the port must be 1..65535") from None
    source: PolledSource
    try:
        if parts.scheme == "hses":
            from robodensity.edge.sources.hses import HsesSource

            serial = query.get("serial", NAMEPLATE)
            source = HsesSource(HsesSourceSettings(host=host, port=port or 10040, serial=serial))
        elif parts.scheme in ("rws", "rws7"):
            from robodensity.edge.sources.rws import RwsSource

            v7 = parts.scheme == "rws7"
            web = f"{'https' if v7 else 'http'}://{host}" + (f":{port}" if port else "")
            user = username or "Default User"
            cfg = RwsSourceSettings(url=web, robotware=7 if v7 else 6, subscribe=False, username=user)
            source = RwsSource(cfg, password=password)
        else:
            from robodensity.edge.sources.urdash import UrDashSource

            source = UrDashSource(UrDashSourceSettings(host=host, port=port or 29999, serial=query.get("serial")))
    except ValueError as exc:  # a pydantic ValidationError
        raise ConfigError(f"{url}: {exc}") from None
    identity, sample = asyncio.run(identify(source))
    readable = ["state"] + (["alarms"] if parts.scheme != "urdash" else [])
    readable += sorted(c.value for c in sample.counters)
    table = Table(title=f"Robot at {url}")
    for col in ("Manufacturer", "Model", "Serial number", "Software", "State", "Readable"):
        table.add_column(col)
    table.add_row(
        identity.manufacturer,
        identity.model,
        identity.serial,
        identity.software,
        sample.state.value,
        ", ".join(readable),
    )
    console.print(table)
    console.print(escape(settings_section(url, identity.serial, identity.model)), highlight=False)
