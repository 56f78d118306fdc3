"""The agents' clocks: store the offset an agent reports in a batch's head (issue 15 item 3).

An agent measures its clock against the collector's from the acks (each carries the
collector's time) and puts the offset into a batch's head now and then
(``wire.batch_clock_offset``). The writer calls :func:`record_agent_clocks` in its flush's
transaction, after the agents' rows are locked; a flush without such a head costs nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import psycopg

from robodensity.collector.validate import Incoming
from robodensity.core.wire import batch_clock_offset

log = logging.getLogger(__name__)

LARGE_AGENT_OFFSET_S = 2.0
"""[s] an agent clock this far off the collector's is logged (its events are stamped by it)."""

_UPDATE = (
    "UPDATE agents g SET clock_offset_s = u.o, clock_offset_at = %s "
    "FROM unnest(%s::text[], %s::float8[]) AS u(a, o) WHERE g.agent_id = u.a"
)


def agent_offsets(messages: Iterable[Incoming]) -> dict[str, float]:
    """Agent -> the last clock offset [s] its messages report (collector - agent)."""
    out: dict[str, float] = {}
    for msg in messages:
        parts = msg.topic.split("/")
        offset = batch_clock_offset(msg.payload) if len(parts) == 5 else None
        if offset is not None:
            out[parts[3]] = offset
    return out


def record_agent_clocks(cur: psycopg.Cursor[Any], messages: Iterable[Incoming], now: datetime) -> int:
    """Store the reported offsets on the agents' rows (only rows that exist); how many reported."""
    offsets = agent_offsets(messages)
    if not offsets:
        return 0
    agents = sorted(offsets)
    cur.execute(_UPDATE, (now, agents, [offsets[a] for a in agents]))
    for agent in agents:
        if abs(offsets[agent]) > LARGE_AGENT_OFFSET_S:
            log.warning("agent %s: its clock is %+.1f s off the collector's", agent, -offsets[agent])
    return len(offsets)
