"""``robodensity definitions ...``: what a density counts and what it divides by."""

from __future__ import annotations

from pathlib import Path

import typer

from robodensity.app.cli.common import ConfigOpt, SchemaOpt, console, friendly, open_db

app = typer.Typer(help="Density definitions: numerator scope and denominator, as data.", no_args_is_help=True)


@app.command("import")
@friendly
def definitions_import(
    source: Path = typer.Argument(
        ...,
        help="definitions.csv (definition, numerator, scope, unit, denominator, title, title_zh, optional origin: "
        "local, or the region code of who defined it, which a province publishes to the nation), "
        "key_industries.csv (region_code, industry_code, source), a folder of them, or an XLSX workbook.",
    ),
    config: Path | None = ConfigOpt,
    schema: str = SchemaOpt,
) -> None:
    """Validate every definition and key-industry row, then import them all or nothing.

    Example: robodensity definitions import definitions.csv
    """
    from robodensity.storage.statistics import DEFINITIONS, import_statistics

    with open_db(config, schema) as conn:
        counts = import_statistics(conn, source, DEFINITIONS, default="definitions")
    console.print(", ".join(f"{n} {t}" for t, n in counts.items()))


@app.command("list")
@friendly
def definitions_list(config: Path | None = ConfigOpt, schema: str = SchemaOpt) -> None:
    """The definitions densities are computed in.

    Example: robodensity definitions list
    """
    with open_db(config, schema) as conn:
        rows = conn.execute(
            "SELECT definition, numerator, scope, unit, denominator, origin, title FROM density_definitions ORDER BY 1"
        ).fetchall()
    for row in rows:
        console.print("  ".join(map(str, row)), highlight=False)
