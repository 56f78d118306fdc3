"""``robodensity metrics ...``: figures computed from stored telemetry or given series."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.progress import Progress

from robodensity.app.cli.common import ConfigOpt, SchemaOpt, console, err_console, friendly, open_db

app = typer.Typer(help="Compute metrics from stored telemetry.", no_args_is_help=True)


@app.command("compute")
@friendly
def metrics_compute(
    from_: str = typer.Option(..., "--from", help="First day, YYYY-MM-DD (China Standard Time)."),
    to: str = typer.Option(..., "--to", help="Day after the last, YYYY-MM-DD."),
    config: Path | None = ConfigOpt,
    schema: str = SchemaOpt,
) -> None:
    """Compute daily time in state, utilisation and densities for a period and store them.

    Example: robodensity metrics compute --from 2026-10-01 --to 2026-11-01
    """
    from robodensity.app.inputs import local_period
    from robodensity.app.metrics_job import compute

    start, end = local_period(from_, to)
    with open_db(config, schema) as conn, Progress(console=err_console) as progress:
        task = progress.add_task("metrics", total=1.0)
        n = compute(conn, start, end, lambda what, done: progress.update(task, description=what, completed=done))
    console.print(f"wrote {n} density rows for {from_} .. {to}")


@app.command("stock")
@friendly
def metrics_stock(
    installations: Path = typer.Option(..., dir_okay=False, help="CSV with columns year,installations."),
    service_life: int = typer.Option(12, min=1, max=50, help="Average service life [years] (IFR: 12)."),
) -> None:
    """Operational stock from annual installations, the IFR way (year,operational_stock CSV on stdout).

    Example: robodensity metrics stock --installations china.csv --service-life 12
    """
    from robodensity.app.inputs import read_installations
    from robodensity.metrics.stock import ifr_operational_stock

    years, counts = read_installations(installations)
    stock = ifr_operational_stock(years, counts, service_life=service_life)
    sys.stdout.write("year,operational_stock\n")
    for y, s in zip(years, stock, strict=False):
        sys.stdout.write(f"{y},{s:.0f}\n")
