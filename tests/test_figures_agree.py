"""One owner per figure: every figure users see equals the metrics core's, exactly.

A simulated province is loaded, then given the cases where rules used to differ: a robot
whose telemetry starts mid-month, a silent robot, a robot moved to another factory, a robot
with no commissioning date, and one factory on a shift calendar (two shifts five days a week,
a holiday, maintenance off the 15-minute grid), whose utilisation divides by planned time
while the others are planned 24/7. The metrics job computes January and February in two runs, a
few robots at a time. The
oracle runs the metrics core once over both months, directly on the stored events, and sums
its blocks in numpy; every dashboard panel, the bulletin and the reports must agree with it
to float rounding (1e-9 relative).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from unittest import mock

import numpy as np
import pytest

from robodensity.app import metrics_job
from robodensity.app.metrics_job import LOCAL_TZ
from robodensity.app.report import density_report, subsidy_evidence
from robodensity.dashboards.bulletin import bulletin_data
from robodensity.metrics.blocks import QUARTER_HOUR_S, Blocks, robot_blocks
from robodensity.metrics.density import robot_density
from robodensity.metrics.shifts import Calendar, Shift, planned_fraction
from robodensity.metrics.states import EXECUTING, OFFLINE, state_codes
from robodensity.simulators.load import load_province
from robodensity.simulators.province import Province, ProvinceSpec, generate
from robodensity.storage.db import connect, drop_schema, migrate
from robodensity.storage.shifts import LABEL_CALENDAR, plan_label
from tests import test_dashboards as td

START = datetime(2026, 1, 1, tzinfo=LOCAL_TZ)
FEB = datetime(2026, 2, 1, tzinfo=LOCAL_TZ)
END = datetime(2026, 3, 1, tzinfo=LOCAL_TZ)
MOVED_ON = date(2026, 2, 10)
LATE_FROM = datetime(2026, 1, 20, 9, 30, tzinfo=LOCAL_TZ)
SHORT = (datetime(2026, 1, 10, 8, 0, tzinfo=LOCAL_TZ), datetime(2026, 1, 12, 17, 45, tzinfo=LOCAL_TZ))
REL = 1e-9
US = 1_000_000
WEEK = frozenset(range(1, 6))
CALENDAR = Calendar(
    ((date(2000, 1, 1), (Shift(WEEK, 6 * 60, 14 * 60), Shift(WEEK, 14 * 60, 22 * 60))),),
    holidays=frozenset({date(2026, 1, 26)}),
    maintenance=((datetime(2026, 2, 11, 10, 10), 1.5),),  # off the grid: a bucket partly planned
)
"""The shift calendar of one factory (that of the subsidised robots); the others are 24/7."""


def _us(t: datetime) -> int:
    return (t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _at(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


@dataclass
class Oracle:
    """The metrics core over [START, END), and the registry, for the figures' sums."""

    robot_id: list[int]
    edges: np.ndarray  # 15-minute edges [µs]
    day: list[date]  # local day of each bucket
    blocks: Blocks
    factory: np.ndarray  # (robots, buckets) factory_id or None
    robots: dict[int, dict[str, Any]]  # registry rows
    assignments: dict[int, list[tuple[date, str]]]
    calendar_factories: set[str]  # factories on a shift calendar; the others are planned 24/7

    def mask(self, factories: set[str] | None = None, lo: datetime = START, hi: datetime = END) -> np.ndarray:
        inside = (self.edges[:-1] >= _us(lo)) & (self.edges[:-1] < _us(hi))
        m = np.broadcast_to(inside, self.factory.shape)
        if factories is not None:
            m = m & np.isin(self.factory, list(factories))
        return m & (self.blocks.covered_s > 0)  # the rows the job stores

    def sums(self, m: np.ndarray) -> dict[str, float]:
        b = self.blocks
        return {
            "executing_s": float(b.seconds[..., EXECUTING][m].sum()),
            "covered_s": float(b.covered_s[m].sum()),
            "planned_s": float(b.planned_s[m].sum()),
            "planned_executing_s": float(b.planned_executing_s[m].sum()),
            "fault_s": float(b.seconds[..., 2][m].sum()),
            "failures": int(b.failures[m].sum()),
            "repairs": int(b.repairs[m].sum()),
            "repair_s": float(b.repair_s[m].sum()),
            "robots": int(m.any(axis=1).sum()),
        }

    def factory_on(self, robot_id: int, day: date) -> str | None:
        found = [f for d, f in self.assignments.get(robot_id, []) if d <= day]
        return found[-1] if found else None

    def in_operation(self, day: date) -> dict[int, str | None]:
        """The rule of robots_in_operation, restated: registered, commissioned (NULL counts) by ``day``."""
        return {
            rid: self.factory_on(rid, day)
            for rid, r in self.robots.items()
            if r["registered"]
            and (r["commissioned"] is None or r["commissioned"] <= day)
            and (r["decommissioned"] is None or r["decommissioned"] > day)
        }


