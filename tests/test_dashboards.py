"""Dashboards: every panel's SQL runs on a real PostgreSQL, with Grafana's macros expanded.

A simulated province (registry + two months of state events) is loaded with
simulators/load.py and the metrics job computes January and February; each panel's
query is expanded as Grafana would expand it and run with the test schema on the
search path, and its columns are checked against what the panel type needs. A few
values are checked against figures computed independently from the simulation.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import psycopg.sql
import pytest

from robodensity.app import metrics_job
from robodensity.app.metrics_job import LOCAL_TZ
from robodensity.core.wire import State
from robodensity.dashboards import macros
from robodensity.dashboards.build import FOLDERS, build_all, folder_of, write_dashboards
from robodensity.dashboards.panels import DATASOURCE_TYPE, DATASOURCE_UID, STATE_COLOURS, panels_of
from robodensity.dashboards.provision import dashboards_yaml, datasource_yaml, provision
from robodensity.simulators.behaviour import Schedule, seconds_in_state
from robodensity.simulators.load import load_province
from robodensity.simulators.province import Province, ProvinceSpec, generate
from robodensity.storage.db import connect, drop_schema, migrate

ROOT = Path(__file__).resolve().parent.parent
START = datetime(2026, 1, 1, tzinfo=LOCAL_TZ)
FEB = datetime(2026, 2, 1, tzinfo=LOCAL_TZ)
END = datetime(2026, 3, 1, tzinfo=LOCAL_TZ)
pytestmark = pytest.mark.storage_modes
SEED = 11
TIME_TYPES = {"timestamptz", "timestamp", "date"}
NUMBER_TYPES = {"int2", "int4", "int8", "float4", "float8", "numeric"}
STRING_TYPES = {"text", "varchar", "bpchar", "name"}


@dataclass
class Loaded:
    url: str
    schema: str
    province: Province
    schedules: dict[str, Schedule]


@pytest.fixture(scope="module")
def loaded(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    migrate(pg_url, schema)
    province = generate(ProvinceSpec(robots=60), SEED)
    try:
        with connect(pg_url, schema) as conn:
            schedules = load_province(conn, province, tmp_path_factory.mktemp("registry"), SEED, START, END)
            # The shipped Jiangsu target is due 2025-12-31, before the simulated months: move it so
            # the trend panel has a due date to project to.
            conn.execute("UPDATE targets SET due_date = '2030-12-31' WHERE scope_region = '320000'")
            conn.commit()
            metrics_job.compute(conn, START, FEB)
            metrics_job.compute(conn, FEB, END)
            _fleet_fixtures(conn, province)
            conn.commit()
        yield Loaded(pg_url, schema, province, schedules)
    finally:
        drop_schema(pg_url, schema)


def _fleet_fixtures(conn: psycopg.Connection, province: Province) -> None:
    """Agents (one online with a backlog of 10), dead letters and one unregistered robot."""
    first = province.factories[0].id
    conn.execute(
        "INSERT INTO agents (agent_id, factory_id, first_seen, last_seen, acked_through, committed) "
        "SELECT agent_id, min(factory_id), now() - interval '60 days', "
        "  CASE WHEN min(factory_id) = %(f)s THEN now() ELSE now() - interval '2 hours' END, "
        "  max(seq) - CASE WHEN min(factory_id) = %(f)s THEN 10 ELSE 0 END, "
        "  int8multirange(int8range(1, max(seq), '[]')) "
        "FROM events GROUP BY agent_id",
        {"f": first},
    )
    for i, reason in enumerate(("schema", "schema", "unknown_robot")):
        conn.execute(
            "INSERT INTO dead_letters (received_at, topic, agent_id, seq, reason, field, payload) "
            "VALUES (%s, 'rd/v1/x/events', 'sim-x', %s, %s, 'state', '\\x00')",
            (START + timedelta(days=3, hours=i), 10_000_000 + i, reason),
        )
    rid = conn.execute(
        "INSERT INTO robots (manufacturer, serial, registered, first_seen) VALUES ('ACME', 'U-1', false, %s) "
        "RETURNING robot_id",
        (START + timedelta(days=5),),
    ).fetchone()[0]
    conn.execute(
        "INSERT INTO events (agent_id, seq, robot_id, factory_id, ts, type, state) "
        "VALUES ('sim-unknown', 1, %s, %s, %s, 'state', 'EXECUTING')",
        (rid, first, START + timedelta(days=5)),
    )
    _clock_fixtures(conn, first)


def _clock_fixtures(conn: psycopg.Connection, factory: str) -> None:
    """One robot whose clock ran an hour fast (corrected at the edge), one agent 1.5 s behind."""
    conn.execute(
        "UPDATE events SET clock_offset_s = -3600 WHERE (agent_id, seq) IN "
        "(SELECT agent_id, seq FROM events WHERE factory_id = %s AND type = 'state' ORDER BY ts LIMIT 5)",
        (factory,),
    )
    conn.execute("UPDATE agents SET clock_offset_s = 1.5, clock_offset_at = now() WHERE factory_id = %s", (factory,))


# ----------------------------------------------------------------------------- running panels


def _variables(uid: str, loaded: Loaded) -> list[dict[str, str]]:
    period = f"{_z(FEB)}/{_z(END)}"
    city = loaded.province.regions[1].code
    return {
        "robodensity-province": [{"region": "320000"}],
        "robodensity-drilldown": [
            {"region": "320000", "industry": "*", "period": period},
            {"region": city, "industry": "36", "period": period},
        ],
        "robodensity-factory": [{"factory": f.id} for f in loaded.province.factories[:2]],
        "robodensity-fleet": [{}],
        "robodensity-national": [{}],
    }[uid]


def _z(t: datetime) -> str:
    return macros.rfc3339nano(t)


def run(
    loaded: Loaded, sql: str, variables: dict[str, str], time_from: datetime = START, time_to: datetime = END
) -> tuple[list[tuple[str, str]], list[tuple[Any, ...]]]:
    """Columns (name, type name) and rows of ``sql`` expanded as Grafana would expand it."""
    expanded = macros.expand(sql, variables, time_from=time_from, time_to=time_to)
    assert "$" not in expanded, f"unexpanded macro or variable in:\n{expanded}"
    with connect(loaded.url, loaded.schema) as conn:
        # As Grafana's read-only role (views only; 008_roles) when the migrations created it.
        reader = f"{loaded.schema}_reader"
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (reader,)).fetchone():
            conn.execute(psycopg.sql.SQL("SET ROLE {}").format(psycopg.sql.Identifier(reader)))
        cur = conn.execute(expanded)
        assert cur.description is not None
        cols = [(d.name, conn.adapters.types.get(d.type_code).name) for d in cur.description]
        return cols, cur.fetchall()


def _panel(uid: str, title_start: str) -> dict[str, Any]:
    found = [p for p in panels_of(build_all()[uid]) if p["title"].startswith(title_start)]
    assert len(found) == 1, title_start
    return found[0]


def _value(loaded: Loaded, uid: str, title: str, variables: dict[str, str], ref: int = 0, **kw: Any) -> Any:
    _cols, rows = run(loaded, _panel(uid, title)["targets"][ref]["rawSql"], variables, **kw)
    assert len(rows) == 1, (title, rows)
    return rows[0][0]


def _check_shape(
    panel: dict[str, Any], target: dict[str, Any], cols: list[tuple[str, str]], rows: list[tuple[Any, ...]]
) -> None:
    names = [c[0] for c in cols]
    types = dict(cols)
    kind = panel["type"]
    numeric = [n for n, t in cols if t in NUMBER_TYPES]
    where = f"{panel['title']} ({target['refId']})"
    assert len(set(names)) == len(names), f"{where}: duplicate column names {names}"
    if target["format"] == "time_series":
        # Grafana takes a "time" column of a time type, or numeric epoch seconds ($__timeGroup's output).
        assert "time" in names and types["time"] in TIME_TYPES | NUMBER_TYPES, f"{where}: no time column: {cols}"
        numeric = [n for n in numeric if n != "time"]
        assert numeric, f"{where}: needs a numeric column, got {cols}"
        others = [n for n, t in cols if n != "time" and t not in NUMBER_TYPES]
        assert others in ([], ["metric"]), f"{where}: only 'metric' may be a string, got {cols}"
        times = [r[names.index("time")] for r in rows]
        assert times == sorted(times), f"{where}: rows must be sorted by time"
    if kind in ("gauge", "stat"):
        assert numeric, f"{where}: needs a numeric column, got {cols}"
        assert len(rows) == 1, f"{where}: one row expected, got {len(rows)}"
    if kind == "barchart":
        x = panel["options"]["xField"]
        assert types.get(x) in STRING_TYPES, f"{where}: x field {x} must be a string column, got {cols}"
        assert numeric, f"{where}: needs numeric columns, got {cols}"
    if kind == "heatmap":
        assert names == ["time", "metric", numeric[0]] and types["metric"] in STRING_TYPES, f"{where}: {cols}"
    if kind == "state-timeline":
        field = panel["transformations"][0]["options"]["fields"][0]
        assert types.get("time") in TIME_TYPES and types.get(field) in STRING_TYPES, f"{where}: {cols}"
        assert types.get("state") in STRING_TYPES, f"{where}: needs a string state column, got {cols}"
        assert {r[names.index("state")] for r in rows} <= set(STATE_COLOURS), where
        times = [r[0] for r in rows]
        assert times == sorted(times), f"{where}: rows must be sorted by time"


def test_every_panel_query_runs_and_has_the_columns_its_panel_needs(loaded: Loaded) -> None:
    checked = 0
    for uid, model in build_all().items():
        for variables in _variables(uid, loaded):
            for panel in panels_of(model):
                for target in panel["targets"]:
                    cols, rows = run(loaded, target["rawSql"], variables)
                    # The simulated cities have no districts: sub-region panels of a city are empty.
                    leaf = variables.get("region", "").endswith("00") and not variables["region"].endswith("0000")
                    if not (leaf and "d.parent_code = '$region'" in target["rawSql"]):
                        assert rows, f"{uid} / {panel['title']} ({target['refId']}): no rows for {variables}"
                    _check_shape(panel, target, cols, rows)
                    checked += 1
    assert checked > 60


def test_every_query_variable_returns_value_and_text(loaded: Loaded) -> None:
    for uid, model in build_all().items():
        for var in model.get("templating", {}).get("list", []):
            cols, rows = run(loaded, var["query"], {})
            assert [c[0] for c in cols] == ["__value", "__text"], (uid, var["name"])
            assert rows, (uid, var["name"])
    cols, rows = run(loaded, _panel_var("robodensity-drilldown", "period"), {})
    assert rows[0][0] == f"{_z(FEB)}/{_z(END)}"


def _panel_var(uid: str, name: str) -> str:
    return next(v["query"] for v in build_all()[uid]["templating"]["list"] if v["name"] == name)


# ----------------------------------------------------------------------------- values


def test_province_density_equals_robots_per_10000_employees_of_the_simulation(loaded: Loaded) -> None:
    prov = loaded.province
    expected = len(prov.robots) / sum(f.employees for f in prov.factories) * 10_000
    v = {"region": "320000"}
    uid = "robodensity-province"
    assert _value(loaded, uid, "Robot density vs target", v) == pytest.approx(expected)
    assert _value(loaded, uid, "Robot density vs target", v, ref=1) == 500
    assert _value(loaded, uid, "Target progress", v) == pytest.approx(expected / 500)
    assert _value(loaded, uid, "Robots ", v) == len(prov.robots)
    domestic = sum(r.domestic for r in prov.robots) / len(prov.robots)
    assert _value(loaded, uid, "Domestic-brand share", v) == pytest.approx(domestic)
    assert _value(loaded, uid, "Coverage 数据覆盖率", v) == pytest.approx(1.0)

    _cols, rows = run(loaded, _panel(uid, "Density by city")["targets"][0]["rawSql"], v)
    by_city = {r[0].split()[0]: r[1] for r in rows}
    for region in prov.regions[1:]:
        facs = [f for f in prov.factories if f.region == region.code]
        robots = sum(len(prov.robots_of(f.id)) for f in facs)
        assert by_city[region.name] == pytest.approx(robots / sum(f.employees for f in facs) * 10_000)


def test_trend_projects_to_the_targets_due_date(loaded: Loaded) -> None:
    cols, rows = run(
        loaded, _panel("robodensity-province", "Density trend")["targets"][0]["rawSql"], {"region": "320000"}
    )
    names = [c[0] for c in cols]
    assert names == ["time", "robot_density", "target", "projection"]
    assert len(rows) == 3  # January, February, the due date
    due = rows[-1]
    assert due[0] == datetime(2030, 12, 31, tzinfo=LOCAL_TZ) and due[1] is None and due[2] == 500
    jan, feb = rows[0][1], rows[1][1]
    months = (due[0] - rows[1][0]).total_seconds() / (rows[1][0] - rows[0][0]).total_seconds()
    assert due[3] == pytest.approx(feb + (feb - jan) * months)
    assert rows[1][3] == feb and rows[0][3] is None


def test_national_overview_is_its_provinces_sum(loaded: Loaded) -> None:
    """On a province's own deployment the nation is that province: the same counts and density."""
    _cols, rows = run(loaded, _panel("robodensity-national", "National robot density")["targets"][0]["rawSql"], {})
    with connect(loaded.url, loaded.schema) as conn:
        own = conn.execute(
            "SELECT robot_density, robot_count, employee_count FROM v_density WHERE region_code = '320000' "
            "AND industry_code = '*' AND period_start = %s AND period_end = %s",
            (FEB, END),
        ).fetchone()
    assert own is not None and rows == [(pytest.approx(own[0]), own[1], own[2], 1)]
    _cols, rows = run(loaded, _panel("robodensity-national", "Provinces")["targets"][0]["rawSql"], {})
    assert [r[0] for r in rows] == ["320000"]


