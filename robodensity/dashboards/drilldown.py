"""City and industry drill-down, for city and provincial analysts.

Template variables: ``$region`` (any level), ``$industry`` (a GB/T 4754 code or ``*``
for all manufacturing) and ``$period`` (a density period, value ``start/end``).
"""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as model

from robodensity.dashboards import panels as p
from robodensity.dashboards.province import definitions_panel

UID = "robodensity-drilldown"
TITLE = "City and industry drill-down 市与行业下钻"
FOLDER = "departments"

SELECTED = f"""\
    WITH {p.SELECTED_PERIOD.strip()}
    SELECT {{columns}}
    FROM v_density d JOIN p USING (period_start, period_end)
    WHERE d.region_code = '$region' AND d.industry_code = '$industry'"""


def _selected(columns: str) -> str:
    return SELECTED.replace("{columns}", columns)


CHILDREN = f"""\
    WITH {p.SELECTED_PERIOD.strip()}
    SELECT d.region_name || ' ' || d.region_name_en AS region, d.robot_density, d.verified_density
    FROM v_density d JOIN p USING (period_start, period_end)
    WHERE d.parent_code = '$region' AND d.industry_code = '$industry'
    ORDER BY d.robot_density DESC NULLS LAST, d.region_code"""

CHILD_TABLE = f"""\
    WITH {p.SELECTED_PERIOD.strip()}
    SELECT d.region_code AS code, d.region_name AS "名称", d.region_name_en AS name, d.robot_count,
           d.employee_count, d.robot_density, d.verified_density, d.target,
           d.robot_density / NULLIF(d.target, 0) AS target_progress, d.reporting_count, d.coverage,
           d.domestic_share, d.utilisation, d.plan, d.definition, d.denominator_source, d.vintage,
           d.target_definition
    FROM v_density d JOIN p USING (period_start, period_end)
    WHERE (d.region_code = '$region' OR d.parent_code = '$region') AND d.industry_code = '$industry'
    ORDER BY d.level, d.region_code"""

INDUSTRIES = f"""\
    WITH {p.SELECTED_PERIOD.strip()}
    SELECT d.industry_code || ' ' || i.name_en AS industry, d.robot_density, d.verified_density
    FROM v_density d JOIN p USING (period_start, period_end)
    JOIN v_industries i ON i.code = d.industry_code
    WHERE d.region_code = '$region'
    ORDER BY d.robot_density DESC NULLS LAST, d.industry_code"""

FACTORIES = f"""\
    WITH {p.SELECTED_PERIOD.strip()}
    SELECT ff.factory_id, ff.name, ff.region_code, ff.industry_code, ff.robot_count, ff.employee_count,
           ff.robot_density, u.reporting_robots, u.utilisation,
           (SELECT fp.plan FROM v_factory_plan fp WHERE fp.factory_id = ff.factory_id) AS plan
    FROM v_factory_fleet ff
    JOIN v_factory_region fr ON fr.factory_id = ff.factory_id AND fr.region_code = '$region'
    CROSS JOIN p
    LEFT JOIN LATERAL (
      SELECT sum(fd.planned_executing_s) / NULLIF(sum(fd.planned_s), 0) AS utilisation,
             max(fd.reporting) AS reporting_robots
      FROM v_factory_daily fd
      WHERE fd.factory_id = ff.factory_id
        AND fd.day >= (p.period_start AT TIME ZONE '{p.TIMEZONE}')::date
        AND fd.day < (p.period_end AT TIME ZONE '{p.TIMEZONE}')::date
    ) u ON true
    WHERE '$industry' IN ('*', ff.industry_code)
    ORDER BY ff.robot_density DESC NULLS LAST, ff.factory_id"""
