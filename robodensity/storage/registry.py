"""Registry import: regions, industries, factories, headcounts, robots, assignments.

``import_registry(conn, source)`` reads the CSV files (or the XLSX workbook) an economic
department hands over and validates everything first: every cell, duplicate keys, and
every reference (a factory's region and industry, a headcount's factory, an assignment's
robot and factory) against the rows of the import and those already in the database.
It imports nothing unless all is good; a RegistryError then lists each problem on a line
of its own as ``file:line: column: problem``. Rows are upserted, so importing the same
files twice changes nothing.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from robodensity.core.errors import RegistryError
from robodensity.storage import shifts

Parser = Callable[[str], Any]


def _required(s: str) -> str:
    if not s.strip():
        raise ValueError("is empty")
    return s.strip()


def _optional(s: str) -> str | None:
    return s.strip() or None


def _pattern(rx: str, what: str) -> Parser:
    compiled = re.compile(rx)

    def parse(s: str) -> str:
        if not compiled.match(s.strip()):
            raise ValueError(f"{s!r} is not {what}")
        return s.strip()

    return parse


def _bool(s: str) -> bool:
    v = s.strip().lower()
    if v in ("true", "1", "yes", "y"):
        return True
    if v in ("false", "0", "no", "n"):
        return False
    raise ValueError(f"{s!r} is not true or false")


def _date(s: str) -> date:
    try:
        return date.fromisoformat(s.strip())
    except ValueError:
        raise ValueError(f"{s!r} is not a date YYYY-MM-DD") from None


def _optional_date(s: str) -> date | None:
    return _date(s) if s.strip() else None


def _count(s: str) -> int:
    try:
        n = int(s.strip())
    except ValueError:
        raise ValueError(f"{s!r} is not a whole number") from None
    if n < 0:
        raise ValueError(f"{n} is negative")
    return n


REGION = _pattern(r"^[0-9]{6}$", "a 6-digit GB/T 2260 code")
INDUSTRY = _pattern(r"^[A-T]?[0-9]{2,4}$", "a GB/T 4754-2017 code")


@dataclass(frozen=True)
class Table:
    name: str
    columns: dict[str, Parser]
    upsert: str
    key: tuple[str, ...]
    """Columns that name a row: a second row with the same key in one import is a mistake."""
    defaults: dict[str, str] = field(default_factory=dict)
    """Optional columns and the text a file without them stands for."""


@dataclass(frozen=True)
class Problem:
    where: str
    """The file, or the workbook and sheet: ``registry/robots.csv``, ``registry.xlsx[robots]``."""
    line: int
    column: str
    """A column name, or ``(file)`` / ``(row)`` for a problem of the whole file or row."""
    message: str

    def __str__(self) -> str:
        return f"{self.where}:{self.line}: {self.column}: {self.message}"


TABLES = (
    Table(
        "regions",
        {"code": REGION, "name": _required, "name_en": str.strip, "parent_code": _optional},
        "INSERT INTO regions (code, name, name_en, parent_code) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, name_en = EXCLUDED.name_en, "
        "parent_code = EXCLUDED.parent_code",
        ("code",),
    ),
    Table(
        "industries",
        {"code": INDUSTRY, "name": _required, "name_en": str.strip, "key_manufacturing": _bool},
        "INSERT INTO industries VALUES (%s, %s, %s, %s) ON CONFLICT (code) DO UPDATE SET "
        "name = EXCLUDED.name, name_en = EXCLUDED.name_en, key_manufacturing = EXCLUDED.key_manufacturing",
        ("code",),
    ),
    Table(
        "factories",
        {
            "factory_id": _required,
            "name": _required,
            "region_code": REGION,
            "industry_code": INDUSTRY,
            "above_designated_size": _bool,
        },
        "INSERT INTO factories (factory_id, name, region_code, industry_code, above_designated_size) "
        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (factory_id) DO UPDATE SET name = EXCLUDED.name, "
        "region_code = EXCLUDED.region_code, industry_code = EXCLUDED.industry_code, "
        "above_designated_size = EXCLUDED.above_designated_size",
        ("factory_id",),
        {"above_designated_size": "false"},
    ),
    Table(
        "headcounts",
        {"factory_id": _required, "valid_from": _date, "employee_count": _count},
        "INSERT INTO headcounts VALUES (%s, %s, %s) ON CONFLICT (factory_id, valid_from) "
        "DO UPDATE SET employee_count = EXCLUDED.employee_count",
        ("factory_id", "valid_from"),
    ),
    Table(
        "robots",
        {
            "manufacturer": _required,
            "serial": _required,
            "model": str.strip,
            "category": str.strip,
            "application": str.strip,
            "domestic": _bool,
            "commissioned": _date,
            "decommissioned": _optional_date,
            "subsidy_programme": _optional,
        },
        "INSERT INTO robots (manufacturer, serial, model, category, application, domestic, commissioned, "
        "decommissioned, subsidy_programme, registered) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, true) "
        "ON CONFLICT (manufacturer, serial) DO UPDATE SET model = EXCLUDED.model, "
        "category = EXCLUDED.category, application = EXCLUDED.application, domestic = EXCLUDED.domestic, "
        "commissioned = EXCLUDED.commissioned, decommissioned = EXCLUDED.decommissioned, "
        "subsidy_programme = EXCLUDED.subsidy_programme, registered = true",
        ("manufacturer", "serial"),
    ),
    Table(
        "assignments",
        {"manufacturer": _required, "serial": _required, "factory_id": _required, "valid_from": _date},
        "INSERT INTO assignments (robot_id, factory_id, valid_from) "
        "SELECT robot_id, %s, %s FROM robots WHERE manufacturer = %s AND serial = %s "
        "ON CONFLICT (robot_id, valid_from) DO UPDATE SET factory_id = EXCLUDED.factory_id",
        ("manufacturer", "serial", "valid_from"),
    ),
    # optional shift calendars: shifts, holidays, maintenance (storage/shifts.py, migrations/071)
    *(Table(**spec) for spec in shifts.table_specs(_required, _date)),
)
BY_NAME = {t.name: t for t in TABLES}


@dataclass
class Sheet:
    """One table's rows as text, with the line (spreadsheet row) each starts on."""

    where: str
    header: list[str]
    rows: list[tuple[int, list[str]]]


