"""Shared pieces of every dashboard: the data source, the SQL query type, panel helpers.

The Grafana Foundation SDK has no builder for the PostgreSQL data source's query, so
``SqlQuery`` is ours: it serialises to the JSON Grafana stores (``rawSql``, ``format``,
``editorMode: code``) and is registered with the SDK's runtime so that
``Dashboard.from_json`` turns such targets back into ``SqlQuery`` objects.

Panel SQL uses unqualified names: the read-only role's ``search_path`` selects the
schema (``ALTER ROLE robodensity_reader SET search_path = robodensity``).
"""

from __future__ import annotations

import textwrap
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from grafana_foundation_sdk.builders import (
    barchart,
    gauge,
    heatmap,
    stat,
    statetimeline,
    table,
    timeseries,
)
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import heatmap as heatmap_model

from robodensity.core.settings import DEFAULT_TIMEZONE

DATASOURCE_UID = "robodensity-pg"
DATASOURCE_TYPE = "grafana-postgresql-datasource"
"""Grafana's built-in PostgreSQL plugin id since Grafana 10.3 (``postgres`` before)."""
DATASOURCE_NAME = "RoboDensity PostgreSQL"
DATASOURCE = model.DataSourceRef(type_val=DATASOURCE_TYPE, uid=DATASOURCE_UID)
TIMEZONE = DEFAULT_TIMEZONE
UTILISATION_PLAN_NOTE = (
    "Utilisation = EXECUTING time inside the planned time / planned time (= ISO 22400-2 availability). "
    "Planned: each factory's shift calendar, 24/7 where it has none; a density row's 'plan' column says which "
    "(planned: 24/7, or planned: shift calendars (N of M factories))."
)
"""What every region utilisation panel says of the plan it divides by (issue 15)."""
"""Days of the daily blocks are China Standard Time days; dashboards show that zone."""

Format = Literal["time_series", "table"]

STATE_COLOURS = {  # canonical robot states (wire contract) -> colour, with bilingual labels
    "EXECUTING": ("green", "EXECUTING 运行"),
    "IDLE": ("yellow", "IDLE 空闲"),
    "FAULT": ("red", "FAULT 故障"),
    "OUT_OF_SERVICE": ("purple", "OUT_OF_SERVICE 停用"),
    "OFFLINE": ("text", "OFFLINE 离线"),
}


