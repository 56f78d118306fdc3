"""PostgreSQL binary COPY straight to and from numpy arrays: no Python object per row.

Rows of fixed-width, non-NULL columns have a fixed size in the binary COPY format (a 16-bit
field count, then per field a 32-bit length and the big-endian value), so a stream of them is
one numpy structured array: :func:`copy_out` reads a query's result into one, and
:func:`copy_in` writes columns as one. Times travel as PostgreSQL's own: µs (timestamptz) or
days (date) since 2000-01-01; :data:`PG_EPOCH_US` converts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

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


def copy_out_arrays(
    conn: psycopg.Connection, query: sql.Composable, params: dict[str, object], key: str, arrays: Sequence[str]
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Rows of (key, array, array, ...) from ``COPY (query) TO STDOUT (FORMAT binary)``, each
    row a group (e.g. ``GROUP BY robot_id`` with ``array_agg``): one message per group instead
    of per element, so the client handles groups, not rows.

    ``key`` and ``arrays`` are numpy dtypes (``">i8"``, ...) of the key and of the arrays'
    elements: the arrays of a row are one-dimensional, of one length, without NULLs. Returns the
    keys, each array column concatenated over the rows (in row order), and each row's length.
    """
    stmt = sql.SQL("COPY ({}) TO STDOUT (FORMAT binary)").format(query)
    blocks: list[bytes] = []
    with conn.cursor() as cur, cur.copy(stmt, params) as cp:
        for block in cp:
            blocks.append(bytes(block))
    buf = b"".join(blocks)
    if not buf.startswith(_SIGNATURE):
        raise ValueError("not a binary COPY stream")
    pos = 19 + int.from_bytes(buf[15:19], "big")
    key_size = np.dtype(key).itemsize
    keys: list[bytes] = []
    starts: list[list[int]] = [[] for _ in arrays]
    counts: list[int] = []
    while int.from_bytes(buf[pos : pos + 2], "big", signed=True) != -1:
        pos += 2 + 4
        keys.append(buf[pos : pos + key_size])
        pos += key_size
        n = -1
        for j in range(len(arrays)):
            size = int.from_bytes(buf[pos : pos + 4], "big", signed=True)
            if size < 0:
                raise ValueError(f"binary COPY array column {j + 1} is NULL")
            if int.from_bytes(buf[pos + 8 : pos + 12], "big"):
                raise ValueError(f"binary COPY array column {j + 1} has NULL elements")
            m = int.from_bytes(buf[pos + 16 : pos + 20], "big") if size > 12 else 0
            if n >= 0 and m != n:
                raise ValueError("binary COPY arrays of one row differ in length")
            n = m
            starts[j].append(pos + 4 + 20)
            pos += 4 + size
        counts.append(n)
    out = []
    for j, kind in enumerate(arrays):
        element = np.dtype([("len", ">i4"), ("v", kind)])
        parts = [
            np.frombuffer(buf, dtype=element, count=c, offset=o)["v"] for o, c in zip(starts[j], counts, strict=True)
        ]
        out.append(np.concatenate(parts) if parts else np.empty(0, dtype=kind))
    return np.frombuffer(b"".join(keys), dtype=key), out, np.array(counts, dtype=np.int64)


def pack(n: int, columns: Sequence[tuple[str, str, object]]) -> memoryview:
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
    return rows.view(np.uint8).data


def copy_in(conn: psycopg.Connection, table: str, columns: Sequence[str], parts: Sequence[bytes | memoryview]) -> None:
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


Write = tuple[str, Sequence[str], Sequence[bytes | memoryview]]
"""A :func:`copy_in`: (table, columns, parts)."""


class CopyWriter:
    """:func:`copy_in` on ``conn`` in a background thread, one batch at a time.

    :meth:`put` waits for the batch before (so at most one is pending: memory stays bounded)
    and returns at once, so the caller computes the next batch while PostgreSQL stores this
    one. :meth:`wait` raises what a batch raised. Nothing else may use ``conn`` meanwhile.
    """

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="copy-writer")
        self._pending: Future[None] | None = None

    def put(self, writes: Sequence[Write]) -> None:
        self.wait()
        self._pending = self._pool.submit(self._write, list(writes))

    def wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def _write(self, writes: list[Write]) -> None:
        for table, columns, parts in writes:
            copy_in(self.conn, table, columns, parts)

    def __enter__(self) -> CopyWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown()


@contextlib.contextmanager
def reader_beside(conn: psycopg.Connection) -> Iterator[psycopg.Connection]:
    """A second connection with ``conn``'s parameters (search_path too), for reading while
    ``conn`` writes; ``conn`` itself when it is inside a transaction (a second connection would
    not see its uncommitted rows) or a second one cannot be opened."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        yield conn
        return
    params = {o.keyword.decode(): o.val.decode() for o in conn.pgconn.info if o.val is not None and o.val}
    try:
        other = psycopg.connect(make_conninfo(**params), autocommit=True)
    except psycopg.OperationalError:
        yield conn
        return
    with other:
        yield other