def test_drilldown_factories_match_the_registry(loaded: Loaded) -> None:
    prov = loaded.province
    v = {"region": "320000", "industry": "*", "period": f"{_z(FEB)}/{_z(END)}"}
    cols, rows = run(loaded, _panel("robodensity-drilldown", "Factories")["targets"][0]["rawSql"], v)
    names = [c[0] for c in cols]
    got = {r[0]: dict(zip(names, r)) for r in rows}
    assert set(got) == {f.id for f in prov.factories}
    for f in prov.factories:
        assert got[f.id]["robot_count"] == len(prov.robots_of(f.id))
        assert got[f.id]["employee_count"] == f.employees
        assert got[f.id]["reporting_robots"] == len(prov.robots_of(f.id))
    industry = prov.factories[0].industry
    cols, rows = run(
        loaded, _panel("robodensity-drilldown", "Factories")["targets"][0]["rawSql"], {**v, "industry": industry}
    )
    assert {r[0] for r in rows} == {f.id for f in prov.factories if f.industry == industry}


def test_factory_utilisation_and_reliability_match_the_simulated_schedules(loaded: Loaded) -> None:
    prov = loaded.province
    factory = prov.factories[1]  # factories[0] also has the unregistered robot's telemetry
    robots = prov.robots_of(factory.id)
    v = {"factory": factory.id}
    uid = "robodensity-factory"
    for lo, hi in ((START, FEB), (FEB, END)):  # each month computed by its own run of the job
        truth = [seconds_in_state(loaded.schedules[r.key], lo, hi) for r in robots]
        util = sum(t[State.EXECUTING] for t in truth) / sum(sum(t.values()) for t in truth)
        assert _value(loaded, uid, "Utilisation 利用率", v, time_from=lo, time_to=hi) == pytest.approx(util)
    truths = [seconds_in_state(loaded.schedules[r.key], START, END) for r in robots]
    executing = sum(t[State.EXECUTING] for t in truths)
    assert _value(loaded, uid, "Robots in operation", v) == len(robots)
    # 24/7: utilisation on planned time = availability = EXECUTING / covered time of the whole range
    availability = _value(loaded, uid, "Utilisation 利用率 = availability", v)
    assert availability == pytest.approx(executing / sum(sum(t.values()) for t in truths))

    # From the schedules in plain Python: a failure is a FAULT entry (the schedule never repeats a
    # state); it is repaired by the next entry, with its whole duration, when that is before END.
    failures, repairs = 0, []
    for r in robots:
        sched = loaded.schedules[r.key]
        for (t, s), nxt in zip(sched, [*sched[1:], None], strict=True):
            if s is State.FAULT:
                failures += 1
                if nxt is not None and nxt[0] < END:
                    repairs.append((nxt[0] - t).total_seconds())
    assert failures > 0
    assert _value(loaded, uid, "Failures", v) == failures
    assert _value(loaded, uid, "MTBF", v) == pytest.approx(executing / (failures + len(robots)) / 3600)
    assert _value(loaded, uid, "MTTR", v) == pytest.approx(sum(repairs) / len(repairs) / 3600)

    cols, rows = run(loaded, _panel(uid, "Subsidy evidence")["targets"][0]["rawSql"], v)
    names = [c[0] for c in cols]
    assert len(rows) == len(robots)
    assert {r[names.index("days_reported")] for r in rows} == {(END - START).days}


