"""``robodensity federation ...``: provinces publish their aggregates, the nation subscribes.

See storage/federation.py for what is replicated, and docs/deploy-national.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from robodensity.app.cli.common import ConfigOpt, SchemaOpt, console, database_url, friendly
from robodensity.core.settings import load_settings

if TYPE_CHECKING:
    import psycopg

app = typer.Typer(
    help="National view: provinces publish aggregate tables by PostgreSQL logical replication; "
    "the national deployment subscribes.",
    no_args_is_help=True,
)
ProvinceOpt = typer.Option(..., help="GB/T 2260 province code, e.g. 320000 for Jiangsu.")


def _conn(config: Path | None, schema: str) -> psycopg.Connection:
    from robodensity.storage.db import connect

    return connect(database_url(load_settings(config)), schema, autocommit=True)


@app.command("publish")
@friendly
def federation_publish(province: str = ProvinceOpt, config: Path | None = ConfigOpt, schema: str = SchemaOpt) -> None:
    """On a province's deployment: publish its regions, density rows, targets and region x day
    aggregates, cut to the province's own region codes. Needs wal_level = logical.

    Example: robodensity federation publish --province 320000 --config jiangsu.toml
    """
    from robodensity.storage import federation

    with _conn(config, schema) as conn:
        tables = federation.publish(conn, schema, province)
    console.print(f"publication {federation.publication_name(schema)}: {', '.join(tables)} (province {province})")


@app.command("subscribe")
@friendly
def federation_subscribe(
    province: str = ProvinceOpt,
    publisher: str = typer.Option(
        ..., "--from", help="The province's database as a libpq URL (a role with REPLICATION and BYPASSRLS)."
    ),
    config: Path | None = ConfigOpt,
    schema: str = SchemaOpt,
) -> None:
    """On the national deployment: subscribe to a province's publication. The national copies of
    that province's rows are replaced by the province's.

    Example: robodensity federation subscribe --province 320000 --from postgresql://replicator@js-db/robodensity
    """
    from robodensity.storage import federation

    with _conn(config, schema) as conn:
        name = federation.subscribe(conn, schema, province, publisher)
    console.print(f"subscription {name} created; `robodensity federation status` shows its progress")


@app.command("unsubscribe")
@friendly
def federation_unsubscribe(
    province: str = ProvinceOpt, config: Path | None = ConfigOpt, schema: str = SchemaOpt
) -> None:
    """On the national deployment: stop replicating a province (its rows stay, frozen).

    Example: robodensity federation unsubscribe --province 320000
    """
    from robodensity.storage import federation

    with _conn(config, schema) as conn:
        federation.unsubscribe(conn, schema, province)
    console.print(f"subscription {federation.subscription_name(schema, province)} dropped")


@app.command("status")
@friendly
def federation_status(config: Path | None = ConfigOpt, schema: str = SchemaOpt) -> None:
    """What this deployment publishes (with the lag of each subscriber's slot) and subscribes to
    (connected or not, tables still copying), and the latest period held per province (JSON).

    Example: robodensity federation status --config national.toml
    """
    from robodensity.storage import federation

    with _conn(config, schema) as conn:
        doc = federation.status(conn, schema)
    sys.stdout.write(json.dumps(doc, ensure_ascii=False, indent=2, default=str) + "\n")
