"""Every table panel's data as CSV or XLSX, for the officials who work in spreadsheets.

``panel_tables`` runs the SQL of each table panel of the chosen dashboards exactly as
Grafana would (template variables and time macros expanded by ``dashboards.macros``)
and returns one ``Sheet`` per panel query. A template variable not given takes the
first value of its own query, as Grafana does when a dashboard opens. ``write_xlsx``
writes one worksheet per table plus an index sheet (what, for which variables, which
period); ``write_csv`` writes one CSV file per table into a folder. Times in the files
are China Standard Time without an offset (spreadsheets have no time zones).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from robodensity.app.metrics_job import LOCAL_TZ
from robodensity.core.errors import ConfigError
from robodensity.dashboards import macros
from robodensity.dashboards.build import build_all
from robodensity.dashboards.panels import panels_of

FORMATS = ("csv", "xlsx")
_SHEET_BAD = re.compile(r"[\[\]:*?/\\]")


@dataclass
class Sheet:
    dashboard: str
    title: str
    columns: list[str]
    rows: list[tuple[Any, ...]]
    variables: dict[str, str] = field(default_factory=dict)


def parse_vars(pairs: list[str]) -> dict[str, str]:
    """``name=value`` options as a dict; ConfigError naming the bad one."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"\w+", name):
            raise ConfigError(f"--var must be NAME=VALUE (e.g. region=320000); got {pair!r}")
        out[name] = value
    return out


def _dashboards(uids: list[str]) -> dict[str, dict[str, Any]]:
    models = build_all()
    unknown = [u for u in uids if u not in models]
    if unknown:
        raise ConfigError(f"--dashboard {unknown[0]!r} is not one of {', '.join(sorted(models))}")
    return {u: m for u, m in models.items() if not uids or u in uids}


def _resolve(
    conn: psycopg.Connection, model: dict[str, Any], given: Mapping[str, str], time_from: datetime, time_to: datetime
) -> dict[str, str]:
    """The dashboard's variables: given ones, else the first value of the variable's query."""
    values: dict[str, str] = {}
    for var in model.get("templating", {}).get("list", []):
        name = var["name"]
        if name in given:
            values[name] = given[name]
            continue
        sql = var.get("query")
        if not isinstance(sql, str):
            raise ConfigError(f"dashboard {model['uid']}: give its variable with --var {name}=VALUE")
        cur = conn.execute(macros.expand(sql, values, time_from=time_from, time_to=time_to))
        cols = [d.name for d in cur.description or []]
        first = cur.fetchone()
        if first is None:
            raise ConfigError(f"dashboard {model['uid']}: variable {name} has no values yet; give --var {name}=VALUE")
        values[name] = str(first[cols.index("__value")] if "__value" in cols else first[0])
    return values


def panel_tables(
    conn: psycopg.Connection,
    dashboards: list[str],
    variables: Mapping[str, str],
    time_from: datetime,
    time_to: datetime,
) -> list[Sheet]:
    """One Sheet per query of every table panel of ``dashboards`` (all dashboards when empty)."""
    sheets: list[Sheet] = []
    for uid, model in _dashboards(dashboards).items():
        values = _resolve(conn, model, variables, time_from, time_to)
        for panel in panels_of(model):
            if panel.get("type") != "table":
                continue
            for target in panel.get("targets", []):
                sql = macros.expand(target["rawSql"], values, time_from=time_from, time_to=time_to)
                cur = conn.execute(sql)
                columns = [d.name for d in cur.description or []]
                sheets.append(Sheet(uid, panel["title"], columns, cur.fetchall(), values))
    return sheets


def _plain(value: Any) -> Any:
    """A cell value a spreadsheet understands: local naive times, floats, text for structures."""
    if isinstance(value, datetime):
        return value.astimezone(LOCAL_TZ).replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, ensure_ascii=False, default=str)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _sheet_name(title: str, taken: set[str]) -> str:
    base = _SHEET_BAD.sub(" ", title).strip()[:28] or "table"
    name, n = base, 1
    while name.lower() in taken:
        n += 1
        name = f"{base[:26]} {n}"
    taken.add(name.lower())
    return name


def write_xlsx(sheets: list[Sheet], path: Path, time_from: datetime, time_to: datetime) -> Path:
    """One worksheet per table, after an index sheet naming each table's dashboard, variables and period."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    index = wb.active
    assert index is not None
    index.title = "index"
    period = f"{time_from.astimezone(LOCAL_TZ):%Y-%m-%d %H:%M} – {time_to.astimezone(LOCAL_TZ):%Y-%m-%d %H:%M} CST"
    index.append(["sheet", "dashboard", "table", "variables", "period", "rows"])
    taken = {"index"}
    for sheet in sheets:
        name = _sheet_name(sheet.title, taken)
        _fill(wb.create_sheet(name), sheet)
        variables = ", ".join(f"{k}={v}" for k, v in sheet.variables.items())
        index.append([name, sheet.dashboard, sheet.title, variables, period, len(sheet.rows)])
    for cell in index[1]:
        cell.font = Font(bold=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)
    return path


def write_csv(sheets: list[Sheet], folder: Path) -> list[Path]:
    """One UTF-8 CSV (with BOM, so spreadsheets read the Chinese text) per table; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    taken: set[str] = set()
    for sheet in sheets:
        path = folder / f"{sheet.dashboard}--{_sheet_name(sheet.title, taken).replace(' ', '_')}.csv"
        with path.open("w", encoding="utf-8-sig", newline="") as f:
            w = csv.writer(f)
            w.writerow(sheet.columns)
            w.writerows([_plain(v) for v in row] for row in sheet.rows)
        paths.append(path)
    return paths


def _fill(ws: Any, sheet: Sheet) -> None:
    from openpyxl.styles import Font

    ws.append(sheet.columns)
    for cell in ws[1]:
        cell.font = Font(bold=True)
    for row in sheet.rows:
        ws.append([_plain(v) for v in row])
    ws.freeze_panes = "A2"


def write_rows_xlsx(rows: list[dict[str, Any]], columns: list[str], title: str, path: Path) -> Path:
    """Rows of a report (e.g. ``report density``) as a one-sheet workbook."""
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = _sheet_name(title, set())
    _fill(ws, Sheet("report", title, columns, [tuple(r.get(c) for c in columns) for r in rows]))
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)
    return path
