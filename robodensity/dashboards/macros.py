"""Expand a panel's SQL the way Grafana does before it reaches PostgreSQL, so tests can run it.

Three stages, in Grafana's order:

1. Template variables, in the browser (``templateSrv.replace`` with the SQL data source's
   ``interpolateVariable``): ``$var``, ``${var}``, ``[[var]]`` and ``${var:format}``.
   Without a format, a single value has its single quotes doubled but is not quoted; a
   multi-value or include-all variable's values are each quoted (``'a','b'``). Formats
   ``csv``, ``sqlstring``, ``singlequote``, ``doublequote``, ``pipe``, ``raw`` follow
   Grafana's formatRegistry. Built-ins ``$__from``/``$__to`` (epoch ms) and
   ``$__interval``/``$__interval_ms`` are replaced here too.
2. The SQL engine's global substitutions (sqleng ``Interpolate``): ``$__interval_ms``,
   ``$__interval``, ``$__unixEpochFrom()``, ``$__unixEpochTo()``.
3. The PostgreSQL macro engine (pkg/tsdb/grafana-postgresql-datasource/macros.go), with
   TimescaleDB off: ``$__time``, ``$__timeEpoch``, ``$__timeFilter``, ``$__timeFrom``,
   ``$__timeTo``, ``$__timeGroup`` (and the pre-5.3 rule: a ``$__timeGroup(...)`` directly
   followed by ``,`` becomes ``$__timeGroupAlias``), ``$__timeGroupAlias``,
   ``$__unixEpochFilter``, ``$__unixEpochNanoFilter``, ``$__unixEpochNanoFrom``,
   ``$__unixEpochNanoTo``, ``$__unixEpochGroup``, ``$__unixEpochGroupAlias``.
   Times are formatted as Go's ``time.RFC3339Nano`` in UTC.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

VarValue = str | Sequence[str]


class MacroError(ValueError):
    pass


@dataclass(frozen=True)
class Variable:
    """A template variable's current value(s) and the flags Grafana's quoting depends on."""

    value: VarValue
    multi: bool = False
    include_all: bool = False


# public/app/features/templating/template_srv.ts: variableRegex
_VARIABLE_RE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\${(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?}")
_MACRO_RE = re.compile(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)")


def rfc3339nano(t: datetime) -> str:
    """Go's time.RFC3339Nano of ``t`` in UTC: trailing zeros of the fraction dropped, 'Z' for UTC."""
    t = t.astimezone(UTC)
    base = t.strftime("%Y-%m-%dT%H:%M:%S")
    if t.microsecond:
        base += "." + f"{t.microsecond:06d}".rstrip("0")
    return base + "Z"


def go_float(x: float) -> str:
    """Go's ``%v`` of a float64 (shortest repr; exponent only from 1e21)."""
    if x == int(x) and abs(x) < 1e21:
        return str(int(x))
    return repr(x)


