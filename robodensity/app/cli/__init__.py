"""The ``robodensity`` command: a thin layer over the Python API.

Each command takes options, calls library functions, prints. Parsing of dates and files
lives in the library (``robodensity.app.inputs`` and the modules it calls), which raises
the project's errors; ``friendly`` turns a RoboDensityError into one unwrapped line on
stderr and exit code 2. Nothing else is caught, so a bug shows its traceback.

One module per command group; ``common`` holds what they share (consoles, ``friendly``,
logging, the --config/--schema options, the one way to find the database).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from robodensity.app.cli import (
    audit,
    collector,
    dashboards,
    db,
    definitions,
    edge,
    federation,
    metrics,
    registry,
    report,
    simulate,
    stats,
)
from robodensity.app.cli.common import (
    ConfigOpt,
    JsonFormatter,
    VerboseOpt,
    console,
    err_console,
    friendly,
    setup_logging,
)
from robodensity.core.settings import load_settings

__all__ = ["JsonFormatter", "app", "friendly", "setup_logging"]

app = typer.Typer(
    help="RoboDensity: how many industrial robots really work here, per 10,000 manufacturing "
    "workers, and how hard.\n\nStart with `robodensity demo`, which needs no configuration.",
    no_args_is_help=True,
    # typer draws usage errors in a rich panel as wide as the terminal, or 80 columns on a pipe;
    # without a terminal, click's plain lines: `Error: ...` stays one line for journald and cron.
    rich_markup_mode="rich" if sys.stderr.isatty() else None,
)
for group in (edge, collector, db, registry, definitions, stats, metrics, report, simulate, dashboards, federation):
    app.add_typer(group.app, name=group.__name__.rsplit(".", 1)[-1])
app.command("audit")(audit.audit)


@app.command()
@friendly
def demo(
    config: Path | None = ConfigOpt,
    out: Path = typer.Option(Path("out"), help="Folder for the registry CSV, edge outboxes and dashboards."),
    seed: int = typer.Option(1, help="Seed of the simulated province: same seed, same robots, same day."),
    hours: float = typer.Option(8.0, min=0.5, max=168, help="Simulated hours of robot life to replay."),
    replay_seconds: float = typer.Option(30.0, min=5, help="Wall-clock seconds the replay takes."),
    robots: int = typer.Option(100, min=6, max=5000, help="Robots in the simulated province."),
    keep: bool = typer.Option(False, help="Leave the embedded PostgreSQL running and print how to reach it."),
    verbose: bool = VerboseOpt,
) -> None:
    """Measure a simulated province end to end and print its robot density.

    With no configuration it starts PostgreSQL and Mosquitto on free 127.0.0.1 ports,
    simulated OPC UA and MQTT robot controllers, one edge agent per factory and the
    collector; replays a shift of robot life; computes metrics; writes Grafana
    dashboards to OUT/dashboards and the month's bulletin to OUT/bulletin.html; and removes
    what it started (but PostgreSQL, with --keep).

    Example: robodensity demo --hours 8 --replay-seconds 30
    """
    from robodensity.app.demo import run_demo
    from robodensity.app.report import as_table
    from robodensity.simulators.province import ProvinceSpec

    setup_logging(verbose)
    if not verbose:
        logging.getLogger().setLevel(logging.WARNING)
    settings = load_settings(config)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        task = progress.add_task("starting", total=1.0)
        result = run_demo(
            settings,
            out,
            ProvinceSpec(robots=robots),
            seed=seed,
            hours=hours,
            replay_s=replay_seconds,
            step=lambda what, done: progress.update(task, description=what, completed=done),
            keep=keep,
        )
    period = f"{result.start:%Y-%m-%d %H:%M} – {result.end:%H:%M} UTC"
    console.print(as_table(result.rows, f"Robot density, {period}"))
    console.print(
        f"{len(result.province.robots)} robots in {len(result.province.factories)} factories; "
        f"{result.events_stored} events stored. Density = registered robots per 10,000 employees; "
        "verified = robots that did real work; coverage = share of registered robots reporting; "
        "utilisation = EXECUTING / planned time (the plan column: 24/7 or shift calendars)."
    )
    console.print(f"Dashboards: {out / 'dashboards'}   Registry CSV: {out / 'registry'}")
    console.print(f"Bulletin: {result.bulletin}  (open it in a browser: no Grafana needed)")
    if result.kept is not None:
        console.print(
            f"PostgreSQL is still running: {result.db_url} (schema robodensity)\n"
            f"Grafana provisioning folder: {out / 'dashboards' / 'provisioning'} "
            f"(dashboards JSON under {out / 'dashboards'})\n"
            f"Stop it with: {'runuser -u postgres -- ' if os.geteuid() == 0 else ''}"
            f"{result.kept.bindir / 'pg_ctl'} -D {result.kept.data} stop; then remove {result.kept.root}"
        )
