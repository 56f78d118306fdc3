"""The last state each robot was reported in, kept on disk so a restart does not repeat it.

A factory broker re-sends a retained status message on every new subscription; an agent
that restarted would store it a second time. Sources that cannot tell a repeat from the
message itself (MQTT JSON) remember each robot's last state here, written only once the
reading is durable in the outbox (so a crash never makes the agent skip a reading it lost).
One small SQLite file next to the outbox; ``scope`` separates the sources that share it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

from robodensity.core.wire import State


class LastReadings:
    def __init__(self, path: Path, scope: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.scope = scope
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS last_state (scope TEXT, robot TEXT, state TEXT NOT NULL, "
            "PRIMARY KEY (scope, robot))"
        )

    def load(self) -> dict[str, State]:
        rows = self._db.execute("SELECT robot, state FROM last_state WHERE scope = ?", (self.scope,))
        return {robot: State(state) for robot, state in rows}

    def save(self, states: Iterable[tuple[str, State]]) -> None:
        rows = [(self.scope, robot, state.value) for robot, state in states]
        if rows:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO last_state VALUES (?, ?, ?)", rows)
            self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()