def parse_interval(s: str) -> timedelta:
    """gtime.ParseInterval: Go durations plus d, w, M (30 d... Grafana uses calendar months), y."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)", s.strip())
    if not m:
        raise MacroError(f"error parsing interval {s}")
    n, unit = float(m.group(1)), m.group(2)
    seconds = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}[unit]
    return timedelta(seconds=n * seconds)


def format_interval(d: timedelta) -> str:
    """gtime.FormatInterval: the largest whole unit (y, w, d, h, m, s) else ms."""
    ms = int(d.total_seconds() * 1000)
    for unit, size in (
        ("y", 31536000000),
        ("w", 604800000),
        ("d", 86400000),
        ("h", 3600000),
        ("m", 60000),
        ("s", 1000),
    ):
        if ms >= size:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _quote_literal(v: str) -> str:
    return "'" + v.replace("'", "''") + "'"


def _format(value: VarValue, var: Variable, fmt: str | None) -> str:
    values = [value] if isinstance(value, str) else list(value)
    if fmt is None:  # SqlDatasource.interpolateVariable
        if isinstance(value, str):
            return _quote_literal(value) if (var.multi or var.include_all) else value.replace("'", "''")
        return ",".join(_quote_literal(v) for v in values)
    if fmt == "csv":
        return ",".join(values)
    if fmt == "sqlstring":
        return ",".join(_quote_literal(v) for v in values)
    if fmt == "singlequote":
        return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)
    if fmt == "doublequote":
        return ",".join('"' + v.replace('"', '\\"') + '"' for v in values)
    if fmt == "pipe":
        return "|".join(values)
    if fmt == "raw":
        return ",".join(values)
    raise MacroError(f"variable format {fmt!r} is not supported by this expander")


def replace_variables(
    sql: str,
    variables: Mapping[str, Variable | VarValue],
    *,
    time_from: datetime,
    time_to: datetime,
    interval: timedelta,
) -> str:
    """Stage 1: template variables as the browser substitutes them. Unknown names stay as written."""
    builtins = {
        "__from": str(int(time_from.timestamp() * 1000)),
        "__to": str(int(time_to.timestamp() * 1000)),
        "__interval": format_interval(interval),
        "__interval_ms": str(int(interval.total_seconds() * 1000)),
    }

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(4)
        fmt = m.group(3) or m.group(6)
        if name in builtins:
            return builtins[name]
        if name not in variables:
            return m.group(0)
        var = variables[name]
        if not isinstance(var, Variable):
            var = Variable(var)
        return _format(var.value, var, fmt)

    return _VARIABLE_RE.sub(sub, sql)


def interpolate_globals(sql: str, *, time_from: datetime, time_to: datetime, interval: timedelta) -> str:
    """Stage 2: sqleng.Interpolate."""
    sql = sql.replace("$__interval_ms", str(int(interval.total_seconds() * 1000)))
    sql = sql.replace("$__interval", format_interval(interval))
    sql = sql.replace("$__unixEpochFrom()", str(int(time_from.timestamp())))
    return sql.replace("$__unixEpochTo()", str(int(time_to.timestamp())))


def _evaluate(name: str, args: list[str], time_from: datetime, time_to: datetime) -> str:
    def need_column() -> str:
        if not args or args == [""]:
            raise MacroError(f"missing time column argument for macro {name}")
        return args[0]

    f, t = rfc3339nano(time_from), rfc3339nano(time_to)
    if name == "__time":
        return f'{need_column()} AS "time"'
    if name == "__timeEpoch":
        return f'extract(epoch from {need_column()}) as "time"'
    if name == "__timeFilter":
        return f"{need_column()} BETWEEN '{f}' AND '{t}'"
    if name == "__timeFrom":
        return f"'{f}'"
    if name == "__timeTo":
        return f"'{t}'"
    if name in ("__timeGroup", "__unixEpochGroup"):
        if len(args) < 2:
            raise MacroError(f"macro {name} needs time column and interval and optional fill value")
        s = go_float(parse_interval(args[1].strip("'")).total_seconds())
        if name == "__timeGroup":
            return f"floor(extract(epoch from {args[0]})/{s})*{s}"
        return f"floor(({args[0]})/{s})*{s}"
    if name in ("__timeGroupAlias", "__unixEpochGroupAlias"):
        return _evaluate(name.removesuffix("Alias"), args, time_from, time_to) + ' AS "time"'
    if name == "__unixEpochFilter":
        c = need_column()
        return f"{c} >= {int(time_from.timestamp())} AND {c} <= {int(time_to.timestamp())}"
    if name == "__unixEpochNanoFilter":
        c = need_column()
        return f"{c} >= {_nanos(time_from)} AND {c} <= {_nanos(time_to)}"
    if name == "__unixEpochNanoFrom":
        return str(_nanos(time_from))
    if name == "__unixEpochNanoTo":
        return str(_nanos(time_to))
    raise MacroError(f"unknown macro {name!r}")


def _nanos(t: datetime) -> int:
    return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000


def interpolate_macros(sql: str, *, time_from: datetime, time_to: datetime) -> str:
    """Stage 3: the PostgreSQL macro engine (TimescaleDB off)."""
    original = sql

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name == "__timeGroup":
            # Pre-5.3 compatibility, as Grafana does it: look at the first occurrence in the query.
            index = original.find(m.group(0))
            if index >= 0 and original[index + len(m.group(0)) : index + len(m.group(0)) + 1] == ",":
                name = "__timeGroupAlias"
        args = [a.strip(" ") for a in m.group(2).split(",")]
        return _evaluate(name, args, time_from, time_to)

    return _MACRO_RE.sub(sub, sql)


def expand(
    sql: str,
    variables: Mapping[str, Variable | VarValue] | None = None,
    *,
    time_from: datetime,
    time_to: datetime,
    interval: timedelta = timedelta(hours=1),
) -> str:
    """The SQL Grafana would send to PostgreSQL for ``sql`` with these variables, time range and interval."""
    if time_from.tzinfo is None or time_to.tzinfo is None:
        raise MacroError("time_from and time_to must be timezone-aware")
    sql = replace_variables(sql, variables or {}, time_from=time_from, time_to=time_to, interval=interval)
    sql = interpolate_globals(sql, time_from=time_from, time_to=time_to, interval=interval)
    return interpolate_macros(sql, time_from=time_from, time_to=time_to)
