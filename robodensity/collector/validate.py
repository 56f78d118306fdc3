"""Turn one raw uplink message into events to store and rejections to dead-letter.

The topic's factory and agent win: a payload that names another factory or agent is
rejected whole. Inside a good message, a bad event is rejected alone with the field
that broke the contract; its neighbours are stored.

``validate_rows`` is what the writer uses: well-formed messages go through the wire's fast
path (``wire.decode_rows``), anything else through ``wire.decode_batch`` (the reference), so
the rejections are the wire contract's. A payload that makes the decoder itself fail (nesting
too deep for the JSON parser, an integer too large for a float) is rejected whole instead
of stopping the collector.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from robodensity.core.wire import (
    DecodedBatch,
    EventRow,
    WireError,
    decode_batch,
    decode_rows,
    event_to_row,
    parse_uplink_topic,
)


@dataclass(frozen=True)
class Incoming:
    """One MQTT message as the consumer hands it over."""

    topic: str
    payload: bytes
    mid: int = 0
    session: int = 0
    """Which broker connection delivered it: a message id is only worth acking on that one."""

    @property
    def factory(self) -> str:
        return self.topic.split("/")[2]

    @property
    def agent(self) -> str:
        return self.topic.split("/")[3]


@dataclass(frozen=True)
class Rejected:
    topic: str
    agent: str | None
    factory: str | None
    seq: int | None
    field: str
    reason: str
    payload: bytes

    @classmethod
    def of_event(cls, msg: Incoming, seq: int | None, field: str, reason: str, raw: Any) -> Rejected:
        try:
            body = json.dumps(raw, separators=(",", ":"), allow_nan=True).encode()
        except (TypeError, ValueError):
            body = repr(raw).encode()
        return cls(msg.topic, msg.agent, msg.factory, seq, field, f"{field}: {reason}", body)


@dataclass(frozen=True)
class Validated:
    batch: DecodedBatch | None
    rejected: list[Rejected]


@dataclass(frozen=True)
class ValidatedRows:
    rows: list[EventRow]
    rejected: list[Rejected]


def validate_rows(msg: Incoming, now: datetime) -> ValidatedRows:
    """Good events of ``msg`` as rows, and what to dead-letter; the same verdicts as validate_message."""
    fast = decode_rows(msg.payload, now)
    if fast is not None:
        agent, factory, rows = fast
        parts = msg.topic.split("/")
        if len(parts) == 5 and parts[2] == factory and parts[3] == agent:
            try:
                parse_uplink_topic(msg.topic)
            except WireError:
                pass
            else:
                return ValidatedRows(rows, [])
    result = validate_message(msg, now)
    return ValidatedRows([event_to_row(e) for e in result.batch.events] if result.batch else [], result.rejected)


def validate_message(msg: Incoming, now: datetime) -> Validated:
    try:
        factory, agent = parse_uplink_topic(msg.topic)
        try:
            batch = decode_batch(msg.payload, now)
        except (RecursionError, OverflowError, MemoryError) as exc:
            # Not a WireError: the decoder itself gave up (deeply nested JSON, a huge integer).
            raise WireError("payload", f"cannot be decoded: {type(exc).__name__}") from None
        if batch.factory != factory:
            raise WireError("factory", f"payload names factory {batch.factory!r} but the topic is {factory!r}")
        if batch.agent != agent:
            raise WireError("agent", f"payload names agent {batch.agent!r} but the topic is {agent!r}")
    except WireError as exc:
        ids = _ids(msg.topic)
        return Validated(None, [Rejected(msg.topic, ids[1], ids[0], None, exc.field, str(exc), msg.payload)])
    rejected = [Rejected.of_event(msg, seq, err.field, err.reason, raw) for seq, err, raw in batch.errors]
    return Validated(batch, rejected)


def _ids(topic: str) -> tuple[str | None, str | None]:
    try:
        return parse_uplink_topic(topic)
    except WireError:
        return None, None
