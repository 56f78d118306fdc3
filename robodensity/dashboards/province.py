"""Province overview, for provincial economic departments: density against the target.

Reads ``v_density`` (the 'participating' definition's density rows computed by the metrics
job, with the applicable target) for the region chosen in ``$region`` and all manufacturing
(``industry_code '*'``), and ``v_density_defined`` for every definition side by side.
"Latest period" is the region's last density period ending inside the time range.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import table
from grafana_foundation_sdk.models import dashboard as model

from robodensity.dashboards import panels as p

UID = "robodensity-province"
TITLE = "Province overview 省级概览 — robot density"
FOLDER = "departments"


def _latest(column: str, alias: str) -> str:
    return f"""\
    WITH {p.LATEST_PERIOD.strip()}
    SELECT {column} AS {alias}
    FROM v_density d JOIN p USING (period_start, period_end)
    WHERE d.region_code = '$region' AND d.industry_code = '*'"""


TREND = f"""\
    WITH s AS (
      SELECT period_end AS t, robot_density AS d, target, target_due
      FROM v_density
      WHERE region_code = '$region' AND industry_code = '*' AND $__timeFilter(period_end)
    ), fit AS (
      SELECT regr_slope(d, extract(epoch FROM t)) AS slope, max(t) AS last_t,
             (array_agg(d ORDER BY t DESC))[1] AS last_d,
             (array_agg(target ORDER BY t DESC))[1] AS target,
             ((array_agg(target_due ORDER BY t DESC))[1]::timestamp AT TIME ZONE '{p.TIMEZONE}') AS due
      FROM s
    )
    SELECT s.t AS "time", s.d AS robot_density, s.target,
           CASE WHEN s.t = fit.last_t AND fit.slope IS NOT NULL AND fit.due > fit.last_t THEN s.d END
             AS projection
    FROM s, fit
    UNION ALL
    SELECT fit.due, NULL, fit.target, fit.last_d + fit.slope * extract(epoch FROM fit.due - fit.last_t)
    FROM fit
    WHERE fit.due > fit.last_t AND fit.slope IS NOT NULL
    ORDER BY 1"""
"""Density per period, the target line, and a linear projection (least-squares slope over the
periods in range, from the last measured point) to the target's due date."""

BY_CITY = f"""\
    WITH {p.LATEST_PERIOD.strip()}
    SELECT d.region_name || ' ' || d.region_name_en AS city, d.robot_density, d.verified_density, d.target
    FROM v_density d JOIN p USING (period_start, period_end)
    WHERE d.parent_code = '$region' AND d.industry_code = '*'
    ORDER BY d.robot_density DESC NULLS LAST, d.region_code"""

BY_INDUSTRY = f"""\
    WITH {p.LATEST_PERIOD.strip()}
    SELECT d.industry_code || ' ' || i.name || ' ' || i.name_en AS industry, d.robot_density,
           d.verified_density
    FROM v_density d JOIN p USING (period_start, period_end)
    JOIN v_industries i ON i.code = d.industry_code
    WHERE d.region_code = '$region' AND d.industry_code <> '*'
    ORDER BY d.robot_density DESC NULLS LAST, d.industry_code"""

CITY_TABLE = f"""\
    WITH {p.LATEST_PERIOD.strip()}
    SELECT d.region_code AS code, d.region_name AS "城市", d.region_name_en AS city,
           d.robot_count, d.employee_count, d.robot_density, d.verified_density, d.target,
           d.robot_density / NULLIF(d.target, 0) AS target_progress,
           d.coverage, d.domestic_share, d.utilisation, d.plan, d.definition, d.denominator_source, d.vintage,
           d.target_definition
    FROM v_density d JOIN p USING (period_start, period_end)
    WHERE d.parent_code = '$region' AND d.industry_code = '*'
    ORDER BY d.region_code"""

SHARES_TREND = """\
    SELECT period_end AS "time", coverage, domestic_share, utilisation
    FROM v_density
    WHERE region_code = '$region' AND industry_code = '*' AND $__timeFilter(period_end)
    ORDER BY 1"""


def by_definition(period_cte: str, industry: str) -> str:
    """Every definition's density of ``$region`` for the period of CTE ``p``: the participating
    factories' first, then those over official employment with the participating density and the
    employment coverage beside them; each names its denominator's source and vintage and its
    target's definition (docs/definitions.md)."""
    return f"""\
    WITH {period_cte.strip()}
    SELECT d.definition, d.definition_title AS title, d.definition_title_zh AS "口径", d.robot_density,
           d.participating_density, d.employment_coverage, d.coverage, d.robot_count, d.employee_count,
           d.denominator_source, d.vintage, d.denominator_year, d.target, d.target_definition
    FROM v_density_defined d JOIN p USING (period_start, period_end)
    WHERE d.region_code = '$region' AND d.industry_code = '{industry}'
    ORDER BY d.denominator DESC, d.definition"""


