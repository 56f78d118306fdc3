"""Density definitions as data, official statistics, robot-days and the reconciliation (issue 15).

Property tests run the density job's pure part (``density_job.definition_rows``) on random
fleets; the rest runs the real job on a simulated province in PostgreSQL.
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from robodensity.app import density_job, metrics_job
from robodensity.app.cli import app
from robodensity.app.density_job import Context, Counted, Definition, Official, definition_rows
from robodensity.app.metrics_job import LOCAL_TZ, Fleet, PeriodTotals
from robodensity.app.reconcile import reconcile
from robodensity.core.errors import RegistryError
from robodensity.dashboards.bulletin import write_bulletin
from robodensity.metrics.density import industry_in, region_ancestors
from robodensity.metrics.states import EXECUTING, N_STATES
from robodensity.metrics.stock import ifr_operational_stock
from robodensity.simulators.load import load_province
from robodensity.simulators.province import Province, ProvinceSpec, generate
from robodensity.storage.db import connect, drop_schema, migrate
from robodensity.storage.registry import import_registry
from robodensity.storage.statistics import import_statistics
from tests.test_bulletin import _poppler, chromium_available  # noqa: F401 (a fixture)

CITIES = ("320100", "320200", "320500")
INDUSTRIES = ("34", "36", "38")
ALL_DEFS = [
    Definition(f"{n}-{s}-{u}-{d}", n, s, u, d)
    for n in ("in_operation", "verified")
    for s in ("all", "key", "above_designated_size")
    for u in ("robots", "robot_days")
    for d in ("participating", "official")
]

# ----------------------------------------------------------------------------- properties (no database)


@st.composite
def fleets(draw: st.DrawFn) -> tuple[Context, dict[str, int]]:
    n_fac = draw(st.integers(1, 8))
    region = [draw(st.sampled_from(CITIES)) for _ in range(n_fac)]
    industry = [draw(st.sampled_from(INDUSTRIES)) for _ in range(n_fac)]
    employees = np.array([draw(st.integers(0, 5000)) for _ in range(n_fac)], dtype=np.int64)
    n_rob = draw(st.integers(0, 40))
    factory = np.array([draw(st.integers(-1, n_fac - 1)) for _ in range(n_rob)], dtype=np.int64)
    ids = np.arange(1, n_rob + 1, dtype=np.int64)
    domestic = np.array([draw(st.booleans()) for _ in range(n_rob)], dtype=bool)
    seconds = np.array([[draw(st.sampled_from((0.0, 60.0))) for _ in range(N_STATES)] for _ in range(n_rob)]).reshape(
        n_rob, N_STATES
    )
    fleet = Fleet(ids, factory, domestic, [f"f{i}" for i in range(n_fac)], region, industry, employees)
    totals = PeriodTotals(ids, seconds.reshape(n_rob, N_STATES), np.ones((n_fac, N_STATES)), np.ones((n_fac, 2)))
    on = factory >= 0
    ctx = Context(
        fleet=fleet,
        totals=totals,
        verified=set(ids[seconds[:, EXECUTING] > 0].tolist()),
        reporting=set(ids[seconds.sum(axis=1) > 0].tolist()),
        above_size=np.array([draw(st.booleans()) for _ in range(n_fac)], dtype=bool),
        key_lists={"320000": ["36", "38"], "320500": ["C36"]} if draw(st.booleans()) else {},
        key_flagged=["38"],
        official={},
        first_day=date(2026, 2, 1),
        last_day=date(2026, 2, 28),
        # nobody moved: every robot stood all the period's days in its factory
        robot_days=Counted(ids[on], factory[on], np.ones(int(on.sum())), domestic[on]),
    )
    return ctx, {f"f{i}": i for i in range(n_fac)}


def _official_equal_to_participating(ctx: Context, d: Definition) -> dict[tuple[str, str, str], Official]:
    """Official employment equal to the participating factories' headcount in scope: 100 % coverage."""
    rows = definition_rows(Definition(d.definition, d.numerator, d.scope, d.unit, "participating"), ctx)
    firms = "above_designated_size" if d.scope == "above_designated_size" else "all"
    out = {(r["region_code"], r["industry_code"], firms): Official(r["employee_count"], "t", "v", 2025) for r in rows}
    if d.scope == "key":  # the key-industry '*' denominator is summed from the key industries' rows
        for region, industry, _ in list(out):
            if industry == "*":
                del out[(region, industry, firms)]
        for r in rows:
            for code in density_job._key_industries(ctx, r["region_code"]):
                out.setdefault((r["region_code"], code, firms), Official(0, "t", "v", 2025))
    return out


