"""Official statistics and density definitions import, validated as the registry is.

``import_statistics(conn, source)`` reads

* ``employment``: region, industry ('*' = all manufacturing, or a GB/T 4754 code), year,
  employees, source, vintage, and optionally firms (``all``, the default, or
  ``above_designated_size``) -- official employment by region x industry x year;
* ``installations``: region, year, installations, source, vintage -- robots installed;
* ``definitions``: definition, numerator, scope, unit, denominator, title, title_zh, origin (optional:
  ``local``, or the region code of the statisticians who defined it, which a province publishes);
* ``key_industries``: region_code, industry_code, source -- the key industries of a region;

from one CSV file (its stem names the table, else ``default``), a folder of such CSV files,
or an XLSX workbook with sheets of those names. Cells, duplicate keys and regions are checked
with the registry's readers (storage/registry.py); with any problem a RegistryError lists each
as ``file:line: column: problem`` and nothing is imported. Rows are upserted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import psycopg

from robodensity.core.errors import RegistryError
from robodensity.storage.registry import (
    INDUSTRY,
    REGION,
    Parsed,
    Parser,
    Problem,
    Reference,
    Sheet,
    Table,
    _check_references,
    _count,
    _csv_sheet,
    _parse,
    _pattern,
    _required,
    _workbook_sheets,
)


def _one_of(*allowed: str) -> Parser:
    def parse(s: str) -> str:
        if s.strip() not in allowed:
            raise ValueError(f"{s.strip()!r} is not one of {', '.join(allowed)}")
        return s.strip()

    return parse


def _industry_or_all(s: str) -> str:
    return "*" if s.strip() == "*" else INDUSTRY(s)


def _origin(s: str) -> str:
    """Who defined a definition (migration 090): ``local`` (this deployment only) or the GB/T 2260
    code of the region whose statisticians did, so a province's own definitions replicate."""
    s = s.strip() or "local"
    if s != "local" and not re.fullmatch(r"[1-9][0-9]{5}", s):
        raise ValueError(f"{s!r} is neither local nor a GB/T 2260 region code like 320000")
    return s


def _year(s: str) -> int:
    n = _count(s)
    if not 1949 <= n <= 2200:
        raise ValueError(f"{n} is not a year")
    return n


TABLES = (
    Table(
        "employment",
        {
            "region": REGION,
            "industry": _industry_or_all,
            "year": _year,
            "firms": _one_of("all", "above_designated_size"),
            "employees": _count,
            "source": _required,
            "vintage": _required,
        },
        "INSERT INTO employment_statistics (region_code, industry_code, year, firms, employees, source, vintage) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (region_code, industry_code, year, firms) DO UPDATE SET "
        "employees = EXCLUDED.employees, source = EXCLUDED.source, vintage = EXCLUDED.vintage",
        ("region", "industry", "year", "firms"),
        {"firms": "all"},
    ),
    Table(
        "installations",
        {"region": REGION, "year": _year, "installations": _count, "source": _required, "vintage": _required},
        "INSERT INTO installation_statistics VALUES (%s, %s, %s, %s, %s) ON CONFLICT (region_code, year) "
        "DO UPDATE SET installations = EXCLUDED.installations, source = EXCLUDED.source, vintage = EXCLUDED.vintage",
        ("region", "year"),
    ),
    Table(
        "definitions",
        {
            "definition": _pattern(r"^[a-z][a-z0-9-]{0,62}$", "a name of lower-case letters, digits and -"),
            "numerator": _one_of("in_operation", "verified"),
            "scope": _one_of("all", "key", "above_designated_size"),
            "unit": _one_of("robots", "robot_days"),
            "denominator": _one_of("participating", "official"),
            "title": _required,
            "title_zh": str.strip,
            "origin": _origin,
        },
        "INSERT INTO density_definitions (definition, numerator, scope, unit, denominator, title, title_zh, origin) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (definition) DO UPDATE SET "
        "numerator = EXCLUDED.numerator, scope = EXCLUDED.scope, unit = EXCLUDED.unit, "
        "denominator = EXCLUDED.denominator, title = EXCLUDED.title, title_zh = EXCLUDED.title_zh, "
        "origin = EXCLUDED.origin",
        ("definition",),
        {"title_zh": "", "origin": "local"},
    ),
    Table(
        "key_industries",
        {"region_code": REGION, "industry_code": INDUSTRY, "source": str.strip},
        "INSERT INTO key_industries VALUES (%s, %s, %s) ON CONFLICT (region_code, industry_code) "
        "DO UPDATE SET source = EXCLUDED.source",
        ("region_code", "industry_code"),
        {"source": ""},
    ),
)
BY_NAME = {t.name: t for t in TABLES}
STATISTICS = ("employment", "installations")
DEFINITIONS = ("definitions", "key_industries")
REFERENCES = (
    Reference("employment", ("region",), "regions", "region"),
    Reference("installations", ("region",), "regions", "region"),
    Reference("key_industries", ("region_code",), "regions", "region"),
)


def _sheets(source: Path, names: tuple[str, ...], default: str) -> dict[str, Sheet | Problem] | Problem:
    if source.is_dir():
        return {n: _csv_sheet(source / f"{n}.csv") for n in names if (source / f"{n}.csv").exists()}
    if not source.exists():
        return Problem(str(source), 1, "(file)", "no such file or folder")
    if source.suffix.lower() == ".xlsx":
        return _workbook_sheets(source, names)
    if source.suffix.lower() == ".csv":
        return {source.stem if source.stem in names else default: _csv_sheet(source)}
    return Problem(str(source), 1, "(file)", "not a CSV file, a folder of CSV files or an .xlsx workbook")


def import_statistics(
    conn: psycopg.Connection, source: Path, names: Iterable[str] = STATISTICS + DEFINITIONS, default: str = "employment"
) -> dict[str, int]:
    """Validate then import the tables ``names`` found in ``source``; rows imported per table.

    RegistryError lists every problem (``file:line: column: problem``); then nothing is imported.
    """
    names = tuple(names)
    sheets = _sheets(source, names, default)
    if isinstance(sheets, Problem):
        raise RegistryError(str(source), [str(sheets)])
    if not sheets:
        raise RegistryError(str(source), [f"{source}:1: (file): no table ({', '.join(names)}) as CSV file or sheet"])
    parsed: dict[str, Parsed] = {}
    problems: list[Problem] = []
    for name, sheet in sheets.items():
        if isinstance(sheet, Problem):
            problems.append(sheet)
            continue
        parsed[name], bad = _parse(sheet, BY_NAME[name])
        problems += bad
    try:
        with conn.transaction(), conn.cursor() as cur:
            problems += _check_references(conn, parsed, REFERENCES)
            if problems:
                raise RegistryError(str(source), [str(p) for p in sorted(problems, key=lambda p: (p.where, p.line))])
            for name, table in parsed.items():
                cur.executemany(BY_NAME[name].upsert, [tuple(r.values()) for _, r in table.rows])
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RegistryError(str(source), [f"{source}:1: (import): the database refused the rows: {first}"]) from None
    return {name: len(table.rows) for name, table in parsed.items()}