def test_factory_state_timeline_shows_the_schedules_then_daily_states(loaded: Loaded) -> None:
    from robodensity.dashboards.factory import EXACT_TIMELINE

    factory = loaded.province.factories[1]
    schedules = {f"{r.manufacturer} {r.serial}": loaded.schedules[r.key] for r in loaded.province.robots_of(factory.id)}
    sql = _panel("robodensity-factory", "Robot states")["targets"][0]["rawSql"]
    v = {"factory": factory.id}

    # A short range: every state change, and the state under way at the range's start.
    t0, t1 = START + timedelta(days=9, hours=5, minutes=7), START + timedelta(days=11)
    assert t1 - t0 <= timedelta(days=int(EXACT_TIMELINE.split()[0]))
    _cols, rows = run(loaded, sql, v, time_from=t0, time_to=t1)
    expected = []
    for robot, sched in schedules.items():
        before = [s for t, s in sched if t <= t0]
        if before:
            expected.append((t0, robot, before[-1].value))
        expected += [(t, robot, s.value) for t, s in sched if t0 < t <= t1]
    assert sorted(rows) == sorted(expected) and len(rows) > 2 * len(schedules)

    # A long range: per robot and local day, the state it spent most time in, at the day's start,
    # where it changes (the timeline draws each state until the robot's next point).
    _cols, rows = run(loaded, sql, v)
    points: dict[str, list[tuple[datetime, str]]] = {}
    for t, robot, state in sorted(rows):
        points.setdefault(robot, []).append((t, state))
    order = list(STATE_COLOURS)
    repeats = 0
    for robot, sched in schedules.items():
        assert points[robot][0][0] == START  # every robot's first day
        shown = [s for _, s in points[robot]]
        assert all(a != b for a, b in zip(shown, shown[1:], strict=False)), robot  # changes only
        expected_before = None
        for d in range((END - START).days):
            day = START + timedelta(days=d)
            secs = seconds_in_state(sched, day, day + timedelta(days=1))
            top = max(secs.values())
            expected_state = min((s.value for s in secs if secs[s] == top), key=order.index)
            drawn = [s for t, s in points[robot] if t <= day][-1]
            assert drawn == expected_state, (robot, day, secs)
            repeats += expected_state == expected_before
            expected_before = expected_state
    assert len(rows) == len(schedules) * (END - START).days - repeats


