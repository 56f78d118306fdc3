"""Database roles of one schema (see migrations/008_roles.sql for what each may do).

Roles are cluster-wide, so their names start with the schema's: ``{schema}_owner``,
``{schema}_collector``, ``{schema}_reader`` and the group ``{schema}_department``. They are
created without passwords: an operator sets one (``ALTER ROLE ... PASSWORD``) or maps a
certificate or peer identity in pg_hba.conf. Department roles (``robodensity db role``) may
be given a password here; it is sent as a SCRAM-SHA-256 verifier, never in clear text,
so it cannot end up in the server's statement log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass

import psycopg
from psycopg import conninfo, sql

from robodensity.core.errors import ConfigError, DatabaseError
from robodensity.storage.db import check_schema

_PREFIX_LEN = 40  # as role_prefix() in 008_roles.sql: names stay within PostgreSQL's 63 bytes


@dataclass(frozen=True)
class SchemaRoles:
    owner: str
    collector: str
    reader: str
    department_group: str


def role_names(schema: str) -> SchemaRoles:
    prefix = check_schema(schema)[:_PREFIX_LEN]
    return SchemaRoles(f"{prefix}_owner", f"{prefix}_collector", f"{prefix}_reader", f"{prefix}_department")


@dataclass(frozen=True)
class DepartmentRole:
    name: str
    region_code: str
    region_name: str


def create_department_role(
    conn: psycopg.Connection, schema: str, role: str, region_code: str, password: str | None = None
) -> DepartmentRole:
    """Create (or re-point) a login role that sees only ``region_code`` and the regions in it.

    ``conn`` needs CREATEROLE. The role reads the aggregated views (density, daily and
    15-minute utilisation, factories, reference data); forced row-level security on the
    tables behind them keeps other regions' rows out, whoever owns the views. A
    ``password`` (printable ASCII) replaces the role's password. Like the reader, the role
    logs in with the dashboards' settings (no JIT).
    """
    verifier = scram_sha_256(password) if password is not None else None
    with _translated(f"cannot create department role {role!r}", schema), conn.transaction():
        conn.execute(
            sql.SQL("SELECT {}.create_department_role(%s, %s)").format(sql.Identifier(schema)), (role, region_code)
        )
        # dashboards' settings (jit = off, migration 090), as the reader's
        conn.execute(sql.SQL("SELECT {}.dashboard_role_settings(%s)").format(sql.Identifier(schema)), (role,))
        if verifier is not None:
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(verifier)))
    [found] = [r for r in department_roles(conn, schema) if r.name == role]
    return found


def department_roles(conn: psycopg.Connection, schema: str) -> list[DepartmentRole]:
    """The department roles of ``schema`` with the region each may see, by name."""
    with _translated("cannot list department roles", schema):
        rows = conn.execute(
            sql.SQL(
                "SELECT s.role_name, s.region_code, r.name FROM {}.schema_roles s "
                "JOIN {}.regions r ON r.code = s.region_code WHERE s.kind = 'department' ORDER BY s.role_name"
            ).format(sql.Identifier(schema), sql.Identifier(schema))
        ).fetchall()
    return [DepartmentRole(*row) for row in rows]


def drop_department_role(conn: psycopg.Connection, schema: str, role: str) -> None:
    """Drop a department role of ``schema``; DatabaseError for any other role, so no service role goes."""
    with _translated(f"cannot drop department role {role!r}", schema), conn.transaction():
        found = conn.execute(
            sql.SQL("DELETE FROM {}.schema_roles WHERE role_name = %s AND kind = 'department' RETURNING 1").format(
                sql.Identifier(schema)
            ),
            (role,),
        ).fetchone()
        if not found:
            raise DatabaseError(f"{role!r} is not a department role of schema {schema}; see `robodensity db role list`")
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


class _translated:
    """Turn the errors a role statement can meet into one-line DatabaseErrors."""

    def __init__(self, what: str, schema: str) -> None:
        self.what = f"{what} in schema {check_schema(schema)}"
        self.schema = schema

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        missing = psycopg.errors.UndefinedTable | psycopg.errors.UndefinedFunction | psycopg.errors.InvalidSchemaName
        if isinstance(exc, missing):
            raise DatabaseError(f"{self.what}: the schema has no roles yet; run `robodensity db migrate`") from None
        if isinstance(exc, psycopg.Error):
            raise DatabaseError(f"{self.what}: {(str(exc).strip().splitlines() or [type(exc).__name__])[0]}") from None


def scram_sha_256(password: str, salt: bytes | None = None, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (as libpq's PQencryptPasswordConn).

    Printable ASCII only: SASLprep leaves it unchanged, so the verifier matches what a client sends.
    """
    if not password or not all(" " <= c <= "~" for c in password):
        raise ConfigError("a role password must be non-empty printable ASCII")
    salt = os.urandom(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    def b64(b: bytes) -> str:
        return base64.b64encode(b).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(hashlib.sha256(client_key).digest())}:{b64(server_key)}"


def url_as(url: str, role: str, password: str | None = None) -> str:
    """``url`` with another user (and password): for connecting as one of these roles."""
    extra = {"user": role}
    if password is not None:
        extra["password"] = password
    return conninfo.make_conninfo(url, **extra)
