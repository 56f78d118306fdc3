"""Factory dashboard, for a factory's own staff and its subsidy claims.

Robot state timeline, utilisation heatmap (robot by day), faults with MTBF and MTTR, and
the subsidy evidence table, for the factory chosen in ``$factory``.

MTBF and MTTR over the time range, as ``metrics.reliability.mtbf_mttr`` defines them
(ISO 22400-2): a failure is a run of FAULT starting in the range; MTBF = EXECUTING time /
(failures + 1) per robot, pooled; MTTR = mean duration of the failures that also ended in
the range. All of it comes from ``state_intervals`` (runs of equal states, kept by the
collector), not from raw events: a state lasts until the robot's next state, or to the end
of the range (never past now()); time is clipped to the range, so a state under way at the
range's start counts from the start, and a fault under way then is not a failure of the
range (left-censored) though its time counts in the fault hours. The robots counted are
those with EXECUTING or FAULT time in the range and those whose latest state is reported
from this factory.

The state timeline shows the intervals themselves over ranges up to ``EXACT_TIMELINE``; over
longer ranges, each robot's most common state per China Standard Time day (daily rollups),
as a state timeline cannot show more than a few points per pixel anyway.
"""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as model

from dashboards import panels as p

UID = "robodensity-factory"
TITLE = "Factory robots 企业机器人 — states, utilisation, faults"
FOLDER = "factories"

ROBOT_LABEL = "r.manufacturer || ' ' || r.serial"

EXACT_TIMELINE = "7 days"
"""Longest range whose state timeline shows every interval; longer ones show daily states."""

_FROM = "$__timeFrom()::timestamptz"
_TO = "$__timeTo()::timestamptz"


def _seconds_in_range(alias: str) -> str:
    """Seconds of interval ``alias`` inside the range, an open one lasting until now().

    ``date_part`` rather than ``extract``: it returns float8, where ``extract`` computes in numeric,
    several times slower over the hundreds of thousands of intervals a long range holds.
    """
    return (
        f"greatest(date_part('epoch', least(coalesce({alias}.end_ts, 'infinity'), {_TO}, now())"
        f" - greatest({alias}.start_ts, {_FROM})), 0)"
    )


def _at_start(robots: str, states: str) -> str:
    """CTE ``at_start``: the interval of each robot in ``robots`` under way at the range's start."""
    return f"""\
    at_start AS (
      SELECT b.robot_id, b.start_ts, b.end_ts, b.state
      FROM {robots} r
      CROSS JOIN LATERAL (
        SELECT s.robot_id, s.start_ts, s.end_ts, s.state, s.factory_id FROM v_state_spans s
        WHERE s.robot_id = r.robot_id AND s.start_ts < {_FROM}
        ORDER BY s.start_ts DESC LIMIT 1
      ) b
      WHERE b.factory_id = '$factory' AND (b.end_ts IS NULL OR b.end_ts > {_FROM}) AND b.state IN ({states})
    )"""


_REPORTING_NOW = f"""\
    SELECT robot_id FROM v_state_spans
    WHERE factory_id = '$factory' AND end_ts IS NULL AND start_ts <= {_TO}"""
"""Robots whose latest (open) interval is reported from the factory and began by the range's end."""

