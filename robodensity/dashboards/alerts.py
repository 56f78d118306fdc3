"""Alerts as code: Grafana alert rules, provisioned with the dashboards.

Each rule is one SQL query over the reader role's views, in the table format Grafana's
alerting reads as one instance per row (text columns become the instance's labels, the
one numeric column its value), and one threshold on that value. Times come from the
rule's relative time range through the ``$__timeFrom()``/``$__timeTo()`` macros, never
from ``now()``, so a test can evaluate a rule at any moment by expanding the macros as
Grafana would (``dashboards.macros``) and applying ``AlertRule.fires``.

``alert_rules_yaml()`` is Grafana's file-provisioning format for alert rules
(``provisioning/alerting/*.yaml``); ``dashboards build`` writes it beside the dashboards'
provisioning files.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from robodensity.dashboards.panels import DATASOURCE_UID, TIMEZONE
from robodensity.dashboards.provision import FOLDERS

FOLDER = FOLDERS["operators"]
GROUP = "robodensity"
INTERVAL = "5m"
_OPS: dict[str, Callable[[float, float], bool]] = {"gt": operator.gt, "lt": operator.lt}


@dataclass(frozen=True)
class AlertRule:
    uid: str
    title: str
    sql: str
    value: str
    """The numeric column the threshold applies to."""
    op: str
    """``gt`` or ``lt``: the instance fires when value op threshold."""
    threshold: float
    window_s: int
    """The query's time range: [evaluation time - window_s, evaluation time]."""
    pending: str
    """How long the condition must hold before the alert fires (Grafana's ``for``)."""
    summary: str
    severity: str = "warning"

    def fires(self, value: float | None) -> bool:
        return value is not None and _OPS[self.op](float(value), self.threshold)

    def model(self) -> dict[str, Any]:
        """The rule in Grafana's provisioning format."""
        return {
            "uid": self.uid,
            "title": self.title,
            "condition": "C",
            "data": [
                {
                    "refId": "A",
                    "relativeTimeRange": {"from": self.window_s, "to": 0},
                    "datasourceUid": DATASOURCE_UID,
                    "model": {"refId": "A", "rawSql": self.sql, "format": "table", "editorMode": "code"},
                },
                {
                    "refId": "C",
                    "datasourceUid": "__expr__",
                    "model": {
                        "refId": "C",
                        "type": "threshold",
                        "expression": "A",
                        "conditions": [{"evaluator": {"type": self.op, "params": [self.threshold]}}],
                    },
                },
            ],
            "noDataState": "OK",
            "execErrState": "Error",
            "for": self.pending,
            "annotations": {"summary": self.summary},
            "labels": {"severity": self.severity, "product": "robodensity"},
            "isPaused": False,
        }


SILENT_AFTER_S = 900
AGENT_SILENT = AlertRule(
    "robodensity-agent-silent",
    "Edge agent silent 边缘代理失联",
    """\
    SELECT a.agent_id, a.factory_id,
           extract(epoch FROM $__timeTo()::timestamptz - a.last_seen)::double precision AS silent_s
    FROM v_agent_health a""",
    "silent_s",
    "gt",
    SILENT_AFTER_S,
    3600,
    "5m",
    "Edge agent {{ $labels.agent_id }} (factory {{ $labels.factory_id }}) has committed nothing "
    "for {{ humanizeDuration $values.A.Value }}.",
    "critical",
)

COVERAGE_FLOOR = 0.8
FACTORY_COVERAGE = AlertRule(
    "robodensity-factory-coverage",
    "Factory coverage drop 企业覆盖率下降",
    """\
    SELECT r.factory_id,
           (count(*) FILTER (WHERE EXISTS (
               SELECT 1 FROM v_state_events e
               WHERE e.robot_id = r.robot_id AND e.ts >= $__timeFrom() AND e.ts < $__timeTo())))::double precision
           / count(*) AS coverage
    FROM v_robot_current r
    WHERE r.in_operation AND r.factory_id IS NOT NULL
    GROUP BY r.factory_id""",
    "coverage",
    "lt",
    COVERAGE_FLOOR,
    86400,
    "30m",
    "Only {{ humanizePercentage $values.A.Value }} of factory {{ $labels.factory_id }}'s registered robots "
    "reported in the last 24 h.",
)

