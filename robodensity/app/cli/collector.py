"""``robodensity collector ...``: the central service that stores what the edges send."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer

from robodensity.app.cli.common import (
    ConfigOpt,
    LogFormatOpt,
    SchemaOpt,
    VerboseOpt,
    broker_url,
    database_url,
    friendly,
    setup_logging,
)
from robodensity.core.settings import load_settings

app = typer.Typer(help="The central collector service.", no_args_is_help=True)


@app.command("run")
@friendly
def collector_run(
    config: Path | None = ConfigOpt,
    schema: str = SchemaOpt,
    verbose: bool = VerboseOpt,
    log_format: str = LogFormatOpt,
) -> None:
    """Consume edge uplinks, store them once each, acknowledge what is committed.

    Example: ROBODENSITY_DATABASE__URL=postgresql://collector@db/robodensity robodensity collector run
    """
    from robodensity.collector.consume import Collector

    setup_logging(verbose, log_format)
    settings = load_settings(config)
    collector = Collector(settings, database_url(settings), broker_url(settings), schema)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    collector.run(stop)
