"""PostgreSQL access: connections and versioned migrations.

All objects live in one schema (default ``robodensity``) so a test can own a schema
of its own. Migrations are ``migrations/NNN_name.sql`` files applied in order, each
in its own transaction, recorded in ``schema_migrations``.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg import sql

from robodensity.core import clock
from robodensity.core.errors import DatabaseError
from robodensity.storage.audit import ACTOR_SETTING, actor

log = logging.getLogger(__name__)
DEFAULT_SCHEMA = "robodensity"
_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_MIGRATION_RE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    out = []
    for entry in resources.files("robodensity.storage.migrations").iterdir():
        m = _MIGRATION_RE.match(entry.name)
        if m:
            out.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    return sorted(out, key=lambda m: m.version)


def check_schema(schema: str) -> str:
    if not _SCHEMA_RE.match(schema):
        raise DatabaseError(f"schema name {schema!r} must match {_SCHEMA_RE.pattern}")
    return schema


def connect(
    url: str, schema: str = DEFAULT_SCHEMA, autocommit: bool = False, application_name: str | None = None
) -> psycopg.Connection:
    """A connection whose search_path is ``schema``; DatabaseError names the host, not the password."""
    check_schema(schema)
    try:
        return psycopg.connect(
            url, autocommit=autocommit, options=_options(schema), application_name=application_name or ""
        )
    except psycopg.OperationalError as exc:
        raise DatabaseError(f"cannot connect to PostgreSQL at {_where(url)}: {_first_line(exc)}") from None


async def connect_async(url: str, schema: str = DEFAULT_SCHEMA) -> psycopg.AsyncConnection:
    check_schema(schema)
    try:
        return await psycopg.AsyncConnection.connect(url, options=_options(schema))
    except psycopg.OperationalError as exc:
        raise DatabaseError(f"cannot connect to PostgreSQL at {_where(url)}: {_first_line(exc)}") from None


def migrate(url: str, schema: str = DEFAULT_SCHEMA) -> list[Migration]:
    """Apply the migrations not yet applied; returns those it applied."""
    applied: list[Migration] = []
    with connect(url, schema, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for m in migrations():
            # A TimescaleDB policy job locks a hypertable's chunks before the hypertable, DDL the
            # other way round: a deadlock rolls the migration back, and it is simply run again.
            # A lock not granted within LOCK_TIMEOUT (a long report holds the table) rolls it back
            # too: waiting longer would queue every collector's writes behind the migration.
            for attempt in range(1, MIGRATION_TRIES + 1):
                try:
                    if _apply(conn, schema, m):
                        applied.append(m)
                    break
                except (psycopg.errors.DeadlockDetected, psycopg.errors.LockNotAvailable) as exc:
                    if attempt == MIGRATION_TRIES:
                        raise DatabaseError(
                            f"migration {m.version:03d}_{m.name} failed {attempt} times: {_first_line(exc)} "
                            "(a long transaction holds a table it changes: see pg_stat_activity)"
                        ) from None
                    log.warning("migration %03d_%s: %s; trying again", m.version, m.name, _first_line(exc))
                    time.sleep(min(0.1 * attempt, 2.0))  # the writers queued behind it go first
        # Objects of every migration (also later ones, such as the dashboards' views) go to the
        # schema's owner role and get the grants of collector/migrations/008_roles.sql.
        if _scalar(conn, "SELECT to_regprocedure(%s)", f"{schema}.apply_roles()"):
            with conn.transaction():
                try:
                    conn.execute("SELECT apply_roles()")
                except psycopg.Error as exc:
                    raise DatabaseError(f"applying roles to schema {schema} failed: {_first_line(exc)}") from None
    return applied


MIGRATION_TRIES = 30
LOCK_TIMEOUT = "1s"
"""How long a migration's statement waits for a lock before the migration is rolled back and
tried again: while it waits, every write to that table waits behind it."""


def _apply(conn: psycopg.Connection, schema: str, m: Migration) -> bool:
    """Apply ``m`` in a transaction of its own unless applied; whether it was."""
    with conn.transaction():
        # One migrator at a time per schema: two collectors starting together stay safe.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (schema,))
        if conn.execute("SELECT 1 FROM schema_migrations WHERE version = %s", (m.version,)).fetchone():
            return False
        conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
        try:
            conn.execute(m.sql.encode())
        except (psycopg.errors.DeadlockDetected, psycopg.errors.LockNotAvailable):
            raise
        except psycopg.Error as exc:
            raise DatabaseError(f"migration {m.version:03d}_{m.name} failed: {_first_line(exc)}") from None
        conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (m.version, m.name))
    return True


def drop_schema(url: str, schema: str) -> None:
    """Drop ``schema`` and the roles made for it (roles are cluster-wide, the schema is not)."""
    with connect(url, schema, autocommit=True) as conn:
        roles: list[str] = []
        if _scalar(conn, "SELECT to_regclass(%s)", f"{check_schema(schema)}.schema_roles"):
            # Department roles first, the owner last: the others are granted things it owns.
            roles = [
                r
                for (r,) in conn.execute(
                    "SELECT role_name FROM schema_roles ORDER BY kind = 'owner', kind <> 'department', role_name"
                )
            ]
        for attempt in range(1, MIGRATION_TRIES + 1):  # a TimescaleDB job may hold a chunk: see migrate
            try:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
                break
            except psycopg.errors.DeadlockDetected:
                if attempt == MIGRATION_TRIES:
                    raise
        for role in roles:
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def _options(schema: str) -> str:
    """search_path, who runs this (the audit trail's actor), a frozen test clock for SQL's clock_now()."""
    return " ".join(filter(None, (f"-c search_path={schema}", f"-c {ACTOR_SETTING}={actor()}", clock.sql_options())))


def _scalar(conn: psycopg.Connection, query: str, arg: object) -> object:
    row = conn.execute(query, (arg,)).fetchone()
    return row[0] if row else None


def _where(url: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