@dataclass
class SqlQuery(cogvariants.Dataquery):
    """A raw-SQL query of Grafana's PostgreSQL data source."""

    ref_id: str = "A"
    raw_sql: str = ""
    format: Format = "table"
    datasource: dict[str, str] = field(default_factory=lambda: {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID})

    def to_json(self) -> dict[str, object]:
        return {
            "refId": self.ref_id,
            "datasource": dict(self.datasource),
            "editorMode": "code",
            "rawQuery": True,
            "format": self.format,
            "rawSql": self.raw_sql,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SqlQuery:
        return cls(
            ref_id=data.get("refId", "A"),
            raw_sql=data.get("rawSql", ""),
            format=data.get("format", "table"),
            datasource=dict(data.get("datasource") or {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID}),
        )


class Sql(cogbuilder.Builder[SqlQuery]):
    def __init__(self, raw_sql: str, format: Format = "table", ref_id: str = "A") -> None:
        self._internal = SqlQuery(ref_id=ref_id, raw_sql=clean(raw_sql), format=format)

    def build(self) -> SqlQuery:
        return self._internal


for _type in (DATASOURCE_TYPE, "postgres"):
    cogruntime.register_dataquery_variant(
        cogruntime.DataqueryConfig(identifier=_type, from_json_hook=SqlQuery.from_json)
    )


def clean(sql: str) -> str:
    return textwrap.dedent(sql).strip()


# ----------------------------------------------------------------------------- SQL fragments

LATEST_PERIOD = """\
    p AS (
      SELECT period_start, period_end FROM v_density
      WHERE region_code = '$region' AND industry_code = '*' AND period_end <= $__timeTo()
      ORDER BY period_end DESC, period_start DESC LIMIT 1
    )"""
"""CTE ``p``: the region's latest density period ending inside the dashboard's time range."""

SELECTED_PERIOD = """\
    p AS (
      SELECT split_part('$period', '/', 1)::timestamptz AS period_start,
             split_part('$period', '/', 2)::timestamptz AS period_end
    )"""
"""CTE ``p``: the period chosen in the ``period`` variable (value ``start/end``, ISO 8601)."""


def day_filter(column: str) -> str:
    """``column`` (a China Standard Time ``date``) within the dashboard's time range, both ends included.

    ``$__timeFilter(day)`` would compare a date with UTC timestamps and so take the wrong calendar
    day for eight hours of each day; this converts the range's ends to CST dates instead.
    """
    return (
        f"{column} BETWEEN ($__timeFrom()::timestamptz AT TIME ZONE '{TIMEZONE}')::date "
        f"AND ($__timeTo()::timestamptz AT TIME ZONE '{TIMEZONE}')::date"
    )


# ----------------------------------------------------------------------------- variables


def query_variable(
    name: str, label: str, sql: str, *, refresh: model.VariableRefresh = model.VariableRefresh.ON_DASHBOARD_LOAD
) -> dash.QueryVariable:
    """A single-value variable filled by SQL returning ``__value`` and ``__text`` columns."""
    return (
        dash.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(clean(sql))
        .refresh(refresh)
        .sort(model.VariableSort.DISABLED)
        .multi(False)
        .include_all(False)
    )


REGION_SQL = "SELECT code AS __value, code || ' ' || name || ' ' || name_en AS __text FROM v_regions"
INDUSTRY_SQL = """\
    SELECT __value, __text FROM (
      SELECT 0 AS k, '*' AS __value, '* 全部制造业 All manufacturing' AS __text
      UNION ALL
      SELECT 1, code, code || ' ' || name || ' ' || name_en FROM v_industries
    ) i ORDER BY k, __value"""
PERIOD_SQL = f"""\
    SELECT to_char(period_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') || '/' ||
           to_char(period_end AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS __value,
           to_char(period_start AT TIME ZONE '{TIMEZONE}', 'YYYY-MM-DD') || ' – ' ||
           to_char(period_end AT TIME ZONE '{TIMEZONE}', 'YYYY-MM-DD') AS __text
    FROM (SELECT DISTINCT period_start, period_end FROM v_density) d
    ORDER BY period_end DESC, period_start DESC"""
FACTORY_SQL = """\
    SELECT factory_id AS __value, factory_id || ' ' || name AS __text FROM v_factories ORDER BY factory_id"""


# ----------------------------------------------------------------------------- panels


def _common(b: Any, title: str, description: str, w: int, h: int) -> Any:
    return b.title(title).description(description).datasource(DATASOURCE).span(w).height(h)


def _targets(b: Any, sql: str | list[str], fmt: Format) -> Any:
    queries = [sql] if isinstance(sql, str) else sql
    for i, q in enumerate(queries):
        b = b.with_target(Sql(q, fmt, ref_id=chr(ord("A") + i)))
    return b


def ts_panel(
    title: str,
    sql: str | list[str],
    *,
    unit: str = "short",
    description: str = "",
    w: int = 12,
    h: int = 8,
    fmt: Format = "time_series",
    stack: bool = False,
    bars: bool = False,
) -> timeseries.Panel:
    b = _common(timeseries.Panel(), title, description, w, h).unit(unit).span_nulls(True).line_width(2)
    b = b.fill_opacity(80 if stack else 10).show_points(common.VisibilityMode.AUTO)
    if stack:
        b = b.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    if bars:
        b = b.draw_style(common.GraphDrawStyle.BARS)
    return _targets(b, sql, fmt)


def gauge_panel(
    title: str,
    sql: str | list[str],
    *,
    unit: str = "short",
    description: str = "",
    w: int = 6,
    h: int = 8,
    max_value: float | None = None,
) -> gauge.Panel:
    b = _common(gauge.Panel(), title, description, w, h).unit(unit).min(0)
    if max_value is not None:
        b = b.max(max_value)
    b = b.reduce_options(_last_not_null())
    return _targets(b.show_threshold_markers(True).show_threshold_labels(True), sql, "table")


def stat_panel(
    title: str,
    sql: str,
    *,
    unit: str = "short",
    description: str = "",
    w: int = 4,
    h: int = 4,
    decimals: int | None = None,
) -> stat.Panel:
    b = _common(stat.Panel(), title, description, w, h).unit(unit)
    if decimals is not None:
        b = b.decimals(decimals)
    return _targets(b.graph_mode(common.BigValueGraphMode.NONE).reduce_options(_last_not_null()), sql, "table")


def _last_not_null() -> common_builders.ReduceDataOptions:
    return common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False)