@dataclass
class Loaded:
    dash: td.Loaded
    province: Province
    oracle: Oracle


def _perturb(conn: Any, province: Province) -> None:
    robots = province.robots
    moved, late, silent, undated = robots[0], robots[1], robots[2], robots[3]
    target = next(f.id for f in province.factories if f.id != moved.factory)

    def rid(r: Any) -> int:
        return int(conn.execute("SELECT robot_id FROM robots WHERE serial = %s", (r.serial,)).fetchone()[0])

    conn.execute(
        "INSERT INTO assignments (robot_id, factory_id, valid_from) VALUES (%s, %s, %s)", (rid(moved), target, MOVED_ON)
    )
    conn.execute("DELETE FROM events WHERE robot_id = %s AND ts < %s", (rid(late), LATE_FROM))
    conn.execute("DELETE FROM events WHERE robot_id = %s", (rid(silent),))
    conn.execute("UPDATE robots SET commissioned = NULL WHERE robot_id = %s", (rid(undated),))
    for r in robots[4:9]:
        conn.execute("UPDATE robots SET subsidy_programme = 'P1' WHERE robot_id = %s", (rid(r),))
    cur = conn.cursor()
    cur.executemany(
        "INSERT INTO factory_shifts (factory_id, valid_from, days, start_min, end_min) "
        "VALUES (%s, %s, '12345', %s, %s)",
        [(robots[4].factory, v, s.start_min, s.end_min) for v, shifts in CALENDAR.versions for s in shifts],
    )
    holidays = [(d,) for d in CALENDAR.holidays]
    cur.executemany("INSERT INTO factory_holidays (factory_id, day) VALUES ('*', %s)", holidays)
    cur.executemany(
        "INSERT INTO factory_maintenance (factory_id, start_at, hours) VALUES (%s, %s, %s)",
        [(robots[4].factory, t, h) for t, h in CALENDAR.maintenance],
    )


