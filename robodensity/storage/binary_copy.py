"""PostgreSQL binary COPY straight to and from numpy arrays: no Python object per row.

Rows of fixed-width, non-NULL columns have a fixed size in the binary COPY format (a 16-bit
field count, then per field a 32-bit length and the big-endian value), so a stream of them is
one numpy structured array: :func:`copy_out` reads a query's result into one, and
:func:`copy_in` writes columns as one. Times travel as PostgreSQL's own: µs (timestamptz) or
days (date) since 2000-01-01; :data:`PG_EPOCH_US` converts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import psycopg
from psycopg import sql

PG_EPOCH_US = 946_684_800_000_000
"""2000-01-01T00:00Z in µs since the Unix epoch: timestamptz on the wire is µs since then."""
PG_EPOCH_DAYS = 10_957
"""2000-01-01 in days since 1970-01-01: date on the wire is days since then."""
_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_HEADER = _SIGNATURE + b"\x00\x00\x00\x00\x00\x00\x00\x00"  # no OIDs, no header extension
_TRAILER = b"\xff\xff"

Field = tuple[str, str]
"""A column: (name, numpy dtype of its binary value, e.g. ``">i8"`` for bigint or timestamptz)."""


def _row_dtype(fields: Sequence[Field | tuple[str, str, int]]) -> np.dtype:
    parts: list[tuple[str, str] | tuple[str, str, tuple[int, ...]]] = [("_n", ">i2")]
    for f in fields:
        parts.append((f"_len_{f[0]}", ">i4"))
        if f[1] != "null":
            parts.append((f[0], f[1]))
    return np.dtype(parts)


def copy_out(
    conn: psycopg.Connection, query: sql.Composable, params: dict[str, object], fields: Sequence[Field]
) -> np.ndarray:
    """Rows of ``COPY (query) TO STDOUT (FORMAT binary)`` as a structured array with ``fields``.

    Every column of the query must be fixed-width and never NULL; a row that is not (a NULL,
    another type) raises ValueError naming the column.
    """
    dtype = _row_dtype(fields)
    stmt = sql.SQL("COPY ({}) TO STDOUT (FORMAT binary)").format(query)
    buf = bytearray()
    with conn.cursor() as cur, cur.copy(stmt, params) as cp:
        for block in cp:
            buf += block
    if len(buf) < len(_HEADER) + 2 or not buf.startswith(_SIGNATURE):
        raise ValueError("not a binary COPY stream")
    ext = int.from_bytes(buf[15:19], "big")
    body = memoryview(buf)[19 + ext : len(buf) - 2]
    if len(body) % dtype.itemsize:
        raise ValueError(f"binary COPY rows are not {dtype.itemsize} bytes each: a NULL or variable-width column")
    rows = np.frombuffer(body, dtype=dtype)
    if len(rows) and np.any(rows["_n"] != len(fields)):
        raise ValueError(f"binary COPY rows do not have {len(fields)} columns")
    for name, kind in fields:
        if len(rows) and np.any(rows[f"_len_{name}"] != np.dtype(kind).itemsize):
            raise ValueError(f"binary COPY column {name!r}: NULL or not {np.dtype(kind).itemsize} bytes wide")
    return rows


def pack(n: int, columns: Sequence[tuple[str, str, object]]) -> bytes:
    """``n`` rows of binary COPY data (no header) from columns (name, dtype, values).

    ``values`` is an array of ``n`` values or one value for every row; dtype ``"null"`` writes
    NULL, and a bytes dtype ``"S<k>"`` a text of exactly k bytes.
    """
    dtype = _row_dtype([(c[0], c[1]) for c in columns])
    rows = np.empty(n, dtype=dtype)
    rows["_n"] = len(columns)
    for name, kind, values in columns:
        if kind == "null":
            rows[f"_len_{name}"] = -1
        else:
            rows[f"_len_{name}"] = np.dtype(kind).itemsize
            rows[name] = values
    return rows.tobytes()


def copy_in(conn: psycopg.Connection, table: str, columns: Sequence[str], parts: Sequence[bytes]) -> None:
    """Write ``parts`` (from :func:`pack`, rows of ``columns``) into ``table`` with one binary COPY."""
    stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with conn.cursor() as cur, cur.copy(stmt) as cp:
        cp.write(_HEADER)
        for p in parts:
            if p:
                cp.write(p)
        cp.write(_TRAILER)


def text_dtype(value: str) -> str:
    """The dtype :func:`pack` writes ``value`` (a text column) with."""
    return f"S{len(value.encode())}"
