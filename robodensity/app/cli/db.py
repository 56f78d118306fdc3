"""``robodensity db ...``: the schema and the department roles that read it."""

from __future__ import annotations

from pathlib import Path

import typer

from robodensity.app.cli.common import ConfigOpt, SchemaOpt, console, database_url, friendly, open_db
from robodensity.core.settings import load_settings

app = typer.Typer(help="Database schema and roles.", no_args_is_help=True)
role_app = typer.Typer(
    help="Department roles: logins that see only their region's rows (forced row-level security).",
    no_args_is_help=True,
)
app.add_typer(role_app, name="role")


@app.command("migrate")
@friendly
def db_migrate(config: Path | None = ConfigOpt, schema: str = SchemaOpt) -> None:
    """Apply the SQL migrations not yet applied and preload the published targets.

    Example: robodensity db migrate --config central.toml
    """
    from robodensity.storage.db import connect, migrate
    from robodensity.storage.registry import load_reference_targets

    url = database_url(load_settings(config))
    applied = migrate(url, schema)
    with connect(url, schema) as conn:
        load_reference_targets(conn)
    names = ", ".join(f"{m.version:03d}_{m.name}" for m in applied) or "none needed"
    console.print(f"applied {len(applied)} migration(s): {names}")


@role_app.command("create")
@friendly
def role_create(
    name: str = typer.Argument(..., help="Login name of the department, e.g. nanjing_miit."),
    region: str = typer.Option(..., "--region", help="GB/T 2260 code the role may see, with the regions in it."),
    password_file: Path | None = typer.Option(
        None, "--password-file", help="File holding the role's password; omit to authenticate by pg_hba.conf only."
    ),
    config: Path | None = ConfigOpt,
    schema: str = SchemaOpt,
) -> None:
    """Create a department login that reads the aggregated views of its region only.

    Run again with another --region or --password-file to change them. Needs a database
    user with CREATEROLE (database.url).

    Example: robodensity db role create nanjing_miit --region 320100 --password-file nanjing.pw
    """
    from robodensity.app.inputs import read_secret_file
    from robodensity.storage.roles import create_department_role

    password = read_secret_file(password_file, "a password") if password_file else None
    with open_db(config, schema) as conn:
        role = create_department_role(conn, schema, name, region, password)
    console.print(f"{role.name}: region {role.region_code} {role.region_name}")


@role_app.command("list")
@friendly
def role_list(config: Path | None = ConfigOpt, schema: str = SchemaOpt) -> None:
    """List the department roles of the schema with the region each may see.

    Example: robodensity db role list --schema robodensity
    """
    from rich.table import Table

    from robodensity.storage.roles import department_roles

    with open_db(config, schema) as conn:
        roles = department_roles(conn, schema)
    table = Table(title=f"Department roles of schema {schema}")
    for col in ("Role", "Region", "Region name"):
        table.add_column(col)
    for r in roles:
        table.add_row(r.name, r.region_code, r.region_name)
    console.print(table)


@role_app.command("drop")
@friendly
def role_drop(
    name: str = typer.Argument(..., help="A department role made by `db role create`."),
    config: Path | None = ConfigOpt,
    schema: str = SchemaOpt,
) -> None:
    """Remove a department role: it can no longer log in or read anything.

    Example: robodensity db role drop nanjing_miit
    """
    from robodensity.storage.roles import drop_department_role

    with open_db(config, schema) as conn:
        drop_department_role(conn, schema, name)
    console.print(f"dropped {name}")


@app.command("backup")
@friendly
def db_backup(
    out: Path = typer.Option(..., "--out", help="Backup file to write (pg_dump custom format); never overwritten."),
    config: Path | None = ConfigOpt,
    schema: str = SchemaOpt,
) -> None:
    """Back up the schema (registry, telemetry, metrics, audit trail) with pg_dump.

    The password in database.url reaches pg_dump through its environment, never its
    command line. Restore with `robodensity db restore`; RPO/RTO in docs/operations.md.

    Example: robodensity db backup --out /var/backups/robodensity/2026-12-01.dump
    """
    from robodensity.storage.backup import backup

    path = backup(database_url(load_settings(config)), schema, out)
    console.print(f"{path}: {path.stat().st_size:,} bytes")


@app.command("restore")
@friendly
def db_restore(
    source: Path = typer.Option(..., "--from", help="Backup file written by `robodensity db backup`."),
    config: Path | None = ConfigOpt,
    schema: str = SchemaOpt,
) -> None:
    """Restore a backup into a database that does not hold the schema yet (one transaction).

    Roles and grants are re-applied and newer migrations run, so an older backup restores
    into a newer release.

    Example: robodensity db restore --from /var/backups/robodensity/2026-12-01.dump -c restored.toml
    """
    from robodensity.storage.backup import restore

    restore(database_url(load_settings(config)), schema, source)
    console.print(f"restored schema {schema} from {source}")
