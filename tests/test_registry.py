"""Registry import: every problem reported as file:line: column: problem, nothing partial."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from robodensity.app.cli import app
from robodensity.core.errors import RegistryError
from robodensity.simulators.province import ProvinceSpec, generate, write_registry_csv
from robodensity.storage.db import connect
from robodensity.storage.registry import import_registry

PROVINCE = generate(ProvinceSpec(robots=12), seed=5)
TABLES = ("regions", "industries", "factories", "headcounts", "robots", "assignments")
runner = CliRunner()


def _write(folder: Path) -> None:
    write_registry_csv(PROVINCE, folder)


def _edit(path: Path, line: int, old: str, new: str) -> None:
    """Replace ``old`` by ``new`` once on 1-based ``line`` of a text file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    assert old in lines[line - 1], (old, lines[line - 1])
    lines[line - 1] = lines[line - 1].replace(old, new, 1)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _set(path: Path, line: int, column: str, value: str) -> str:
    """Set one cell of a CSV file (``line`` 1-based, as an editor shows it); returns the old value."""
    rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
    i = rows[0].index(column)
    old, rows[line - 1][i] = rows[line - 1][i], value
    path.write_text("".join(",".join(r) + "\n" for r in rows), encoding="utf-8")
    return old


def _snapshot(pg_url: str, schema: str) -> dict[str, object]:
    with connect(pg_url, schema) as conn:
        counts: dict[str, object] = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone() for t in TABLES}
        counts["names"] = conn.execute("SELECT array_agg(name ORDER BY factory_id) FROM factories").fetchone()
    return counts


def test_a_generated_registry_imports_and_reimporting_changes_nothing(pg_url: str, schema: str, tmp_path: Path) -> None:
    _write(tmp_path)
    with connect(pg_url, schema) as conn:
        first = import_registry(conn, tmp_path)
        second = import_registry(conn, tmp_path)
        assert first == second
        assert conn.execute("SELECT count(*) FROM robots").fetchone() == (12,)
        assert conn.execute("SELECT count(*) FROM assignments").fetchone() == (12,)


def test_bad_rows_are_all_reported_with_file_line_and_column_and_nothing_is_imported(
    pg_url: str, schema: str, tmp_path: Path
) -> None:
    _write(tmp_path)
    robots, heads = tmp_path / "robots.csv", tmp_path / "headcounts.csv"
    _set(robots, 3, "domestic", "maybe")
    _set(robots, 5, "commissioned", "2020-31-12")
    employees = _set(heads, 2, "employee_count", "")
    _set(heads, 2, "employee_count", f"-{employees}")
    with connect(pg_url, schema) as conn, pytest.raises(RegistryError) as info:
        import_registry(conn, tmp_path)
    problems = info.value.problems
    assert f"{robots}:3: domestic: 'maybe' is not true or false" in problems
    assert f"{robots}:5: commissioned: '2020-31-12' is not a date YYYY-MM-DD" in problems
    assert f"{heads}:2: employee_count: -{employees} is negative" in problems
    assert str(info.value).splitlines()[1:] == problems
    assert _snapshot(pg_url, schema)["regions"] == (0,)


def test_an_assignment_to_an_unknown_robot_is_refused(pg_url: str, schema: str, tmp_path: Path) -> None:
    _write(tmp_path)
    with (tmp_path / "assignments.csv").open("a") as fh:
        fh.write("NOBODY,0,f320100-001,2024-01-01\n")
    with connect(pg_url, schema) as conn, pytest.raises(RegistryError) as info:
        import_registry(conn, tmp_path)
    assert info.value.problems == [
        f"{tmp_path / 'assignments.csv'}:14: manufacturer, serial: robot NOBODY/0 is in neither "
        f"{tmp_path / 'robots.csv'} nor the database"
    ]


