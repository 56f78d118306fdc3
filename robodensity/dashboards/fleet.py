"""Fleet health, for operators: edge agents, acknowledgements, dead letters, unregistered robots.

An agent is *online* when the collector committed something from it in the last
``ONLINE_WINDOW``. Its *backlog* is the number of sequence numbers stored beyond its
contiguous acknowledged run (``acked_through``): events held back by a gap that a
re-send has not filled yet. The age of the last acknowledgement is ``now() - last_seen``
(the collector raises ``acked_through`` and ``last_seen`` in the same commit).

Clocks (docs/clocks-and-shifts.md): a robot whose controller clock is off has its timestamps
corrected at the edge, each such event keeping the offset; an agent reports its own clock
against the collector's. ``clock_ahead_s`` is how far a clock runs ahead (negative: behind).
"""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as model

from robodensity.dashboards import panels as p

UID = "robodensity-fleet"
TITLE = "Fleet health 采集健康 — agents, acknowledgements, dead letters"
FOLDER = "operators"
ONLINE_WINDOW = "10 minutes"

AGENTS = f"""\
    SELECT a.agent_id, a.factory_id, a.factory, a.last_seen, a.ack_age_s,
           a.last_seen > now() - interval '{ONLINE_WINDOW}' AS online, a.acked_through, a.backlog
    FROM v_agent_health a
    ORDER BY online, a.last_seen, a.agent_id"""

ONLINE = f"""\
    SELECT count(*) FILTER (WHERE last_seen > now() - interval '{ONLINE_WINDOW}') AS online,
           count(*) AS agents
    FROM v_agent_health"""

OLDEST_ACK = """\
    SELECT max(ack_age_s) AS oldest_ack_age_s FROM v_agent_health"""

BACKLOG = """\
    SELECT coalesce(sum(backlog), 0) AS backlog FROM v_agent_health"""

DEAD_LETTERS_OVER_TIME = """\
    SELECT $__timeGroupAlias(received_at, '1h'), reason AS metric, count(*)::double precision AS dead_letters
    FROM v_dead_letters
    WHERE $__timeFilter(received_at)
    GROUP BY 1, 2
    ORDER BY 1, 2"""

DEAD_LETTERS_BY_REASON = """\
    SELECT reason, coalesce(field, '') AS field, count(*) AS dead_letters,
           count(DISTINCT agent_id) AS agents, max(received_at) AS last_received
    FROM v_dead_letters
    WHERE $__timeFilter(received_at)
    GROUP BY reason, coalesce(field, '')
    ORDER BY dead_letters DESC, reason"""

DEAD_LETTER_COUNT = """\
    SELECT count(*) AS dead_letters FROM v_dead_letters WHERE $__timeFilter(received_at)"""

UNREGISTERED = """\
    SELECT r.manufacturer, r.serial, r.first_seen, last.factory_id AS seen_at_factory, last.ts AS last_state_at
    FROM v_robot_current r
    LEFT JOIN LATERAL (
      SELECT e.factory_id, e.ts FROM v_state_events e
      WHERE e.robot_id = r.robot_id
      ORDER BY e.ts DESC LIMIT 1
    ) last ON true
    WHERE NOT r.registered
    ORDER BY r.first_seen DESC NULLS LAST, r.manufacturer, r.serial"""

ROBOT_CLOCKS = """\
    SELECT c.manufacturer, c.serial, c.factory_id, c.agent_id,
           -(array_agg(c.clock_offset_s ORDER BY c.ts DESC))[1] AS clock_ahead_s,
           count(*) AS corrected_events, max(c.ts) AS last_corrected_at
    FROM v_clock_corrections c
    WHERE $__timeFilter(c.ts)
    GROUP BY c.manufacturer, c.serial, c.factory_id, c.agent_id
    ORDER BY abs(-(array_agg(c.clock_offset_s ORDER BY c.ts DESC))[1]) DESC, c.manufacturer, c.serial"""

ROBOT_CLOCK_COUNT = """\
    SELECT count(DISTINCT robot_id) AS clock_corrected_robots FROM v_clock_corrections WHERE $__timeFilter(ts)"""

AGENT_CLOCKS = """\
    SELECT agent_id, factory_id, -clock_offset_s AS clock_ahead_s, clock_offset_at AS measured_at
    FROM v_agent_clocks
    WHERE clock_offset_s IS NOT NULL
    ORDER BY abs(clock_offset_s) DESC, agent_id"""

UNREGISTERED_COUNT = """\
    SELECT count(*) AS unregistered_robots FROM v_robot_current WHERE NOT registered"""


def build() -> model.Dashboard:
    d = p.new_dashboard(
        UID,
        TITLE,
        "Is every factory's edge agent delivering, and what did the collector reject?",
        ["fleet", "operations"],
        time_from="now-24h",
    )
    d = d.refresh("1m")
    d = d.with_row(p.row("Edge agents 边缘代理"))
    d = d.with_panel(
        p.stat_panel(
            "Agents online 在线代理", ONLINE, w=6, description=f"Committed something in the last {ONLINE_WINDOW}."
        )
    )
    d = d.with_panel(p.stat_panel("Oldest acknowledgement 最久未确认", OLDEST_ACK, unit="s", w=6))
    d = d.with_panel(
        p.stat_panel(
            "Backlog behind gaps 待补序列",
            BACKLOG,
            w=6,
            description="Sequence numbers stored beyond each agent's contiguous acknowledged run, summed.",
        )
    )
    d = d.with_panel(p.stat_panel("Unregistered robots 未登记机器人", UNREGISTERED_COUNT, w=6))
    d = d.with_panel(
        p.table_panel("Agents 代理明细", AGENTS, units={"ack_age_s": "s"}).override_by_name(
            "online",
            [
                model.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-background"}),
                model.DynamicConfigValue(
                    id_val="mappings",
                    value=[
                        {
                            "type": "value",
                            "options": {
                                "true": {"text": "online 在线", "color": "green"},
                                "false": {"text": "offline 离线", "color": "red"},
                            },
                        }
                    ],
                ),
            ],
        )
    )
    d = d.with_row(p.row("Dead letters 死信"))
    d = d.with_panel(p.stat_panel("Dead letters in range 死信数", DEAD_LETTER_COUNT, w=6))
    d = d.with_panel(p.ts_panel("Dead letters by reason 死信原因", DEAD_LETTERS_OVER_TIME, w=18, bars=True, stack=True))
    d = d.with_panel(p.table_panel("Dead letters by reason and field 死信明细", DEAD_LETTERS_BY_REASON))
    d = d.with_row(p.row("Clocks 时钟"))
    d = d.with_panel(
        p.stat_panel(
            "Robots with a corrected clock 时钟已校正机器人",
            ROBOT_CLOCK_COUNT,
            w=6,
            description="Controllers whose clock is off: their timestamps were corrected at the edge, never refused.",
        )
    )
    d = d.with_panel(
        p.table_panel("Robot clocks corrected at the edge 机器人时钟偏差", ROBOT_CLOCKS, units={"clock_ahead_s": "s"})
    )
    d = d.with_panel(
        p.table_panel("Agent clocks against the collector 代理时钟偏差", AGENT_CLOCKS, units={"clock_ahead_s": "s"})
    )
    d = d.with_row(p.row("Unregistered robots 未登记机器人"))
    d = d.with_panel(p.table_panel("Robots seen in telemetry, not in the registry 未登记机器人明细", UNREGISTERED))
    return d.build()
