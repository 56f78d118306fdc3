"""``robodensity edge profile ...`` and the modbus:// scheme of ``edge discover``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer
from rich.markup import escape

from robodensity.app.cli.common import console, friendly

profile_app = typer.Typer(help="Modbus register-map profiles.", no_args_is_help=True)


@profile_app.command("check")
@friendly
def profile_check(
    file: str = typer.Argument(..., help="A profile TOML file, or a built-in name (estun, cell_plc)."),
) -> None:
    """Check a Modbus profile (one line per problem: file:line: key: problem) and print its table.

    Example: robodensity edge profile check /etc/robodensity/my-plc.toml
    """
    from robodensity.edge.sources.modbus.profile import ProfileError, check_profile, format_table, profile_path

    path = profile_path(file)
    profile, problems = check_profile(Path(path))
    if profile is None:
        raise ProfileError(str(path), problems)
    console.print(escape(format_table(profile)), highlight=False)


def discover_modbus(url: str) -> None:
    """Print the robots behind a modbus://HOST:PORT?profile=...&units=... URL and their settings section."""
    from rich.table import Table

    from robodensity.edge.sources.modbus.discover import discover, settings_section

    profile, robots = asyncio.run(discover(url))
    table = Table(title=f"Robots at {url} (profile {profile.name})")
    for col in ("Unit", "Manufacturer", "Serial number", "Model", "State", "Readable"):
        table.add_column(col)
    for r in robots:
        table.add_row(
            str(r.unit),
            r.manufacturer,
            r.serial or "(not readable)",
            r.model or "",
            r.state.value,
            ", ".join(r.readable),
        )
    console.print(table)
    if robots:
        console.print(escape(settings_section(url, profile, robots)), highlight=False)
    else:
        console.print("No unit answered as a robot of this profile: check units= and profile=.")
