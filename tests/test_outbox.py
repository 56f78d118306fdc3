"""The edge outbox: durable, gap-free sequence numbers, bounded on disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

from robodensity.core import wire
from robodensity.core.wire import Counter, Reading, RobotId, State
from robodensity.edge.outbox import Outbox

ROBOT = RobotId("ABB", "6700-1")
NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def _states(n: int) -> list[Reading]:
    return [Reading.of_state(ROBOT, NOW, State.EXECUTING if i % 2 else State.IDLE) for i in range(n)]


def test_sequence_numbers_continue_after_reopening_and_deleting(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    assert box.add(_states(3)) == [1, 2, 3]
    box.acknowledge([(1, 3)])
    box.close()
    box = Outbox(tmp_path / "o.sqlite")
    assert box.add(_states(2)) == [4, 5]


def test_taken_events_come_back_only_after_the_ack_timeout(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    box.add(_states(4))
    assert [s for s, _ in box.take(10, resend_after_s=60)] == [1, 2, 3, 4]
    assert box.take(10, resend_after_s=60) == []
    assert [s for s, _ in box.take(10, resend_after_s=0)] == [1, 2, 3, 4]


def test_acknowledged_events_leave_and_others_stay(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    box.add(_states(5))
    assert box.acknowledge([(1, 2), (4, 4)]) == 3
    assert [s for s, _ in box.take(10, 0)] == [3, 5]


def test_a_restart_resends_everything_unacknowledged(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    box.add(_states(2))
    box.take(10, resend_after_s=3600)
    box.close()
    assert [s for s, _ in Outbox(tmp_path / "o.sqlite").take(10, resend_after_s=3600)] == [1, 2]


def test_a_spliced_batch_is_byte_for_byte_the_encoded_batch(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    readings = [
        *_states(2),
        Reading.of_counter(ROBOT, NOW, Counter.CYCLES, 17),
        Reading.of_alarm(ROBOT, NOW, "E1", "门开", True),
    ]
    box.add(readings)
    payload = wire.splice_batch("a1", "f1", box.take(10, 0))
    assert payload == wire.encode_batch(
        wire.Batch("a1", "f1", tuple(wire.Event(i + 1, r) for i, r in enumerate(readings)))
    )
    assert [e.reading for e in wire.decode_batch(payload, NOW).events] == readings


def test_a_take_never_exceeds_one_uplink_message(tmp_path: Path) -> None:
    """Long non-ASCII alarm texts (6 bytes a character once escaped): 500 would make 3 MB."""
    box = Outbox(tmp_path / "o.sqlite")
    alarm = Reading.of_alarm(ROBOT, NOW, "E1", "机" * wire.MAX_ALARM_TEXT_CHARS, True)
    box.add([alarm] * 500)
    taken = box.take(500, 0)
    payload = wire.splice_batch("a" * wire.MAX_IDENT_CHARS, "f" * wire.MAX_IDENT_CHARS, taken)
    assert 100 < len(taken) < 500
    assert wire.MAX_PAYLOAD_BYTES - 7000 < len(payload) <= wire.MAX_PAYLOAD_BYTES
    assert len(wire.decode_batch(payload, NOW).events) == len(taken)
    assert box.take(500, 3600)[0][0] == len(taken) + 1  # the rest stay for the next message


def test_when_full_the_oldest_counters_go_and_states_stay(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite", max_bytes=1 << 20)
    counters = [Reading.of_counter(ROBOT, NOW, Counter.ENERGY_WH, float(i)) for i in range(4000)]
    while box.size_bytes() < box.max_bytes:
        box.add(counters[:500])
        box.add(_states(50))
    states_before = box.db.execute("SELECT count(*) FROM outbox WHERE kind = 0").fetchone()[0]
    box.add(_states(10))
    assert box.dropped_counters > 0
    assert box.db.execute("SELECT count(*) FROM outbox WHERE kind = 0").fetchone()[0] == states_before + 10


def test_a_killed_writer_loses_nothing_it_reported_stored(tmp_path: Path) -> None:
    """kill -9 in the middle of writing: every seq `add` returned is on disk afterwards."""
    path = tmp_path / "o.sqlite"
    script = textwrap.dedent(f"""
        import sys
        from datetime import datetime, timezone
        from robodensity.edge.outbox import Outbox
        from robodensity.core.wire import Reading, RobotId, State
        box = Outbox(__import__("pathlib").Path({str(path)!r}))
        r = Reading.of_state(RobotId("ABB", "1"), datetime.now(timezone.utc), State.IDLE)
        while True:
            for seq in box.add([r] * 7):
                print(seq, flush=True)
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent
    )
    assert proc.stdout is not None
    reported = []
    for line in proc.stdout:
        reported.append(int(line))
        if len(reported) >= 700:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    stored = {s for s, _ in Outbox(path).take(1_000_000, 0)}
    assert set(reported) <= stored
    assert sorted(stored) == list(range(1, len(stored) + 1))
    assert json.loads(Outbox(path).take(1, 0)[0][1])["state"] == "IDLE"
