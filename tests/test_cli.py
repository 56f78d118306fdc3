"""The command line: help that teaches, one-line errors, and the report commands on real data."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from robodensity.app import metrics_job
from robodensity.app.cli import app
from robodensity.app.report import subsidy_evidence
from robodensity.simulators.load import load_province
from robodensity.simulators.province import ProvinceSpec, generate
from robodensity.storage.db import connect

runner = CliRunner()


def _commands(group: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for name, cmd in getattr(group, "commands", {}).items():
        out += _commands(cmd, (*prefix, name)) if hasattr(cmd, "commands") else [(*prefix, name)]
    return out


COMMANDS = _commands(get_command(app))


def test_the_user_verbs_are_all_there() -> None:
    names = {" ".join(c) for c in COMMANDS}
    assert {
        "demo",
        "edge run",
        "edge discover",
        "collector run",
        "db migrate",
        "metrics compute",
        "report density",
        "simulate province",
        "registry import",
        "metrics stock",
        "db role create",
        "db role list",
        "db role drop",
        "dashboards build",
        "dashboards provision",
        "report bulletin",
    } <= names


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_an_example(command: tuple[str, ...]) -> None:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Example" in result.output


def test_a_missing_database_url_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROBODENSITY_DATABASE__URL", raising=False)
    result = runner.invoke(app, ["report", "density", "--region", "320000"])
    assert result.exit_code == 2
    assert "database.url is not set" in result.output


LONG = "/".join(["a-folder-name-long-enough-to-need-wrapping"] * 6)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["report", "density", "--region", "320000", "--config", f"/{LONG}/robodensity.toml"],
            [f"error: settings file /{LONG}/robodensity.toml does not exist"],
        ),
        (
            ["metrics", "stock", "--installations", f"/{LONG}/installations.csv"],
            [f"error: /{LONG}/installations.csv: no such file"],
        ),
        (
            ["registry", "import", f"/{LONG}/registry"],
            [
                f"error: /{LONG}/registry: 1 problem(s), nothing imported:",
                f"/{LONG}/registry:1: (file): no such file or folder",
            ],
        ),
    ],
    ids=["config", "stock", "registry"],
)
def test_errors_are_never_wrapped_when_stderr_is_a_pipe(pg_url: str, args: list[str], expected: list[str]) -> None:
    """As under journald or cron: stderr is no terminal and COLUMNS is unset."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["ROBODENSITY_DATABASE__URL"] = pg_url
    result = subprocess.run(
        [sys.executable, "-m", "robodensity.app.cli", *args], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == expected


def test_usage_errors_are_plain_unwrapped_lines_when_stderr_is_a_pipe() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    args = ["metrics", "stock", "--installations", f"/{LONG}.csv", "--service-life", "twelve"]
    result = subprocess.run(
        [sys.executable, "-m", "robodensity.app.cli", *args], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith("Error: Invalid value for '--service-life': ")
    assert "│" not in result.stderr  # no rich panel


def test_a_bad_installation_row_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "inst.csv"
    path.write_text("year,installations\n2015,1000\n2016,many\n")
    result = runner.invoke(app, ["metrics", "stock", "--installations", str(path)])
    assert result.exit_code == 2
    assert result.output.splitlines() == [f"error: {path}:3: installations: 'many' is not a number"]


def test_operational_stock_from_an_installation_series(tmp_path: Path) -> None:
    path = tmp_path / "inst.csv"
    path.write_text("year,installations\n" + "".join(f"{y},1000\n" for y in range(2000, 2016)))
    result = runner.invoke(app, ["metrics", "stock", "--installations", str(path), "--service-life", "12"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert rows[-1] == {"year": "2015", "operational_stock": "12000"}


@pytest.fixture
def filled(pg_url: str, schema: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    province = generate(ProvinceSpec(robots=30), seed=4)
    end = datetime(2026, 11, 1, tzinfo=metrics_job.LOCAL_TZ)
    start = end - timedelta(days=3)
    with connect(pg_url, schema) as conn:
        load_province(conn, province, tmp_path / "registry", 4, start, end)
        metrics_job.compute(conn, start, end)
    monkeypatch.setenv("ROBODENSITY_DATABASE__URL", pg_url)
    return {"province": province, "schema": schema, "start": start, "end": end}


def test_report_density_as_csv_and_json_matches_the_registry(filled: dict) -> None:
    province = filled["province"]
    args = ["report", "density", "--region", "320000", "--schema", filled["schema"]]
    as_csv = runner.invoke(app, [*args, "--format", "csv"])
    assert as_csv.exit_code == 0, as_csv.output
    rows = {r["region_code"]: r for r in csv.DictReader(io.StringIO(as_csv.stdout))}
    employees = sum(f.employees for f in province.factories)
    assert float(rows["320000"]["robot_density"]) == pytest.approx(len(province.robots) / employees * 1e4)
    as_json = json.loads(runner.invoke(app, [*args, "--format", "json"]).stdout)
    assert {r["region_code"] for r in as_json} == set(rows)
    # utilisation names its plan in every row: no factory has a shift calendar, so 24/7
    assert {r["plan"] for r in as_json} == {rows[code]["plan"] for code in rows} == {"planned: 24/7"}
    bad = runner.invoke(app, [*args, "--format", "xml"])
    assert bad.exit_code == 2 and "--format must be one of table, csv, json" in bad.output


def test_subsidy_evidence_counts_the_robots_before_and_after(filled: dict, pg_url: str) -> None:
    province = filled["province"]
    factory = province.factories[-1]
    robots = province.robots_of(factory.id)
    since = date(2020, 1, 1)
    with connect(pg_url, filled["schema"]) as conn:
        conn.execute("UPDATE robots SET subsidy_programme = 'JS-2024' WHERE commissioned >= %s", (since,))
        evidence = subsidy_evidence(conn, factory.id, since, date(2026, 11, 1))
    before = [r for r in robots if r.commissioned < since]
    assert evidence["before"]["robot_count"] == len(before)
    assert evidence["after"]["robot_count"] == len(robots)
    assert evidence["after"]["robot_density"] == pytest.approx(len(robots) / factory.employees * 1e4)
    if len(before) < len(robots):
        [programme] = evidence["programmes"]
        assert programme["robot_count"] == len(robots) - len(before)
        assert 0 < programme["utilisation"] < 1


def test_json_logs_are_one_object_per_line() -> None:
    import logging

    from robodensity.app.cli import JsonFormatter

    record = logging.LogRecord("edge.uplink", logging.WARNING, __file__, 1, "uplink lost (%s)", ("timeout",), None)
    doc = json.loads(JsonFormatter().format(record))
    assert doc["level"] == "warning" and doc["logger"] == "edge.uplink" and doc["msg"] == "uplink lost (timeout)"
    assert doc["ts"].endswith("+00:00")


def test_an_unknown_log_format_is_refused() -> None:
    result = runner.invoke(app, ["collector", "run", "--log-format", "xml"])
    assert result.exit_code == 2 and "--log-format must be one of text, json" in result.output


def test_target_outlook_follows_the_density_trend(pg_url: str, schema: str, tmp_path: Path) -> None:
    from robodensity.app.report import target_outlook

    province = generate(ProvinceSpec(robots=30), seed=4)
    end = datetime(2026, 11, 1, tzinfo=metrics_job.LOCAL_TZ)
    with connect(pg_url, schema) as conn:
        load_province(conn, province, tmp_path / "registry", 4, end - timedelta(days=3), end)
        for d in (3, 2, 1):  # three daily periods: the same fleet, a flat trend
            metrics_job.compute(conn, end - timedelta(days=d), end - timedelta(days=d - 1))
        conn.execute("UPDATE targets SET due_date = '2030-12-31' WHERE scope_region = '320000'")
        outlook = target_outlook(conn, "320000")
    density = len(province.robots) / sum(f.employees for f in province.factories) * 1e4
    assert outlook is not None and outlook["periods"] == 3
    assert outlook["latest"] == pytest.approx(density)
    assert outlook["progress"] == pytest.approx(density / 500)
    assert outlook["trend_per_year"] == pytest.approx(0, abs=1e-6)
    assert outlook["month_reached"] is None and outlook["on_track"] is False  # flat and below: never
