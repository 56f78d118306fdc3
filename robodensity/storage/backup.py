"""Backup and restore of one schema around pg_dump / pg_restore (``robodensity db backup|restore``).

A backup is pg_dump's custom format of the schema alone (tables, data, functions, policies,
triggers, the audit trail), without owners and grants: roles are cluster-wide, so restore
re-creates them with the migrations' ``apply_roles()``, and a restore of an older backup is
brought up to date by the same ``migrate()`` that every start runs. Passwords never reach a
command line: the URL's password goes to pg_dump/pg_restore through PGPASSWORD.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

import psycopg
from psycopg import conninfo

from robodensity.core.errors import DatabaseError
from robodensity.storage.db import check_schema, connect, migrate


def postgres_bindir(program: str = "pg_dump") -> Path:
    """The folder of the newest installed PostgreSQL that has ``program`` (initdb, pg_dump ...)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{program}"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    which = shutil.which(program)
    if which:
        return Path(which).parent
    raise DatabaseError(f"PostgreSQL's {program} not found: install the Debian package postgresql (./dev does)")


def _split(url: str) -> tuple[str, dict[str, str]]:
    """(conninfo without the password, environment carrying it)."""
    try:
        info = conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise DatabaseError(f"database URL is not valid: {str(exc).splitlines()[0]}") from None
    env = dict(os.environ)
    password = info.pop("password", None)
    if password:
        env["PGPASSWORD"] = str(password)
    return conninfo.make_conninfo(**{k: str(v) for k, v in info.items()}), env


def _run(cmd: list[str], env: dict[str, str], what: str) -> None:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise DatabaseError(f"{what} failed: {lines[0] if lines else f'exit code {done.returncode}'}")


def backup(url: str, schema: str, out: Path) -> Path:
    """Write schema ``schema`` of the database at ``url`` to ``out`` (pg_dump custom format)."""
    check_schema(schema)
    with connect(url, schema, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone():
            raise DatabaseError(f"schema {schema} does not exist in that database: nothing to back up")
    if out.exists():
        raise DatabaseError(f"{out} already exists: a backup never overwrites a file")
    out.parent.mkdir(parents=True, exist_ok=True)
    dsn, env = _split(url)
    partial = out.with_name(out.name + ".partial")
    cmd = [str(postgres_bindir() / "pg_dump"), "--format=custom", f"--schema={schema}", "--no-owner",
           "--no-privileges", f"--file={partial}", f"--dbname={dsn}"]  # fmt: skip
    try:
        _run(cmd, env, "pg_dump")
        partial.rename(out)  # a crash mid-backup leaves a .partial, never a truncated backup
    finally:
        partial.unlink(missing_ok=True)
    return out


def restore(url: str, schema: str, source: Path) -> None:
    """Restore ``source`` (from :func:`backup`) as schema ``schema`` into the database at ``url``.

    Refuses when the schema already exists there: restore into an empty database, or drop the
    schema first. Roles and grants are re-applied and newer migrations run afterwards.
    """
    check_schema(schema)
    if not source.is_file():
        raise DatabaseError(f"{source}: no such backup file")
    with connect(url, schema, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone():
            raise DatabaseError(f"schema {schema} already exists in that database: restore into an empty one")
    dsn, env = _split(url)
    listing = subprocess.run([str(postgres_bindir() / "pg_restore"), "--list", str(source)], capture_output=True,
                             text=True, env=env)  # fmt: skip
    if listing.returncode != 0:
        raise DatabaseError(f"{source} is not a backup made by robodensity db backup (pg_restore cannot read it)")
    if f"SCHEMA - {schema} " not in listing.stdout:
        raise DatabaseError(f"{source} holds no schema {schema}")
    cmd = [str(postgres_bindir() / "pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error",
           "--single-transaction", f"--dbname={dsn}", str(source)]  # fmt: skip
    _run(cmd, env, "pg_restore")
    migrate(url, schema)