FAULTS_PER_DAY = 3
ROBOT_FAULTING = AlertRule(
    "robodensity-robot-faulting",
    "Robot faulting repeatedly 机器人频繁故障",
    """\
    SELECT r.manufacturer || '/' || r.serial AS robot, f.factory_id, f.faults
    FROM (
      SELECT e.robot_id, min(e.factory_id) AS factory_id, count(*)::double precision AS faults
      FROM v_state_events e
      WHERE e.state = 'FAULT' AND e.ts >= $__timeFrom() AND e.ts < $__timeTo()
      GROUP BY e.robot_id
    ) f
    JOIN v_robot_current r USING (robot_id)""",
    "faults",
    "gt",
    FAULTS_PER_DAY - 1,
    86400,
    "0s",
    "Robot {{ $labels.robot }} in factory {{ $labels.factory_id }} entered FAULT "
    "{{ $values.A.Value }} times in 24 h.",
)

ON_TRACK_FLOOR = 0.95
TARGET_TRAJECTORY = AlertRule(
    "robodensity-target-trajectory",
    "Region behind its target trajectory 地区落后于目标路径",
    f"""\
    WITH monthly AS (
      SELECT region_code, region_name_en, period_end, robot_density, target, target_due,
             first_value(robot_density) OVER w AS d0, first_value(period_end) OVER w AS t0,
             row_number() OVER (PARTITION BY region_code ORDER BY period_end DESC) AS latest
      FROM v_density
      WHERE industry_code = '*' AND target IS NOT NULL AND robot_density IS NOT NULL
        AND period_end - period_start >= interval '28 days'
        AND period_end > $__timeFrom() AND period_end <= $__timeTo()
      WINDOW w AS (PARTITION BY region_code ORDER BY period_end)
    )
    SELECT region_code AS region, region_name_en AS name,
           robot_density / NULLIF(d0 + (target - d0) * least(1.0, greatest(0.0,
               extract(epoch FROM period_end - t0)
               / NULLIF(extract(epoch FROM ((target_due + 1)::timestamp AT TIME ZONE '{TIMEZONE}') - t0), 0))), 0)
           AS on_track
    FROM monthly
    WHERE latest = 1""",
    "on_track",
    "lt",
    ON_TRACK_FLOOR,
    400 * 86400,
    "0s",
    "{{ $labels.name }} ({{ $labels.region }}) is at {{ humanizePercentage $values.A.Value }} of the density "
    "its straight path from the first month in range to the target's due date needs now.",
)
"""On track = latest monthly density / the density on the straight line from the first monthly
density in the last 400 days to the target value on its due date (the target itself once due)."""

BACKLOG_LIMIT = 10_000
OUTBOX_FILLING = AlertRule(
    "robodensity-outbox-filling",
    "Edge outbox filling 边缘缓存积压",
    """\
    SELECT agent_id, factory_id, backlog::double precision AS backlog FROM v_agent_health""",
    "backlog",
    "gt",
    BACKLOG_LIMIT,
    600,
    "15m",
    "Edge agent {{ $labels.agent_id }} holds {{ $values.A.Value }} events beyond its acknowledged run: "
    "its outbox is filling.",
)

RULES: tuple[AlertRule, ...] = (AGENT_SILENT, FACTORY_COVERAGE, ROBOT_FAULTING, TARGET_TRAJECTORY, OUTBOX_FILLING)


def alert_rules_yaml() -> str:
    """Grafana alert-rule provisioning (JSON is YAML: Grafana reads it as the .yaml file it is)."""
    doc = {
        "apiVersion": 1,
        "groups": [
            {
                "orgId": 1,
                "name": GROUP,
                "folder": FOLDER.title,
                "interval": INTERVAL,
                "rules": [rule.model() for rule in RULES],
            }
        ],
    }
    header = "# Generated by `robodensity dashboards build`: RoboDensity's alert rules (dashboards/alerts.py).\n"
    return header + json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