@dataclass
class Parsed:
    """One table's good rows, each with its line, and where they came from."""

    where: str
    table: Table
    rows: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    complete: bool = True
    """False when the file is unreadable or a column is missing: no row was read, none can be checked against."""
    keys: dict[tuple[Any, ...], int] = field(default_factory=dict)
    """Key -> first line, of every row, bad ones too: a row refused for another cell is no unknown reference."""


# ----------------------------------------------------------------------------- reading


def _csv_sheet(path: Path) -> Sheet | Problem:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        return Problem(str(path), line, "(file)", f"not UTF-8 ({exc.reason} at byte {exc.start}); save it as UTF-8 CSV")
    except OSError as exc:
        return Problem(str(path), 1, "(file)", f"cannot read: {exc.strerror or exc}")
    reader = csv.reader(io.StringIO(text, newline=""))
    records: list[tuple[int, list[str]]] = []
    line = 1
    try:
        for record in reader:
            records.append((line, record))
            line = reader.line_num + 1
    except csv.Error as exc:
        return Problem(str(path), line, "(row)", f"not CSV: {exc}")
    if not records:
        return Sheet(str(path), [], [])
    return Sheet(str(path), [h.strip() for h in records[0][1]], records[1:])


def _workbook_sheets(path: Path, names: Iterable[str] = BY_NAME) -> dict[str, Sheet | Problem] | Problem:
    from openpyxl import load_workbook

    try:
        book = load_workbook(path, read_only=True, data_only=True)
        try:
            sheets: dict[str, Sheet | Problem] = {}
            for name in book.sheetnames:
                if name in names:
                    cells = [
                        ["" if v is None else _cell_text(v) for v in row]
                        for row in book[name].iter_rows(values_only=True)
                    ]
                    header = [h.strip() for h in cells[0]] if cells else []
                    sheets[name] = Sheet(f"{path}[{name}]", header, list(enumerate(cells[1:], start=2)))
            return sheets
        finally:
            book.close()
    except Exception as exc:  # openpyxl raises zipfile, XML, KeyError and ValueError types for a damaged file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Problem(str(path), 1, "(file)", f"not a readable XLSX workbook: {reason}")


