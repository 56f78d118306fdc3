"""Registry import: regions, industries, factories, headcounts, robots, assignments.

``import_registry(folder)`` reads the CSV files an economic department hands over,
validates every row of every file first and imports nothing unless all are good;
a RegistryError lists each bad row with its file, line number and reason.
Rows are upserted, so importing the same files twice changes nothing.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg

from robodensity.errors import RegistryError

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


TABLES = (
    Table(
        "regions",
        {"code": REGION, "name": _required, "name_en": str.strip, "parent_code": _optional},
        "INSERT INTO regions (code, name, name_en, parent_code) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, name_en = EXCLUDED.name_en, "
        "parent_code = EXCLUDED.parent_code",
    ),
    Table(
        "industries",
        {"code": INDUSTRY, "name": _required, "name_en": str.strip, "key_manufacturing": _bool},
        "INSERT INTO industries VALUES (%s, %s, %s, %s) ON CONFLICT (code) DO UPDATE SET "
        "name = EXCLUDED.name, name_en = EXCLUDED.name_en, key_manufacturing = EXCLUDED.key_manufacturing",
    ),
    Table(
        "factories",
        {"factory_id": _required, "name": _required, "region_code": REGION, "industry_code": INDUSTRY},
        "INSERT INTO factories VALUES (%s, %s, %s, %s) ON CONFLICT (factory_id) DO UPDATE SET "
        "name = EXCLUDED.name, region_code = EXCLUDED.region_code, industry_code = EXCLUDED.industry_code",
    ),
    Table(
        "headcounts",
        {"factory_id": _required, "valid_from": _date, "employee_count": _count},
        "INSERT INTO headcounts VALUES (%s, %s, %s) ON CONFLICT (factory_id, valid_from) "
        "DO UPDATE SET employee_count = EXCLUDED.employee_count",
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
    ),
    Table(
        "assignments",
        {"manufacturer": _required, "serial": _required, "factory_id": _required, "valid_from": _date},
        "INSERT INTO assignments (robot_id, factory_id, valid_from) "
        "SELECT robot_id, %s, %s FROM robots WHERE manufacturer = %s AND serial = %s "
        "ON CONFLICT (robot_id, valid_from) DO UPDATE SET factory_id = EXCLUDED.factory_id",
    ),
)


def _records(path: Path, sheet: str) -> tuple[list[str], list[dict[str, str]]] | str:
    """(header, rows as text) of a CSV file or of one sheet of an XLSX workbook; a str is a problem."""
    if path.suffix.lower() == ".xlsx":
        from openpyxl import load_workbook

        book = load_workbook(path, read_only=True, data_only=True)
        if sheet not in book.sheetnames:
            return f"{path.name}: no sheet named {sheet}"
        cells = [["" if v is None else _cell_text(v) for v in row] for row in book[sheet].iter_rows(values_only=True)]
        header = [h.strip() for h in cells[0]] if cells else []
        return header, [dict(zip(header, row)) for row in cells[1:]]
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        return f"{path.name}: not UTF-8 ({exc.reason} at byte {exc.start})"
    reader = csv.DictReader(text.splitlines())
    return list(reader.fieldnames or []), list(reader)


def _cell_text(v: object) -> str:
    if isinstance(v, datetime):
        return v.date().isoformat()
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def read_table(path: Path, table: Table) -> tuple[list[tuple[Any, ...]], list[tuple[int, str]]]:
    """Parsed rows and (line, reason) problems of one CSV file or workbook sheet."""
    where = path.name if path.suffix.lower() != ".xlsx" else f"{path.name}[{table.name}]"
    records = _records(path, table.name)
    if isinstance(records, str):
        return [], [(1, records)]
    header, raw_rows = records
    missing = [c for c in table.columns if c not in header]
    if missing:
        return [], [(1, f"{where}: missing column(s) {', '.join(missing)}")]
    rows: list[tuple[Any, ...]] = []
    problems: list[tuple[int, str]] = []
    for line, raw in enumerate(raw_rows, start=2):
        if not any(isinstance(v, str) and v.strip() for v in raw.values()):
            continue  # a blank line or an empty spreadsheet row
        values, errors = [], []
        for col, parse in table.columns.items():
            try:
                values.append(parse(raw.get(col) or ""))
            except ValueError as exc:
                errors.append(f"{col} {exc}")
        if errors:
            problems.append((line, f"{where}: " + "; ".join(errors)))
        else:
            rows.append(tuple(values))
    return rows, problems


def _sources(source: Path) -> dict[str, Path]:
    """Table name -> file: ``source`` is a folder of CSV files, or an XLSX workbook with a sheet per table."""
    if source.is_file() and source.suffix.lower() == ".xlsx":
        from openpyxl import load_workbook

        sheets = set(load_workbook(source, read_only=True).sheetnames)
        return {t.name: source for t in TABLES if t.name in sheets}
    return {t.name: source / f"{t.name}.csv" for t in TABLES if (source / f"{t.name}.csv").exists()}


def import_registry(conn: psycopg.Connection, source: Path) -> dict[str, int]:
    """Validate then import every registry table in ``source``; rows imported per table.

    ``source`` is a folder of CSV files (regions.csv, industries.csv, factories.csv,
    headcounts.csv, robots.csv, assignments.csv; any subset) or an XLSX workbook whose
    sheets carry those names.
    """
    parsed: dict[str, list[tuple[Any, ...]]] = {}
    problems: list[tuple[int, str]] = []
    files = _sources(source)
    for table in TABLES:
        if table.name in files:
            rows, bad = read_table(files[table.name], table)
            parsed[table.name] = rows
            problems += bad
    if not parsed:
        raise RegistryError(str(source), [(0, "no registry table (regions, robots, ...) found as CSV or XLSX sheet")])
    if not problems:  # line numbers below count good rows only, so check them on clean files
        problems += _check_references(parsed)
    if problems:
        raise RegistryError(str(source), problems)
    counts = {}
    with conn.transaction(), conn.cursor() as cur:
        for table in TABLES:
            rows = parsed.get(table.name, [])
            if table.name == "assignments":  # SQL wants factory, date, manufacturer, serial
                rows = [(f, d, m, s) for m, s, f, d in rows]
            cur.executemany(table.upsert, rows)
            counts[table.name] = len(rows)
    return counts


def _check_references(parsed: dict[str, list[tuple[Any, ...]]]) -> list[tuple[int, str]]:
    """Cross-file checks within the files given (the database checks the rest)."""
    out = []
    robots = {(r[0], r[1]) for r in parsed.get("robots", [])}
    factories = {f[0] for f in parsed.get("factories", [])}
    for line, (m, s, f, _) in enumerate(parsed.get("assignments", []), start=2):
        if robots and (m, s) not in robots:
            out.append((line, f"assignments.csv: robot {m}/{s} is not in robots.csv"))
        if factories and f not in factories:
            out.append((line, f"assignments.csv: factory {f} is not in factories.csv"))
    return out


def load_reference_targets(conn: psycopg.Connection) -> int:
    """Preload the public targets shipped with the package (policy documents named per row)."""
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
        )
        for r in csv.DictReader(text.splitlines())
    ]
    with conn.transaction():
        conn.cursor().executemany(
            "INSERT INTO targets VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING", rows
        )
    return len(rows)
