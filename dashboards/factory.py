"""Factory dashboard, for a factory's own staff and its subsidy claims.

Robot state timeline, utilisation heatmap (robot by day), faults with MTBF and MTTR, and
the subsidy evidence table, for the factory chosen in ``$factory``.

MTBF and MTTR over the time range, as ``metrics.reliability.mtbf_mttr`` defines them
(ISO 22400-2): a failure is a run of FAULT starting in the range; MTBF = EXECUTING time /
(failures + 1); MTTR = mean duration of the failures that also ended in the range. A
state lasts until the next state event, or to the end of the range (never past now()).
Only events inside the range are read: the time before a robot's first event in range
counts for nothing, and a fault under way at the range's start counts as one starting
at that first event.
"""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as model

from dashboards import panels as p

UID = "robodensity-factory"
TITLE = "Factory robots 企业机器人 — states, utilisation, faults"
FOLDER = "factories"

ROBOT_LABEL = "r.manufacturer || ' ' || r.serial"

STATE_TIMELINE = f"""\
    SELECT e.ts AS "time", {ROBOT_LABEL} AS robot, e.state
    FROM v_state_events e JOIN v_robot_current r USING (robot_id)
    WHERE e.factory_id = '$factory' AND $__timeFilter(e.ts)
    ORDER BY 1, 2"""

UTILISATION_HEATMAP = f"""\
    SELECT (rd.day::timestamp AT TIME ZONE 'Asia/Shanghai') AS "time", {ROBOT_LABEL} AS metric,
           rd.executing_s / NULLIF(rd.executing_s + rd.idle_s + rd.fault_s + rd.out_of_service_s
             + rd.offline_s, 0) AS utilisation
    FROM v_robot_daily rd JOIN v_robot_current r USING (robot_id)
    WHERE rd.factory_id = '$factory' AND {p.day_filter("rd.day")}
    ORDER BY 1, 2"""

STATE_HOURS = f"""\
    SELECT (rd.day::timestamp AT TIME ZONE 'Asia/Shanghai') AS "time",
           sum(rd.executing_s) / 3600 AS executing_h, sum(rd.idle_s) / 3600 AS idle_h,
           sum(rd.fault_s) / 3600 AS fault_h, sum(rd.out_of_service_s) / 3600 AS out_of_service_h,
           sum(rd.offline_s) / 3600 AS offline_h
    FROM v_robot_daily rd
    WHERE rd.factory_id = '$factory' AND {p.day_filter("rd.day")}
    GROUP BY rd.day
    ORDER BY 1"""

_PER_ROBOT = """\
    ev AS (
      SELECT e.robot_id, e.ts, e.seq, e.state,
             lag(e.state) OVER (PARTITION BY e.robot_id ORDER BY e.ts, e.seq) AS prev_state
      FROM v_state_events e
      WHERE e.factory_id = '$factory' AND $__timeFilter(e.ts)
    ),
    runs AS (
      SELECT robot_id, ts, state, lead(ts) OVER (PARTITION BY robot_id ORDER BY ts, seq) AS next_ts
      FROM ev WHERE prev_state IS DISTINCT FROM state
    ),
    per_robot AS (
      SELECT robot_id,
             count(*) FILTER (WHERE state = 'FAULT') AS failures,
             count(*) FILTER (WHERE state = 'FAULT' AND next_ts IS NOT NULL) AS repairs,
             coalesce(sum(extract(epoch FROM least(coalesce(next_ts, $__timeTo()::timestamptz), now()) - ts)::float8)
               FILTER (WHERE state = 'EXECUTING'), 0) AS executing_s,
             coalesce(sum(extract(epoch FROM next_ts - ts)::float8)
               FILTER (WHERE state = 'FAULT' AND next_ts IS NOT NULL), 0) AS repair_s,
             coalesce(sum(extract(epoch FROM least(coalesce(next_ts, $__timeTo()::timestamptz), now()) - ts)::float8)
               FILTER (WHERE state = 'FAULT'), 0) AS fault_s,
             max(ts) FILTER (WHERE state = 'FAULT') AS last_fault
      FROM runs GROUP BY robot_id
    )"""
"""Per robot over the range: runs of equal states (a re-reported state is not a new run), failures
(FAULT runs starting in range), EXECUTING and FAULT time, and repair time of the FAULT runs that
ended inside the range (right-censored repairs are left out, as metrics.reliability does)."""

FAULT_TABLE = f"""\
    WITH {_PER_ROBOT.strip()}
    SELECT {ROBOT_LABEL} AS robot, r.model, pr.failures, pr.fault_s / 3600 AS fault_h,
           pr.executing_s / 3600 / (pr.failures + 1) AS mtbf_h,
           pr.repair_s / 3600 / NULLIF(pr.repairs, 0) AS mttr_h,
           pr.last_fault
    FROM per_robot pr JOIN v_robot_current r USING (robot_id)
    ORDER BY pr.failures DESC, robot"""

