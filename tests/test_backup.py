"""Backup and restore drill: a restored database holds the same rows and reproduces the same metrics."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import conninfo, sql

from robodensity.app import metrics_job
from robodensity.core.errors import DatabaseError
from robodensity.simulators.load import load_province
from robodensity.simulators.province import ProvinceSpec, generate
from robodensity.storage.backup import backup, restore
from robodensity.storage.db import connect

START = datetime(2026, 3, 1, tzinfo=UTC)
END = datetime(2026, 3, 8, tzinfo=UTC)
TABLES = ["regions", "factories", "headcounts", "robots", "assignments", "targets", "events", "state_intervals",
          "density", "audit_log"]  # fmt: skip


@pytest.fixture
def other_database(pg_url: str) -> Iterator[str]:
    """An empty database on the same cluster, as a restore target."""
    name = f"restore_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    info = conninfo.conninfo_to_dict(pg_url)
    info["dbname"] = name
    yield conninfo.make_conninfo(**{k: str(v) for k, v in info.items()})
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _fingerprint(url: str, schema: str) -> dict[str, tuple[int, str]]:
    with connect(url, schema) as conn:
        out = {}
        for table in TABLES:
            q = sql.SQL("SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {} t")
            row = conn.execute(q.format(sql.Identifier(table))).fetchone()
            assert row is not None
            out[table] = (row[0], row[1])
        return out


def _density(url: str, schema: str) -> list[str]:
    with connect(url, schema) as conn:
        # Every column but computed_at, the moment each computation stamps on its rows.
        rows = conn.execute("SELECT to_jsonb(d) - 'computed_at' FROM density d").fetchall()
        return sorted(str(r[0]) for r in rows)


def test_a_restored_database_reproduces_the_same_metrics(
    pg_url: str, schema: str, other_database: str, tmp_path: Path
) -> None:
    with connect(pg_url, schema) as conn:
        load_province(conn, generate(ProvinceSpec(robots=20), 7), tmp_path / "registry", 7, START, END)
        conn.commit()
        metrics_job.compute(conn, START, END)
        conn.commit()
    before = _fingerprint(pg_url, schema)
    assert before["density"][0] > 0 and before["events"][0] > 0
    file = backup(pg_url, schema, tmp_path / "backup" / "province.dump")
    with pytest.raises(DatabaseError, match="never overwrites"):
        backup(pg_url, schema, file)

    restore(other_database, schema, file)
    assert _fingerprint(other_database, schema) == before
    with connect(other_database, schema) as conn:  # recompute from the restored events
        conn.execute("DELETE FROM density")
        metrics_job.compute(conn, START, END)
        conn.commit()
    assert _density(other_database, schema) == _density(pg_url, schema)
    with connect(other_database, schema) as conn:  # roles and grants re-applied
        roles = conn.execute("SELECT count(*) FROM schema_roles").fetchone()
    assert roles is not None and roles[0] >= 4


def test_restore_refuses_an_existing_schema_and_a_file_that_is_no_backup(
    pg_url: str, schema: str, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.dump"
    junk.write_bytes(b"not a backup")
    with pytest.raises(DatabaseError, match="already exists"):
        restore(pg_url, schema, junk)
    with pytest.raises(DatabaseError, match="not a backup"):
        restore(pg_url, f"{schema}_x", junk)
    with connect(pg_url, schema) as conn:
        present = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (f"{schema}_x",)).fetchone()
    assert present is None