def test_the_factory_dashboard_names_the_plan_its_availability_uses(loaded: Loaded) -> None:
    sql = _panel("robodensity-factory", "Planned time")["targets"][0]["rawSql"]
    _cols, rows = run(loaded, sql, {"factory": loaded.province.factories[0].id})
    assert len(rows) == 1 and rows[0][0] == "planned: 24/7"  # the simulated factories have no calendar
    assert rows[0][1] == pytest.approx(rows[0][2]) and rows[0][1] > 0


def test_fleet_health_counts_agents_backlog_dead_letters_and_unregistered_robots(loaded: Loaded) -> None:
    uid = "robodensity-fleet"
    n_agents = len(loaded.province.factories)
    _cols, rows = run(loaded, _panel(uid, "Agents online")["targets"][0]["rawSql"], {})
    assert rows == [(1, n_agents)]
    assert _value(loaded, uid, "Backlog behind gaps", {}) == 10
    assert _value(loaded, uid, "Dead letters in range", {}) == 3
    assert _value(loaded, uid, "Unregistered robots", {}) == 1
    assert _value(loaded, uid, "Oldest acknowledgement", {}) == pytest.approx(7200, abs=120)
    _cols, rows = run(loaded, _panel(uid, "Dead letters by reason and field")["targets"][0]["rawSql"], {})
    assert [(r[0], r[2]) for r in rows] == [("schema", 2), ("unknown_robot", 1)]
    _cols, rows = run(loaded, _panel(uid, "Robots seen in telemetry")["targets"][0]["rawSql"], {})
    assert [(r[0], r[1], r[3]) for r in rows] == [("ACME", "U-1", loaded.province.factories[0].id)]
    assert _value(loaded, uid, "Robots with a corrected clock", {}) >= 1
    _cols, rows = run(loaded, _panel(uid, "Robot clocks corrected")["targets"][0]["rawSql"], {})
    assert {r[4] for r in rows} == {3600.0} and sum(r[5] for r in rows) == 5
    _cols, rows = run(loaded, _panel(uid, "Agent clocks against")["targets"][0]["rawSql"], {})
    assert [r[2] for r in rows] == [-1.5]