@settings(max_examples=60, deadline=None)
@given(fleets(), st.sampled_from(ALL_DEFS))
def test_every_definitions_density_rolls_up_from_summed_counts(fleet: tuple[Context, dict[str, int]], d: Definition):
    ctx, _ = fleet
    d = Definition(d.definition, d.numerator, d.scope, d.unit, "participating")
    rows = {(r["region_code"], r["industry_code"]): r for r in definition_rows(d, ctx)}
    f = ctx.fleet
    expected_keys = set()
    for i, (home, industry) in enumerate(zip(f.region, f.industry, strict=True)):
        for region in region_ancestors(home):
            key = industry_in(industry, density_job._key_industries(ctx, region))
            if {"all": True, "key": key, "above_designated_size": bool(ctx.above_size[i])}[d.scope]:
                expected_keys |= {(region, "*"), (region, industry)}
    assert set(rows) == expected_keys
    for (region, industry), r in rows.items():
        # the factories of the row, summed from scratch: never an average of the members' densities
        members = [
            i
            for i, (home, ind) in enumerate(zip(f.region, f.industry, strict=True))
            if region in region_ancestors(home)
            and industry in ("*", ind)
            and {
                "all": True,
                "key": industry_in(ind, density_job._key_industries(ctx, region)),
                "above_designated_size": bool(ctx.above_size[i]),
            }[d.scope]
        ]
        counted = [
            rid
            for rid, fac in zip(f.robot_id.tolist(), f.robot_factory.tolist(), strict=True)
            if fac in members and (d.numerator == "in_operation" or rid in ctx.verified)
        ]
        employees = int(sum(f.employees[m] for m in members))
        assert (r["robot_count"], r["employee_count"]) == (len(counted), employees)
        assert r["verified_count"] == sum(rid in ctx.verified for rid in counted)
        assert r["robot_density"] == pytest.approx(len(counted) / employees * 1e4 if employees else None)
        assert r["employment_coverage"] == (1.0 if employees else None)


@settings(max_examples=60, deadline=None)
@given(fleets(), st.sampled_from([d for d in ALL_DEFS if d.denominator == "official"]))
def test_regional_and_participating_densities_agree_at_full_coverage(
    fleet: tuple[Context, dict[str, int]], d: Definition
) -> None:
    ctx, _ = fleet
    ctx.official = _official_equal_to_participating(ctx, d)
    participating = {
        (r["region_code"], r["industry_code"]): r
        for r in definition_rows(Definition(d.definition, d.numerator, d.scope, d.unit, "participating"), ctx)
    }
    for r in definition_rows(d, ctx):
        p = participating[(r["region_code"], r["industry_code"])]
        if r["employee_count"]:
            assert r["employment_coverage"] == pytest.approx(1.0)
            assert r["robot_density"] == pytest.approx(p["robot_density"])
            assert r["participating_density"] == pytest.approx(p["robot_density"])
        assert r["denominator_source"] == "t" and p["denominator_source"] == density_job.PARTICIPATING_SOURCE


@settings(max_examples=60, deadline=None)
@given(fleets(), st.sampled_from(("all", "key", "above_designated_size")))
def test_robot_days_sum_to_robots_when_nobody_moved(fleet: tuple[Context, dict[str, int]], scope: str) -> None:
    ctx, _ = fleet
    robots = definition_rows(Definition("r", "in_operation", scope, "robots", "participating"), ctx)
    days = definition_rows(Definition("d", "in_operation", scope, "robot_days", "participating"), ctx)
    assert len(robots) == len(days)
    for a, b in zip(robots, days, strict=True):
        assert b["robot_days"] == pytest.approx(a["robot_count"] * 28)
        assert (b["robot_count"], b["robot_density"]) == pytest.approx((a["robot_count"], a["robot_density"]))


# ----------------------------------------------------------------------------- the job in PostgreSQL

FEB = datetime(2026, 2, 1, tzinfo=LOCAL_TZ)
MAR = datetime(2026, 3, 1, tzinfo=LOCAL_TZ)
MOVED_ON = date(2026, 2, 15)  # 14 of February's 28 days in each factory
SEED = 7


@dataclass
class Loaded:
    url: str
    schema: str
    province: Province
    moved: str  # serial of the robot that moved
    folder: Path


def _write(path: Path, text: str) -> Path:
    path.write_text(text.lstrip(), encoding="utf-8")
    return path