def table_panel(
    title: str, sql: str, *, description: str = "", w: int = 24, h: int = 9, units: dict[str, str] | None = None
) -> table.Panel:
    b = _common(table.Panel(), title, description, w, h).filterable(True)
    for column, unit in (units or {}).items():
        b = b.override_by_name(column, [model.DynamicConfigValue(id_val="unit", value=unit)])
    return _targets(b, sql, "table")


def bar_panel(
    title: str,
    sql: str,
    *,
    x_field: str,
    unit: str = "short",
    description: str = "",
    w: int = 12,
    h: int = 9,
    horizontal: bool = True,
) -> barchart.Panel:
    b = _common(barchart.Panel(), title, description, w, h).unit(unit).x_field(x_field)
    b = b.orientation(common.VizOrientation.HORIZONTAL if horizontal else common.VizOrientation.VERTICAL)
    return _targets(b.show_value(common.VisibilityMode.AUTO), sql, "table")


def heatmap_panel(
    title: str, sql: str, *, unit: str = "percentunit", description: str = "", w: int = 24, h: int = 10
) -> heatmap.Panel:
    """A heatmap of pre-bucketed rows: one series per y row (format time_series, ``metric`` column)."""
    b = _common(heatmap.Panel(), title, description, w, h).calculate(False)
    b = b.color(
        heatmap.HeatmapColorOptions()
        .mode(heatmap_model.HeatmapColorMode.SCHEME)
        .scheme("RdYlGn")
        .min(0)
        .max(1)
        .steps(64)
        .fill("dark-green")
        .scale(heatmap_model.HeatmapColorScale.LINEAR)
        .exponent(0.5)
        .reverse(False)
    )
    b = b.cell_values(heatmap.CellValues().unit(unit))
    b = b.y_axis(heatmap.YAxisConfig().axis_placement(common.AxisPlacement.LEFT))
    b = b.rows_frame(heatmap.RowsHeatmapOptions().layout(common.HeatmapCellLayout.UNKNOWN).value("utilisation"))
    return _targets(b, sql, "time_series")


def state_panel(
    title: str, sql: str, *, description: str = "", w: int = 24, h: int = 10, partition_by: str = "robot"
) -> statetimeline.Panel:
    """A state timeline from a long table (time, ``partition_by``, state): one row per partition value."""
    mappings: list[model.ValueMapping] = [
        model.ValueMap(
            options={
                state: model.ValueMappingResult(text=text, color=colour, index=i)
                for i, (state, (colour, text)) in enumerate(STATE_COLOURS.items())
            }
        )
    ]
    b = _common(statetimeline.Panel(), title, description, w, h).mappings(mappings)
    b = b.merge_values(True).show_value(common.VisibilityMode.NEVER).row_height(0.8).fill_opacity(80)
    b = b.with_transformation(
        model.DataTransformerConfig(id_val="partitionByValues", options={"fields": [partition_by], "keepFields": False})
    )
    return _targets(b, sql, "table")


def row(title: str) -> dash.Row:
    return dash.Row(title)


def new_dashboard(
    uid: str, title: str, description: str, tags: list[str], time_from: str = "now-90d", time_to: str = "now"
) -> dash.Dashboard:
    return (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["robodensity", *tags])
        .timezone(TIMEZONE)
        .time(time_from, time_to)
        .refresh("5m")
        .editable()
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
    )


def link_to(title: str, uid: str) -> dash.DashboardLink:
    return (
        dash.DashboardLink(title)
        .type(model.DashboardLinkType.LINK)
        .url(f"/d/{uid}")
        .include_vars(True)
        .keep_time(True)
        .icon("dashboard")
    )


def panels_of(dashboard_json: dict[str, Any]) -> typing.Iterator[dict[str, Any]]:
    """Every panel of a dashboard JSON model, rows' nested panels included, rows themselves excluded."""
    for p in dashboard_json.get("panels", []):
        if p.get("type") == "row":
            yield from p.get("panels", [])
        else:
            yield p


def density_table_units() -> dict[str, str]:
    """Units of the density tables' columns (province cities, drill-down sub-regions)."""
    percent = "percentunit"
    return {
        "robot_density": "none",
        "verified_density": "none",
        "target": "none",
        "target_progress": percent,
        "coverage": percent,
        "domestic_share": percent,
        "utilisation": percent,
    }