# ----------------------------------------------------------------------------- the JSON models


def test_dashboards_round_trip_through_the_sdk_models() -> None:
    from grafana_foundation_sdk.models.dashboard import Dashboard

    from robodensity.dashboards.build import to_json

    for uid, model in build_all().items():
        again = to_json(Dashboard.from_json(json.loads(json.dumps(model))))
        assert again == model, uid


def test_uids_titles_and_panel_ids_are_unique_and_stable() -> None:
    models = build_all()
    titles = [m["title"] for m in models.values()]
    assert len(set(titles)) == len(titles)
    assert set(models) == {
        "robodensity-national",
        "robodensity-province",
        "robodensity-drilldown",
        "robodensity-factory",
        "robodensity-fleet",
    }
    assert build_all() == models  # deterministic
    for uid, model in models.items():
        assert len(uid) <= 40
        ids = [p["id"] for p in model["panels"]]
        assert len(set(ids)) == len(ids), uid
        panel_titles = [p["title"] for p in panels_of(model)]
        assert len(set(panel_titles)) == len(panel_titles), uid
        for panel in panels_of(model):
            assert panel["datasource"] == {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID}
            for target in panel["targets"]:
                sql = target["rawSql"]
                # Newer Grafana strips SQL comments before running; none are used, so none can break.
                assert "--" not in sql and "/*" not in sql, panel["title"]
                assert "robodensity." not in sql, "panel SQL must use unqualified names (search_path)"
    audiences = {folder_of(uid).key for uid in models}
    assert audiences == set(FOLDERS)


