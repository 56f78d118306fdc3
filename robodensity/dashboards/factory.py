"""Factory dashboard, for a factory's own staff and its subsidy claims.

Robot state timeline, utilisation heatmap (robot by day), faults with MTBF and MTTR, and
the subsidy evidence table, for the factory chosen in ``$factory``.

Every figure is a ratio of sums of the metrics job's blocks (``metrics/blocks.py``): the
15-minute blocks starting in the time range for the summary and fault panels, the daily
blocks of the range's China Standard Time days for the others. A block belongs to the
factory its robot was assigned to that day. Utilisation = executing / covered time;
availability = executing / planned time; MTBF = executing / (failures + 1) per robot, pooled
as executing / (failures + robots) (ISO 22400-2); MTTR = repair time / repairs ended in
the range (whole durations, wherever the fault began).

The state timeline shows the intervals themselves over ranges up to ``EXACT_TIMELINE``; over
longer ranges, each robot's most common state per China Standard Time day (daily blocks),
as a state timeline cannot show more than a few points per pixel anyway.
"""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as model

from robodensity.dashboards import panels as p

UID = "robodensity-factory"
TITLE = "Factory robots 企业机器人 — states, utilisation, faults"
FOLDER = "factories"

ROBOT_LABEL = "r.manufacturer || ' ' || r.serial"


LABELS = """\
    labels AS MATERIALIZED (
      SELECT robot_id, manufacturer, serial FROM v_robot_identity
      WHERE robot_id = ANY (ARRAY(SELECT robot_id FROM v_factory_robots WHERE factory_id = '$factory'))
    )"""
"""CTE ``labels``: the robots ever assigned to the factory (a province holds 100,000 robots; joining
each row of a panel to them all costs more than the panel). Materialised: a hundred rows to hash.
The metrics job attributes blocks by assignment, so these are all the robots a factory's blocks
can have; telemetry may name a robot the registry puts elsewhere (the state timeline labels those
one by one)."""


EXACT_TIMELINE = "7 days"
"""Longest range whose state timeline shows every interval; longer ones show daily states."""

