"""``robodensity registry ...``: regions, industries, factories, headcounts, robots."""

from __future__ import annotations

from pathlib import Path

import typer

from robodensity.app.cli.common import ConfigOpt, SchemaOpt, console, friendly, open_db

app = typer.Typer(help="The robot registry: regions, factories, headcounts, robots.", no_args_is_help=True)


@app.command("import")
@friendly
def registry_import(
    source: Path = typer.Argument(
        ...,
        help="A folder with regions.csv, industries.csv, factories.csv, headcounts.csv, robots.csv, "
        "assignments.csv, and the optional shift calendars shifts.csv, holidays.csv, maintenance.csv "
        "(any subset; docs/clocks-and-shifts.md), or an XLSX workbook with sheets of those names.",
    ),
    config: Path | None = ConfigOpt,
    schema: str = SchemaOpt,
) -> None:
    """Validate every row of the registry files, then import them all or nothing.

    Each problem is one line FILE:LINE: COLUMN: PROBLEM; with any problem nothing is imported.

    Example: robodensity registry import ./registry   (or: robodensity registry import registry.xlsx)
    """
    from robodensity.storage.registry import import_registry

    with open_db(config, schema) as conn:
        counts = import_registry(conn, source)
    console.print(", ".join(f"{n} {t}" for t, n in counts.items()))
