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


def _print_json(doc: object) -> None:
    sys.stdout.write(json.dumps(doc, ensure_ascii=False, indent=2) + "\n")


@app.command("density")
@friendly
def report_density(
    region: str = typer.Option(..., help="GB/T 2260 region code, e.g. 320000 for Jiangsu."),
    at: str | None = typer.Option(None, help="Latest period ending on or before this date (YYYY-MM-DD)."),
    industry: str = IndustryOpt,
    fmt: str = typer.Option("table", "--format", help="table, csv or json."),
    config: Path | None = ConfigOpt,
    schema: str = SchemaOpt,
) -> None:
    """Robot density of a region and its sub-regions, with target, coverage and utilisation.

    Example: robodensity report density --region 320000 --format csv
    """
    from robodensity.app.inputs import local_day
    from robodensity.app.report import as_table, as_text, density_report

    if fmt not in ("table", "csv", "json"):
        raise ConfigError(f"--format must be one of table, csv, json; got {fmt!r}")
    when = local_day(at, "--at") + timedelta(days=1) if at else None
    with open_db(config, schema) as conn:
        rows = density_report(conn, region, when, industry)
    if not rows:
        raise RoboDensityError(
            f"no density computed for region {region} (industry {industry}); run `robodensity metrics compute` first"
        )
    if fmt == "table":
        console.print(as_table(rows, f"Robot density, region {region}"))
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