DEFINITION_UNITS = {
    "robot_density": "none",
    "participating_density": "none",
    "employment_coverage": "percentunit",
    "coverage": "percentunit",
    "target": "none",
}
DEFINITION_HELP = (
    "Each row is one density definition: numerator (robots in operation or verified; all, key "
    "industries or above-designated-size firms; robots or robot-days) over its denominator "
    "(participating factories' headcounts, or official employment with source and vintage). "
    "Official rows show the participating factories' density and the employment coverage beside "
    "theirs; targets appear only against the definition they are measured in."
)


def definitions_panel(period_cte: str, industry: str) -> table.Panel:
    """The table 'Density by definition' (:func:`by_definition`), for this and the drill-down dashboard."""
    return p.table_panel(
        "Density by definition 各口径密度",
        by_definition(period_cte, industry),
        units=DEFINITION_UNITS,
        description=DEFINITION_HELP,
        h=8,
    )


DENSITY_NOW = _latest("d.robot_density", "robot_density")
TARGET_NOW = _latest("d.target", "target")


def build() -> model.Dashboard:
    percent = "percentunit"
    d = p.new_dashboard(
        UID,
        TITLE,
        "Robots per 10,000 manufacturing employees against the policy target, "
        "by city and industry, with coverage, domestic-brand share and utilisation.",
        ["province", "density"],
        time_from="now-1y",
    )
    d = d.with_variable(p.query_variable("region", "Province 省", p.REGION_SQL + " WHERE level = 1 ORDER BY code"))
    d = d.link(p.link_to("City and industry drill-down 市与行业", "robodensity-drilldown"))
    d = d.with_row(p.row("Density against target 密度与目标"))
    d = d.with_panel(
        p.gauge_panel(
            "Robot density vs target 机器人密度对比目标",
            [DENSITY_NOW, TARGET_NOW],
            unit="none",
            description="Definition 'participating': registered robots in operation per 10,000 employees "
            "of the participating factories, latest period; the gauge's maximum and threshold come from "
            "the region's target (query B), whose own definition the table 'Density by definition' names.",
            w=6,
            h=9,
        ).with_transformation(
            model.DataTransformerConfig(
                id_val="configFromData",
                options={
                    "configRefId": "B",
                    "mappings": [
                        {"fieldName": "target", "handlerKey": "max"},
                        {"fieldName": "target", "handlerKey": "threshold1"},
                    ],
                },
            )
        )
    )
    d = d.with_panel(
        p.ts_panel(
            "Density trend, target and projection 密度趋势、目标与预测",
            TREND,
            unit="none",
            description="Dashed projection: linear trend over the periods in range, extended to the target's due date.",
            w=18,
            h=9,
        )
        .override_by_name(
            "projection",
            [model.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]})],
        )
        .override_by_name(
            "target", [model.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "red"})]
        )
    )
    d = d.with_row(p.row("Coverage, brands, utilisation 覆盖率、品牌、利用率"))
    d = d.with_panel(
        p.stat_panel(
            "Verified density 核验密度",
            _latest("d.verified_density", "verified_density"),
            unit="none",
            decimals=1,
            w=4,
            description="Robots whose telemetry shows real work, per 10,000 employees.",
        )
    )
    d = d.with_panel(
        p.stat_panel(
            "Target progress 目标完成度",
            _latest("d.robot_density / NULLIF(d.target, 0)", "target_progress"),
            unit=percent,
            decimals=1,
            w=4,
        )
    )
    d = d.with_panel(
        p.stat_panel(
            "Coverage 数据覆盖率",
            _latest("d.coverage", "coverage"),
            unit=percent,
            w=4,
            description="Share of registered robots that sent telemetry.",
        )
    )
    d = d.with_panel(
        p.stat_panel(
            "Domestic-brand share 国产品牌占比", _latest("d.domestic_share", "domestic_share"), unit=percent, w=4
        )
    )
    d = d.with_panel(
        p.stat_panel(
            "Utilisation 利用率",
            _latest("d.utilisation", "utilisation"),
            unit=percent,
            w=4,
            description="Summed over the region's robots (the blocks), latest period. " + p.UTILISATION_PLAN_NOTE,
        )
    )
    d = d.with_panel(p.stat_panel("Robots 机器人数", _latest("d.robot_count", "robot_count"), unit="none", w=4))
    d = d.with_panel(
        p.ts_panel(
            "Coverage, domestic share, utilisation 趋势",
            SHARES_TREND,
            unit=percent,
            w=24,
            h=7,
            description=p.UTILISATION_PLAN_NOTE,
        )
    )
    d = d.with_panel(definitions_panel(p.LATEST_PERIOD, "*"))
    d = d.with_row(p.row("By city and industry 分城市与行业"))
    d = d.with_panel(p.bar_panel("Density by city 各市密度", BY_CITY, x_field="city", unit="none"))
    d = d.with_panel(p.bar_panel("Density by industry 各行业密度", BY_INDUSTRY, x_field="industry", unit="none"))
    d = d.with_panel(
        p.table_panel(
            "Cities 城市明细",
            CITY_TABLE,
            units=p.density_table_units(),
            description="Latest period; 'plan' names the planned time each city's utilisation divides by.",
        )
    )
    return d.build()