STATE_TIMELINE = f"""\
    WITH robots AS (
      SELECT DISTINCT robot_id FROM v_state_spans
      WHERE factory_id = '$factory' AND start_ts BETWEEN $__timeFrom() AND $__timeTo()
        AND {_TO} - {_FROM} <= interval '{EXACT_TIMELINE}'
      UNION
      {_REPORTING_NOW.strip()} AND {_TO} - {_FROM} <= interval '{EXACT_TIMELINE}'
    ),
{_at_start("robots", "'EXECUTING', 'IDLE', 'FAULT', 'OUT_OF_SERVICE', 'OFFLINE'")},
    points AS (
      SELECT s.robot_id, s.start_ts AS "time", s.state FROM v_state_spans s
      WHERE s.factory_id = '$factory' AND s.start_ts BETWEEN $__timeFrom() AND $__timeTo()
        AND {_TO} - {_FROM} <= interval '{EXACT_TIMELINE}'
      UNION ALL
      SELECT robot_id, {_FROM}, state FROM at_start
      UNION ALL
      SELECT rd.robot_id, greatest(rd.day::timestamp AT TIME ZONE 'Asia/Shanghai', {_FROM}),
             CASE greatest(rd.executing_s, rd.idle_s, rd.fault_s, rd.out_of_service_s, rd.offline_s)
               WHEN rd.executing_s THEN 'EXECUTING' WHEN rd.idle_s THEN 'IDLE' WHEN rd.fault_s THEN 'FAULT'
               WHEN rd.out_of_service_s THEN 'OUT_OF_SERVICE' ELSE 'OFFLINE' END
      FROM v_robot_state_daily rd
      WHERE rd.factory_id = '$factory' AND {p.day_filter("rd.day")}
        AND {_TO} - {_FROM} > interval '{EXACT_TIMELINE}'
    )
    SELECT pt."time", {ROBOT_LABEL} AS robot, pt.state
    FROM points pt JOIN v_robot_current r USING (robot_id)
    ORDER BY 1, 2"""
"""Up to ``EXACT_TIMELINE``: every interval (its start, or the range's start for the one under
way then). Longer: per robot and local day, the state it spent most time in (ties: the order
of STATE_COLOURS), at the day's start."""

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


def _per_robot(states: str) -> str:
    """CTEs ending in ``per_robot``: per robot over the range, from its intervals in ``states``."""
    secs = _seconds_in_range("s")
    return f"""\
    inr AS (
      SELECT s.robot_id,
             count(*) FILTER (WHERE s.state = 'FAULT') AS failures,
             count(*) FILTER (WHERE s.state = 'FAULT' AND s.end_ts <= {_TO}) AS repairs,
             sum({secs}) FILTER (WHERE s.state = 'EXECUTING') AS executing_s,
             sum(date_part('epoch', s.end_ts - s.start_ts))
               FILTER (WHERE s.state = 'FAULT' AND s.end_ts <= {_TO}) AS repair_s,
             sum({secs}) FILTER (WHERE s.state = 'FAULT') AS fault_s,
             max(s.start_ts) FILTER (WHERE s.state = 'FAULT') AS last_fault
      FROM v_state_spans s
      WHERE s.factory_id = '$factory' AND s.state IN ({states}) AND s.start_ts BETWEEN $__timeFrom() AND $__timeTo()
      GROUP BY s.robot_id
    ),
    robots AS (
      SELECT robot_id FROM inr
      UNION
      {_REPORTING_NOW.strip()}
    ),
{_at_start("robots", states)},
    per_robot AS (
      SELECT r.robot_id, coalesce(i.failures, 0) AS failures, coalesce(i.repairs, 0) AS repairs,
             coalesce(i.executing_s, 0) + CASE WHEN a.state = 'EXECUTING' THEN {_seconds_in_range("a")} ELSE 0 END
               AS executing_s,
             coalesce(i.repair_s, 0) AS repair_s,
             coalesce(i.fault_s, 0) + CASE WHEN a.state = 'FAULT' THEN {_seconds_in_range("a")} ELSE 0 END
               AS fault_s,
             coalesce(i.last_fault, CASE WHEN a.state = 'FAULT' THEN a.start_ts END) AS last_fault
      FROM robots r LEFT JOIN inr i USING (robot_id) LEFT JOIN at_start a USING (robot_id)
    )"""


_PER_ROBOT = _per_robot("'EXECUTING', 'FAULT'")
"""Per robot over the range: failures (FAULT intervals starting in range), EXECUTING and FAULT
time in the range, and repair time of the failures that ended inside the range too
(right-censored repairs are left out, as metrics.reliability does)."""
_FAULTS_PER_ROBOT = _per_robot("'FAULT'")
"""The same from FAULT intervals only: right for everything but EXECUTING time."""

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
    WITH {_FAULTS_PER_ROBOT.strip()}
    SELECT sum(repair_s) / 3600 / NULLIF(sum(repairs), 0) AS mttr_h FROM per_robot"""

FAILURES = f"""\
    WITH {_FAULTS_PER_ROBOT.strip()}
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
