"""The storage code at month and year boundaries, on any day: the clock frozen there.

Python (robodensity.core.clock.now) and SQL (clock_now(), through the connection's
robodensity.now setting) see the same frozen time, so partitions made ahead, the
collector's time window and the month an event is stored in are exercised at the
boundaries whatever today's date is.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from robodensity.collector.validate import Incoming
from robodensity.collector.write import Writer
from robodensity.core import clock, wire
from robodensity.core.wire import Batch, Event, Reading, RobotId, State
from robodensity.storage.db import connect, drop_schema, migrate

BOUNDARIES = [
    datetime(2026, 1, 31, 23, 59, 30, tzinfo=UTC),  # a month's last seconds
    datetime(2026, 12, 31, 23, 59, 30, tzinfo=UTC),  # a year's last seconds
    datetime(2027, 1, 1, 0, 0, 30, tzinfo=UTC),  # a year's first seconds
    datetime(2028, 2, 29, 23, 59, 30, tzinfo=UTC),  # a leap day at the end of its month
    datetime(2026, 12, 1, 0, 0, 30, tzinfo=UTC),  # the 1st: the day a test used to fail on
]


def _part(t: datetime) -> str:
    return f"events_y{t:%Y}m{t:%m}"


@pytest.fixture(params=BOUNDARIES, ids=lambda t: t.strftime("%Y-%m-%dT%H:%M"))
def at(request: pytest.FixtureRequest, pg_url: str) -> Iterator[tuple[datetime, str]]:
    name = f"t_clk_{uuid.uuid4().hex[:10]}"
    with clock.frozen(request.param) as t:
        migrate(pg_url, name)
        try:
            yield t, name
        finally:
            drop_schema(pg_url, name)


def test_the_frozen_clock_reaches_sql(at: tuple[datetime, str], pg_url: str) -> None:
    t, schema = at
    with connect(pg_url, schema) as conn:
        row = conn.execute("SELECT clock_now()").fetchone()
    assert row is not None and row[0] == t
    assert clock.now() == t


def test_partitions_are_made_around_the_frozen_month(at: tuple[datetime, str], pg_url: str) -> None:
    t, schema = at
    month = t.replace(day=1, hour=0, minute=0, second=0)
    expected = {_part((month + timedelta(days=32 * k)).replace(day=1)) for k in range(0, 4)}
    expected.add(_part((month - timedelta(days=1)).replace(day=1)))  # one month back
    with connect(pg_url, schema) as conn:
        made = {r[0] for r in conn.execute("SELECT relname FROM pg_class WHERE relname ~ '^events_y' "
                                           "AND relnamespace = current_schema()::regnamespace")}  # fmt: skip
    assert expected <= made


def test_events_either_side_of_the_boundary_land_in_their_own_months(at: tuple[datetime, str], pg_url: str) -> None:
    t, schema = at
    robot = RobotId("KUKA", "S1")
    stamps = [t - timedelta(minutes=2), t - timedelta(seconds=40), t, t + timedelta(minutes=4)]
    late = t + timedelta(minutes=6)  # beyond the collector's allowance for fast controller clocks
    events = [Event(i + 1, Reading.of_state(robot, ts, State.IDLE)) for i, ts in enumerate([*stamps, late])]
    payload = wire.encode_batch(Batch("a1", "f1", tuple(events)))
    with connect(pg_url, schema) as conn:
        result = Writer(conn).flush([Incoming(wire.uplink_topic("f1", "a1"), payload, 0)])
        assert result.inserted == len(stamps)
        placed = dict(conn.execute("SELECT ts, tableoid::regclass::text FROM events").fetchall())
        refused = conn.execute("SELECT count(*) FROM dead_letters").fetchone()
    assert placed == {ts: _part(ts) for ts in stamps}
    assert refused is not None and refused[0] == 1
