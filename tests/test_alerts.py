"""Alert rules: provisioned with the dashboards, and each rule's query fires and clears on simulated data.

Every rule's SQL is expanded as Grafana expands it for an evaluation at a chosen moment
(the rule's relative time range ending then) and run as the reader role; the rule's own
threshold (``AlertRule.fires``) decides which instances fire. The expected instances are
computed independently from the simulator's schedules or the rows the test wrote.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from robodensity.app.metrics_job import LOCAL_TZ
from robodensity.core.wire import State
from robodensity.dashboards.alerts import (
    AGENT_SILENT,
    COVERAGE_FLOOR,
    FACTORY_COVERAGE,
    OUTBOX_FILLING,
    ROBOT_FAULTING,
    RULES,
    TARGET_TRAJECTORY,
    AlertRule,
    alert_rules_yaml,
)
from robodensity.dashboards.build import write_dashboards
from robodensity.simulators.load import load_province
from robodensity.simulators.province import ProvinceSpec, generate
from robodensity.storage.db import connect, drop_schema, migrate
from tests.test_dashboards import NUMBER_TYPES, STRING_TYPES, Loaded, run

ROOT = Path(__file__).resolve().parent.parent
START = datetime(2026, 1, 5, tzinfo=LOCAL_TZ)
DAYS = 4
END = START + timedelta(days=DAYS)
SEED = 23


@pytest.fixture(scope="module")
def loaded(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    migrate(pg_url, schema)
    province = generate(ProvinceSpec(robots=30), SEED)
    try:
        with connect(pg_url, schema) as conn:
            schedules = load_province(conn, province, tmp_path_factory.mktemp("registry"), SEED, START, END)
            conn.commit()
        yield Loaded(pg_url, schema, province, schedules)
    finally:
        drop_schema(pg_url, schema)


def evaluate(loaded: Loaded, rule: AlertRule, at: datetime) -> dict[tuple[str, ...], float]:
    """Instances (their label values) firing when Grafana evaluates ``rule`` at ``at``."""
    cols, rows = run(loaded, rule.sql, {}, time_from=at - timedelta(seconds=rule.window_s), time_to=at)
    names = [name for name, _ in cols]
    types = dict(cols)
    assert types[rule.value] in NUMBER_TYPES, cols
    assert all(t in STRING_TYPES for name, t in cols if name != rule.value), cols
    value = names.index(rule.value)
    out: dict[tuple[str, ...], float] = {}
    for row in rows:
        labels = tuple(str(v) for i, v in enumerate(row) if i != value)
        assert labels not in out, f"{rule.uid}: two rows with labels {labels}"
        if rule.fires(row[value]):
            out[labels] = float(row[value])
    return out


def execute(loaded: Loaded, sql: str, *params: Any) -> None:
    with connect(loaded.url, loaded.schema) as conn:
        conn.execute(sql, params)
        conn.commit()


def test_alert_rules_are_provisioned_with_the_dashboards(tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml")
    paths = write_dashboards(tmp_path)
    path = tmp_path / "provisioning/alerting/robodensity.yaml"
    assert path in paths and path.read_text(encoding="utf-8") == alert_rules_yaml()
    deployed = ROOT / "deploy/grafana/provisioning/alerting/robodensity.yaml"
    assert deployed.read_text(encoding="utf-8") == alert_rules_yaml(), "regenerate deploy/grafana/provisioning"
    doc = yaml.safe_load(alert_rules_yaml())
    assert doc["apiVersion"] == 1
    [group] = doc["groups"]
    rules = group["rules"]
    assert [r["uid"] for r in rules] == [r.uid for r in RULES] and len({r["uid"] for r in rules}) == len(RULES)
    assert len(RULES) == 5
    for rule in rules:
        query, threshold = rule["data"]
        assert rule["condition"] == threshold["refId"] == "C" and threshold["model"]["expression"] == "A"
        assert query["model"]["format"] == "table" and "now()" not in query["model"]["rawSql"]
        assert query["relativeTimeRange"]["from"] > 0 and rule["annotations"]["summary"]


def test_agent_silence_fires_after_the_threshold_and_clears_when_the_agent_commits(loaded: Loaded) -> None:
    t0 = END
    factories = [f.id for f in loaded.province.factories[:2]]
    for fid in factories:
        execute(
            loaded,
            "INSERT INTO agents (agent_id, factory_id, first_seen, last_seen) VALUES (%s, %s, %s, %s)",
            f"silent-{fid}",
            fid,
            t0 - timedelta(days=1),
            t0,
        )
    try:
        assert evaluate(loaded, AGENT_SILENT, t0 + timedelta(minutes=10)) == {}
        late = t0 + timedelta(hours=1)
        fired = evaluate(loaded, AGENT_SILENT, late)
        assert set(fired) == {(f"silent-{f}", f) for f in factories}
        assert fired[(f"silent-{factories[0]}", factories[0])] == pytest.approx(3600)
        execute(loaded, "UPDATE agents SET last_seen = %s WHERE agent_id = %s", late, f"silent-{factories[0]}")
        assert set(evaluate(loaded, AGENT_SILENT, late)) == {(f"silent-{factories[1]}", factories[1])}
    finally:
        execute(loaded, "DELETE FROM agents WHERE agent_id LIKE 'silent-%%'")


def test_outbox_filling_fires_on_a_large_backlog_and_clears_when_acknowledged(loaded: Loaded) -> None:
    fid = loaded.province.factories[0].id
    execute(
        loaded,
        "INSERT INTO agents (agent_id, factory_id, acked_through, committed) "
        "VALUES ('backlog-1', %s, 100, int8multirange(int8range(1, 101), int8range(200, 20001)))",
        fid,
    )
    try:
        assert evaluate(loaded, OUTBOX_FILLING, END) == {("backlog-1", fid): 19_900}
        execute(loaded, "UPDATE agents SET acked_through = 19000 WHERE agent_id = 'backlog-1'")
        assert evaluate(loaded, OUTBOX_FILLING, END) == {}
    finally:
        execute(loaded, "DELETE FROM agents WHERE agent_id = 'backlog-1'")


def _faults(loaded: Loaded, at: datetime) -> dict[str, int]:
    """Entries into FAULT per robot key in the rule's window ending ``at``, from the schedules."""
    since = at - timedelta(seconds=ROBOT_FAULTING.window_s)
    counts: dict[str, int] = {}
    for key, schedule in loaded.schedules.items():
        n = sum(1 for ts, state in schedule if since <= ts < at and State(state) == State.FAULT)
        if n:
            counts[key] = n
    return counts