def _oracle(conn: Any) -> Oracle:
    rows = conn.execute(
        "SELECT robot_id, ts, state FROM events WHERE type = 'state' ORDER BY robot_id, ts, seq"
    ).fetchall()
    registry = conn.execute("SELECT robot_id, registered, commissioned, decommissioned FROM robots").fetchall()
    ids = sorted({r[0] for r in registry} | {r[0] for r in rows})
    index = {rid: i for i, rid in enumerate(ids)}
    edges = np.arange(_us(START), _us(END) + 1, QUARTER_HOUR_S * US, dtype=np.int64)
    blocks = robot_blocks(
        np.array([index[r[0]] for r in rows], dtype=np.int64),
        np.array([_us(r[1]) for r in rows], dtype=np.int64),
        state_codes([r[2] for r in rows]),
        len(ids),
        edges,
    )
    days = [datetime.fromtimestamp(e / US, LOCAL_TZ).date() for e in edges[:-1]]
    assignments: dict[int, list[tuple[date, str]]] = {}
    for robot_id, valid_from, factory_id in conn.execute(
        "SELECT robot_id, valid_from, factory_id FROM assignments ORDER BY robot_id, valid_from"
    ):
        assignments.setdefault(robot_id, []).append((valid_from, factory_id))
    oracle = Oracle(
        ids,
        edges,
        days,
        blocks,
        np.empty((len(ids), len(days)), dtype=object),
        {r[0]: {"registered": r[1], "commissioned": r[2], "decommissioned": r[3]} for r in registry},
        assignments,
        {r[0] for r in conn.execute("SELECT factory_id FROM factory_shifts")},
    )
    by_day = {d: [oracle.factory_on(rid, d) for rid in ids] for d in sorted(set(days))}
    for k, d in enumerate(days):
        oracle.factory[:, k] = by_day[d]
    # The plan, restated: the calendar factory's planned share of each bucket, 1 elsewhere (24/7).
    [calendar_factory] = oracle.calendar_factories
    share = np.where(oracle.factory == calendar_factory, planned_fraction(CALENDAR, edges, LOCAL_TZ), 1.0)
    oracle.blocks = dataclasses.replace(
        blocks, planned_s=blocks.covered_s * share, planned_executing_s=blocks.seconds[..., EXECUTING] * share
    )
    return oracle