def test_write_dashboards_writes_json_per_folder_and_provisioning(tmp_path: Path) -> None:
    paths = write_dashboards(tmp_path)
    models = build_all()
    for uid, model in models.items():
        path = tmp_path / folder_of(uid).key / f"{uid}.json"
        assert path in paths and json.loads(path.read_text(encoding="utf-8")) == model
    assert (tmp_path / "provisioning/datasources/robodensity.yaml").read_text() == datasource_yaml()


def test_deploy_provisioning_files_match_the_generated_ones() -> None:
    yaml = pytest.importorskip("yaml")
    prov = ROOT / "deploy/grafana/provisioning"
    assert (prov / "datasources/robodensity.yaml").read_text(encoding="utf-8") == datasource_yaml()
    assert (prov / "dashboards/robodensity.yaml").read_text(encoding="utf-8") == dashboards_yaml()
    ds = yaml.safe_load(datasource_yaml())["datasources"][0]
    assert ds["uid"] == DATASOURCE_UID and ds["type"] == DATASOURCE_TYPE and ds["jsonData"]["timescaledb"] is False
    providers = yaml.safe_load(dashboards_yaml())["providers"]
    assert {p["folderUid"] for p in providers} == {f.uid for f in FOLDERS.values()}


def test_compose_file_is_valid_yaml_with_the_services() -> None:
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((ROOT / "deploy/compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert {"timescaledb", "mosquitto", "collector", "grafana"} <= set(services)
    assert services["timescaledb"]["image"].startswith("timescale/timescaledb")
    grafana = services["grafana"]
    assert any("provisioning" in str(v) for v in grafana["volumes"])
    env = grafana["environment"]
    for name in (
        "ROBODENSITY_PG_HOST",
        "ROBODENSITY_PG_PORT",
        "ROBODENSITY_PG_DATABASE",
        "ROBODENSITY_PG_SSLMODE",
        "ROBODENSITY_READER_USER",
        "ROBODENSITY_READER_PASSWORD",
    ):
        assert name in env, name


# ----------------------------------------------------------------------------- macros

T0 = datetime.fromisoformat("2018-04-12T18:00:00+00:00")
T1 = T0 + timedelta(minutes=5)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        # Cases from Grafana's pkg/tsdb/grafana-postgresql-datasource/macros_test.go
        ("select $__time(time_column)", 'select time_column AS "time"'),
        (
            "WHERE $__timeFilter(time_column)",
            "WHERE time_column BETWEEN '2018-04-12T18:00:00Z' AND '2018-04-12T18:05:00Z'",
        ),
        ("select $__timeFrom()", "select '2018-04-12T18:00:00Z'"),
        ("select $__timeTo()", "select '2018-04-12T18:05:00Z'"),
        (
            "SELECT $__timeGroup(time_column,'5m'), value",
            'SELECT floor(extract(epoch from time_column)/300)*300 AS "time", value',
        ),
        (
            "SELECT $__timeGroup(time_column,'5m') as time, value",
            "SELECT floor(extract(epoch from time_column)/300)*300 as time, value",
        ),
        (
            "SELECT $__timeGroupAlias(time_column,'5m')",
            'SELECT floor(extract(epoch from time_column)/300)*300 AS "time"',
        ),
        ("$__timeGroup(time_column , '5m')", "floor(extract(epoch from time_column)/300)*300"),
        ("select $__unixEpochFilter(time)", "select time >= 1523556000 AND time <= 1523556300"),
        ("select $__unixEpochNanoFrom()", "select 1523556000000000000"),
        (
            "SELECT $__unixEpochGroupAlias(time_column+time_adjustment,'5m')",
            'SELECT floor((time_column+time_adjustment)/300)*300 AS "time"',
        ),
        ("select $__unixEpochFrom(), $__unixEpochTo()", "select 1523556000, 1523556300"),
    ],
)
def test_macros_expand_as_grafana_does(sql: str, expected: str) -> None:
    assert macros.expand(sql, time_from=T0, time_to=T1) == expected


