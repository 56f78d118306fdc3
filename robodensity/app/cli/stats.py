"""``robodensity stats ...``: official employment and installation statistics."""

from __future__ import annotations

from pathlib import Path

import typer

from robodensity.app.cli.common import ConfigOpt, SchemaOpt, console, friendly, open_db

app = typer.Typer(
    help="Official statistics: employment by region x industry x year, installations.", no_args_is_help=True
)


@app.command("import")
@friendly
def stats_import(
    source: Path = typer.Argument(
        ...,
        help="employment.csv (region, industry, year, employees, source, vintage; optional firms), "
        "installations.csv (region, year, installations, source, vintage), a folder of them (and of "
        "definitions.csv, key_industries.csv), or an XLSX workbook with sheets of those names.",
    ),
    config: Path | None = ConfigOpt,
    schema: str = SchemaOpt,
) -> None:
    """Validate every row of the statistics files, then import them all or nothing.

    Each problem is one line FILE:LINE: COLUMN: PROBLEM; with any problem nothing is imported.
    Densities of official-denominator definitions appear at the next `robodensity metrics compute`.

    Example: robodensity stats import jiangsu-yearbook-2024.csv
    """
    from robodensity.storage.statistics import import_statistics

    with open_db(config, schema) as conn:
        counts = import_statistics(conn, source)
    console.print(", ".join(f"{n} {t}" for t, n in counts.items()))