def _cell_text(v: object) -> str:
    if isinstance(v, datetime):
        return v.date().isoformat()
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _sheets(source: Path) -> dict[str, Sheet | Problem] | Problem:
    """Table name -> its rows (or why its file is unreadable): ``source`` is a folder of CSV files,
    or an XLSX workbook with a sheet per table; a Problem alone when ``source`` is neither."""
    if source.is_dir():
        return {t.name: _csv_sheet(source / f"{t.name}.csv") for t in TABLES if (source / f"{t.name}.csv").exists()}
    if not source.exists():
        return Problem(str(source), 1, "(file)", "no such file or folder")
    if source.suffix.lower() != ".xlsx":
        return Problem(str(source), 1, "(file)", "not a folder of CSV files or an .xlsx workbook")
    return _workbook_sheets(source)


def _parse(sheet: Sheet, table: Table) -> tuple[Parsed, list[Problem]]:
    parsed = Parsed(sheet.where, table)
    missing = [c for c in table.columns if c not in sheet.header and c not in table.defaults]
    if missing:
        parsed.complete = False
        needed = ", ".join(c for c in table.columns if c not in table.defaults)
        return parsed, [Problem(sheet.where, 1, c, f"missing column (the header needs {needed})") for c in missing]
    problems: list[Problem] = []
    index = {name: i for i, name in reversed(list(enumerate(sheet.header)))}
    for line, record in sheet.rows:
        if not any(v.strip() for v in record):
            continue  # a blank line or an empty spreadsheet row
        row, bad = {}, []
        if len(record) > len(sheet.header) and any(v.strip() for v in record[len(sheet.header) :]):
            bad.append(Problem(sheet.where, line, "(row)", f"{len(record)} fields, the header has {len(sheet.header)}"))
        for col, parse in table.columns.items():
            i = index.get(col, len(record))
            text = record[i] if i < len(record) else ""
            try:
                row[col] = parse(text if text.strip() else table.defaults.get(col, text))
            except ValueError as exc:
                bad.append(Problem(sheet.where, line, col, str(exc)))
        key = tuple(row.get(c) for c in table.key)
        if all(k is not None for k in key):
            if key in parsed.keys and not bad:
                first = parsed.keys[key]
                bad.append(
                    Problem(
                        sheet.where, line, ", ".join(table.key), f"{'/'.join(map(str, key))} is also on line {first}"
                    )
                )
            parsed.keys.setdefault(key, line)
        if bad:
            problems += bad
        else:
            parsed.rows.append((line, row))
    return parsed, problems


def read_table(path: Path, table: Table) -> tuple[list[tuple[Any, ...]], list[tuple[int, str]]]:
    """Parsed rows and (line, problem) of one CSV file: the cell checks of ``import_registry`` alone."""
    sheet = _csv_sheet(path)
    if isinstance(sheet, Problem):
        return [], [(sheet.line, str(sheet))]
    parsed, problems = _parse(sheet, table)
    return [tuple(r.values()) for _, r in parsed.rows], [(p.line, str(p)) for p in problems]


# ----------------------------------------------------------------------------- references


@dataclass(frozen=True)
class Reference:
    table: str
    columns: tuple[str, ...]
    target: str
    """A table whose key the columns name."""
    what: str


REFERENCES = (
    Reference("regions", ("parent_code",), "regions", "region"),
    Reference("factories", ("region_code",), "regions", "region"),
    Reference("factories", ("industry_code",), "industries", "industry"),
    Reference("headcounts", ("factory_id",), "factories", "factory"),
    Reference("assignments", ("manufacturer", "serial"), "robots", "robot"),
    Reference("assignments", ("factory_id",), "factories", "factory"),
    *(Reference(name, ("factory_id",), "factories", "factory") for name in shifts.OPTIONAL_TABLES),
)


def _in_database(conn: psycopg.Connection, ref: Reference, wanted: Iterable[tuple[Any, ...]]) -> set[tuple[Any, ...]]:
    """Those of ``wanted`` (key tuples) that ``ref.target`` (a registry table) already holds."""
    wanted = list(wanted)
    if not wanted:
        return set()
    key = BY_NAME[ref.target].key
    cols = sql.SQL(", ").join(map(sql.Identifier, key))
    arrays = sql.SQL(", ").join(sql.SQL("%s::text[]") for _ in key)
    query = sql.SQL("SELECT {cols} FROM {table} WHERE ({cols}) IN (SELECT * FROM unnest({arrays}))").format(
        cols=cols, table=sql.Identifier(ref.target), arrays=arrays
    )
    rows = conn.execute(query, [list(col) for col in zip(*wanted)]).fetchall()
    return {tuple(r) for r in rows}


