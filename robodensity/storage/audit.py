"""The audit trail of registry, headcount and target changes (migration ``audit``).

Rows are written by triggers in the database, whoever changes the tables and however
(``registry import``, psql, the collector recording a robot it saw in telemetry); this
module only reads them.
"""

from __future__ import annotations

import getpass
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

ACTOR_SETTING = "robodensity.actor"
"""The PostgreSQL setting naming who runs a command; the audit trail's ``actor``."""
_UNSAFE = re.compile(r"[^A-Za-z0-9_.@-]")


def actor() -> str:
    """The operating-system user running this process, made safe for a libpq option."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers with an arbitrary uid)
        name = "unknown"
    return _UNSAFE.sub("_", name)[:63] or "unknown"


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    actor: str
    db_role: str
    table: str
    action: str
    key: dict[str, Any]
    old: dict[str, Any] | None
    new: dict[str, Any] | None

    def line(self) -> str:
        """One line: when, who, what and how it changed (``old -> new`` per column)."""
        key = ", ".join(f"{k}={v}" for k, v in self.key.items())
        if self.action == "update" and self.old is not None and self.new is not None:
            change = "; ".join(f"{c}: {_show(self.old.get(c))} -> {_show(v)}" for c, v in self.new.items())
        else:
            values = self.new if self.action == "insert" else self.old
            change = json.dumps(values, ensure_ascii=False, sort_keys=True)
        return f"{self.at.isoformat()} {self.actor} ({self.db_role}) {self.action} {self.table} [{key}] {change}"


def _show(v: object) -> str:
    return "NULL" if v is None else json.dumps(v, ensure_ascii=False)


def entries(conn: psycopg.Connection, since: datetime, until: datetime | None = None) -> list[AuditEntry]:
    """Audit entries at or after ``since`` (and before ``until``), oldest first."""
    rows = conn.execute(
        "SELECT at, actor, db_role, table_name, action, row_key, old_values, new_values FROM audit_log "
        "WHERE at >= %s AND (%s::timestamptz IS NULL OR at < %s) ORDER BY audit_id",
        (since, until, until),
    ).fetchall()
    return [AuditEntry(*row) for row in rows]