_FROM = "$__timeFrom()::timestamptz"
_TO = "$__timeTo()::timestamptz"


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
      SELECT robot_id FROM v_factory_robots
      WHERE factory_id = '$factory' AND {_TO} - {_FROM} <= interval '{EXACT_TIMELINE}'
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
      SELECT c.robot_id, c."time", c.state
      FROM unnest(ARRAY(SELECT robot_id FROM v_factory_robots WHERE factory_id = '$factory')) AS a (robot_id)
      CROSS JOIN LATERAL (
        SELECT robot_id, "time", state, lag(state) OVER (ORDER BY day) AS before
        FROM (
          SELECT rd.robot_id, rd.day, greatest(rd.day::timestamp AT TIME ZONE '{p.TIMEZONE}', {_FROM}) AS "time",
                 CASE greatest(rd.executing_s, rd.idle_s, rd.fault_s, rd.out_of_service_s, rd.offline_s)
                   WHEN rd.executing_s THEN 'EXECUTING' WHEN rd.idle_s THEN 'IDLE' WHEN rd.fault_s THEN 'FAULT'
                   WHEN rd.out_of_service_s THEN 'OUT_OF_SERVICE' ELSE 'OFFLINE' END AS state
          FROM v_robot_blocks_daily rd
          WHERE rd.robot_id = a.robot_id AND rd.factory_id = '$factory' AND {p.day_filter("rd.day")}
            AND {_TO} - {_FROM} > interval '{EXACT_TIMELINE}'
        ) daily
      ) c
      WHERE c.before IS DISTINCT FROM c.state
    ),
{LABELS},
    names AS (SELECT jsonb_object_agg(r.robot_id::text, {ROBOT_LABEL}) AS of FROM labels r)
    SELECT pt."time",
           coalesce(n.of ->> pt.robot_id::text, (SELECT i.manufacturer || ' ' || i.serial FROM v_robot_identity i
                                                 WHERE i.robot_id = pt.robot_id)) AS robot,
           pt.state
    FROM points pt CROSS JOIN names n
    ORDER BY pt."time", pt.robot_id"""
"""Labels come from one row (``names``, robot -> label), looked up per point: no join whose plan
depends on how many points the planner expects. Up to ``EXACT_TIMELINE``: every interval (its
start, or the range's start for the one under way then, for the robots ever assigned to the
factory and those reporting from it now: no pass over the range's intervals to find them).
Longer: per robot and local day, the state it spent most time in (ties: the order of
STATE_COLOURS), at the day's start, where it differs from the day before (a state timeline draws
a state until the next point, so repeating it draws nothing new)."""

UTILISATION_HEATMAP = f"""\
    WITH {LABELS.strip()}
    SELECT (rd.day::timestamp AT TIME ZONE '{p.TIMEZONE}') AS "time", {ROBOT_LABEL} AS metric,
           rd.planned_executing_s / NULLIF(rd.planned_s, 0) AS utilisation
    FROM v_robot_blocks_daily rd JOIN labels r USING (robot_id)
    WHERE rd.factory_id = '$factory' AND {p.day_filter("rd.day")}
    ORDER BY rd.day, metric"""
"""Each robot's days are one range of the daily blocks' primary key."""

STATE_HOURS = f"""\
    SELECT (rd.day::timestamp AT TIME ZONE '{p.TIMEZONE}') AS "time",
           sum(rd.executing_s) / 3600 AS executing_h, sum(rd.idle_s) / 3600 AS idle_h,
           sum(rd.fault_s) / 3600 AS fault_h, sum(rd.out_of_service_s) / 3600 AS out_of_service_h,
           sum(rd.offline_s) / 3600 AS offline_h
    FROM v_robot_blocks_daily rd
    WHERE rd.factory_id = '$factory' AND {p.day_filter("rd.day")}
    GROUP BY rd.day
    ORDER BY 1"""

_FIRST_DAY = f"(({_FROM} AT TIME ZONE '{p.TIMEZONE}') - interval '1 microsecond')::date + 1"
"""The first local day wholly inside the time range."""
_END_DAY = f"({_TO} AT TIME ZONE '{p.TIMEZONE}')::date"
"""The first local day not wholly inside it (days before it end by the range's end)."""
_BLOCK_SUMS = "executing_s, fault_s, planned_s, planned_executing_s, failures, repairs, repair_s, covered_s"


def _midnight(day: str) -> str:
    return f"(({day})::timestamp AT TIME ZONE '{p.TIMEZONE}')"


IN_RANGE = f"""\
    FROM (
      SELECT robot_id, {_midnight("day")} AS bucket, {_BLOCK_SUMS} FROM v_robot_blocks_daily
      WHERE factory_id = '$factory' AND day >= {_FIRST_DAY} AND day < {_END_DAY}
      UNION ALL
      SELECT robot_id, bucket, {_BLOCK_SUMS} FROM v_robot_blocks_15m
      WHERE factory_id = '$factory' AND bucket >= {_FROM} AND bucket < least({_TO}, {_midnight(_FIRST_DAY)})
      UNION ALL
      SELECT robot_id, bucket, {_BLOCK_SUMS} FROM v_robot_blocks_15m
      WHERE factory_id = '$factory' AND bucket < {_TO}
        AND bucket >= greatest({_FROM}, {_midnight(_FIRST_DAY)}, {_midnight(_END_DAY)})
    ) b"""
"""The factory's blocks starting in the time range: the daily blocks of the local days wholly in
it (a day's block is the sum of its 15-minute blocks) and the 15-minute blocks of the part days
at either end, so a year reads 365 rows per robot, not 35,040. ``bucket`` is a day's midnight
for a daily block."""

FAULT_TABLE = f"""\
    WITH per_robot AS (
      SELECT b.robot_id, sum(b.failures) AS failures, sum(b.fault_s) AS fault_s,
             sum(b.executing_s) AS executing_s, sum(b.planned_executing_s) AS planned_executing_s,
             sum(b.planned_s) AS planned_s, sum(b.repairs) AS repairs,
             sum(b.repair_s) AS repair_s, max(b.bucket) FILTER (WHERE b.failures > 0) AS last_fault
      {IN_RANGE.strip()}
      GROUP BY b.robot_id
    )
    SELECT {ROBOT_LABEL} AS robot, r.model, pr.failures, pr.fault_s / 3600 AS fault_h,
           pr.executing_s / 3600 / (pr.failures + 1) AS mtbf_h,
           pr.repair_s / 3600 / NULLIF(pr.repairs, 0) AS mttr_h,
           pr.planned_executing_s / NULLIF(pr.planned_s, 0) AS availability,
           (SELECT max(q.bucket) FROM v_robot_blocks_15m q
            WHERE q.robot_id = pr.robot_id AND q.factory_id = '$factory' AND q.failures > 0
              AND q.bucket >= pr.last_fault AND q.bucket < least(pr.last_fault + interval '1 day', {_TO})) AS last_fault
    FROM per_robot pr JOIN v_robot_identity r USING (robot_id)
    ORDER BY pr.failures DESC, robot"""
"""Per robot; ``last_fault`` is the start of the 15 minutes in which its last failure began (the
blocks give its day, the 15-minute blocks of that day the quarter hour);
``availability`` (ISO 22400-2, APT / PBT) is the robot's utilisation on planned time, the same expression."""

MTBF = f"""\
    SELECT sum(b.executing_s) / 3600 / NULLIF(sum(b.failures) + count(DISTINCT b.robot_id), 0) AS mtbf_h
    {IN_RANGE.strip()}"""

MTTR = f"""\
    SELECT sum(b.repair_s) / 3600 / NULLIF(sum(b.repairs), 0) AS mttr_h
    {IN_RANGE.strip()}"""

FAILURES = f"""\
    SELECT coalesce(sum(b.failures), 0) AS failures
    {IN_RANGE.strip()}"""

UTILISATION = f"""\
    SELECT sum(b.planned_executing_s) / NULLIF(sum(b.planned_s), 0) AS utilisation
    {IN_RANGE.strip()}"""
"""Utilisation on planned time = ISO 22400-2 availability (APT / PBT): one figure, one expression
(docs/clocks-and-shifts.md); EXECUTING / covered time when the factory is planned 24/7."""

PLAN = f"""\
    SELECT p.plan, t.planned_s / 3600 AS planned_h, t.covered_s / 3600 AS covered_h
    FROM v_factory_plan p
    CROSS JOIN (SELECT sum(b.planned_s) AS planned_s, sum(b.covered_s) AS covered_s {IN_RANGE.strip()}) t
    WHERE p.factory_id = '$factory'"""
"""Which plan utilisation (= availability) divides by ('planned: shift calendar' or 'planned: 24/7', issue 15)."""

ROBOTS = """\
    SELECT count(*) FILTER (WHERE in_operation) AS robot_count FROM v_robot_current WHERE factory_id = '$factory'"""

SUBSIDY_EVIDENCE = f"""\
    WITH d AS (
      SELECT rd.robot_id, count(*) FILTER (WHERE rd.offline_s < rd.covered_s) AS days_reported,
             min(rd.day) AS first_day, max(rd.day) AS last_day, sum(rd.executing_s) / 3600 AS executing_h,
             sum(rd.planned_executing_s) / NULLIF(sum(rd.planned_s), 0) AS utilisation
      FROM v_robot_blocks_daily rd
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
"""Per robot: registry identity and commissioning, and telemetry-proven work in the range (days reported:
days with covered time not OFFLINE)."""


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
    for title, sql, unit, decimals, description in (
        (
            "Utilisation 利用率 = availability 可用率",
            UTILISATION,
            "percentunit",
            1,
            "EXECUTING time inside the planned time / planned time, over the time range: utilisation on planned "
            "time, which is ISO 22400-2 availability (APT / PBT), one figure. Planned: the factory's shift "
            "calendar, 24/7 without one (see 'Planned time'); overtime does not count.",
        ),
        ("Failures 故障次数", FAILURES, "short", None, "FAULT runs starting in the time range."),
        (
            "MTBF 平均故障间隔",
            MTBF,
            "h",
            1,
            "EXECUTING time / (failures + 1) per robot, ISO 22400-2, over the time range.",
        ),
        ("MTTR 平均修复时间", MTTR, "h", 2, "Mean whole duration of the faults that ended in the time range."),
    ):
        d = d.with_panel(p.stat_panel(title, sql, unit=unit, decimals=decimals, w=4, description=description))
    d = d.with_panel(
        p.table_panel(
            "Planned time 计划时间",
            PLAN,
            w=8,
            h=4,
            units={"planned_h": "h", "covered_h": "h"},
            description="The plan utilisation (= availability) divides by: the factory's shift calendar, "
            "or 24/7 without one.",
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
            "Faults, MTBF and MTTR by robot 故障统计",
            FAULT_TABLE,
            units={"fault_h": "h", "mtbf_h": "h", "mttr_h": "h", "availability": "percentunit"},
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
