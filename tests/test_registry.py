"""Registry import: all rows validated first, every bad row reported, nothing partial."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from collector.db import connect
from collector.registry import import_registry
from robodensity.errors import RegistryError
from simulators.province import ProvinceSpec, generate, write_registry_csv


def _write(folder: Path) -> None:
    write_registry_csv(generate(ProvinceSpec(robots=12), seed=5), folder)


def test_a_generated_registry_imports_and_reimporting_changes_nothing(pg_url: str, schema: str, tmp_path: Path) -> None:
    _write(tmp_path)
    with connect(pg_url, schema) as conn:
        first = import_registry(conn, tmp_path)
        second = import_registry(conn, tmp_path)
        assert first == second
        assert conn.execute("SELECT count(*) FROM robots").fetchone() == (12,)
        assert conn.execute("SELECT count(*) FROM assignments").fetchone() == (12,)


def test_bad_rows_are_all_reported_with_line_numbers_and_nothing_is_imported(
    pg_url: str, schema: str, tmp_path: Path
) -> None:
    _write(tmp_path)
    lines = (tmp_path / "robots.csv").read_text().splitlines()
    lines[2] = lines[2].replace("true", "maybe").replace("false", "maybe")
    lines[4] = lines[4].replace("-01,", "-31-12,", 1)
    (tmp_path / "robots.csv").write_text("\n".join(lines) + "\n")
    heads = (tmp_path / "headcounts.csv").read_text().replace(",", ",-", 2)
    (tmp_path / "headcounts.csv").write_text(heads.replace("valid_from,-", "valid_from,", 1))
    with connect(pg_url, schema) as conn, pytest.raises(RegistryError) as info:
        import_registry(conn, tmp_path)
    lines_reported = {(line, why.split(":")[0]) for line, why in info.value.problems}
    assert (3, "robots.csv") in lines_reported
    assert (5, "robots.csv") in lines_reported
    assert any(f == "headcounts.csv" for _, f in lines_reported)
    assert "domestic 'maybe' is not true or false" in str(info.value)
    with connect(pg_url, schema) as conn:
        assert conn.execute("SELECT count(*) FROM regions").fetchone() == (0,)


def test_an_assignment_to_an_unknown_robot_is_refused(pg_url: str, schema: str, tmp_path: Path) -> None:
    _write(tmp_path)
    with (tmp_path / "assignments.csv").open("a") as fh:
        fh.write("NOBODY,0,f320100-001,2024-01-01\n")
    with (
        connect(pg_url, schema) as conn,
        pytest.raises(RegistryError, match=re.escape("NOBODY/0 is not in robots.csv")),
    ):
        import_registry(conn, tmp_path)


def test_a_workbook_with_a_sheet_per_table_imports_like_the_csv_files(pg_url: str, schema: str, tmp_path: Path) -> None:
    import csv

    from openpyxl import Workbook

    _write(tmp_path)
    book = Workbook()
    book.remove(book.active)
    for path in sorted(tmp_path.glob("*.csv")):
        sheet = book.create_sheet(path.stem)
        for row in csv.reader(path.read_text().splitlines()):
            sheet.append([int(v) if v.isdigit() and path.stem == "headcounts" else v for v in row])
    book["robots"]["F3"] = "perhaps"  # domestic of the second robot
    book.save(tmp_path / "registry.xlsx")
    with connect(pg_url, schema) as conn, pytest.raises(RegistryError, match=r"registry.xlsx\[robots\]"):
        import_registry(conn, tmp_path / "registry.xlsx")
    book["robots"]["F3"] = "true"
    book.save(tmp_path / "registry.xlsx")
    with connect(pg_url, schema) as conn:
        counts = import_registry(conn, tmp_path / "registry.xlsx")
    assert counts["robots"] == 12 and counts["headcounts"] == 6