def test_fractional_seconds_format_as_go_rfc3339nano() -> None:
    t = datetime.fromisoformat("1960-02-01T07:00:00.500000+00:00")
    assert macros.rfc3339nano(t) == "1960-02-01T07:00:00.5Z"


def test_template_variables_are_quoted_as_the_sql_data_source_quotes_them() -> None:
    single = {"region": macros.Variable("32'01")}
    multi = {"region": macros.Variable(["320100", "320200"], multi=True)}
    assert macros.expand("x = '$region'", single, time_from=T0, time_to=T1) == "x = '32''01'"
    assert macros.expand("x = '${region}'", single, time_from=T0, time_to=T1) == "x = '32''01'"
    assert macros.expand("x IN ($region)", multi, time_from=T0, time_to=T1) == "x IN ('320100','320200')"
    assert macros.expand("x IN ('${region:csv}')", multi, time_from=T0, time_to=T1) == "x IN ('320100,320200')"
    assert macros.expand("x IN (${region:sqlstring})", multi, time_from=T0, time_to=T1) == ("x IN ('320100','320200')")
    assert macros.expand("x IN (${region:singlequote})", multi, time_from=T0, time_to=T1) == (
        "x IN ('320100','320200')"
    )
    assert macros.expand("[[region]] $__from", single, time_from=T0, time_to=T1) == "32''01 1523556000000"