MTBF = f"""\
    WITH {_PER_ROBOT.strip()}
    SELECT sum(executing_s) / 3600 / NULLIF(sum(failures + 1), 0) AS mtbf_h FROM per_robot"""

MTTR = f"""\
    WITH {_PER_ROBOT.strip()}
    SELECT sum(repair_s) / 3600 / NULLIF(sum(repairs), 0) AS mttr_h FROM per_robot"""

FAILURES = f"""\
    WITH {_PER_ROBOT.strip()}
    SELECT coalesce(sum(failures), 0) AS failures FROM per_robot"""

UTILISATION = f"""\
    SELECT sum(rd.executing_s) / NULLIF(sum(rd.executing_s + rd.idle_s + rd.fault_s + rd.out_of_service_s
             + rd.offline_s), 0) AS utilisation
    FROM v_robot_daily rd
    WHERE rd.factory_id = '$factory' AND {p.day_filter("rd.day")}"""

ROBOTS = """\
    SELECT count(*) FILTER (WHERE in_operation) AS robot_count FROM v_robot_current WHERE factory_id = '$factory'"""

SUBSIDY_EVIDENCE = f"""\
    WITH d AS (
      SELECT rd.robot_id, count(*) AS days_reported, min(rd.day) AS first_day, max(rd.day) AS last_day,
             sum(rd.executing_s) / 3600 AS executing_h,
             sum(rd.executing_s) / NULLIF(sum(rd.executing_s + rd.idle_s + rd.fault_s + rd.out_of_service_s
               + rd.offline_s), 0) AS utilisation
      FROM v_robot_daily rd
      WHERE rd.factory_id = '$factory' AND {p.day_filter("rd.day")}
      GROUP BY rd.robot_id
    )
    SELECT rc.manufacturer, rc.serial, rc.model, rc.application,
           CASE WHEN rc.domestic THEN 'domestic 国产' WHEN NOT rc.domestic THEN 'imported 进口' END AS brand,
           rc.commissioned, rc.subsidy_programme, coalesce(d.days_reported, 0) AS days_reported,
           d.first_day, d.last_day, d.executing_h, d.utilisation
    FROM v_robot_current rc LEFT JOIN d USING (robot_id)
    WHERE rc.factory_id = '$factory'
    ORDER BY rc.subsidy_programme NULLS LAST, rc.manufacturer, rc.serial"""
"""Per robot: registry identity and commissioning, and telemetry-proven work in the range."""


def build() -> model.Dashboard:
    d = p.new_dashboard(
        UID,
        TITLE,
        "What each robot of one factory did: states, utilisation, faults, "
        "and evidence of operation for subsidy claims.",
        ["factory"],
        time_from="now-7d",
    )
    d = d.with_variable(p.query_variable("factory", "Factory 企业", p.FACTORY_SQL))
    d = d.with_row(p.row("Summary 概要"))
    d = d.with_panel(p.stat_panel("Robots in operation 在用机器人", ROBOTS, w=4))
    d = d.with_panel(p.stat_panel("Utilisation 利用率", UTILISATION, unit="percentunit", decimals=1, w=5))
    d = d.with_panel(p.stat_panel("Failures 故障次数", FAILURES, w=5))
    d = d.with_panel(
        p.stat_panel(
            "MTBF 平均故障间隔",
            MTBF,
            unit="h",
            decimals=1,
            w=5,
            description="EXECUTING time / (failures + 1), ISO 22400-2, over the time range.",
        )
    )
    d = d.with_panel(
        p.stat_panel(
            "MTTR 平均修复时间",
            MTTR,
            unit="h",
            decimals=2,
            w=5,
            description="Mean duration of the faults that started and ended in the time range.",
        )
    )
    d = d.with_row(p.row("States and utilisation 状态与利用率"))
    d = d.with_panel(p.state_panel("Robot states 机器人状态", STATE_TIMELINE, h=12))
    d = d.with_panel(p.heatmap_panel("Utilisation by robot and day 每日利用率", UTILISATION_HEATMAP, h=12))
    d = d.with_panel(
        p.ts_panel("Hours in state per day 每日各状态时长", STATE_HOURS, unit="h", stack=True, bars=True, w=24)
    )
    d = d.with_row(p.row("Faults 故障"))
    d = d.with_panel(
        p.table_panel(
            "Faults, MTBF and MTTR by robot 故障统计", FAULT_TABLE, units={"fault_h": "h", "mtbf_h": "h", "mttr_h": "h"}
        )
    )
    d = d.with_row(p.row("Subsidy evidence 补贴佐证"))
    d = d.with_panel(
        p.table_panel(
            "Subsidy evidence 补贴佐证材料",
            SUBSIDY_EVIDENCE,
            h=12,
            units={"executing_h": "h", "utilisation": "percentunit"},
            description="Registry identity per robot with the days it reported and "
            "the hours it executed in the time range.",
        )
    )
    return d.build()
