"""Export: every table panel's data as XLSX/CSV, equal to what the panel's query returns and to the simulation."""

from __future__ import annotations

import csv
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from openpyxl import load_workbook

from robodensity.app import metrics_job
from robodensity.app.export import Sheet, panel_tables, parse_vars, write_csv, write_xlsx
from robodensity.app.metrics_job import LOCAL_TZ
from robodensity.core.errors import ConfigError
from robodensity.dashboards.build import build_all
from robodensity.dashboards.panels import panels_of
from robodensity.simulators.load import load_province
from robodensity.simulators.province import ProvinceSpec, generate
from robodensity.storage.db import connect, drop_schema, migrate
from tests.test_dashboards import Loaded

START = datetime(2026, 1, 1, tzinfo=LOCAL_TZ)
END = START + timedelta(days=3)
SEED = 31


@pytest.fixture(scope="module")
def loaded(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    migrate(pg_url, schema)
    province = generate(ProvinceSpec(robots=24), SEED)
    try:
        with connect(pg_url, schema) as conn:
            schedules = load_province(conn, province, tmp_path_factory.mktemp("registry"), SEED, START, END)
            conn.execute(
                "INSERT INTO agents (agent_id, factory_id, last_seen) "
                "SELECT agent_id, min(factory_id), max(ts) FROM events GROUP BY agent_id"
            )
            conn.commit()
            metrics_job.compute(conn, START, END)
            conn.commit()
        yield Loaded(pg_url, schema, province, schedules)
    finally:
        drop_schema(pg_url, schema)


def _sheets(loaded: Loaded, **variables: str) -> list[Sheet]:
    with connect(loaded.url, loaded.schema) as conn:
        return panel_tables(conn, [], variables, START, END)


def test_every_table_panel_is_exported_with_the_simulated_figures(loaded: Loaded) -> None:
    sheets = _sheets(loaded, region="320000")
    expected = [
        (uid, p["title"])
        for uid, m in build_all().items()
        for p in panels_of(m)
        if p["type"] == "table"
        for _ in p["targets"]
    ]
    assert [(s.dashboard, s.title) for s in sheets] == expected and len(sheets) >= 8
    by_title = {s.title: s for s in sheets}
    region = by_title["Region and sub-regions 地区明细"]
    rows = {r[region.columns.index("code")]: r for r in region.rows}
    prov = loaded.province
    assert set(rows) == {r.code for r in prov.regions}
    count = region.columns.index("robot_count")
    for r in prov.regions[1:]:
        assert rows[r.code][count] == sum(len(prov.robots_of(f.id)) for f in prov.factories if f.region == r.code)
    agents = by_title["Agents 代理明细"]
    assert sorted(r[agents.columns.index("agent_id")] for r in agents.rows) == sorted(
        f"sim-{f.id}" for f in prov.factories if prov.robots_of(f.id)
    )
    # Variables not given take their query's first value, as Grafana does when a dashboard opens.
    factory = next(s for s in sheets if s.dashboard == "robodensity-factory")
    assert factory.variables["factory"] in {f.id for f in prov.factories}


def test_xlsx_and_csv_hold_the_same_rows_with_chinese_text_and_local_times(loaded: Loaded, tmp_path: Path) -> None:
    sheets = _sheets(loaded, region="320000")
    book = load_workbook(write_xlsx(sheets, tmp_path / "tables.xlsx", START, END))
    index = list(book["index"].iter_rows(values_only=True))
    assert index[0][:3] == ("sheet", "dashboard", "table") and len(index) == len(sheets) + 1
    assert "2026-01-01 00:00 – 2026-01-04 00:00 CST" in {row[4] for row in index[1:]}
    for (name, _dash, title, _vars, _period, n), sheet in zip(index[1:], sheets, strict=True):
        assert title == sheet.title and n == len(sheet.rows)
        values = list(book[str(name)].iter_rows(values_only=True))
        assert list(values[0]) == sheet.columns and len(values) == len(sheet.rows) + 1
        for got, want in zip(values[1:], sheet.rows, strict=True):
            for g, w in zip(got, want, strict=True):
                if isinstance(w, datetime):
                    # Spreadsheets keep milliseconds.
                    assert abs(g - w.astimezone(LOCAL_TZ).replace(tzinfo=None)) <= timedelta(milliseconds=1)
                elif isinstance(w, float):
                    assert g == pytest.approx(w)
                elif w is not None and not isinstance(w, int | str | bool):
                    assert g is not None
                else:
                    assert g == w
    names = {str(row[0]) for row in index[1:]}
    assert len(names) == len(sheets)  # unique sheet names
    assert any("城市明细" in str(row[2]) for row in index[1:])

    files = write_csv(sheets, tmp_path / "csv")
    assert len(files) == len(sheets) and len(set(files)) == len(files)
    for path, sheet in zip(files, sheets, strict=True):
        with path.open(encoding="utf-8-sig", newline="") as f:
            read = list(csv.reader(f))
        assert read[0] == sheet.columns and len(read) == len(sheet.rows) + 1
    cities = next(p for p, s in zip(files, sheets, strict=True) if s.title.startswith("Cities"))
    assert "南京市" in cities.read_text(encoding="utf-8-sig")


def test_report_tables_and_density_write_workbooks_from_the_cli(
    loaded: Loaded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from robodensity.app.cli import app

    monkeypatch.setenv("ROBODENSITY_DATABASE__URL", loaded.url)
    out = tmp_path / "drilldown.xlsx"
    args = ["report", "tables", "--dashboard", "robodensity-drilldown", "--var", "region=320000"]
    res = CliRunner().invoke(
        app,
        [*args, "--from", "2026-01-01", "--to", "2026-01-04", "--out", str(out)]
        + [
            "--schema",
            loaded.schema,
        ],
    )
    assert res.exit_code == 0, res.output
    tables = [p["title"] for p in panels_of(build_all()["robodensity-drilldown"]) if p["type"] == "table"]
    assert "Factories 企业明细" in tables and load_workbook(out).sheetnames == ["index", *tables]
    dens = tmp_path / "density.xlsx"
    res = CliRunner().invoke(
        app,
        ["report", "density", "--region", "320000", "--format", "xlsx", "--out", str(dens), "--schema", loaded.schema],
    )
    assert res.exit_code == 0, res.output
    rows = list(load_workbook(dens).active.iter_rows(values_only=True))  # type: ignore[union-attr]
    assert "robot_density" in rows[0] and len(rows) == len(loaded.province.regions) + 1
    bad = CliRunner().invoke(
        app,
        [
            "report",
            "tables",
            "--var",
            "region",
            "--from",
            "2026-01-01",
            "--to",
            "2026-01-04",
            "--out",
            str(out),
            "--schema",
            loaded.schema,
        ],
    )
    assert bad.exit_code == 2 and "NAME=VALUE" in bad.output


def test_bad_variables_and_dashboards_are_one_line_errors(loaded: Loaded) -> None:
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        parse_vars(["region"])
    assert parse_vars(["region=320000", "industry=*"]) == {"region": "320000", "industry": "*"}
    with connect(loaded.url, loaded.schema) as conn, pytest.raises(ConfigError, match="not one of"):
        panel_tables(conn, ["nope"], {}, START, END)
