"""The durable outbox: SQLite in WAL mode with synchronous=FULL.

A reading gets its sequence number when it enters the outbox (SQLite AUTOINCREMENT:
never reused, even after deletes or a crash), and leaves only when the collector
acknowledges it as committed. Everything here survives kill -9 and power loss: a
committed insert is on disk before ``add`` returns.

Disk bound: at 90 % of ``max_bytes`` it warns; when full, the oldest counter events
are dropped first (a later counter value supersedes them); state changes and alarms
are never dropped to make room for counters, and a counter that finds no room is
refused. State changes are admitted into a 5 % reserve beyond the bound, and only
when that too is exhausted does ``add`` raise OutboxFull.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from robodensity.core.errors import OutboxFull
from robodensity.core.wire import EventType, Reading, event_body, splice_fit

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    kind    INTEGER NOT NULL,          -- 0 state, 1 alarm, 2 counter: drop order is highest first
    body    TEXT NOT NULL,             -- wire.event_body(reading): the wire event without its seq
    created REAL NOT NULL,             -- wall time [s since epoch] it entered the outbox
    sent_at REAL                       -- wall time of the last send, NULL if never
);
"""
_KIND = {EventType.STATE: 0, EventType.ALARM: 1, EventType.COUNTER: 2}


class Outbox:
    def __init__(self, path: Path, max_bytes: int = 1 << 30) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.dropped_counters = 0
        self.refused = 0
        self._warned = False
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        self._page_size = int(self.db.execute("PRAGMA page_size").fetchone()[0])
        # A restart re-sends everything unacknowledged: sends before the crash are void.
        self.db.execute("UPDATE outbox SET sent_at = NULL WHERE sent_at IS NOT NULL")

    def close(self) -> None:
        self.db.close()

    # -- size ----------------------------------------------------------------------
    def size_bytes(self) -> int:
        pages = int(self.db.execute("PRAGMA page_count").fetchone()[0])
        free = int(self.db.execute("PRAGMA freelist_count").fetchone()[0])
        return (pages - free) * self._page_size

    def _make_room(self, readings: Sequence[Reading]) -> list[Reading]:
        used = self.size_bytes()
        if used >= 0.9 * self.max_bytes and not self._warned:
            log.warning(
                "outbox %s is %.0f %% full (%d bytes of %d): the uplink is behind",
                self.path,
                100 * used / self.max_bytes,
                used,
                self.max_bytes,
            )
            self._warned = True
        elif used < 0.8 * self.max_bytes:
            self._warned = False
        if used < self.max_bytes:
            return list(readings)
        # Full: drop oldest counters, keep states; refuse new counters if none can go.
        need = max(1, len(readings))
        cur = self.db.execute(
            "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE kind = 2 ORDER BY seq LIMIT ?)",
            (need * 4,),
        )
        self.dropped_counters += cur.rowcount
        if cur.rowcount:
            log.error("outbox full: dropped %d oldest counter event(s) to keep state changes", cur.rowcount)
            return list(readings)
        keep = [r for r in readings if r.type is not EventType.COUNTER]
        self.refused += len(readings) - len(keep)
        if keep and used >= 1.05 * self.max_bytes:
            raise OutboxFull(f"outbox {self.path} is full ({used} bytes) and holds only state changes")
        return keep

    # -- in ------------------------------------------------------------------------
    def add(self, readings: Iterable[Reading]) -> list[int]:
        """Store readings durably in one transaction; returns their sequence numbers."""
        batch = self._make_room(list(readings))
        seqs = []
        now = time.time()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for r in batch:
                cur = self.db.execute(
                    "INSERT INTO outbox (kind, body, created) VALUES (?, ?, ?)", (_KIND[r.type], event_body(r), now)
                )
                seqs.append(int(cur.lastrowid or 0))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return seqs

    # -- out -----------------------------------------------------------------------
    def take(self, limit: int, resend_after_s: float) -> list[tuple[int, str]]:
        """Up to ``limit`` events never sent or sent more than ``resend_after_s`` ago, oldest first,
        marked as sent now; no more than fit in one uplink message (``wire.splice_fit``).
        Returns (seq, body) pairs for ``wire.splice_batch``."""
        now = time.time()
        rows = self.db.execute(
            "SELECT seq, body FROM outbox WHERE sent_at IS NULL OR sent_at < ? ORDER BY seq LIMIT ?",
            (now - resend_after_s, limit),
        ).fetchall()
        rows = rows[: splice_fit(rows)]
        if rows:
            self.db.executemany("UPDATE outbox SET sent_at = ? WHERE seq = ?", [(now, s) for s, _ in rows])
        return [(int(s), str(b)) for s, b in rows]

    def unsend(self, seqs: Iterable[int]) -> None:
        """Make events eligible again at once (a publish that did not go out)."""
        self.db.executemany("UPDATE outbox SET sent_at = NULL WHERE seq = ?", [(s,) for s in seqs])

    def acknowledge(self, ranges: Iterable[tuple[int, int]]) -> int:
        """Delete acknowledged events; returns how many were deleted."""
        deleted = 0
        self.db.execute("BEGIN IMMEDIATE")
        for lo, hi in ranges:
            deleted += self.db.execute("DELETE FROM outbox WHERE seq BETWEEN ? AND ?", (lo, hi)).rowcount
        self.db.execute("COMMIT")
        return deleted

    def backlog(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def oldest_age_s(self) -> float:
        """Age [s] of the oldest unacknowledged event; 0 when the outbox is empty."""
        row = self.db.execute("SELECT created FROM outbox ORDER BY seq LIMIT 1").fetchone()
        return max(0.0, time.time() - float(row[0])) if row else 0.0
