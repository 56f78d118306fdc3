"""Exactly-once by ranges: which rows of a flush are new, given what each agent has settled.

An edge agent numbers its events densely, so the seqs the collectors have settled for it
(stored or dead-lettered) are a handful of half-open ranges, ``agents.committed`` (an
``int8multirange``, migrations/020_committed_ranges.sql). The writer locks the flush's agents'
rows, reads their ranges and splits the flush here: the first copy of an unsettled seq is
new; a later copy in the same flush is a duplicate when identical and a conflict otherwise;
a settled seq is a repeat, which the writer compares with the stored event.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

Row = tuple[Any, ...]
"""An ``events`` row as the writer COPYs it: (agent_id, seq, robot_id, ...)."""


class Settled:
    """One agent's settled seqs: sorted, disjoint half-open ranges [lo, hi)."""

    __slots__ = ("his", "los", "top")

    def __init__(self, ranges: Iterable[tuple[int, int]]) -> None:
        pairs = sorted(ranges)
        self.los = [lo for lo, _ in pairs]
        self.his = [hi for _, hi in pairs]
        self.top = self.his[-1] if self.his else 0

    def __contains__(self, seq: int) -> bool:
        if seq >= self.top:  # the usual case: beyond everything settled
            return False
        i = bisect.bisect_right(self.los, seq) - 1
        return i >= 0 and seq < self.his[i]


@dataclass
class Split:
    new: list[Row] = field(default_factory=list)
    repeats: list[Row] = field(default_factory=list)
    """Rows whose seq was settled before this flush: compare them with the stored event."""
    conflicts: list[Row] = field(default_factory=list)
    duplicates: int = 0


def split(rows: Iterable[Row], settled: dict[str, Settled]) -> Split:
    out = Split()
    # The usual flush: each agent's seqs rise beyond everything settled, so a row is new when its
    # seq exceeds the agent's floor (the highest seq settled or new so far). The first row that
    # does not switches to looking every row up in ``first``.
    floor: dict[str, int] = {a: s.top - 1 for a, s in settled.items()}
    first: dict[tuple[str, int], Row] | None = None
    none = Settled(())
    for row in rows:
        agent, seq = row[0], row[1]
        if first is None:
            if seq > floor.get(agent, 0):
                floor[agent] = seq
                out.new.append(row)
                continue
            first = {(r[0], r[1]): r for r in out.new}
        seen = first.get((agent, seq))
        if seen is not None:
            if same_event(seen[2:], row[2:]):
                out.duplicates += 1
            else:
                out.conflicts.append(row)
        elif seq in settled.get(agent, none):
            out.repeats.append(row)
        else:
            first[(agent, seq)] = row
            out.new.append(row)
    return out


def same_event(a: Sequence[Any], b: Sequence[Any]) -> bool:
    """Equal content (NaN equals NaN: a re-sent NaN reading is the same reading)."""
    return len(a) == len(b) and all(x == y or (_nan(x) and _nan(y)) for x, y in zip(a, b, strict=True))


def _nan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


def multirange_text(seqs: Iterable[int]) -> str:
    """'{[1,4),[7,8)}' for seqs 1, 2, 3, 7: the literal of an int8multirange."""
    runs: list[list[int]] = []
    for s in sorted(set(seqs)):
        if runs and s == runs[-1][1]:
            runs[-1][1] = s + 1
        else:
            runs.append([s, s + 1])
    return "{" + ",".join(f"[{lo},{hi})" for lo, hi in runs) + "}"
