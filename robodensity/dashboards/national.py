"""National overview, for a ministry: the nation and each province, from the provinces' own rows.

On a national deployment (docs/deploy-national.md) the density rows and region x day sums
arrive from each province by logical replication; ``v_national_density`` sums the provinces'
counts per period and recomputes the densities from the sums. Each province's own dashboard
is the province overview with its code chosen. On a province's deployment this dashboard
shows that one province, as its own nation.
"""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as model

from robodensity.dashboards import panels as p

UID = "robodensity-national"
TITLE = "National overview 全国概览 — provinces"
FOLDER = "departments"

NATION_SERIES = """\
    SELECT period_end AS "time", robot_density, verified_density
    FROM v_national_density
    WHERE definition = 'participating' AND industry_code = '*' AND $__timeFilter(period_end)
    ORDER BY 1"""

NATION_LATEST = """\
    SELECT robot_density, robot_count, employee_count, provinces
    FROM v_national_density
    WHERE definition = 'participating' AND industry_code = '*' AND period_end <= $__timeTo()
    ORDER BY period_end DESC, period_start DESC LIMIT 1"""

PROVINCES = """\
    SELECT DISTINCT ON (d.region_code)
           d.region_code AS code, d.region_name AS "省份", d.region_name_en AS province, d.period_end,
           d.robot_count, d.employee_count, d.robot_density, d.verified_density, d.target,
           d.robot_density / NULLIF(d.target, 0) AS target_progress, d.coverage, d.utilisation, d.plan
    FROM v_density d
    WHERE d.level = 1 AND d.industry_code = '*' AND d.period_end <= $__timeTo()
    ORDER BY d.region_code, d.period_end DESC, d.period_start DESC"""
"""Each province's latest period in range (provinces may be a period apart while one catches up)."""

PROVINCE_UTILISATION = f"""\
    SELECT (rd.day::timestamp AT TIME ZONE '{p.TIMEZONE}') AS "time", rd.region_name_en AS metric,
           rd.planned_executing_s / NULLIF(rd.planned_s, 0) AS utilisation
    FROM v_region_daily rd
    WHERE rd.level = 1 AND rd.industry_code = '*' AND {p.day_filter("rd.day")}
    ORDER BY 1, 2"""

PLAN_NOTE = p.UTILISATION_PLAN_NOTE


def build() -> model.Dashboard:
    d = p.new_dashboard(
        UID,
        TITLE,
        "The nation's robot density from its provinces' own figures, and each province against its target.",
        ["national", "density"],
        time_from="now-1y",
    )
    d = d.link(p.link_to("Province overview 省级概览", "robodensity-province"))
    d = d.with_row(p.row("Nation 全国"))
    d = d.with_panel(
        p.stat_panel(
            "National robot density 全国机器人密度",
            NATION_LATEST,
            unit="none",
            decimals=1,
            w=8,
            h=6,
            description="Robots in operation per 10,000 employees, summed over the provinces' latest common period.",
        )
    )
    d = d.with_panel(p.ts_panel("National density per period 全国密度", NATION_SERIES, unit="none", w=16, h=6))
    d = d.with_row(p.row("Provinces 各省"))
    d = d.with_panel(
        p.table_panel(
            "Provinces 各省明细",
            PROVINCES,
            units={**p.density_table_units(), "target_progress": "percentunit"},
            description="Each province's latest period in range, as its own deployment computed it; " + PLAN_NOTE,
        )
    )
    d = d.with_panel(
        p.ts_panel(
            "Daily utilisation by province 各省日利用率",
            PROVINCE_UTILISATION,
            unit="percentunit",
            w=24,
            description=PLAN_NOTE,
        )
    )
    return d.build()