def _workbook(folder: Path) -> Path:
    from openpyxl import Workbook

    book = Workbook()
    book.remove(book.active)
    for path in sorted(folder.glob("*.csv")):
        sheet = book.create_sheet(path.stem)
        for row in csv.reader(path.read_text().splitlines()):
            sheet.append([int(v) if v.isdigit() and path.stem == "headcounts" else v for v in row])
    book["robots"]["F3"] = "perhaps"  # domestic of the second robot
    book.save(folder / "registry.xlsx")
    return folder / "registry.xlsx"


def test_a_workbook_with_a_sheet_per_table_imports_like_the_csv_files(pg_url: str, schema: str, tmp_path: Path) -> None:
    from openpyxl import load_workbook

    _write(tmp_path)
    path = _workbook(tmp_path)
    with connect(pg_url, schema) as conn, pytest.raises(RegistryError) as info:
        import_registry(conn, path)
    assert info.value.problems == [f"{path}[robots]:3: domestic: 'perhaps' is not true or false"]
    book = load_workbook(path)
    book["robots"]["F3"] = "true"
    book.save(path)
    with connect(pg_url, schema) as conn:
        counts = import_registry(conn, path)
    assert counts["robots"] == 12 and counts["headcounts"] == 6


# ----------------------------------------------------------------------------- through the command, as a new user


def _unknown(folder: Path, where: str, column: str, what: str, target: str) -> str:
    return f"{folder / where}: {column}: {what} is in neither {folder / target} nor the database"


def _unknown_region(folder: Path) -> str:
    _set(folder / "factories.csv", 2, "region_code", "110100")
    return _unknown(folder, "factories.csv:2", "region_code", "region 110100", "regions.csv")


def _unknown_industry(folder: Path) -> str:
    _set(folder / "factories.csv", 3, "industry_code", "C99")
    return _unknown(folder, "factories.csv:3", "industry_code", "industry C99", "industries.csv")


def _unknown_factory(folder: Path) -> str:
    with (folder / "headcounts.csv").open("a") as fh:
        fh.write("f999999-001,2025-01-01,40\n")
    return _unknown(folder, "headcounts.csv:8", "factory_id", "factory f999999-001", "factories.csv")


def _duplicate_robot(folder: Path) -> str:
    lines = (folder / "robots.csv").read_text().splitlines()
    (folder / "robots.csv").write_text("\n".join([*lines, lines[1]]) + "\n")
    manufacturer, serial = lines[1].split(",")[:2]
    return f"{folder / 'robots.csv'}:14: manufacturer, serial: {manufacturer}/{serial} is also on line 2"


def _missing_column(folder: Path) -> str:
    _edit(folder / "regions.csv", 1, "parent_code", "parent")
    return (
        f"{folder / 'regions.csv'}:1: parent_code: missing column (the header needs code, name, name_en, parent_code)"
    )


def _extra_field(folder: Path) -> str:
    _edit(folder / "industries.csv", 2, ",true", ",true,x")
    return f"{folder / 'industries.csv'}:2: (row): 5 fields, the header has 4"


def _not_utf8(folder: Path) -> str:
    (folder / "regions.csv").write_bytes((folder / "regions.csv").read_text().encode("gb18030"))
    return f"{folder / 'regions.csv'}:2: (file): not UTF-8 (invalid start byte at byte "


def _unknown_parent(folder: Path) -> str:
    _set(folder / "regions.csv", 3, "parent_code", "330000")
    return _unknown(folder, "regions.csv:3", "parent_code", "region 330000", "regions.csv")


BREAKERS: dict[str, Callable[[Path], str]] = {
    "unknown region": _unknown_region,
    "unknown industry": _unknown_industry,
    "unknown factory": _unknown_factory,
    "duplicate robot": _duplicate_robot,
    "missing column": _missing_column,
    "extra field": _extra_field,
    "not utf-8": _not_utf8,
    "unknown parent region": _unknown_parent,
}


def _import(pg_url: str, schema: str, source: Path) -> tuple[int, list[str]]:
    result = runner.invoke(
        app, ["registry", "import", str(source), "--schema", schema], env={"ROBODENSITY_DATABASE__URL": pg_url}
    )
    return result.exit_code, result.output.splitlines()


