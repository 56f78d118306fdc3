"""Roles on a real PostgreSQL: a collector that can only write telemetry, a reader that sees
views only, department roles cut to their region by forced row-level security."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from robodensity.collector.validate import Incoming
from robodensity.collector.write import Writer
from robodensity.core import wire
from robodensity.core.errors import DatabaseError
from robodensity.core.wire import Batch, Event, Reading, RobotId, State
from robodensity.simulators.province import CitySpec, ProvinceSpec, generate
from robodensity.storage.db import connect, drop_schema, migrate
from robodensity.storage.roles import create_department_role, role_names, url_as
from tests.helpers import import_province

PROVINCE = generate(
    ProvinceSpec(
        cities=(CitySpec("320100", "南京市", "Nanjing", 2), CitySpec("320500", "苏州市", "Suzhou", 2)), robots=8
    ),
    seed=5,
)
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def province_schema(pg_url: str, schema: str, tmp_path: Path) -> str:
    """The schema with the province imported and a density row and a robot day per region."""
    import_province(PROVINCE, pg_url, schema, tmp_path)
    with connect(pg_url, schema) as conn:
        for code in ("320000", "320100", "320500"):
            conn.execute(
                "INSERT INTO density (region_code, industry_code, period_start, period_end, robot_count, "
                "employee_count, verified_count, reporting_count) VALUES (%s, '*', %s, %s, 1, 100, 1, 1)",
                (code, NOW - timedelta(days=1), NOW),
            )
        for factory in PROVINCE.factories:
            robot = PROVINCE.robots_of(factory.id)[0]
            conn.execute(
                "INSERT INTO robot_blocks_daily SELECT robot_id, %s, %s, 3600, 0, 0, 0, 0, 3600, 0, 0, 0, 3600 "
                "FROM robots "
                "WHERE manufacturer = %s AND serial = %s",
                (date(2026, 1, 5), factory.id, robot.manufacturer, robot.serial),
            )
        conn.commit()
    return schema


def _as(pg_url: str, schema: str, role: str) -> psycopg.Connection:
    return connect(url_as(pg_url, role), schema)


@pytest.fixture
def reader(pg_url: str, province_schema: str) -> Iterator[psycopg.Connection]:
    with _as(pg_url, province_schema, role_names(province_schema).reader) as conn:
        yield conn


def test_the_reader_reads_views(reader: psycopg.Connection) -> None:
    assert reader.execute("SELECT count(*) FROM v_density").fetchone() == (3,)
    assert reader.execute("SELECT count(*) FROM v_robot_daily").fetchone() == (len(PROVINCE.factories),)
    assert reader.execute("SELECT count(*) FROM v_factories").fetchone() == (len(PROVINCE.factories),)
    assert reader.execute("SELECT count(*) FROM v_dead_letters_by_reason").fetchone() == (0,)
    assert reader.execute("SELECT count(*) > 0 FROM v_region_ancestors").fetchone() == (True,)  # a later view


@pytest.mark.parametrize("table", ["events", "density", "robots", "factories", "dead_letters"])
def test_the_reader_cannot_read_tables(reader: psycopg.Connection, table: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        reader.execute(f"SELECT * FROM {table}")


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO density (region_code, industry_code, period_start, period_end, robot_count, employee_count, "
        "verified_count, reporting_count) VALUES ('320100', 'x', now(), now(), 1, 1, 1, 1)",
        "DELETE FROM v_regions",
        "UPDATE v_factories SET name = 'x'",
        "CREATE TABLE mine (x int)",
        "SELECT refresh_rollups(now() - interval '1 day', now())",
    ],
)
def test_the_reader_cannot_write(reader: psycopg.Connection, statement: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        reader.execute(statement)


@pytest.mark.parametrize(
    ("region", "seen"),
    [
        ("320100", {"320100"}),
        ("320500", {"320500"}),
        ("320000", {"320000", "320100", "320500"}),
    ],
)
def test_a_department_sees_only_its_region(pg_url: str, province_schema: str, region: str, seen: set[str]) -> None:
    role = f"{province_schema}_dept_{region}"
    with connect(pg_url, province_schema) as admin:
        create_department_role(admin, province_schema, role, region)
    with _as(pg_url, province_schema, role) as dept:
        assert {r for (r,) in dept.execute("SELECT region_code FROM v_density")} == seen
        factories = {f for (f,) in dept.execute("SELECT factory_id FROM v_factories")}
        assert factories == {f.id for f in PROVINCE.factories if f.region in seen}
        days = {f for (f,) in dept.execute("SELECT factory_id FROM v_robot_daily")}
        assert days == factories
        # Not the robot-level telemetry views, and not the tables behind the views.
        for relation in ("v_state_intervals", "v_dead_letters_by_reason", "density", "events"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                dept.execute(f"SELECT * FROM {relation}")
            dept.rollback()


def test_a_department_role_for_an_unknown_region_is_refused(pg_url: str, province_schema: str) -> None:
    with connect(pg_url, province_schema) as admin, pytest.raises(DatabaseError, match="not in the registry"):
        create_department_role(admin, province_schema, f"{province_schema}_dept_x", "110000")


@pytest.fixture
def collector_conn(pg_url: str, province_schema: str) -> Iterator[psycopg.Connection]:
    with _as(pg_url, province_schema, role_names(province_schema).collector) as conn:
        yield conn


def test_the_collector_role_writes_telemetry(collector_conn: psycopg.Connection) -> None:
    factory = PROVINCE.factories[0]
    robot = PROVINCE.robots_of(factory.id)[0]
    events = (
        Event(1, Reading.of_state(RobotId(robot.manufacturer, robot.serial), NOW, State.IDLE)),
        Event(2, Reading.of_state(RobotId("NEWCO", "N-1"), NOW, State.EXECUTING)),
    )
    msg = Incoming(wire.uplink_topic(factory.id, "a1"), wire.encode_batch(Batch("a1", factory.id, events)))
    writer = Writer(collector_conn)
    result = writer.flush([msg, Incoming(msg.topic, b"{")])
    assert (result.inserted, result.dead_letters, result.through) == (2, 1, {"a1": 2})
    assert result.intervals == 2
    again = writer.flush([msg])
    assert again.duplicates == 2


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE events ADD COLUMN x int",
        "DROP TABLE events",
        "DROP VIEW v_density",
        "TRUNCATE events",
        "DELETE FROM events",
        "UPDATE events SET state = 'IDLE'",
        "CREATE TABLE mine (x int)",
        "CREATE INDEX ON events (ts)",
        "SELECT * FROM density",
        "SELECT drop_event_partitions(interval '1 day')",
    ],
)
def test_the_collector_role_cannot_alter_drop_or_read_metrics(
    collector_conn: psycopg.Connection, statement: str
) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        collector_conn.execute(statement)


def test_the_owner_cannot_log_in(pg_url: str, province_schema: str) -> None:
    with pytest.raises(DatabaseError, match="not permitted to log in"):
        _as(pg_url, province_schema, role_names(province_schema).owner)


def test_views_of_the_schema_belong_to_the_owner_so_row_security_applies(pg_url: str, province_schema: str) -> None:
    with connect(pg_url, province_schema) as conn:
        owners = {
            o
            for (o,) in conn.execute(
                "SELECT DISTINCT relowner::regrole::text FROM pg_class "
                "WHERE relnamespace = current_schema()::regnamespace AND relkind IN ('r', 'p', 'v')"
            )
        }
    assert owners == {role_names(province_schema).owner}


def test_dropping_the_schema_drops_its_roles(pg_url: str) -> None:
    schema = f"t_drop_{uuid.uuid4().hex[:8]}"
    migrate(pg_url, schema)
    with connect(pg_url, schema) as admin:
        admin.execute("INSERT INTO regions (code, name) VALUES ('320000', 'x')")
        admin.commit()
        create_department_role(admin, schema, f"{schema}_dept", "320000")
    drop_schema(pg_url, schema)
    with connect(pg_url, "public") as conn:
        left = conn.execute("SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", (schema,)).fetchall()
    assert left == []


# ----------------------------------------------------------------------------- robodensity db role ...


def _db_role(pg_url: str, schema: str, *args: str) -> tuple[int, list[str]]:
    from typer.testing import CliRunner

    from robodensity.app.cli import app

    result = CliRunner().invoke(
        app, ["db", "role", *args, "--schema", schema], env={"ROBODENSITY_DATABASE__URL": pg_url, "COLUMNS": "200"}
    )
    return result.exit_code, result.output.splitlines()


def test_db_role_create_list_and_drop_a_department(pg_url: str, province_schema: str, tmp_path: Path) -> None:
    role = f"{province_schema}_nanjing"
    password = tmp_path / "nanjing.pw"
    password.write_text("correct horse battery staple\n")
    assert _db_role(
        pg_url, province_schema, "create", role, "--region", "320100", "--password-file", str(password)
    ) == (
        0,
        [f"{role}: region 320100 南京市"],
    )
    with _as(pg_url, province_schema, role) as dept:
        assert {r for (r,) in dept.execute("SELECT region_code FROM v_density")} == {"320100"}
    with connect(pg_url, "public") as conn:  # the test cluster trusts every login, so check what is stored
        [(stored,)] = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)).fetchall()
    assert stored.startswith("SCRAM-SHA-256$4096:")
    code, lines = _db_role(pg_url, province_schema, "list")
    assert code == 0 and any(role in line and "320100" in line and "南京市" in line for line in lines), lines
    assert _db_role(pg_url, province_schema, "drop", role) == (0, [f"dropped {role}"])
    with connect(pg_url, "public") as conn:
        assert conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None
    code, lines = _db_role(pg_url, province_schema, "list")
    assert code == 0 and not any(role in line for line in lines)


def test_db_role_refuses_unknown_regions_and_service_roles_in_one_line(pg_url: str, province_schema: str) -> None:
    code, lines = _db_role(pg_url, province_schema, "create", f"{province_schema}_x", "--region", "110000")
    assert code == 2 and len(lines) == 1 and "region 110000 is not in the registry" in lines[0]
    reader = role_names(province_schema).reader
    code, lines = _db_role(pg_url, province_schema, "drop", reader)
    assert (code, lines) == (
        2,
        [f"error: '{reader}' is not a department role of schema {province_schema}; see `robodensity db role list`"],
    )
    with connect(pg_url, "public") as conn:
        assert conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (reader,)).fetchone() == (1,)


def test_the_password_verifier_is_the_one_postgresql_computes(pg_url: str) -> None:
    """Same salt and iterations as PostgreSQL's own hash of the password: the same verifier, byte for byte."""
    from robodensity.storage.roles import scram_sha_256

    role = f"t_scram_{uuid.uuid4().hex[:8]}"
    with connect(pg_url, "public", autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'S3cret pass!'")
        try:
            [(stored,)] = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)).fetchall()
        finally:
            conn.execute(f"DROP ROLE {role}")
    iterations, salt = stored.split("$")[1].split(":")
    import base64

    assert scram_sha_256("S3cret pass!", base64.b64decode(salt), int(iterations)) == stored