def _check_references(
    conn: psycopg.Connection, parsed: dict[str, Parsed], references: Iterable[Reference] = REFERENCES
) -> list[Problem]:
    """Every reference must name a row of this import or one already in the database."""
    out: list[Problem] = []
    for ref in references:
        source = parsed.get(ref.table)
        if source is None or (ref.target in parsed and not parsed[ref.target].complete):
            continue
        given = set(parsed[ref.target].keys) if ref.target in parsed else set()
        used = [
            (line, tuple(row[c] for c in ref.columns))
            for line, row in source.rows
            if all(row[c] is not None for c in ref.columns)
        ]
        known = given | _in_database(conn, ref, {key for _, key in used} - given)
        where = parsed[ref.target].where if ref.target in parsed else f"{ref.target} of this import"
        for line, key in used:
            if key not in known:
                value = "/".join(map(str, key))
                out.append(
                    Problem(
                        source.where,
                        line,
                        ", ".join(ref.columns),
                        f"{ref.what} {value} is in neither {where} nor the database",
                    )
                )
    return out


# ----------------------------------------------------------------------------- import


def import_registry(conn: psycopg.Connection, source: Path) -> dict[str, int]:
    """Validate then import every registry table in ``source``; rows imported per table.

    ``source`` is a folder of CSV files (regions.csv, industries.csv, factories.csv,
    headcounts.csv, robots.csv, assignments.csv; any subset) or an XLSX workbook whose
    sheets carry those names. RegistryError lists every problem; then nothing is imported.
    """
    sheets = _sheets(source)
    if isinstance(sheets, Problem):
        raise RegistryError(str(source), [str(sheets)])
    if not sheets:
        raise RegistryError(
            str(source), [f"{source}:1: (file): no registry table ({', '.join(BY_NAME)}) as CSV file or XLSX sheet"]
        )
    parsed: dict[str, Parsed] = {}
    problems: list[Problem] = []
    for name, sheet in sheets.items():
        if isinstance(sheet, Problem):  # nothing of it can be checked, nor checked against
            parsed[name] = Parsed(sheet.where, BY_NAME[name], complete=False)
            problems.append(sheet)
        else:
            parsed[name], bad = _parse(sheet, BY_NAME[name])
            problems += bad
    counts = {}
    try:
        with conn.transaction(), conn.cursor() as cur:  # the checks' reads and the writes see one snapshot
            problems += _check_references(conn, parsed)
            if problems:
                raise RegistryError(str(source), [str(p) for p in sorted(problems, key=lambda p: (p.where, p.line))])
            for table in TABLES:
                if table.name in shifts.OPTIONAL_TABLES and table.name not in parsed:
                    continue  # no calendar file in this import: nothing to count
                rows = [r for _, r in parsed[table.name].rows] if table.name in parsed else []
                if table.name == "regions":  # parents first: a province, its cities, their districts
                    rows.sort(key=lambda r: (not r["code"].endswith("0000"), not r["code"].endswith("00")))
                if table.name == "assignments":  # SQL wants factory, date, manufacturer, serial
                    rows = [{k: r[k] for k in ("factory_id", "valid_from", "manufacturer", "serial")} for r in rows]
                cur.executemany(table.upsert, [tuple(r.values()) for r in rows])
                counts[table.name] = len(rows)
            cur.execute("SELECT refresh_factory_fleet()")  # robots in operation per factory (migration 090)
    except psycopg.Error as exc:  # a check above missed something: still one line, still nothing imported
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RegistryError(str(source), [f"{source}:1: (import): the database refused the rows: {first}"]) from None
    return counts


def load_reference_targets(conn: psycopg.Connection) -> int:
    """Preload the public targets shipped with the package (policy documents named per row), each
    with the density definition it is measured in (migrations/040_definitions.sql)."""
    text = resources.files("robodensity.reference").joinpath("targets.csv").read_text(encoding="utf-8")
    rows = [
        (
            r["scope_region"],
            r["scope_industry"],
            r["metric"],
            float(r["value"]),
            r["unit"],
            _date(r["due_date"]),
            r["source"],
            r["definition"],
        )
        for r in csv.DictReader(text.splitlines())
    ]
    with conn.transaction():
        conn.cursor().executemany(
            "INSERT INTO targets (scope_region, scope_industry, metric, value, unit, due_date, source, definition) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            rows,
        )
    return len(rows)
