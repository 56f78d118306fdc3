"""``robodensity dashboards ...`` and ``robodensity report bulletin``: thin wrappers over the API.

The lead's CLI mounts ``app`` as ``robodensity dashboards`` and ``bulletin`` as
``robodensity report bulletin``.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from robodensity.errors import ConfigError, RoboDensityError

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    help="Grafana dashboards as code: build JSON and provisioning files, or push them to Grafana over its HTTP API.",
    no_args_is_help=True,
)


def _fail(exc: RoboDensityError) -> None:
    err_console.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(2)


@app.command("build")
def build(out: Path = typer.Option(Path("out/dashboards"), "--out", help="Folder to write into.")) -> None:
    """Write every dashboard's JSON (one folder per audience) and Grafana's provisioning files.

    Example: robodensity dashboards build --out deploy/grafana/dashboards
    """
    from dashboards.build import write_dashboards

    for path in write_dashboards(out):
        console.print(str(path))


@app.command("provision")
def provision(
    url: str = typer.Option(..., "--url", help="Grafana base URL, e.g. https://grafana.example.cn"),
    token_file: Path = typer.Option(
        ..., "--token-file", exists=True, dir_okay=False, help="File holding a Grafana service-account token."
    ),
    dir: Path | None = typer.Option(
        None,
        "--dir",
        exists=True,
        file_okay=False,
        help="Push the dashboard JSON found here (as written by `build`) instead of building it now.",
    ),
    reader_url_file: Path | None = typer.Option(
        None,
        "--reader-url-file",
        exists=True,
        dir_okay=False,
        help="File holding postgresql://reader:password@host:port/db for the read-only data source; "
        "without it the data source is left as it is.",
    ),
) -> None:
    """Create or update the folders, data source and dashboards through Grafana's HTTP API.

    Idempotent: what already matches is left alone, so a second run reports no change.

    Example: robodensity dashboards provision --url http://127.0.0.1:3000 --token-file grafana.token
    """
    import json

    from grafana_client import GrafanaApi

    from dashboards.build import build_all, folder_of
    from dashboards.provision import provision as push

    try:
        token = token_file.read_text(encoding="utf-8").strip()
        if not token:
            raise ConfigError(f"{token_file} is empty")
        if dir is None:
            models = build_all()
        else:
            models = {}
            for path in sorted(dir.glob("*/*.json")):
                model = json.loads(path.read_text(encoding="utf-8"))
                models[model["uid"]] = model
            if not models:
                raise ConfigError(f"no dashboard JSON under {dir}/<folder>/; run `robodensity dashboards build`")
        reader = reader_url_file.read_text(encoding="utf-8").strip() if reader_url_file else None
        report = push(GrafanaApi.from_url(url, credential=token), models, folder_of, reader)
    except RoboDensityError as exc:
        _fail(exc)
        return
    for what, items in (("created", report.created), ("updated", report.updated), ("unchanged", report.unchanged)):
        for item in items:
            console.print(f"{what:9} {item}")
    if not report.changed:
        console.print("nothing to change")


def bulletin(
    region: str = typer.Option(..., "--region", help="GB/T 2260 code of a province or city, e.g. 320000."),
    month: str = typer.Option(..., "--month", help="Calendar month YYYY-MM (China Standard Time)."),
    out: Path = typer.Option(
        ..., "--out", help="HTML file to write; a PDF is written beside it when headless Chromium is installed."
    ),
    config: Path | None = typer.Option(
        None, "--config", "-c", envvar="ROBODENSITY_CONFIG", help="Settings file (TOML)."
    ),
    schema: str = typer.Option("robodensity", "--schema", help="Database schema."),
    database_url: str | None = typer.Option(None, "--database-url", help="Overrides database.url from the settings."),
    pdf: bool = typer.Option(True, "--pdf/--no-pdf", help="Also print a PDF when Chromium is available."),
) -> None:
    """Write the printable monthly bulletin: density against target by city, movers, coverage,
    utilisation and data gaps, in Chinese and English.

    Needs the month's densities: robodensity metrics compute --from 2026-03-01 --to 2026-04-01

    Example: robodensity report bulletin --region 320000 --month 2026-03 --out bulletin-2026-03.html
    """
    from collector.db import connect
    from dashboards.bulletin import write_bulletin
    from robodensity.settings import load_settings

    try:
        url = database_url
        if url is None:
            secret = load_settings(config).database.url
            if secret is None:
                raise ConfigError("database.url is not set: pass --database-url or set it in the settings file")
            url = secret.get_secret_value()
        with connect(url, schema) as conn:
            written = write_bulletin(conn, region, month, out, pdf=pdf)
    except RoboDensityError as exc:
        _fail(exc)
        return
    for path in written:
        console.print(str(path))


report_app = typer.Typer(help="Reports for economic departments.", no_args_is_help=True)
report_app.command("bulletin")(bulletin)
"""Stand-alone mount of the bulletin, for use without the lead's CLI."""