"""Robots and headcount as registered today; over ``$period``, from the factory x day sums of the
daily blocks (factory_daily, migrations 050 and 080): utilisation on planned time (EXECUTING inside
the plan / planned time; ``plan`` names the factory's plan) and reporting robots (with covered time
not OFFLINE) on the factory's best day of the period. Robots in operation per factory are counted
once a day (factory_fleet_counts, migration 090), not per query."""

DAILY_UTILISATION = f"""\
    SELECT (rd.day::timestamp AT TIME ZONE '{p.TIMEZONE}') AS "time",
           rd.planned_executing_s / NULLIF(rd.planned_s, 0) AS utilisation,
           rd.reporting::double precision AS reporting_robots
    FROM v_region_daily rd
    WHERE rd.region_code = '$region' AND rd.industry_code = '$industry' AND {p.day_filter("rd.day")}
    ORDER BY 1"""
"""Utilisation on planned time (EXECUTING inside the plan / planned time) of the region's robots each
day, and how many reported, from
the region x day sums of the daily blocks (region_daily, migration 050): no robot rows at province scale."""


def build() -> model.Dashboard:
    percent = "percentunit"
    d = p.new_dashboard(
        UID,
        TITLE,
        "One region and industry in one density period: its sub-regions, industries and factories.",
        ["drilldown", "density"],
        time_from="now-90d",
    )
    d = d.with_variable(p.query_variable("region", "Region 地区", p.REGION_SQL + " ORDER BY level, code"))
    d = d.with_variable(p.query_variable("industry", "Industry 行业", p.INDUSTRY_SQL))
    d = d.with_variable(p.query_variable("period", "Period 统计期", p.PERIOD_SQL))
    d = d.link(p.link_to("Province overview 省级概览", "robodensity-province"))
    d = d.with_row(p.row("Selected region and industry 所选地区与行业"))
    for title, column, unit in (
        ("Robot density 机器人密度", "d.robot_density", "none"),
        ("Verified density 核验密度", "d.verified_density", "none"),
        ("Robots 机器人数", "d.robot_count", "none"),
        ("Employees 从业人员", "d.employee_count", "none"),
        ("Coverage 覆盖率", "d.coverage", percent),
        ("Utilisation 利用率", "d.utilisation", percent),
    ):
        alias = column.split(".")[1]
        d = d.with_panel(
            p.stat_panel(
                title,
                _selected(f"{column} AS {alias}"),
                unit=unit,
                w=4,
                decimals=1 if unit == "none" and "density" in alias else None,
            )
        )
    d = d.with_row(p.row("Sub-regions and industries 下级地区与行业"))
    d = d.with_panel(p.bar_panel("Density by sub-region 下级地区密度", CHILDREN, x_field="region", unit="none"))
    d = d.with_panel(p.bar_panel("Density by industry 各行业密度", INDUSTRIES, x_field="industry", unit="none"))
    d = d.with_panel(
        p.table_panel(
            "Region and sub-regions 地区明细",
            CHILD_TABLE,
            units=p.density_table_units(),
            description="'plan' names the planned time each region's utilisation divides by.",
        )
    )
    d = d.with_panel(definitions_panel(p.SELECTED_PERIOD, "$industry"))
    d = d.with_row(p.row("Factories 企业"))
    d = d.with_panel(
        p.table_panel(
            "Factories 企业明细",
            FACTORIES,
            units={"robot_density": "none", "utilisation": percent},
            description="Robots and employees as registered today; utilisation on planned time over the "
            "selected period, 'plan' naming the factory's (its shift calendar, or 24/7 without one).",
        )
    )
    d = d.with_panel(
        p.ts_panel(
            "Daily utilisation 日利用率",
            DAILY_UTILISATION,
            unit=percent,
            w=24,
            description="Utilisation on planned time: the factories' shift calendars, 24/7 for those without one.",
        ).override_by_name(
            "reporting_robots",
            [
                model.DynamicConfigValue(id_val="unit", value="none"),
                model.DynamicConfigValue(id_val="custom.axisPlacement", value="right"),
            ],
        )
    )
    return d.build()
