"""Disk full at the edge: the outbox's filesystem runs out of space, not its configured bound.

A small tmpfs (16 MiB) is mounted for the outbox (needs root; skipped with the reason otherwise) and
filled with a ballast file while the agent stores 12,000 counters and 4,000 state changes
with no collector to acknowledge them. The agent keeps running, says so once (one error line,
the health gauge outbox_disk_full), drops counters and keeps every state change, corrupts
nothing (PRAGMA integrity_check), and recovers by itself once the ballast is removed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from robodensity.edge.agent import EdgeAgent
from robodensity.storage.db import connect
from tests.helpers import running_collector, wait_until_async
from tests.rig import Outcome, PacedSource, rig_settings

N, COUNTER_EVERY = 16_000, 4  # 3 of 4 readings are counters: 4,000 state changes
FS_BYTES = 16 << 20
FREE_BYTES = 600 << 10


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs of this test's own."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem for the outbox needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={FS_BYTES}", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(folder: Path, leave: int) -> Path:
    """A ballast file that leaves ``leave`` bytes free on the filesystem of ``folder``."""
    ballast = folder / "ballast"
    free = shutil.disk_usage(folder).free
    with ballast.open("wb") as fh:
        fh.write(b"\0" * max(0, free - leave))
    return ballast


async def test_a_full_disk_drops_counters_keeps_states_and_recovers(
    pg_url: str, broker_url: str, schema: str, tmp_path: Path, small_fs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="robodensity.edge")
    settings = rig_settings(schema, small_fs, batch_max_events=500)
    assert settings.edge.outbox_max_bytes > FS_BYTES  # the filesystem fills, not the configured bound
    source = PacedSource(N, 4000.0, counter_every=COUNTER_EVERY)
    agent = EdgeAgent(settings, broker_url, sources=[source])  # no collector yet: nothing is acknowledged
    ballast = _fill(small_fs, FREE_BYTES)  # after the outbox (and its reserve) exist, as in a factory
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    t0 = time.monotonic()
    try:
        await wait_until_async(lambda: agent.outbox.disk_full, 30, "the outbox's disk to fill up")
        assert (await agent.health())["outbox_disk_full"] == 1.0
        await wait_until_async(lambda: agent.outbox.dropped_counters + agent.outbox.refused > 0, 30, "counters dropped")
        assert not task.done()  # still running
        full_lines = [r for r in caplog.records if "the disk is full" in r.getMessage()]
        assert len(full_lines) == 1 and full_lines[0].levelno == logging.ERROR
        assert agent.outbox.integrity_ok()

        ballast.unlink()  # space returns: the agent notices by itself
        await wait_until_async(lambda: source.yielded == N and agent.stats.stored > 0, 60, "every reading read")
        await wait_until_async(lambda: not agent.outbox.disk_full, 30, "the agent to store again")
        assert any("disk space is back" in r.getMessage() for r in caplog.records)
        assert agent.outbox.integrity_ok()
        with running_collector(settings, pg_url, broker_url, schema):
            await wait_until_async(lambda: agent.backlog() == 0, 60, "the outbox to drain")
    finally:
        stop.set()
        await task
    with connect(pg_url, schema) as conn:
        kinds = dict(
            conn.execute(
                "SELECT type, count(*) FROM events WHERE agent_id = %s GROUP BY type", (settings.edge.agent_id,)
            ).fetchall()
        )
        stored, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT seq) FROM events WHERE agent_id = %s", (settings.edge.agent_id,)
        ).fetchone()
    states, counters = N // COUNTER_EVERY, N - N // COUNTER_EVERY
    assert kinds.get("state") == states  # every state change, none dropped
    assert kinds.get("counter", 0) + agent.outbox.dropped_counters + agent.outbox.refused == counters
    assert agent.outbox.dropped_counters + agent.outbox.refused > 0
    assert stored == distinct  # nothing doubled
    Outcome(
        "disk full at the edge (16 MiB tmpfs, 600 KiB left; 12,000 counters + 4,000 states; acks after)",
        N,
        stored,
        distinct,
        0,
        round(time.monotonic() - t0, 1),
        agent.stats.resent_batches,
        0,
        0.0,
        {"states_stored": kinds.get("state"), "counters_dropped": agent.outbox.dropped_counters + agent.outbox.refused},
    ).record()