@pytest.mark.parametrize("breaker", BREAKERS.values(), ids=BREAKERS.keys())
def test_a_bad_registry_is_refused_line_by_line_and_the_database_is_unchanged(
    pg_url: str, schema: str, tmp_path: Path, breaker: Callable[[Path], str]
) -> None:
    _write(tmp_path)
    assert _import(pg_url, schema, tmp_path)[0] == 0
    before = _snapshot(pg_url, schema)
    _set(tmp_path / "factories.csv", 4, "name", "renamed")  # a good change that must not land either
    expected = breaker(tmp_path)
    code, lines = _import(pg_url, schema, tmp_path)
    assert code == 2, lines
    assert lines[0] == f"error: {tmp_path}: 1 problem(s), nothing imported:"
    assert len(lines) == 2 and lines[1].startswith(expected), lines
    assert _snapshot(pg_url, schema) == before


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "File is not a zip file"), (b"code,name\n320000,Jiangsu\n", "File is not a zip file")],
    ids=["empty", "csv named xlsx"],
)
def test_an_unreadable_workbook_is_one_line_and_nothing_is_imported(
    pg_url: str, schema: str, tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "registry.xlsx"
    path.write_bytes(content)
    code, lines = _import(pg_url, schema, path)
    assert code == 2
    assert lines == [
        f"error: {path}: 1 problem(s), nothing imported:",
        f"{path}:1: (file): not a readable XLSX workbook: {reason}",
    ]
    assert _snapshot(pg_url, schema)["regions"] == (0,)


def test_a_workbook_factory_in_an_unregistered_region_is_refused(pg_url: str, schema: str, tmp_path: Path) -> None:
    from openpyxl import load_workbook

    _write(tmp_path)
    path = _workbook(tmp_path)
    book = load_workbook(path)
    book["robots"]["F3"] = "true"
    book["factories"]["C2"] = "110100"
    book.save(path)
    code, lines = _import(pg_url, schema, path)
    assert code == 2
    assert lines[1:] == [
        f"{path}[factories]:2: region_code: region 110100 is in neither {path}[regions] nor the database"
    ]
    assert _snapshot(pg_url, schema)["factories"] == (0,)


def test_regions_already_in_the_database_count_as_known(pg_url: str, schema: str, tmp_path: Path) -> None:
    _write(tmp_path)
    assert _import(pg_url, schema, tmp_path)[0] == 0
    only = tmp_path / "only"
    only.mkdir()
    _set(tmp_path / "factories.csv", 2, "name", "moved")
    (tmp_path / "factories.csv").rename(only / "factories.csv")
    code, lines = _import(pg_url, schema, only)
    assert (code, lines) == (0, ["0 regions, 0 industries, 6 factories, 0 headcounts, 0 robots, 0 assignments"])


def test_a_missing_source_or_a_folder_without_tables_is_one_line(pg_url: str, schema: str, tmp_path: Path) -> None:
    code, lines = _import(pg_url, schema, tmp_path / "nowhere")
    assert (code, lines[1:]) == (2, [f"{tmp_path / 'nowhere'}:1: (file): no such file or folder"])
    code, lines = _import(pg_url, schema, tmp_path)
    assert code == 2 and lines[1].startswith(f"{tmp_path}:1: (file): no registry table (regions, industries")


def test_every_broken_file_is_reported_at_once(pg_url: str, schema: str, tmp_path: Path) -> None:
    _write(tmp_path)
    expected = [_not_utf8(tmp_path), _duplicate_robot(tmp_path), _unknown_factory(tmp_path)]
    code, lines = _import(pg_url, schema, tmp_path)
    assert code == 2 and lines[0] == f"error: {tmp_path}: 3 problem(s), nothing imported:"
    assert sorted(lines[1:]) == lines[1:] and len(lines) == 4
    assert all(any(line.startswith(e) for line in lines[1:]) for e in expected), lines
    assert _snapshot(pg_url, schema)["regions"] == (0,)
