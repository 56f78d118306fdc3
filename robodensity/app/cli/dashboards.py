"""``robodensity dashboards ...``: Grafana dashboards as code (needs the dashboards extra)."""

from __future__ import annotations

from pathlib import Path

import typer

from robodensity.app.cli.common import console, friendly

app = typer.Typer(
    help="Grafana dashboards as code: build JSON and provisioning files, or push them to Grafana over its HTTP API.",
    no_args_is_help=True,
)


@app.command("build")
@friendly
def dashboards_build(out: Path = typer.Option(Path("out/dashboards"), help="Folder to write into.")) -> None:
    """Write every dashboard's JSON (one folder per audience) and Grafana's provisioning files.

    Example: robodensity dashboards build --out deploy/grafana/dashboards
    """
    from robodensity.dashboards.build import write_dashboards

    for path in write_dashboards(out):
        console.print(str(path))


@app.command("provision")
@friendly
def dashboards_provision(
    url: str = typer.Option(..., help="Grafana base URL, e.g. https://grafana.example.cn"),
    token_file: Path = typer.Option(..., dir_okay=False, help="File holding a Grafana service-account token."),
    dir: Path | None = typer.Option(
        None, file_okay=False, help="Push the dashboard JSON found here (as written by `build`) instead of building it."
    ),
    reader_url_file: Path | None = typer.Option(
        None,
        dir_okay=False,
        help="File holding postgresql://reader:password@host:port/db for the read-only data source; "
        "without it the data source is left as it is.",
    ),
) -> None:
    """Create or update the folders, data source and dashboards through Grafana's HTTP API.

    Idempotent: what already matches is left alone, so a second run reports no change.

    Example: robodensity dashboards provision --url http://127.0.0.1:3000 --token-file grafana.token
    """
    from grafana_client import GrafanaApi

    from robodensity.app.inputs import read_secret_file
    from robodensity.dashboards.build import build_all, folder_of, read_dashboards
    from robodensity.dashboards.provision import provision

    token = read_secret_file(token_file, "a Grafana service-account token")
    reader = read_secret_file(reader_url_file, "a postgresql:// URL") if reader_url_file else None
    models = build_all() if dir is None else read_dashboards(dir)
    report = provision(GrafanaApi.from_url(url, credential=token), models, folder_of, reader)
    for what, items in (("created", report.created), ("updated", report.updated), ("unchanged", report.unchanged)):
        for item in items:
            console.print(f"{what:9} {item}")
    if not report.changed:
        console.print("nothing to change")
