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

Disk full: when the filesystem itself runs out of space before the bound (SQLite's
SQLITE_FULL), the same policy applies: the write is rolled back (nothing half-written), a
1 MiB reserve file kept beside the outbox is released (in WAL mode even a delete needs
space), the WAL is checkpointed and truncated, the oldest counters are dropped to free
pages inside the file, and the readings are stored
again without their counters; if even that finds no room, ``add`` raises OutboxFull and
the agent holds its readings and tries again. ``disk_full`` says so (one error line when it
starts, one when space is back); acknowledgements that free pages go on meanwhile, so the
outbox recovers by itself once the uplink drains it or space returns.

Every method takes the outbox's lock: worker threads of the agent (and a thread left
running by a cancelled task) never use the connection at once, and ``close`` waits for them.
"""

from __future__ import annotations

import functools
import logging
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

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
CREATE TABLE IF NOT EXISTS edge_state (
    kind    TEXT NOT NULL,             -- what is kept: 'clock', a robot clock's estimate (edge/clock_truth.py)
    key     TEXT NOT NULL,             -- whose: the robot's key
    value   TEXT NOT NULL,             -- JSON, as its owner wrote it
    PRIMARY KEY (kind, key)
) WITHOUT ROWID;
"""
_KIND = {EventType.STATE: 0, EventType.ALARM: 1, EventType.COUNTER: 2}
RESERVE_BYTES = 1 << 20
"""[bytes] kept in ``<outbox>.reserve`` and released when the disk is full, so dropping works."""
DISK_BACK_BYTES = 4 << 20
"""[bytes] free on the outbox's filesystem for a full disk to count as recovered."""
_P = ParamSpec("_P")
_R = TypeVar("_R")