# ----------------------------------------------------------------------------- API provisioning


class _Missing(Exception):
    pass


class FakeGrafana:
    """The slice of grafana_client.GrafanaApi that provision() uses, over dicts."""

    def __init__(self) -> None:
        from grafana_client.client import GrafanaClientError

        self.err = GrafanaClientError
        self.folders: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}
        self.datasources: dict[str, dict[str, Any]] = {}
        self.writes = 0
        self.folder, self.dashboard, self.datasource = self, self, self

    def _404(self) -> Exception:
        return self.err(404, None, "Not found")

    def get_folder(self, uid: str) -> dict[str, Any]:
        if uid not in self.folders:
            raise self._404()
        return self.folders[uid]

    def create_folder(self, title: str, uid: str) -> None:
        self.writes += 1
        self.folders[uid] = {"uid": uid, "title": title}

    def update_folder(self, uid: str, title: str, overwrite: bool) -> None:
        self.writes += 1
        self.folders[uid]["title"] = title

    def get_dashboard(self, uid: str) -> dict[str, Any]:
        if uid not in self.dashboards:
            raise self._404()
        return self.dashboards[uid]

    def update_dashboard(self, body: dict[str, Any]) -> None:
        self.writes += 1
        d = json.loads(json.dumps(body["dashboard"]))
        old = self.dashboards.get(d["uid"], {}).get("dashboard", {})
        d["id"], d["version"] = 7, old.get("version", 0) + 1
        self.dashboards[d["uid"]] = {"dashboard": d, "meta": {"folderUid": body["folderUid"]}}

    def get_datasource_by_uid(self, uid: str) -> dict[str, Any]:
        if uid not in self.datasources:
            raise self._404()
        return self.datasources[uid]

    def create_datasource(self, ds: dict[str, Any]) -> None:
        self.writes += 1
        self.datasources[ds["uid"]] = {k: v for k, v in ds.items() if k != "secureJsonData"} | {"id": 3}

    def update_datasource_by_uid(self, uid: str, ds: dict[str, Any]) -> None:
        self.create_datasource(ds)


def test_provisioning_through_the_api_twice_changes_nothing_the_second_time() -> None:
    api = FakeGrafana()
    reader = "postgresql://robodensity_reader:s3cret@db:5432/robodensity?sslmode=disable"
    first = provision(api, build_all(), folder_of, reader)
    assert len(first.created) == len(FOLDERS) + 1 + len(build_all()) and not first.updated
    writes = api.writes
    second = provision(api, build_all(), folder_of, reader)
    assert not second.changed and api.writes == writes
    api.dashboards["robodensity-fleet"]["dashboard"]["title"] = "edited in the UI"
    third = provision(api, build_all(), folder_of, reader)
    assert third.updated == ["dashboard robodensity-fleet"]
