"""Database roles of one schema (see migrations/008_roles.sql for what each may do).

Roles are cluster-wide, so their names start with the schema's: ``{schema}_owner``,
``{schema}_collector``, ``{schema}_reader`` and the group ``{schema}_department``. They are
created without passwords: an operator sets one (``ALTER ROLE ... PASSWORD``) or maps a
certificate or peer identity in pg_hba.conf.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import conninfo, sql

from collector.db import check_schema
from robodensity.errors import DatabaseError

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


def create_department_role(conn: psycopg.Connection, schema: str, role: str, region_code: str) -> str:
    """Create (or re-point) a login role that sees only ``region_code`` and the regions in it.

    ``conn`` needs CREATEROLE. The role reads the aggregated views (density, daily and
    15-minute utilisation, factories, reference data); forced row-level security on the
    tables behind them keeps other regions' rows out, whoever owns the views.
    """
    check_schema(schema)
    try:
        with conn.transaction():
            row = conn.execute(
                sql.SQL("SELECT {}.create_department_role(%s, %s)").format(sql.Identifier(schema)),
                (role, region_code),
            ).fetchone()
    except (
        psycopg.errors.ForeignKeyViolation,
        psycopg.errors.DuplicateObject,
        psycopg.errors.InsufficientPrivilege,
    ) as exc:
        raise DatabaseError(f"cannot create department role {role!r}: {str(exc).splitlines()[0]}") from None
    return str(row[0]) if row else role


def url_as(url: str, role: str, password: str | None = None) -> str:
    """``url`` with another user (and password): for connecting as one of these roles."""
    extra = {"user": role}
    if password is not None:
        extra["password"] = password
    return conninfo.make_conninfo(url, **extra)
