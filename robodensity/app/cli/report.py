"""``robodensity report ...``: what economic departments read."""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path

import typer

from robodensity.app.cli.common import ConfigOpt, SchemaOpt, console, friendly, open_db
from robodensity.core.errors import ConfigError, RoboDensityError

app = typer.Typer(help="Reports for economic departments.", no_args_is_help=True)
IndustryOpt = typer.Option("*", help="GB/T 4754 code, or * for all manufacturing.")
DefinitionOpt = typer.Option(
    "participating", help="Density definition (robodensity definitions list), e.g. official-key-manufacturing."
)


def _print_json(doc: object) -> None:
    sys.stdout.write(json.dumps(doc, ensure_ascii=False, indent=2) + "\n")


@app.command("density")
@friendly
def report_density(
    region: str = typer.Option(..., help="GB/T 2260 region code, e.g. 320000 for Jiangsu."),
    at: str | None = typer.Option(None, help="Latest period ending on or before this date (YYYY-MM-DD)."),
    industry: str = IndustryOpt,
    definition: str = DefinitionOpt,
    fmt: str = typer.Option("table", "--format", help="table, csv, json or xlsx (xlsx needs --out)."),
    out: Path | None = typer.Option(None, help="Workbook to write with --format xlsx."),
    config: Path | None = ConfigOpt,
    schema: str = SchemaOpt,
) -> None:
    """Robot density of a region and its sub-regions, with target, coverage and utilisation; every
    row names its definition, denominator source and vintage.

    Example: robodensity report density --region 320000 --definition official-key-manufacturing --format json
    """
    from robodensity.app.inputs import local_day
    from robodensity.app.report import as_table, as_text, defined_title, density_report

    if fmt not in ("table", "csv", "json", "xlsx"):
        raise ConfigError(f"--format must be one of table, csv, json, xlsx; got {fmt!r}")
    if fmt == "xlsx" and out is None:
        raise ConfigError("--format xlsx needs --out FILE.xlsx")
    when = local_day(at, "--at") + timedelta(days=1) if at else None
    with open_db(config, schema) as conn:
        rows = density_report(conn, region, when, industry, definition)
    if not rows:
        raise RoboDensityError(
            f"no density computed for region {region} (industry {industry}, definition {definition}); "
            "run `robodensity metrics compute` first (official definitions need `robodensity stats import`)"
        )
    if fmt == "table":
        console.print(as_table(rows, defined_title(rows, region)))
    elif fmt == "xlsx" and out is not None:
        from robodensity.app.export import write_rows_xlsx

        console.print(str(write_rows_xlsx(rows, list(rows[0]), f"density {region}", out)))
    else:
        sys.stdout.write(as_text(rows, fmt))  # type: ignore[arg-type]


@app.command("targets")
@friendly
def report_targets(
    region: str = typer.Option(..., help="GB/T 2260 region code, e.g. 320000."),
    industry: str = IndustryOpt,
    config: Path | None = ConfigOpt,
    schema: str = SchemaOpt,
) -> None:
    """Progress toward the density target, the trend projected to the due date, and the month
    the trend reaches the target (JSON). Needs densities for several periods.

    Example: robodensity report targets --region 320000
    """
    from robodensity.app.report import target_outlook

    with open_db(config, schema) as conn:
        outlook = target_outlook(conn, region, industry)
    if outlook is None:
        raise RoboDensityError(f"no density with a target for region {region}; run `robodensity metrics compute`")
    _print_json(outlook)


@app.command("reconcile")
@friendly
def report_reconcile(
    region: str = typer.Option(..., help="GB/T 2260 region code, e.g. 320000."),
    config: Path | None = ConfigOpt,
    schema: str = SchemaOpt,
) -> None:
    """Bottom-up (registered and verified robots by year) against top-down (operational stock
    from installations by the IFR method), with the gap explained by coverage (JSON). Needs the
    region's installations: robodensity stats import installations.csv

    Example: robodensity report reconcile --region 320000
    """
    from robodensity.app.reconcile import reconcile

    with open_db(config, schema) as conn:
        _print_json(reconcile(conn, region))


@app.command("subsidy")
@friendly
def report_subsidy(
    factory: str = typer.Option(..., help="Factory id as registered."),
    since: str = typer.Option(..., help="Day the subsidised robots went in (YYYY-MM-DD)."),
    until: str = typer.Option(..., help="Day to compare with (YYYY-MM-DD)."),
    config: Path | None = ConfigOpt,
    schema: str = SchemaOpt,
) -> None:
    """Subsidy evidence for one factory: density before and after, utilisation of subsidised robots (JSON).

    Example: robodensity report subsidy --factory f320500-005 --since 2026-03-01 --until 2026-11-01
    """
    from robodensity.app.inputs import local_period
    from robodensity.app.report import subsidy_evidence

    start, end = local_period(since, until, "--since", "--until")
    with open_db(config, schema) as conn:
        evidence = subsidy_evidence(conn, factory, start.date(), end.date())
    _print_json(evidence)


@app.command("bulletin")
@friendly
def report_bulletin(
    region: str = typer.Option(..., help="GB/T 2260 code of a province or city, e.g. 320000."),
    month: str = typer.Option(..., help="Calendar month YYYY-MM (China Standard Time)."),
    out: Path = typer.Option(
        ..., help="HTML file to write; a PDF is written beside it when headless Chromium is installed."
    ),
    pdf: bool = typer.Option(True, "--pdf/--no-pdf", help="Also print a PDF when Chromium is available."),
    config: Path | None = ConfigOpt,
    schema: str = SchemaOpt,
) -> None:
    """Write the printable monthly bulletin: density against target by city, movers, coverage,
    utilisation and data gaps, in Chinese and English.

    Needs the month's densities: robodensity metrics compute --from 2026-03-01 --to 2026-04-01

    Example: robodensity report bulletin --region 320000 --month 2026-03 --out bulletin-2026-03.html
    """
    from robodensity.dashboards.bulletin import write_bulletin

    with open_db(config, schema) as conn:
        written = write_bulletin(conn, region, month, out, pdf=pdf)
    for path in written:
        console.print(str(path))


@app.command("tables")
@friendly
def report_tables(
    out: Path = typer.Option(..., help="Workbook (.xlsx) to write, or folder for the CSV files."),
    since: str = typer.Option(..., "--from", help="First day of the dashboards' time range (YYYY-MM-DD)."),
    until: str = typer.Option(..., "--to", help="Day after the last one (YYYY-MM-DD)."),
    dashboard: list[str] = typer.Option([], help="Dashboard uid (repeatable); all dashboards when omitted."),
    var: list[str] = typer.Option([], help="Template variable NAME=VALUE (repeatable); else its first value."),
    fmt: str = typer.Option("xlsx", "--format", help="xlsx (one sheet per table) or csv (one file per table)."),
    config: Path | None = ConfigOpt,
    schema: str = SchemaOpt,
) -> None:
    """Every table panel's data, exactly as the dashboards show it, for spreadsheets.

    Example: robodensity report tables --var region=320000 --from 2026-02-01 --to 2026-03-01 --out t.xlsx
    """
    from robodensity.app.export import FORMATS, panel_tables, parse_vars, write_csv, write_xlsx
    from robodensity.app.inputs import local_period

    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    start, end = local_period(since, until)
    with open_db(config, schema) as conn:
        sheets = panel_tables(conn, dashboard, parse_vars(var), start, end)
    paths = [write_xlsx(sheets, out, start, end)] if fmt == "xlsx" else write_csv(sheets, out)
    for path in paths:
        console.print(str(path))
