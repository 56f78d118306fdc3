"""Memory over time: resident set size of processes sampled through a run, and its trend.

"Bounded" is judged from the samples, not from a single peak: the slope of a least-squares
line through the second half of the run (after start-up and warm caches) must stay below
a threshold in MiB per hour, so a leak of a few MiB an hour shows and a one-off step does not.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

SLOPE_MAX_MIB_PER_H = 20.0
"""[MiB/h] the largest upward trend over a run's second half still called flat."""
RISE_FLOOR_MIB = 2.0
"""[MiB] a fitted rise this small is noise, whatever the run's length."""


def rss_mib(pid: int | str = "self") -> float:
    """Resident set size [MiB] of a process (Linux /proc); 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0.0


@dataclass
class Series:
    name: str
    t_s: list[float] = field(default_factory=list)
    mib: list[float] = field(default_factory=list)

    def slope_mib_per_h(self) -> float:
        """Least-squares slope [MiB/h] over the second half of the samples (nan with fewer than 4)."""
        half = len(self.t_s) // 2
        t, y = np.asarray(self.t_s[half:]), np.asarray(self.mib[half:])
        if len(t) < 2 or len(self.t_s) < 4 or np.ptp(t) == 0:
            return float("nan")
        return float(np.polyfit(t, y, 1)[0] * 3600)

    def summary(self) -> dict[str, float]:
        return {
            "start_mib": round(self.mib[0], 1) if self.mib else 0.0,
            "max_mib": round(max(self.mib), 1) if self.mib else 0.0,
            "end_mib": round(self.mib[-1], 1) if self.mib else 0.0,
            "slope_mib_per_h": round(self.slope_mib_per_h(), 1),
            "samples": len(self.mib),
        }

    def check_flat(self, limit: float = SLOPE_MAX_MIB_PER_H) -> None:
        """The fitted rise over the second half stays under ``limit`` MiB/h times its span, or under
        RISE_FLOOR_MIB (short runs: allocator noise is not a trend)."""
        slope = self.slope_mib_per_h()
        assert slope == slope, f"{self.name}: too few RSS samples ({len(self.mib)}) to judge a trend"
        span_h = (self.t_s[-1] - self.t_s[len(self.t_s) // 2]) / 3600
        rise = slope * span_h
        assert rise < max(RISE_FLOOR_MIB, limit * span_h), (
            f"{self.name}: RSS rises {rise:.1f} MiB over the second half ({slope:.1f} MiB/h; limit {limit} MiB/h)"
        )


class RssSampler:
    """Samples the RSS of named processes every ``every_s`` seconds in a thread, until stopped."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.every_s = every_s
        self.series: dict[str, Series] = {}
        self._pids: dict[str, int | str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._t0 = time.monotonic()

    def watch(self, name: str, pid: int | str = "self") -> None:
        self._pids[name] = pid
        self.series.setdefault(name, Series(name))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def sample(self) -> None:
        t = time.monotonic() - self._t0
        for name, pid in list(self._pids.items()):
            mib = rss_mib(pid)
            if mib:
                self.series[name].t_s.append(t)
                self.series[name].mib.append(mib)

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.every_s):
                return
