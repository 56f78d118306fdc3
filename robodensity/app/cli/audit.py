"""``robodensity audit``: who changed the registry, headcounts and targets, when, from what to what."""

from __future__ import annotations

from pathlib import Path

import typer

from robodensity.app.cli.common import ConfigOpt, SchemaOpt, console, friendly, open_db


@friendly
def audit(
    since: str = typer.Option(..., "--since", help="First day to show (YYYY-MM-DD, China Standard Time)."),
    until: str | None = typer.Option(None, "--until", help="Day after the last one to show (YYYY-MM-DD)."),
    config: Path | None = ConfigOpt,
    schema: str = SchemaOpt,
) -> None:
    """Show every recorded change since a day, oldest first: when, who, table, key, old -> new.

    Example: robodensity audit --since 2026-11-01
    """
    from robodensity.app.inputs import local_day
    from robodensity.storage.audit import entries

    start = local_day(since, "--since")
    end = local_day(until, "--until") if until else None
    with open_db(config, schema) as conn:
        found = entries(conn, start, end)
    for entry in found:
        console.print(entry.line(), markup=False, highlight=False)
    console.print(f"{len(found)} change(s)", style="dim")
