"""Dashboards at province scale (migration 090): today's robots per factory counted once and
forgotten on any registry change, today's assignment by an anti-join, and the dashboards'
roles logging in without JIT. The speed itself is measured by ``./dev bench dashboards``."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import psycopg
import pytest

from robodensity.simulators.province import CitySpec, ProvinceSpec, generate
from robodensity.storage.db import connect
from robodensity.storage.roles import create_department_role, role_names, url_as
from tests.helpers import import_province

PROVINCE = generate(
    ProvinceSpec(
        cities=(CitySpec("320100", "南京市", "Nanjing", 3), CitySpec("320500", "苏州市", "Suzhou", 2)), robots=40
    ),
    seed=11,
)
TODAY = date(2026, 6, 15)

# The definition 010 had: a LIMIT 1 lookup of the newest assignment per robot.
REFERENCE = """
SELECT r.robot_id, a.factory_id,
       robot_in_operation(r.registered, r.commissioned, r.decommissioned, %(today)s) AS in_operation
FROM robots r LEFT JOIN LATERAL (
    SELECT factory_id FROM assignments a WHERE a.robot_id = r.robot_id AND a.valid_from <= %(today)s
    ORDER BY a.valid_from DESC LIMIT 1) a ON true
ORDER BY 1"""
REFERENCE_COUNTS = f"""
SELECT f.factory_id, count(x.robot_id) FILTER (WHERE x.in_operation)
FROM factories f LEFT JOIN ({REFERENCE.replace("ORDER BY 1", "")}) x USING (factory_id)
GROUP BY 1 ORDER BY 1"""


@pytest.fixture
def conn(pg_url: str, schema: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    with connect(pg_url, schema) as c:
        c.execute("SELECT set_config(%s, %s, false)", ("robodensity.now", f"{TODAY} 12:00:00+08"))
        c.commit()
        # the import runs on its own connection (today's clock); the counts below are for TODAY
        import_province(PROVINCE, pg_url, schema, tmp_path)
        c.execute("SELECT refresh_factory_fleet()")
        c.commit()
        yield c


def _fleet(c: psycopg.Connection) -> list[tuple[str, int]]:
    return [(f, int(n)) for f, n in c.execute("SELECT factory_id, robot_count FROM v_factory_fleet ORDER BY 1")]


def _cached(c: psycopg.Connection) -> int:
    row = c.execute("SELECT count(*) FROM factory_fleet_counts WHERE as_of = %s", (TODAY,)).fetchone()
    return int(row[0]) if row else 0


def test_todays_counts_are_cached_and_equal_a_live_count(conn: psycopg.Connection) -> None:
    assert _cached(conn) == len(PROVINCE.factories)
    expected = [(f, int(n)) for f, n in conn.execute(REFERENCE_COUNTS, {"today": TODAY})]
    assert sum(n for _, n in expected) > 0
    assert _fleet(conn) == expected


WORKING = "(SELECT min(robot_id) FROM v_robot_current WHERE in_operation AND factory_id IS NOT NULL)"


@pytest.mark.parametrize(
    "change",
    [
        f"UPDATE robots SET decommissioned = %(today)s WHERE robot_id = {WORKING}",
        "INSERT INTO assignments SELECT c.robot_id, (SELECT min(f.factory_id) FROM factories f "
        f"WHERE f.factory_id <> c.factory_id), %(today)s FROM v_robot_current c WHERE c.robot_id = {WORKING} "
        "ON CONFLICT (robot_id, valid_from) DO UPDATE SET factory_id = EXCLUDED.factory_id",
        f"DELETE FROM assignments WHERE robot_id = {WORKING}",
    ],
    ids=["decommissioned", "moved", "unassigned"],
)
def test_a_registry_change_forgets_the_counts_and_the_view_counts_live(conn: psycopg.Connection, change: str) -> None:
    before = _fleet(conn)
    conn.execute(change, {"today": TODAY})
    assert _cached(conn) == 0  # forgotten in the changing transaction itself
    after = _fleet(conn)
    assert after != before
    assert after == [(f, int(n)) for f, n in conn.execute(REFERENCE_COUNTS, {"today": TODAY})]
    conn.execute("SELECT refresh_factory_fleet()")
    assert _cached(conn) == len(PROVINCE.factories) and _fleet(conn) == after


def test_a_new_day_counts_live_until_refreshed(conn: psycopg.Connection) -> None:
    tomorrow = TODAY + timedelta(days=1)
    # a robot commissioned tomorrow: in operation only from then on
    conn.execute(f"UPDATE robots SET commissioned = %s WHERE robot_id = {WORKING}", (tomorrow,))
    conn.execute("SELECT refresh_factory_fleet()")
    today = _fleet(conn)
    conn.execute("SELECT set_config(%s, %s, false)", ("robodensity.now", f"{tomorrow} 09:00:00+08"))
    assert _cached(conn) == len(PROVINCE.factories)  # yesterday's counts are still stored ...
    live = _fleet(conn)  # ... and not used
    assert sum(n for _, n in live) == sum(n for _, n in today) + 1
    assert live == [(f, int(n)) for f, n in conn.execute(REFERENCE_COUNTS, {"today": tomorrow})]
    assert conn.execute("SELECT refresh_factory_fleet(true)").fetchone() == (len(PROVINCE.factories),)
    assert conn.execute("SELECT refresh_factory_fleet(true)").fetchone() == (0,)  # current: nothing to do
    assert _fleet(conn) == live


def test_todays_assignment_is_the_newest_one_not_in_the_future(conn: psycopg.Connection) -> None:
    ids = [r[0] for r in conn.execute("SELECT robot_id FROM robots ORDER BY 1 LIMIT 6")]
    factories = [r[0] for r in conn.execute("SELECT factory_id FROM factories ORDER BY 1")]
    for i, robot in enumerate(ids):  # moves in the past, today and the future
        for k, days in enumerate((-30, 0, 10)[: 1 + i % 3]):
            conn.execute(
                "INSERT INTO assignments VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                (robot, factories[(i + k + 1) % len(factories)], TODAY + timedelta(days=days)),
            )
    current = conn.execute("SELECT robot_id, factory_id, in_operation FROM v_robot_current ORDER BY 1").fetchall()
    assert current == conn.execute(REFERENCE, {"today": TODAY}).fetchall()
    one = factories[0]
    mine = conn.execute("SELECT robot_id FROM v_robot_current WHERE factory_id = %s ORDER BY 1", (one,)).fetchall()
    assert mine == [(r,) for r, f, _ in current if f == one] and mine


def test_dashboard_roles_log_in_without_jit_and_with_memory_to_sort(
    pg_url: str, conn: psycopg.Connection, schema: str
) -> None:
    create_department_role(conn, schema, f"{schema}_nanjing", "320100")
    conn.commit()
    for role in (role_names(schema).reader, f"{schema}_nanjing"):
        with connect(url_as(pg_url, role), schema) as c:
            assert c.execute("SHOW jit").fetchone() == ("off",), role
            assert c.execute("SHOW work_mem").fetchone() == ("32MB",), role
    # the metrics job's connection keeps the server's setting: its long aggregates may use JIT
    assert conn.execute("SELECT setting = boot_val FROM pg_settings WHERE name = 'jit'").fetchone() == (True,)