def test_repeated_faults_fire_for_the_robots_the_simulation_faulted_and_clear_after_a_quiet_day(
    loaded: Loaded,
) -> None:
    factory_of = {r.key: r.factory for r in loaded.province.robots}
    hours = [START + timedelta(hours=h) for h in range(24, DAYS * 24 + 48, 6)]
    fired_somewhere = cleared_later = False
    for at in hours:
        expected = {(k, factory_of[k]): float(n) for k, n in _faults(loaded, at).items() if ROBOT_FAULTING.fires(n)}
        assert evaluate(loaded, ROBOT_FAULTING, at) == expected, at
        fired_somewhere |= bool(expected)
        cleared_later |= fired_somewhere and not expected
    assert fired_somewhere, "the simulated robots never faulted repeatedly: no firing was tested"
    assert cleared_later, "the alert never cleared after firing"


def test_factory_coverage_drop_fires_when_robots_go_silent_and_clears_when_they_return(loaded: Loaded) -> None:
    factory = max(loaded.province.factories, key=lambda f: len(loaded.province.robots_of(f.id)))
    serials = [r.serial for r in loaded.province.robots_of(factory.id)][1:]  # all but one go silent
    assert evaluate(loaded, FACTORY_COVERAGE, END) == {}, "every simulated robot reports within a day"
    silent_from = END - timedelta(days=2)
    with connect(loaded.url, loaded.schema) as conn:
        conn.execute(
            "CREATE TEMP TABLE gone AS SELECT * FROM events WHERE ts >= %s "
            "AND robot_id IN (SELECT robot_id FROM robots WHERE serial = ANY(%s))",
            (silent_from, serials),
        )
        conn.execute("DELETE FROM events e USING gone g WHERE e.agent_id = g.agent_id AND e.seq = g.seq")
        conn.commit()
        fired = evaluate(loaded, FACTORY_COVERAGE, END)
        n = len(serials) + 1
        assert fired == {(factory.id,): pytest.approx(1 / n)} and 1 / n < COVERAGE_FLOOR
        # A day after the silence began the window still holds their last events: not yet.
        assert evaluate(loaded, FACTORY_COVERAGE, silent_from + timedelta(hours=1)) == {}
        conn.execute("INSERT INTO events SELECT * FROM gone")
        conn.commit()
    assert evaluate(loaded, FACTORY_COVERAGE, END) == {}


def _month(year: int, month: int) -> datetime:
    return datetime(year, month, 1, tzinfo=LOCAL_TZ)


def test_region_behind_its_target_trajectory_fires_and_clears_when_it_catches_up(loaded: Loaded) -> None:
    city = loaded.province.regions[1]
    months = {1: 100.0, 2: 102.0, 3: 104.0, 4: 106.0, 5: 108.0, 6: 110.0}
    due = datetime(2026, 12, 31).date()
    insert = (
        "INSERT INTO density (region_code, industry_code, period_start, period_end, robot_count, employee_count, "
        "robot_density, verified_count, reporting_count) VALUES (%s, '*', %s, %s, 1, 1, %s, 1, 1)"
    )
    for m, d in months.items():
        execute(loaded, insert, city.code, _month(2026, m), _month(2026, m + 1), d)
    execute(
        loaded,
        "INSERT INTO targets (scope_region, scope_industry, metric, value, unit, due_date, source, definition) "
        "VALUES (%s, 'manufacturing', 'robot_density', 200, 'robots per 10000 employees', %s, 'test', "
        "'participating')",
        city.code,
        due,
    )

    def on_track(latest: float, t: datetime) -> float:
        t0, end = _month(2026, 2), datetime(2027, 1, 1, tzinfo=LOCAL_TZ)
        return latest / (100 + (200 - 100) * (t - t0) / (end - t0))

    try:
        at = _month(2026, 7) + timedelta(days=1)
        fired = evaluate(loaded, TARGET_TRAJECTORY, at)
        assert fired == {(city.code, city.name_en): pytest.approx(on_track(110, _month(2026, 7)))}
        # July is computed and the city has caught up: 160 is above the straight path's ~154.
        execute(loaded, insert, city.code, _month(2026, 7), _month(2026, 8), 160.0)
        assert on_track(160, _month(2026, 8)) > 1
        assert evaluate(loaded, TARGET_TRAJECTORY, _month(2026, 8) + timedelta(days=1)) == {}
    finally:
        execute(loaded, "DELETE FROM density WHERE region_code = %s", city.code)
        execute(loaded, "DELETE FROM targets WHERE scope_region = %s", city.code)
