"""Health of the edge agent as Prometheus text on http://127.0.0.1:PORT/metrics.

Loopback only: the agent opens no port another machine can reach. A node exporter's
textfile collector or a local Prometheus agent scrapes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

HealthSource = Callable[[], Awaitable[dict[str, float]]]
"""The current values; async, so that what blocks (an outbox query) can go to a thread."""

HELP = {
    "robots_online": "Robots whose last known state is not OFFLINE.",
    "robots_seen": "Robots this agent has read since it started.",
    "sources_stopped": "Sources given up for settings that cannot work (e.g. a login refused again and again).",
    "backlog_events": "Events in the outbox not yet acknowledged by the collector.",
    "oldest_unacked_age_seconds": "Age of the oldest unacknowledged event.",
    "readings_total": "Readings received from all sources.",
    "acked_events_total": "Events the collector acknowledged as committed.",
    "published_batches_total": "Uplink messages published.",
    "resent_batches_total": "Batches re-sent after the acknowledgement timeout.",
    "refused_publishes_total": "Uplink messages the broker refused (ACL).",
    "uplink_reconnects_total": "Times the uplink connection was lost.",
    "uplink_connected": "1 when connected to the central broker.",
    "uplink_wire_version_mismatch": "1 while the collector refuses this agent's wire version (or acks in another).",
    "outbox_bytes": "Disk used by the outbox.",
    "outbox_dropped_counters_total": "Counter events dropped because the outbox was full.",
    "outbox_disk_full": "1 while the outbox's filesystem is full (counters dropped, state changes held).",
    "last_ack_timestamp_seconds": "When the last acknowledgement arrived (Unix time).",
    "clock_offset_seconds": "This agent's clock against the collector's (collector - agent), from the acks.",
    "clock_corrected_robots": "Robots whose controller clock is off, their timestamps corrected and flagged.",
    "clock_corrected_readings_total": "Readings whose timestamp was corrected for a controller clock that is off.",
}


def render(values: dict[str, float]) -> str:
    lines = []
    for name, value in values.items():
        full = f"robodensity_edge_{name}"
        kind = "counter" if name.endswith("_total") else "gauge"
        lines += [f"# HELP {full} {HELP.get(name, name)}", f"# TYPE {full} {kind}", f"{full} {value:g}"]
    return "\n".join(lines) + "\n"


async def serve(port: int, source: HealthSource) -> asyncio.Server:
    """Serve /metrics on 127.0.0.1:port until the returned server is closed."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
            if request.split(b" ")[1:2] == [b"/metrics"]:
                body, status = render(await source()).encode(), b"200 OK"
            else:
                body, status = b"see /metrics\n", b"404 Not Found"
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain; version=0.0.4\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port)