def _locked(method: Callable[Concatenate[Outbox, _P], _R]) -> Callable[Concatenate[Outbox, _P], _R]:
    @functools.wraps(method)
    def run(self: Outbox, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self._mutex:
            return method(self, *args, **kwargs)

    return run


def _disk_full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


class Outbox:
    def __init__(self, path: Path, max_bytes: int = 1 << 30) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.dropped_counters = 0
        self.refused = 0
        self.disk_full = False
        """The filesystem refused the last write (SQLITE_FULL); False again after a write succeeds."""
        self._warned = False
        self._mutex = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._reserve = path.with_name(path.name + ".reserve")
        self._make_reserve()
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        self._page_size = int(self.db.execute("PRAGMA page_size").fetchone()[0])
        # A restart re-sends everything unacknowledged: sends before the crash are void.
        self.db.execute("UPDATE outbox SET sent_at = NULL WHERE sent_at IS NOT NULL")

    @_locked
    def close(self) -> None:
        self.db.close()

    def _rollback(self) -> None:
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")

    def _make_reserve(self) -> None:
        try:
            if not self._reserve.exists():
                self._reserve.write_bytes(b"\0" * RESERVE_BYTES)
        except OSError:  # no room for it (yet): made again when space is back
            self._reserve.unlink(missing_ok=True)

    def _full(self, exc: sqlite3.Error, what: str) -> None:
        """The filesystem is full: say so once, until space is back."""
        if not self.disk_full:
            log.error(
                "outbox %s: the disk is full (%s failed: %s); dropping the oldest counters, keeping every "
                "state change, retrying until space returns",
                self.path,
                what,
                exc,
            )
        self.disk_full = True

    def _written(self) -> None:
        """A write succeeded: the disk is no longer full once it has room again (not merely the
        pages dropped counters left), so a disk at its limit is reported once, not flapping."""
        if self.disk_full and shutil.disk_usage(self.path.parent).free >= DISK_BACK_BYTES:
            log.warning("outbox %s: disk space is back, storing again", self.path)
            self.disk_full = False
            self._make_reserve()

    # -- size ----------------------------------------------------------------------
    @_locked
    def size_bytes(self) -> int:
        return self._size_bytes()

    def _size_bytes(self) -> int:
        pages = int(self.db.execute("PRAGMA page_count").fetchone()[0])
        free = int(self.db.execute("PRAGMA freelist_count").fetchone()[0])
        return (pages - free) * self._page_size

    def _make_room(self, readings: Sequence[Reading]) -> list[Reading]:
        used = self._size_bytes()
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
        if self._drop_counters(max(1, len(readings)) * 4):
            return list(readings)
        keep = [r for r in readings if r.type is not EventType.COUNTER]
        self.refused += len(readings) - len(keep)
        if keep and used >= 1.05 * self.max_bytes:
            raise OutboxFull(f"outbox {self.path} is full ({used} bytes) and holds only state changes")
        return keep

    def _checkpoint(self) -> None:
        try:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.OperationalError as exc:
            if not _disk_full(exc):
                raise

    def _drop_counters(self, n: int) -> int:
        """Delete the ``n`` oldest counter events (0 when none, or the disk refuses even that)."""
        try:
            cur = self.db.execute(
                "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE kind = 2 ORDER BY seq LIMIT ?)", (n,)
            )
        except sqlite3.OperationalError as exc:
            if not _disk_full(exc):
                raise
            self._rollback()
            return 0
        self.dropped_counters += cur.rowcount
        if cur.rowcount and not self.disk_full:  # a full disk is said once (and counted in the gauge)
            log.error("outbox full: dropped %d oldest counter event(s) to keep state changes", cur.rowcount)
        return cur.rowcount

    # -- in ------------------------------------------------------------------------
    @_locked
    def add(self, readings: Iterable[Reading]) -> list[int]:
        """Store readings durably in one transaction; returns their sequence numbers.

        On a full disk: counters dropped (oldest stored ones, then the batch's own) and the
        state changes stored; OutboxFull when not even they fit (nothing of the batch stored)."""
        batch = self._make_room(list(readings))
        try:
            seqs = self._insert(batch)
        except sqlite3.OperationalError as exc:
            if not _disk_full(exc):
                raise
            self._full(exc, "storing readings")
            self._reserve.unlink(missing_ok=True)  # room for the checkpoint, not for more WAL
            self._checkpoint()  # the WAL's pages into the file, the WAL truncated: its space back
            self._drop_counters(max(1, len(batch)) * 4)
            self._checkpoint()  # the freed pages into the file: inserts reuse them, nothing grows
            keep = [r for r in batch if r.type is not EventType.COUNTER]
            try:
                seqs = self._insert(keep)
            except sqlite3.OperationalError as again:
                if not _disk_full(again):
                    raise
                raise OutboxFull(f"outbox {self.path}: the disk is full, {len(keep)} state change(s) wait") from None
            self.refused += len(batch) - len(keep)
            self._checkpoint()
            self._make_reserve()  # for the next time, if the truncated WAL left room for it
        self._written()
        return seqs

    def _insert(self, batch: Sequence[Reading]) -> list[int]:
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
            self._rollback()
            raise
        return seqs

    # -- out -----------------------------------------------------------------------
    @_locked
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
            # On a full disk the rows still go out unmarked (sent again later: the collector
            # stores each seq once), so that their acknowledgements can free space.
            self._try_write(
                "marking events sent", "UPDATE outbox SET sent_at = ? WHERE seq = ?", [(now, s) for s, _ in rows]
            )
        return [(int(s), str(b)) for s, b in rows]

    @_locked
    def unsend(self, seqs: Iterable[int]) -> None:
        """Make events eligible again at once (a publish that did not go out)."""
        self._try_write("unmarking events", "UPDATE outbox SET sent_at = NULL WHERE seq = ?", [(s,) for s in seqs])

    def _try_write(self, what: str, statement: str, rows: list[tuple[float | int, ...]]) -> bool:
        """One statement over ``rows``; False (logged once, rolled back) when the disk is full."""
        try:
            self.db.executemany(statement, rows)
        except sqlite3.OperationalError as exc:
            if not _disk_full(exc):
                raise
            self._rollback()
            self._full(exc, what)
            return False
        self._written()
        return True

    @_locked
    def acknowledge(self, ranges: Iterable[tuple[int, int]]) -> int:
        """Delete acknowledged events; returns how many were deleted (0 when the disk refuses even
        that: they stay, are sent again and acknowledged again)."""
        deleted = 0
        try:
            self.db.execute("BEGIN IMMEDIATE")
            for lo, hi in ranges:
                deleted += self.db.execute("DELETE FROM outbox WHERE seq BETWEEN ? AND ?", (lo, hi)).rowcount
            self.db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if not _disk_full(exc):
                raise
            self._rollback()
            self._full(exc, "deleting acknowledged events")
            return 0
        self._written()
        return deleted

    @_locked
    def save_state(self, kind: str, values: Mapping[str, str]) -> bool:
        """Replace the agent's saved ``kind`` state (key -> JSON) with ``values``, in one durable
        transaction; False (logged once, nothing changed) when the disk is full."""
        self._rollback()  # what a failed operation left open (the agent saves when it stops, whyever)
        try:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("DELETE FROM edge_state WHERE kind = ?", (kind,))
            self.db.executemany("INSERT INTO edge_state VALUES (?, ?, ?)", [(kind, k, v) for k, v in values.items()])
            self.db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if not _disk_full(exc):
                raise
            self._rollback()
            self._full(exc, f"saving the {kind} state")
            return False
        self._written()
        return True

    @_locked
    def load_state(self, kind: str) -> dict[str, str]:
        """The ``kind`` state :meth:`save_state` saved last (empty when none)."""
        return dict(self.db.execute("SELECT key, value FROM edge_state WHERE kind = ? ORDER BY key", (kind,)))

    @_locked
    def backlog(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    @_locked
    def integrity_ok(self) -> bool:
        """SQLite's own check of the file (PRAGMA integrity_check)."""
        return [tuple(r) for r in self.db.execute("PRAGMA integrity_check")] == [("ok",)]

    @_locked
    def oldest_age_s(self) -> float:
        """Age [s] of the oldest unacknowledged event; 0 when the outbox is empty."""
        row = self.db.execute("SELECT created FROM outbox ORDER BY seq LIMIT 1").fetchone()
        return max(0.0, time.time() - float(row[0])) if row else 0.0
