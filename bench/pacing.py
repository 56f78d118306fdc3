"""The bare-library loops' shared clockwork: a 1 s poll with jitter and one measurement window."""

from __future__ import annotations

import asyncio
import random
import time


class Window:
    """A warm-up, then reads and late polls counted for a number of seconds of wall time."""

    def __init__(self) -> None:
        self.counting = False
        self.reads = 0
        self.late = 0

    def read(self) -> None:
        """One successful read (counted only inside the window)."""
        self.reads += self.counting

    async def next_poll(self, next_at: float, rng: random.Random) -> float:
        """Sleep until the next poll, 1 s +- 10 % after ``next_at``; a poll already due is late."""
        next_at += 1.0 * (1 + rng.uniform(-0.1, 0.1))
        delay = next_at - time.monotonic()
        if delay < 0:
            self.late += self.counting
            next_at = time.monotonic()
        await asyncio.sleep(max(0.0, delay))
        return next_at

    async def measure(self, tasks: list[asyncio.Task[None]], seconds: float, warmup: float) -> dict[str, float]:
        """Run ``tasks`` through the warm-up and the window, then cancel them; the window's figures."""
        await asyncio.sleep(warmup)
        self.counting = True
        cpu0, t0 = time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
        self.counting = False
        for t in tasks:
            t.cancel()
        return {"reads": self.reads, "cpu_s": cpu, "wall_s": wall, "overruns": self.late}
