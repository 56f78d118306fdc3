"""The audit trail: registry, headcount and target changes recorded, append-only."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from robodensity.core import clock
from robodensity.simulators.province import ProvinceSpec, generate, write_registry_csv
from robodensity.storage.audit import actor, entries
from robodensity.storage.db import connect
from robodensity.storage.registry import import_registry

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
T1 = datetime(2026, 3, 9, 9, 0, tzinfo=UTC)


def test_an_import_is_recorded_and_a_changed_headcount_shows_old_and_new(
    pg_url: str, schema: str, tmp_path: Path
) -> None:
    write_registry_csv(generate(ProvinceSpec(robots=6), seed=3), tmp_path)
    with clock.frozen(T0), connect(pg_url, schema) as conn:
        import_registry(conn, tmp_path)
        conn.commit()
        first = entries(conn, T0)
        factories = conn.execute("SELECT count(*) FROM factories").fetchone()
        import_registry(conn, tmp_path)  # the same rows again: nothing changes, nothing recorded
        conn.commit()
        assert len(entries(conn, T0)) == len(first)
    assert {e.table for e in first} >= {"regions", "factories", "headcounts", "robots", "assignments"}
    assert all(e.action == "insert" and e.actor == actor() and e.at == T0 for e in first)
    assert sum(e.table == "factories" for e in first) == (factories[0] if factories else -1)

    heads = (tmp_path / "headcounts.csv").read_text().splitlines()
    header, row = heads[0].split(","), heads[1].split(",")
    column = header.index("employee_count")
    before = int(row[column])
    row[column] = str(before + 17)
    heads[1] = ",".join(row)
    (tmp_path / "headcounts.csv").write_text("\n".join(heads) + "\n")
    with clock.frozen(T1), connect(pg_url, schema) as conn:
        import_registry(conn, tmp_path)
        conn.commit()
        changed = entries(conn, T1)
    assert [(e.table, e.action) for e in changed] == [("headcounts", "update")]
    (entry,) = changed
    assert entry.old == {"employee_count": before} and entry.new == {"employee_count": before + 17}
    assert entry.key["factory_id"] == row[header.index("factory_id")]
    assert f"employee_count: {before} -> {before + 17}" in entry.line()


def test_the_trail_cannot_be_altered_by_anyone(pg_url: str, schema: str, tmp_path: Path) -> None:
    write_registry_csv(generate(ProvinceSpec(robots=2), seed=4), tmp_path)
    with connect(pg_url, schema) as conn:
        import_registry(conn, tmp_path)
        conn.commit()
        for statement in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log", "TRUNCATE audit_log"):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(statement)  # even the superuser that migrated the schema
            conn.rollback()
        roles = [r for (r,) in conn.execute("SELECT role_name FROM schema_roles WHERE kind IN ('collector', 'reader')")]
        assert len(roles) == 2
        for role in roles:
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
            for statement in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log", "SELECT 1 FROM audit_log"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement)
                conn.rollback()
                conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
            conn.execute("RESET ROLE")
        assert conn.execute("SELECT count(*) FROM audit_log WHERE actor = 'x'").fetchone() == (0,)


def test_the_audit_command_prints_a_line_per_change(
    pg_url: str, schema: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from robodensity.app.cli import app

    write_registry_csv(generate(ProvinceSpec(robots=2), seed=8), tmp_path)
    with clock.frozen(T0), connect(pg_url, schema) as conn:
        import_registry(conn, tmp_path)
        conn.commit()
        count = len(entries(conn, T0))
        robots = conn.execute("SELECT count(*) FROM robots").fetchone()
    monkeypatch.setenv("ROBODENSITY_DATABASE__URL", pg_url)
    shown = CliRunner().invoke(app, ["audit", "--since", "2026-03-01", "--schema", schema])
    assert shown.exit_code == 0, shown.output
    assert robots is not None and shown.output.count(" insert robots ") == robots[0] > 0
    assert f"{count} change(s)" in shown.output
    none = CliRunner().invoke(app, ["audit", "--since", "2026-03-01", "--until", "2026-03-02", "--schema", schema])
    assert none.exit_code == 0 and "0 change(s)" in none.output
    bad = CliRunner().invoke(app, ["audit", "--since", "March", "--schema", schema])
    assert bad.exit_code == 2 and "--since must be a date YYYY-MM-DD" in bad.output
