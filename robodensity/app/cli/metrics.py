"""``robodensity metrics ...``: figures computed from stored telemetry or given series."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import typer
from rich.progress import Progress

from robodensity.app.cli.common import ConfigOpt, SchemaOpt, console, err_console, friendly, open_db

app = typer.Typer(help="Compute metrics from stored telemetry.", no_args_is_help=True)


@app.command("compute")
@friendly
def metrics_compute(
    from_: str | None = typer.Option(None, "--from", help="First day, YYYY-MM-DD (China Standard Time)."),
    to: str | None = typer.Option(None, "--to", help="Day after the last, YYYY-MM-DD."),
    follow: bool = typer.Option(
        False, "--follow", help="Keep the 15-minute and daily blocks current: refresh what changed, forever."
    ),
    interval: float = typer.Option(60.0, min=1.0, help="With --follow: seconds between refreshes."),
    once: bool = typer.Option(False, "--once", help="With --follow: one refresh, then exit (for a timer or cron)."),
    config: Path | None = ConfigOpt,
    schema: str = SchemaOpt,
) -> None:
    """Compute the blocks and densities of a period and store them, or (--follow) keep the blocks current.

    With --follow, each refresh recomputes only the robots and 15-minute buckets touched since
    the last one (the first starts at --from, default today); run it as a service
    (deploy/systemd/robodensity-metrics.service).

    Example: robodensity metrics compute --from 2026-10-01 --to 2026-11-01
    """
    from robodensity.app.inputs import local_day, local_period

    if follow:
        _follow(config, schema, local_day(from_, "--from") if from_ else None, interval, once)
        return
    if from_ is None or to is None:
        raise typer.BadParameter("give --from and --to (a period), or --follow")
    from robodensity.app.metrics_job import compute

    start, end = local_period(from_, to)
    with open_db(config, schema) as conn, Progress(console=err_console) as progress:
        task = progress.add_task("metrics", total=1.0)
        n = compute(conn, start, end, lambda what, done: progress.update(task, description=what, completed=done))
    console.print(f"wrote {n} density rows for {from_} .. {to}")


def _follow(config: Path | None, schema: str, start: datetime | None, interval: float, once: bool) -> None:
    import threading

    from robodensity.app.metrics_follow import Refreshed, follow, refresh

    def report(r: Refreshed) -> None:
        err_console.print(
            f"{r.end:%Y-%m-%d %H:%M:%S} UTC: {r.robots:,} robots ({r.marked:,} with new events), "
            f"{r.events:,} events, {r.rows:,} 15-minute blocks"
        )

    if once:
        with open_db(config, schema) as conn:
            report(refresh(conn, start=start))
        return
    follow(lambda: open_db(config, schema), threading.Event(), interval, start, report)


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