def _stats(province: Province, factor: int) -> str:
    """Official employment: ``factor`` x the participating headcount, per city and industry."""
    lines = ["region,industry,year,employees,source,vintage"]
    src = "江苏统计年鉴 Jiangsu Statistical Yearbook"
    for region in province.regions:
        facs = [f for f in province.factories if f.region == region.code or region.code == province.code]
        for ind in ("*", *sorted(i.code for i in province.industries)):
            n = sum(f.employees for f in facs if ind in ("*", f.industry)) * factor
            lines.append(f'{region.code},{ind},2025,{n},"{src}","2025 edition, table 4-12"')
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def loaded(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    folder = tmp_path_factory.mktemp("stats")
    migrate(pg_url, schema)
    province = generate(ProvinceSpec(robots=30), SEED)
    a, b = province.factories[0], province.factories[-1]  # different cities
    moved = province.robots_of(a.id)[0]
    try:
        with connect(pg_url, schema) as conn:
            load_province(conn, province, tmp_path_factory.mktemp("registry"), SEED, FEB, MAR)
            conn.execute(
                "INSERT INTO assignments (robot_id, factory_id, valid_from) "
                "SELECT robot_id, %s, %s FROM robots WHERE serial = %s",
                (b.id, MOVED_ON, moved.serial),
            )
            conn.commit()
            fac = _write(
                folder / "factories.csv",
                f"factory_id,name,region_code,industry_code,above_designated_size\n"
                f"{a.id},{a.name},{a.region},{a.industry},true\n",
            )
            import_registry(conn, fac.parent)
            import_statistics(conn, _write(folder / "employment.csv", _stats(province, 4)))
            metrics_job.compute(conn, FEB, MAR)
        yield Loaded(pg_url, schema, province, moved.serial, folder)
    finally:
        drop_schema(pg_url, schema)


def _rows(loaded: Loaded, definition: str) -> dict[tuple[str, str], dict[str, object]]:
    with connect(loaded.url, loaded.schema) as conn:
        cur = conn.execute(
            "SELECT * FROM v_density_defined WHERE definition = %s AND period_start = %s", (definition, FEB)
        )
        names = [c.name for c in cur.description or []]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    return {(r["region_code"], r["industry_code"]): r for r in rows}


def test_official_density_divides_by_the_imported_employment_with_source_and_coverage(loaded: Loaded) -> None:
    p = loaded.province
    official, participating = _rows(loaded, "official-manufacturing"), _rows(loaded, "participating")
    employees = sum(f.employees for f in p.factories)
    row = official[("320000", "*")]
    assert row["employee_count"] == 4 * employees
    assert row["robot_density"] == pytest.approx(len(p.robots) / (4 * employees) * 1e4)
    assert row["participating_density"] == pytest.approx(participating[("320000", "*")]["robot_density"])
    assert row["employment_coverage"] == pytest.approx(0.25)
    assert row["vintage"] == "2025 edition, table 4-12" and row["denominator_year"] == 2025
    assert "Jiangsu Statistical Yearbook" in str(row["denominator_source"])
    # Jiangsu's 500 is a key-manufacturing target: shown against that definition only.
    key = _rows(loaded, "official-key-manufacturing")[("320000", "*")]
    assert (key["target"], key["target_definition"]) == (500, "official-key-manufacturing")
    assert (row["target"], row["target_definition"]) == (492, "official-manufacturing")  # the national one
    key_industries = {i.code for i in p.industries if i.key_manufacturing}
    in_key = [f for f in p.factories if f.industry in key_industries]
    assert key["robot_count"] == sum(len(p.robots_of(f.id)) for f in in_key)
    assert key["employee_count"] == 4 * sum(f.employees for f in in_key)


def test_above_designated_size_counts_flagged_factories_only(loaded: Loaded) -> None:
    above = _rows(loaded, "official-above-designated-size")
    assert above == {}  # no official statistics for those firms: no row, never a wrong denominator
    with connect(loaded.url, loaded.schema) as conn:
        flagged = conn.execute("SELECT factory_id FROM factories WHERE above_designated_size").fetchall()
    assert flagged == [(loaded.province.factories[0].id,)]  # the others' files had no such column: false


def test_robot_days_split_a_leased_robot_between_the_two_factories(loaded: Loaded) -> None:
    p = loaded.province
    a, b = p.factories[0], p.factories[-1]
    days, robots = _rows(loaded, "participating-robot-days"), _rows(loaded, "participating")
    n_a = len(p.robots_of(a.id))
    assert robots[(a.region, a.industry)]["robot_count"] == n_a - 1  # counted where it stood on the last day
    assert days[(a.region, "*")]["period_days"] == 28
    city_a = sum(len(p.robots_of(f.id)) for f in p.factories if f.region == a.region)
    assert days[(a.region, "*")]["robot_days"] == pytest.approx((city_a - 1) * 28 + 14)
    city_b = sum(len(p.robots_of(f.id)) for f in p.factories if f.region == b.region)
    assert days[(b.region, "*")]["robot_days"] == pytest.approx(city_b * 28 + 14)
    assert days[("320000", "*")]["robot_days"] == pytest.approx(len(p.robots) * 28)  # neither doubled nor lost


def test_report_density_json_names_definition_source_vintage_and_coverage(loaded: Loaded) -> None:
    args = ["--schema", loaded.schema, "--format", "json", "--region", "320000"]
    env = {"ROBODENSITY_DATABASE__URL": loaded.url}
    for definition in ("participating", "official-key-manufacturing"):
        res = CliRunner().invoke(app, ["report", "density", *args, "--definition", definition], env=env)
        assert res.exit_code == 0, res.output
        rows = json.loads(res.stdout)
        assert len(rows) == 1 + len(CITIES)
        for r in rows:
            assert r["definition"] == definition and r["denominator_source"] and r["vintage"]
            assert "coverage" in r and "employment_coverage" in r
            assert r["plan"] == "planned: 24/7"  # beside utilisation: no factory has a shift calendar here
    assert rows[0]["employment_coverage"] == pytest.approx(0.25)


def test_statistics_import_reports_every_problem_and_imports_nothing(loaded: Loaded) -> None:
    bad = _write(
        loaded.folder / "employment-bad.csv",
        "region,industry,year,employees,source,vintage\n"
        "320000,*,2024,1000,yearbook,2024\n"
        "32000,*,2024,10,yearbook,2024\n"
        "320000,36,20x4,-5,,2024\n"
        "320000,*,2024,1000,yearbook,2024\n"
        "990000,*,2024,1000,yearbook,2024\n",
    )
    with connect(loaded.url, loaded.schema) as conn, pytest.raises(RegistryError) as err:
        import_statistics(conn, bad)
    lines = err.value.problems
    assert f"{bad}:3: region: '32000' is not a 6-digit GB/T 2260 code" in lines
    assert f"{bad}:4: year: '20x4' is not a whole number" in lines
    assert f"{bad}:4: employees: -5 is negative" in lines
    assert f"{bad}:4: source: is empty" in lines
    assert f"{bad}:5: region, industry, year, firms: 320000/*/2024/all is also on line 2" in lines
    assert any(line.startswith(f"{bad}:6: region: region 990000 is in neither") for line in lines)
    with connect(loaded.url, loaded.schema) as conn:
        assert conn.execute("SELECT count(*) FROM employment_statistics WHERE year = 2024").fetchone() == (0,)


def test_definitions_import_adds_a_definition_and_rejects_unknown_scopes(loaded: Loaded) -> None:
    good = _write(
        loaded.folder / "definitions.csv",
        "definition,numerator,scope,unit,denominator,title,title_zh,origin\n"
        "official-verified-key,verified,key,robots,official,Verified robots in key industries,重点行业核验密度,\n"
        "js-key,in_operation,key,robots,official,Jiangsu key industries,江苏重点行业,320000\n",
    )
    bad = _write(
        loaded.folder / "defs-bad.csv",
        "definition,numerator,scope,unit,denominator,title,origin\nX,working,services,robots,official,t,jiangsu\n",
    )
    env = {"ROBODENSITY_DATABASE__URL": loaded.url}
    res = CliRunner().invoke(app, ["definitions", "import", str(bad), "--schema", loaded.schema], env=env)
    assert res.exit_code == 2
    assert f"{bad}:2: scope: 'services' is not one of all, key, above_designated_size" in res.output
    assert f"{bad}:2: definition: 'X' is not a name" in res.output
    assert f"{bad}:2: origin: 'jiangsu' is neither local nor a GB/T 2260 region code like 320000" in res.output
    res = CliRunner().invoke(app, ["definitions", "import", str(good), "--schema", loaded.schema], env=env)
    assert res.exit_code == 0, res.output
    with connect(loaded.url, loaded.schema) as conn:
        assert conn.execute(
            "SELECT numerator, scope FROM density_definitions WHERE definition = 'official-verified-key'"
        ).fetchone() == ("verified", "key")
        origins = dict(conn.execute("SELECT definition, origin FROM density_definitions"))
    assert origins["official-verified-key"] == "local" and origins["js-key"] == "320000"  # published by Jiangsu
    assert origins["participating"] == "shipped"


def test_reconcile_sets_registered_and_verified_against_the_ifr_stock(loaded: Loaded) -> None:
    p = loaded.province
    installs = [40 + 3 * i for i in range(12)]
    _write(
        loaded.folder / "installations.csv",
        "region,year,installations,source,vintage\n"
        + "".join(f"320000,{2015 + i},{n},IFR World Robotics (share),2025\n" for i, n in enumerate(installs)),
    )
    with connect(loaded.url, loaded.schema) as conn:
        import_statistics(conn, loaded.folder / "installations.csv")
        out = reconcile(conn, "320000")
        verified = conn.execute(
            "SELECT count(DISTINCT robot_id) FROM robot_blocks_daily WHERE executing_s > 0 AND factory_id IS NOT NULL"
        ).fetchone()
    last = out["years"][-1]
    stock = float(ifr_operational_stock(range(2015, 2027), installs)[-1])
    assert (last["year"], last["registered"], last["top_down_stock"]) == (2026, len(p.robots), stock)
    assert last["verified"] == verified[0] > 0
    assert last["employment_coverage"] == pytest.approx(0.25)
    assert last["gap"] == pytest.approx(stock - len(p.robots))
    assert last["unexplained"] == pytest.approx(len(p.robots) - stock * 0.25)
    assert last["official_employment"]["vintage"] == "2025 edition, table 4-12"
    assert out["years"][0]["top_down_stock"] is None  # IFR needs 12 years of installations


def test_bulletin_states_definition_source_vintage_and_coverage_in_both_languages(
    loaded: Loaded,
    tmp_path: Path,
    chromium_available: str,  # noqa: F811 (the fixture imported above)
) -> None:
    out = tmp_path / "bulletin.html"
    with connect(loaded.url, loaded.schema) as conn:
        written = write_bulletin(conn, "320000", "2026-02", out, pdf=True)
    page = out.read_text(encoding="utf-8")
    notes = re.findall(r'<small class="def" data-definition="([^"]+)">([^<]*)</small>', page)
    defs = {d for d, _ in notes}
    assert {"participating", "official-manufacturing", "official-key-manufacturing"} <= defs
    for _d, text in notes:
        if "分母" in text:
            assert "口径 definition" in text and "覆盖率 coverage" in text
    assert any("2025 edition, table 4-12" in t and "就业覆盖率 employment coverage 25.0 %" in t for _, t in notes)
    figures = re.findall(
        r'data-key="density_official-key-manufacturing" data-region="320000" data-value="([^"]*)"', page
    )
    assert figures and float(figures[0]) == pytest.approx(
        _rows(loaded, "official-key-manufacturing")[("320000", "*")]["robot_density"]
    )
    pdf = out.with_suffix(".pdf")
    assert pdf in written
    text = subprocess.run([_poppler("pdftotext"), str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    flat = " ".join(text.split())
    assert "其他口径 Other definitions" in flat and "definition: official-key-manufacturing" in flat


def test_a_workbook_carries_statistics_and_key_industries_together(loaded: Loaded) -> None:
    from openpyxl import Workbook

    book = Workbook()
    emp = book.active
    assert emp is not None
    emp.title = "employment"
    emp.append(["region", "industry", "year", "employees", "source", "vintage", "firms"])
    emp.append(["320500", "*", 2023, 900, "苏州统计年鉴", "2024, table 3-1", "above_designated_size"])
    key = book.create_sheet("key_industries")
    key.append(["region_code", "industry_code", "source"])
    key.append(["320500", "C36", "Suzhou action plan"])
    book.create_sheet("notes").append(["ignored"])
    path = loaded.folder / "suzhou.xlsx"
    book.save(path)
    with connect(loaded.url, loaded.schema) as conn:
        assert import_statistics(conn, path) == {"employment": 1, "key_industries": 1}
        assert conn.execute(
            "SELECT firms, employees FROM employment_statistics WHERE region_code = '320500' AND year = 2023"
        ).fetchone() == ("above_designated_size", 900)
        conn.execute("DELETE FROM key_industries")  # leave the module's province as the other tests expect it
        conn.execute("DELETE FROM employment_statistics WHERE year = 2023")
        conn.commit()
