"""The national view by logical replication: two province clusters and a national one, started here.

Each province loads a simulated province, computes its metrics and publishes; the nation
subscribes to both (to Jiangsu through a fault proxy, so the link can be cut). The national
figures must equal each province's own, the nation's sums must equal the provinces', nothing
robot-level may arrive; a province cut off while it computes a new period catches up once the
link heals; a schema migration applied while replication runs keeps it running.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from robodensity.app import metrics_job
from robodensity.app.embedded import EmbeddedPostgres
from robodensity.app.metrics_job import LOCAL_TZ
from robodensity.core.errors import ConfigError, DatabaseError
from robodensity.simulators.load import load_province
from robodensity.simulators.province import CitySpec, ProvinceSpec, generate
from robodensity.storage import db, federation
from robodensity.storage.db import DEFAULT_SCHEMA, Migration, connect, migrate
from tests.faultproxy import FaultProxy

SCHEMA = DEFAULT_SCHEMA
START = datetime(2026, 1, 1, tzinfo=LOCAL_TZ)
MID = START + timedelta(days=2)
END = START + timedelta(days=4)
SPECS = {
    "320000": ProvinceSpec(robots=12),
    "440000": ProvinceSpec(
        code="440000",
        name="广东省",
        name_en="Guangdong",
        cities=(CitySpec("440100", "广州市", "Guangzhou", 2), CitySpec("440300", "深圳市", "Shenzhen", 2)),
        robots=10,
    ),
}
KEYS = {
    "regions": "code",
    "density_definitions": "definition",
    "key_industries": "region_code, industry_code",
    "employment_statistics": "region_code, industry_code, year, firms",
    "density": "definition, region_code, industry_code, period_start, period_end",
    "targets": "scope_region, scope_industry, metric, due_date",
    "region_daily": "region_code, industry_code, day",
}


@dataclass
class Federation:
    provinces: dict[str, EmbeddedPostgres]
    national: EmbeddedPostgres
    proxy: FaultProxy


def _own_definition(conn: psycopg.Connection, province: str) -> None:
    """The province's statisticians' own definition, key industries and employment statistics."""
    conn.execute(
        "INSERT INTO density_definitions (definition, numerator, scope, unit, denominator, title, origin) "
        "VALUES (%s, 'in_operation', 'key', 'robots', 'participating', %s, %s)",
        (f"p{province[:2]}-key", f"Key industries of {province}", province),
    )
    conn.execute(
        "INSERT INTO key_industries SELECT %s, min(industry_code), 'provincial plan' FROM factories", (province,)
    )
    conn.execute(
        "INSERT INTO employment_statistics VALUES (%s, '*', 2025, 'all', 1000000, 'yearbook 2025', '2025')",
        (province,),
    )


def _compute(url: str, start: datetime, end: datetime) -> None:
    with connect(url, SCHEMA) as conn:
        metrics_job.compute(conn, start, end)
        conn.commit()


@contextlib.contextmanager
def _clusters(n: int) -> Iterator[list[EmbeddedPostgres]]:
    """``n`` logical-WAL clusters, initialised in parallel (initdb is most of their start-up)."""
    clusters = [EmbeddedPostgres(logical=True) for _ in range(n)]
    try:
        with ThreadPoolExecutor(n) as pool:
            list(pool.map(lambda pg: (pg.init(), pg.start()), clusters))
        yield clusters
    finally:
        for pg in clusters:
            pg.stop()
            pg.remove()


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with _clusters(3) as (js, gd, nation), FaultProxy(js.port) as proxy:
        provinces = {"320000": js, "440000": gd}
        for i, (code, pg) in enumerate(provinces.items()):
            migrate(pg.url, SCHEMA)
            with connect(pg.url, SCHEMA) as conn:
                load_province(conn, generate(SPECS[code], 40 + i), tmp_path_factory.mktemp(code), 40 + i, START, END)
                _own_definition(conn, code)
                conn.commit()
            _compute(pg.url, START, MID)
            with connect(pg.url, SCHEMA, autocommit=True) as conn:
                federation.publish(conn, SCHEMA, code)
        migrate(nation.url, SCHEMA)
        with connect(nation.url, SCHEMA, autocommit=True) as conn:
            # The national deployment loaded the reference targets too: the provinces' rows replace them.
            from robodensity.storage.registry import load_reference_targets

            load_reference_targets(conn)
            federation.subscribe(
                conn, SCHEMA, "320000", f"host=127.0.0.1 port={proxy.port} user=postgres dbname=postgres"
            )
            federation.subscribe(conn, SCHEMA, "440000", gd.url)
        yield Federation(provinces, nation, proxy)
        with connect(nation.url, SCHEMA, autocommit=True) as conn:
            for code in provinces:
                federation.unsubscribe(conn, SCHEMA, code)


def _rows(url: str, province: str) -> dict[str, list[tuple[Any, ...]]]:
    low, high = federation.check_province(province)
    out = {}
    with connect(url, SCHEMA) as conn:
        for table, column in federation.FEDERATED.items():
            out[table] = conn.execute(
                f"SELECT * FROM {table} WHERE {column} >= %s AND {column} < %s ORDER BY {KEYS[table]}", (low, high)
            ).fetchall()
    return out


def _until(cond: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.1)


def _caught_up(fed: Federation, province: str) -> None:
    _until(
        lambda: _rows(fed.national.url, province) == _rows(fed.provinces[province].url, province),
        f"the nation to hold province {province}'s rows",
    )


def test_the_nation_holds_each_provinces_figures_and_nothing_robot_level(fed: Federation) -> None:
    for code in fed.provinces:
        with connect(fed.national.url, SCHEMA) as conn:
            _until(lambda c=code: federation.synced(conn, SCHEMA, c), f"initial copy from {code}")  # type: ignore[misc]
        _caught_up(fed, code)
        own = _rows(fed.provinces[code].url, code)
        assert own["density"] and own["region_daily"] and len(own["regions"]) == 1 + len(SPECS[code].cities)
        assert [d[0] for d in own["density_definitions"]] == [f"p{code[:2]}-key"]  # not the shipped ones
        assert own["key_industries"] and own["employment_statistics"]
        with connect(fed.national.url, SCHEMA) as conn:  # the province's own definition, and its figures
            assert conn.execute(
                "SELECT count(*) > 0 FROM density d JOIN density_definitions dd USING (definition) "
                "WHERE dd.origin = %s AND d.region_code = %s",
                (code, code),
            ).fetchone() == (True,)
        with connect(fed.provinces[code].url, SCHEMA) as conn:  # the job's region x day sums: the robots' blocks
            blocks = conn.execute(
                "SELECT day, count(*), sum(executing_s), sum(fault_s) FROM robot_blocks_daily GROUP BY day ORDER BY day"
            ).fetchall()
            regional = conn.execute(
                "SELECT day, robots, executing_s, fault_s FROM region_daily "
                "WHERE region_code = %s AND industry_code = '*' ORDER BY day",
                (code,),
            ).fetchall()
        assert len(blocks) == 2 and [(d, n) for d, n, *_ in regional] == [(d, n) for d, n, *_ in blocks]
        assert [x for r in regional for x in r[2:]] == pytest.approx([x for b in blocks for x in b[2:]])
    with connect(fed.national.url, SCHEMA) as conn:
        for table in ("robots", "factories", "events", "agents", "robot_blocks_daily", "headcounts"):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table
        # The nation from its provinces: sums of the provinces' own counts.
        nation = conn.execute(
            "SELECT provinces, robot_count, employee_count, robot_density FROM v_national_density "
            "WHERE definition = 'participating' AND industry_code = '*' AND period_start = %s AND period_end = %s",
            (START, MID),
        ).fetchone()
        status = federation.status(conn, SCHEMA)
    counts = {}
    for code, pg in fed.provinces.items():
        with connect(pg.url, SCHEMA) as conn:
            counts[code] = conn.execute(
                "SELECT robot_count, employee_count FROM density WHERE definition = 'participating' "
                "AND region_code = %s AND industry_code = '*' AND period_start = %s AND period_end = %s",
                (code, START, MID),
            ).fetchone()
    robots = sum(c[0] for c in counts.values())
    employees = sum(c[1] for c in counts.values())
    assert robots == sum(s.robots for s in SPECS.values())
    assert nation == (2, robots, employees, pytest.approx(robots * 10_000 / employees))
    assert [s["subscription"] for s in status["subscriptions"]] == [f"{SCHEMA}_320000", f"{SCHEMA}_440000"]
    assert all(s["enabled"] and s["tables_syncing"] == 0 for s in status["subscriptions"])
    assert [p["province"] for p in status["provinces"]] == ["320000", "440000"]


def test_a_province_cut_off_while_it_computes_catches_up_when_the_link_heals(fed: Federation) -> None:
    js = fed.provinces["320000"]
    _caught_up(fed, "320000")
    fed.proxy.partition()
    try:
        _compute(js.url, MID, END)  # a new period while the nation cannot reach the province
        with connect(fed.national.url, SCHEMA) as conn:
            _until(
                lambda: not federation.status(conn, SCHEMA)["subscriptions"][0]["connected"],
                "the national apply worker to notice the cut",
            )
            assert conn.execute(
                "SELECT count(*) FROM density WHERE region_code = '320000' AND period_start = %s", (MID,)
            ).fetchone() == (0,)
        # Guangdong keeps flowing meanwhile.
        _compute(fed.provinces["440000"].url, MID, END)
        _caught_up(fed, "440000")
    finally:
        fed.proxy.heal()
    _caught_up(fed, "320000")
    with connect(fed.national.url, SCHEMA) as conn:
        assert conn.execute(
            "SELECT provinces FROM v_national_density WHERE definition = 'participating' AND industry_code = '*' "
            "AND period_start = %s AND period_end = %s",
            (MID, END),
        ).fetchone() == (2,)


def test_a_migration_applied_while_replication_runs_keeps_it_running(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = Migration(
        59,
        "federation_test_column",
        "ALTER TABLE density ADD COLUMN reviewed_by text;\nALTER TABLE region_daily ADD COLUMN note text;",
    )
    shipped = db.migrations()
    monkeypatch.setattr(db, "migrations", lambda: [*shipped, extra])
    urls = [pg.url for pg in fed.provinces.values()]
    federation.migrate_federation(fed.national.url, urls, SCHEMA)
    for code, pg in fed.provinces.items():
        with connect(pg.url, SCHEMA) as conn:
            conn.execute("UPDATE density SET reviewed_by = %s WHERE region_code = %s", (f"reviewer {code}", code))
            conn.execute("UPDATE region_daily SET note = 'checked' WHERE region_code = %s", (code,))
            conn.commit()
        _caught_up(fed, code)
    with connect(fed.national.url, SCHEMA) as conn:
        assert dict(conn.execute("SELECT region_code, reviewed_by FROM density WHERE region_code LIKE '%%0000'")) == {
            "320000": "reviewer 320000",
            "440000": "reviewer 440000",
        }


def test_a_province_will_not_publish_figures_of_a_definition_the_nation_would_lack(fed: Federation) -> None:
    gd = fed.provinces["440000"].url
    with connect(gd, SCHEMA) as conn:
        conn.execute(
            "INSERT INTO density_definitions (definition, numerator, scope, unit, denominator, title) "
            "VALUES ('mine-only', 'in_operation', 'all', 'robots', 'participating', 'ours')"
        )
        conn.execute(
            "INSERT INTO density (definition, region_code, industry_code, period_start, period_end, robot_count, "
            "employee_count, verified_count, reporting_count) VALUES ('mine-only', '440000', '*', %s, %s, 1, 1, 1, 1)",
            (START, MID),
        )
        conn.commit()
    try:
        with connect(gd, SCHEMA, autocommit=True) as conn, pytest.raises(ConfigError) as err:
            federation.publish(conn, SCHEMA, "440000")
        assert "mine-only" in str(err.value) and "origin 440000" in str(err.value)
        assert len(str(err.value).splitlines()) == 1
    finally:
        with connect(gd, SCHEMA) as conn:
            conn.execute("DELETE FROM density WHERE definition = 'mine-only'")
            conn.execute("DELETE FROM density_definitions WHERE definition = 'mine-only'")
            conn.commit()


def test_bad_province_codes_and_a_server_without_logical_wal_are_one_line_errors(pg_url: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="province code like 320000"):
        federation.check_province("320100")
    with connect(pg_url, "public", autocommit=True) as conn, pytest.raises(DatabaseError, match="wal_level = logical"):
        federation.publish(conn, "public", "320000")


def test_the_federation_commands_wrap_the_sql(fed: Federation, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from typer.testing import CliRunner

    from robodensity.app.cli import app

    monkeypatch.setenv("ROBODENSITY_DATABASE__URL", fed.national.url)
    res = CliRunner().invoke(app, ["federation", "status"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert {s["subscription"] for s in doc["subscriptions"]} == {f"{SCHEMA}_320000", f"{SCHEMA}_440000"}
    monkeypatch.setenv("ROBODENSITY_DATABASE__URL", fed.provinces["440000"].url)
    res = CliRunner().invoke(app, ["federation", "publish", "--province", "440000"])
    assert res.exit_code == 0 and "region_daily" in res.output, res.output
    res = CliRunner().invoke(app, ["federation", "status"])
    [slot] = json.loads(res.output)["slots"]
    assert slot["slot_name"] == f"{SCHEMA}_440000" and slot["active"]
    bad = CliRunner().invoke(app, ["federation", "publish", "--province", "440300"])
    assert bad.exit_code == 2 and "province code like 320000" in bad.output
