"""Reading what a person types or hands over: dates, small CSV inputs, secret files.

Each function raises ConfigError naming the option or the file, line and column, so the
CLI only passes values through and a notebook gets the same checks.
"""

from __future__ import annotations

import csv
from datetime import date, datetime, time
from pathlib import Path

from robodensity.core.errors import ConfigError


def local_day(value: str, option: str) -> datetime:
    """Midnight (China Standard Time) starting the day ``value`` (YYYY-MM-DD) given as ``option``."""
    from robodensity.app.metrics_job import LOCAL_TZ

    try:
        d = date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{option} must be a date YYYY-MM-DD; got {value!r}") from None
    return datetime.combine(d, time.min, LOCAL_TZ)


def local_period(
    start: str, end: str, start_option: str = "--from", end_option: str = "--to"
) -> tuple[datetime, datetime]:
    """[start, end) as local midnights; ConfigError unless end is after start."""
    first, last = local_day(start, start_option), local_day(end, end_option)
    if last <= first:
        raise ConfigError(f"{end_option} must be after {start_option}; got {start_option} {start} {end_option} {end}")
    return first, last


def read_installations(path: Path) -> tuple[list[int], list[float]]:
    """Years and installations from a CSV with the columns year,installations."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in ("year", "installations") if c not in (reader.fieldnames or [])]
    if missing:
        raise ConfigError(f"{path}:1: {missing[0]}: missing column (needs year,installations)")
    years: list[int] = []
    counts: list[float] = []
    for line, row in enumerate(reader, start=2):
        years.append(int(_number(path, line, row, "year")))
        counts.append(_number(path, line, row, "installations"))
    return years, counts


def _number(path: Path, line: int, row: dict[str, str], column: str) -> float:
    try:
        value = float(row[column] or "")
    except ValueError:
        raise ConfigError(f"{path}:{line}: {column}: {row[column]!r} is not a number") from None
    if column == "year" and not value.is_integer():
        raise ConfigError(f"{path}:{line}: {column}: {row[column]!r} is not a whole year")
    return value


def read_secret_file(path: Path, what: str) -> str:
    """The stripped content of a file holding one secret (a token, a password, a URL)."""
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (expected {what})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc}") from None
    if not secret:
        raise ConfigError(f"{path} is empty (expected {what})")
    return secret