@pytest.fixture(scope="module")
def loaded(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    migrate(pg_url, schema)
    province = generate(ProvinceSpec(robots=30), 7)
    try:
        with connect(pg_url, schema) as conn:
            schedules = load_province(conn, province, tmp_path_factory.mktemp("registry"), 7, START, END)
            _perturb(conn, province)
            conn.commit()
            # A few robots per chunk, so the job's chunking is part of what must agree.
            with mock.patch.object(metrics_job, "CELLS_PER_CHUNK", 4 * 31 * 96):
                metrics_job.compute(conn, START, FEB)
                metrics_job.compute(conn, FEB, END)
            oracle = _oracle(conn)
            conn.commit()
        yield Loaded(td.Loaded(pg_url, schema, province, schedules), province, oracle)
    finally:
        drop_schema(pg_url, schema)


def close(got: Any, want: float | None) -> bool:
    if want is None or (isinstance(want, float) and np.isnan(want)):
        return got is None
    return got is not None and got == pytest.approx(want, rel=REL, abs=1e-12)


def _div(a: float, b: float) -> float | None:
    return a / b if b else None


def _panel_rows(loaded: Loaded, uid: str, title: str, variables: dict[str, str], **kw: Any) -> list[dict[str, Any]]:
    cols, rows = td.run(loaded.dash, td._panel(uid, title)["targets"][0]["rawSql"], variables, **kw)
    names = [c[0] for c in cols]
    return [dict(zip(names, r, strict=True)) for r in rows]


# ----------------------------------------------------------------------------- factory dashboard


@pytest.mark.parametrize("span", ["months", "short"])
def test_factory_summary_and_fault_table_equal_the_core(loaded: Loaded, span: str) -> None:
    lo, hi = (START, END) if span == "months" else SHORT
    o, uid = loaded.oracle, "robodensity-factory"
    checked = 0
    for f in loaded.province.factories:
        v = {"factory": f.id}
        s = o.sums(o.mask({f.id}, lo, hi))

        def value(title: str, v: dict[str, str] = v) -> Any:
            return td._value(loaded.dash, uid, title, v, time_from=lo, time_to=hi)

        if f.id in o.calendar_factories and span == "months":  # the plan shrinks both sides of the ratio
            assert s["planned_s"] < 0.6 * s["covered_s"] and s["planned_executing_s"] < s["executing_s"]
        # utilisation on planned time = ISO 22400-2 availability: one panel, one expression
        assert close(value("Utilisation 利用率 = availability"), _div(s["planned_executing_s"], s["planned_s"])), f.id
        assert value("Failures") == s["failures"], f.id
        mtbf = _div(s["executing_s"] / 3600, s["failures"] + s["robots"])
        assert close(value("MTBF"), mtbf), f.id
        assert close(value("MTTR"), _div(s["repair_s"] / 3600, s["repairs"])), f.id
        rows = _panel_rows(loaded, uid, "Faults, MTBF", v, time_from=lo, time_to=hi)
        m = o.mask({f.id}, lo, hi)
        per_robot = {rid: o.sums(_only(o, m, rid)) for rid in o.robot_id if _only(o, m, rid).any()}
        assert len(rows) == len(per_robot), f.id
        labels = _labels(loaded)
        for row in rows:
            r = per_robot[labels[row["robot"]]]
            assert row["failures"] == r["failures"]
            assert close(row["fault_h"], r["fault_s"] / 3600)
            assert close(row["mtbf_h"], r["executing_s"] / 3600 / (r["failures"] + 1))
            assert close(row["mttr_h"], _div(r["repair_s"] / 3600, r["repairs"]))
            assert close(row["availability"], _div(r["planned_executing_s"], r["planned_s"]))
            i = o.robot_id.index(labels[row["robot"]])  # the quarter hour of its last failure in the range
            faulted = np.flatnonzero(_only(o, m, labels[row["robot"]])[i] & (o.blocks.failures[i] > 0))
            last = _at(int(o.edges[faulted[-1]])) if len(faulted) else None
            assert row["last_fault"] == last, row
        checked += s["failures"] + s["repairs"]
    assert checked > 0  # the data has faults to agree on


def _labels(loaded: Loaded) -> dict[str, int]:
    with connect(loaded.dash.url, loaded.dash.schema) as conn:
        return {f"{m} {s}": rid for rid, m, s in conn.execute("SELECT robot_id, manufacturer, serial FROM robots")}


def _day_sums(o: Oracle, m: np.ndarray) -> dict[date, dict[str, float]]:
    """Sums per local day (the buckets of a day are consecutive), for the days with rows."""
    out: dict[date, dict[str, float]] = {}
    first = [k for k in range(len(o.day)) if k == 0 or o.day[k] != o.day[k - 1]]
    for k0, k1 in zip(first, [*first[1:], len(o.day)], strict=True):
        dm = np.zeros_like(m)
        dm[:, k0:k1] = m[:, k0:k1]
        if dm.any():
            out[o.day[k0]] = o.sums(dm)
    return out


def _only(o: Oracle, m: np.ndarray, robot_id: int) -> np.ndarray:
    """``m`` for one robot."""
    out = np.zeros_like(m)
    i = o.robot_id.index(robot_id)
    out[i] = m[i]
    return out


def test_factory_daily_panels_equal_the_core(loaded: Loaded) -> None:
    o, uid = loaded.oracle, "robodensity-factory"
    labels = _labels(loaded)
    moved = loaded.province.robots[0]
    for f in loaded.province.factories:
        v = {"factory": f.id}
        hours = _panel_rows(loaded, uid, "Hours in state per day", v)
        want = _day_sums(o, o.mask({f.id}))
        assert [r["time"].astimezone(LOCAL_TZ).date() for r in hours] == list(want), f.id
        for r in hours:
            assert close(r["executing_h"], want[r["time"].astimezone(LOCAL_TZ).date()]["executing_s"] / 3600)
        heat = _panel_rows(loaded, uid, "Utilisation by robot and day", v)
        per_robot = {
            label: _day_sums(o, _only(o, o.mask({f.id}), labels[label])) for label in {r["metric"] for r in heat}
        }
        assert len(heat) == sum(len(d) for d in per_robot.values()), f.id
        for r in heat:
            s = per_robot[r["metric"]][r["time"].astimezone(LOCAL_TZ).date()]
            assert close(r["utilisation"], _div(s["planned_executing_s"], s["planned_s"]))
        evidence = _panel_rows(loaded, uid, "Subsidy evidence", v)
        for r in evidence:
            m = _only(o, o.mask({f.id}), labels[f"{r['manufacturer']} {r['serial']}"])
            s = o.sums(m)
            assert close(r["executing_h"], s["executing_s"] / 3600 if m.any() else None)
            assert close(r["utilisation"], _div(s["planned_executing_s"], s["planned_s"]))
    # The moved robot's days are split between its two factories.
    assert {o.factory_on(labels[f"{moved.manufacturer} {moved.serial}"], d) for d in (FEB.date(), MOVED_ON)} == {
        moved.factory,
        next(f.id for f in loaded.province.factories if f.id != moved.factory),
    }


# ----------------------------------------------------------------------------- densities


def _regions(loaded: Loaded) -> dict[str, set[str]]:
    """Every region code with the factories under it."""
    out: dict[str, set[str]] = {loaded.province.code: {f.id for f in loaded.province.factories}}
    for f in loaded.province.factories:
        out.setdefault(f.region, set()).add(f.id)
    return out


def _density(loaded: Loaded, lo: datetime, hi: datetime) -> dict[str, dict[str, Any]]:
    """Per region, from the core's blocks and the registry: what the density rows must hold."""
    o = loaded.oracle
    last = (hi - timedelta(microseconds=1)).astimezone(LOCAL_TZ).date()
    fleet = o.in_operation(last)
    employees = {f.id: f.employees for f in loaded.province.factories}
    period = o.mask(None, lo, hi)
    verify = o.mask(None, min(lo, hi - timedelta(days=30)), hi)
    out = {}
    for code, facs in _regions(loaded).items():
        mine = [rid for rid, f in fleet.items() if f in facs]
        idx = [o.robot_id.index(rid) for rid in mine]
        covered = o.blocks.covered_s
        reporting = sum(
            (covered[i][period[i]].sum() - o.blocks.seconds[i, :, OFFLINE][period[i]].sum()) > 0 for i in idx
        )
        verified = sum(o.blocks.seconds[i, :, EXECUTING][verify[i]].sum() > 0 for i in idx)
        emp = sum(employees[f] for f in facs)
        s = o.sums(o.mask(facs, lo, hi))
        out[code] = {
            "robot_count": len(mine),
            "robot_density": float(robot_density(len(mine), emp)),
            "verified_density": float(robot_density(verified, emp)),
            "coverage": reporting / len(mine),
            "utilisation": _div(s["planned_executing_s"], s["planned_s"]),
            "plan": plan_label(len(facs & o.calendar_factories), len(facs)),
        }
    return out


KEYS = ("robot_count", "robot_density", "verified_density", "coverage", "utilisation")


@pytest.mark.parametrize(("lo", "hi"), [(START, FEB), (FEB, END)])
def test_density_rows_reports_and_bulletin_equal_the_core(loaded: Loaded, lo: datetime, hi: datetime) -> None:
    want = _density(loaded, lo, hi)
    assert want["320000"]["coverage"] < 1  # the silent robot
    with connect(loaded.dash.url, loaded.dash.schema) as conn:
        rows = conn.execute(
            "SELECT region_code, " + ", ".join(KEYS) + " FROM v_density "
            "WHERE industry_code = '*' AND period_start = %s AND period_end = %s",
            (lo, hi),
        ).fetchall()
        assert {r[0] for r in rows} == set(want)
        for r in rows:
            for key, got in zip(KEYS, r[1:], strict=True):
                assert close(got, want[r[0]][key]), (r[0], key)
        report = density_report(conn, "320000", at=hi)
        for r in report:
            assert all(close(r[k], want[r["region_code"]][k]) for k in KEYS), r["region_code"]
            assert r["plan"] == want[r["region_code"]]["plan"], r["region_code"]
        bulletin = bulletin_data(conn, "320000", f"{lo:%Y-%m}")
        for r in [bulletin.region, *bulletin.children]:
            assert all(close(r[k], want[r["region_code"]][k]) for k in KEYS), r["region_code"]
            assert r["plan"] == want[r["region_code"]]["plan"], r["region_code"]
    assert want["320000"]["plan"].startswith("planned: shift calendars (1 of ")
    assert sorted(w["plan"] for w in want.values()).count("planned: 24/7") >= 1  # a city without the calendar
    # The province dashboard's latest period in the range is this one.
    for title, key in (("Utilisation 利用率", "utilisation"), ("Coverage 数据覆盖率", "coverage")):
        got = td._value(loaded.dash, "robodensity-province", title, {"region": "320000"}, time_from=lo, time_to=hi)
        assert close(got, want["320000"][key])
    for row in _panel_rows(loaded, "robodensity-province", "Cities", {"region": "320000"}, time_from=lo, time_to=hi):
        assert all(close(row[k], want[row["code"]][k]) for k in KEYS), row["code"]


def test_drilldown_factories_and_daily_utilisation_equal_the_core(loaded: Loaded) -> None:
    o, uid = loaded.oracle, "robodensity-drilldown"
    period = f"{td._z(FEB)}/{td._z(END)}"
    today = o.in_operation(datetime.now(LOCAL_TZ).date())
    rows = _panel_rows(loaded, uid, "Factories", {"region": "320000", "industry": "*", "period": period})
    assert len(rows) == len(loaded.province.factories)
    for r in rows:
        s = o.sums(o.mask({r["factory_id"]}, FEB, END))
        m = o.mask({r["factory_id"]}, FEB, END)
        non_offline = o.blocks.covered_s - o.blocks.seconds[..., OFFLINE]
        assert close(r["utilisation"], _div(s["planned_executing_s"], s["planned_s"])), r["factory_id"]
        calendar = r["factory_id"] in o.calendar_factories
        assert r["plan"] == ("planned: shift calendar" if calendar else "planned: 24/7"), r
        assert (r["reporting_robots"] or 0) == int(((non_offline > 0) & m).any(axis=1).sum()), r["factory_id"]
        count = sum(f == r["factory_id"] for f in today.values())
        assert r["robot_count"] == count
        assert close(r["robot_density"], float(robot_density(count, r["employee_count"])))
    for code, facs in _regions(loaded).items():
        daily = _panel_rows(loaded, uid, "Daily utilisation", {"region": code, "industry": "*", "period": period})
        want = _day_sums(o, o.mask(facs))
        assert [r["time"].astimezone(LOCAL_TZ).date() for r in daily] == list(want), code
        for r in daily:
            s = want[r["time"].astimezone(LOCAL_TZ).date()]
            assert close(r["utilisation"], _div(s["planned_executing_s"], s["planned_s"])), code


def test_subsidy_evidence_report_equals_the_core(loaded: Loaded) -> None:
    o = loaded.oracle
    labels = _labels(loaded)
    programme = {labels[f"{r.manufacturer} {r.serial}"] for r in loaded.province.robots[4:9]}
    factory = loaded.province.robots[4].factory
    since, until = date(2026, 1, 5), date(2026, 2, 20)
    with connect(loaded.dash.url, loaded.dash.schema) as conn:
        got = subsidy_evidence(conn, factory, since, until)
    members = {rid for rid in programme if any(f == factory for _d, f in o.assignments[rid])}
    m = o.mask(
        None,
        datetime.combine(since, datetime.min.time(), LOCAL_TZ),
        datetime.combine(until, datetime.min.time(), LOCAL_TZ),
    )
    m[[rid not in members for rid in o.robot_id]] = False
    s = o.sums(m)
    assert got["programmes"] == [
        {
            "programme": "P1",
            "robot_count": len(members),
            "utilisation": pytest.approx(s["planned_executing_s"] / s["planned_s"], rel=REL),
        }
    ]
    assert factory in o.calendar_factories and got["plan"] == LABEL_CALENDAR
    after = o.in_operation(until)
    assert got["after"]["robot_count"] == sum(f == factory for f in after.values())
