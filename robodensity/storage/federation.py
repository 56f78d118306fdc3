"""The national view by PostgreSQL logical replication: provinces publish, the nation subscribes.

A province's deployment publishes its aggregate tables, each cut by a row filter to the
province's own regions (GB/T 2260 codes ``PP0000`` to ``PP9999``):

* ``regions``      the province and its cities and districts;
* ``density_definitions`` the province's own definitions (``origin`` its code, migration 090;
                   the shipped ones are data of the migrations, the same everywhere);
* ``key_industries``, ``employment_statistics`` what its "key" scope and official
                   denominators mean: its key-industry lists and employment statistics;
* ``density``      the density rows, every definition;
* ``targets``      the province's own targets (``scope_region`` in the province);
* ``region_daily`` region x day aggregates of the daily metric blocks.

Nothing robot-level (robots, assignments, events, blocks, agents) and no factory is
published: it never leaves the province. Because each province publishes only rows keyed
by its own codes, provinces never write the same row on the national side; ``subscribe``
first deletes the national deployment's own copies of the province's rows (reference
targets, say) so the province is the one source of them. The national deployment does not
run the metrics job (its ``compute`` would replace replicated density rows).

Schema migrations while replication runs: the subscriber must have every column the
publisher sends, so ``migrate_federation`` migrates the national deployment first, then
each province, then refreshes the subscriptions (new published tables start copying).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from robodensity.core.errors import ConfigError, DatabaseError
from robodensity.storage.db import check_schema, connect, migrate

FEDERATED: dict[str, str] = {
    "regions": "code",
    "density_definitions": "origin",
    "key_industries": "region_code",
    "employment_statistics": "region_code",
    "density": "region_code",
    "targets": "scope_region",
    "region_daily": "region_code",
}
"""Published table -> the column holding the region code its row filter cuts on."""
_PROVINCE_RE = re.compile(r"^[1-9][0-9]0000$")


def check_province(code: str) -> tuple[str, str]:
    """[low, high) of the province's region codes; ConfigError unless ``code`` is a province (PP0000)."""
    if not _PROVINCE_RE.match(code):
        raise ConfigError(f"--province must be a GB/T 2260 province code like 320000; got {code!r}")
    return code, f"{int(code[:2]) + 1}0000"


def publication_name(schema: str) -> str:
    return f"{check_schema(schema)}_federation"


def subscription_name(schema: str, province: str) -> str:
    check_province(province)
    return f"{check_schema(schema)}_{province}"


def _in_province(column: str, province: str, alias: str | None = None) -> sql.Composed:
    low, high = check_province(province)
    col = sql.Identifier(alias, column) if alias else sql.Identifier(column)
    return sql.SQL("({col} >= {low} AND {col} < {high})").format(col=col, low=sql.Literal(low), high=sql.Literal(high))


def _need_logical(conn: psycopg.Connection) -> None:
    row = conn.execute("SHOW wal_level").fetchone()
    if not row or row[0] != "logical":
        raise DatabaseError(
            f"wal_level is {row[0] if row else '?'}: set wal_level = logical in postgresql.conf and restart PostgreSQL"
        )


def publish(conn: psycopg.Connection, schema: str, province: str) -> list[str]:
    """Create (or re-create) the province's publication; returns the published tables.

    ``conn`` must be in autocommit mode or the caller commits.
    """
    _need_logical(conn)
    unpublished = conn.execute(
        sql.SQL(
            "SELECT string_agg(DISTINCT d.definition, ', ' ORDER BY d.definition) FROM {} d JOIN {} dd "
            "USING (definition) WHERE {} AND dd.origin <> 'shipped' AND NOT {}"
        ).format(
            sql.Identifier(schema, "density"),
            sql.Identifier(schema, "density_definitions"),
            _in_province("region_code", province, "d"),
            _in_province("origin", province, "dd"),
        )
    ).fetchone()
    if unpublished and unpublished[0]:
        raise ConfigError(
            f"density rows of province {province} use definitions the nation would not get: {unpublished[0]}; "
            f"give them origin {province} in the definitions file and import it again (robodensity definitions import)"
        )
    name = publication_name(schema)
    tables = sql.SQL(", ").join(
        sql.SQL("{} WHERE {}").format(sql.Identifier(schema, table), _in_province(column, province))
        for table, column in FEDERATED.items()
    )
    conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(name)))
    conn.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(sql.Identifier(name), tables))
    conn.execute(
        sql.SQL("COMMENT ON PUBLICATION {} IS {}").format(sql.Identifier(name), sql.Literal(f"province {province}"))
    )
    return list(FEDERATED)


def subscribe(conn: psycopg.Connection, schema: str, province: str, publisher: str) -> str:
    """Subscribe the national deployment to ``province``'s publication at ``publisher`` (a libpq URL).

    ``conn`` must be in autocommit mode (CREATE SUBSCRIPTION creates the slot on the publisher).
    The national copies of the province's rows are deleted first: the province owns them.
    """
    if not conn.autocommit:
        raise DatabaseError("federation subscribe needs an autocommit connection")
    name = subscription_name(schema, province)
    with conn.transaction():
        for table, column in FEDERATED.items():
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE {}").format(sql.Identifier(schema, table), _in_province(column, province))
            )
    try:
        conn.execute(
            sql.SQL("CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {}").format(
                sql.Identifier(name), sql.Literal(publisher), sql.Identifier(publication_name(schema))
            )
        )
    except psycopg.Error as exc:
        raise DatabaseError(f"cannot subscribe to province {province}: {str(exc).strip().splitlines()[0]}") from None
    return name


def unsubscribe(conn: psycopg.Connection, schema: str, province: str) -> None:
    """Drop the subscription (and its slot on the publisher, when reachable). Autocommit connection."""
    conn.execute(sql.SQL("DROP SUBSCRIPTION IF EXISTS {}").format(sql.Identifier(subscription_name(schema, province))))


def refresh(conn: psycopg.Connection, schema: str) -> list[str]:
    """ALTER SUBSCRIPTION ... REFRESH PUBLICATION for every subscription of ``schema``; returns their names."""
    names = [
        r[0]
        for r in conn.execute(
            "SELECT subname FROM pg_subscription WHERE subname LIKE %s AND subenabled ORDER BY 1",
            (f"{check_schema(schema)}\\_%",),
        )
    ]
    for name in names:
        conn.execute(sql.SQL("ALTER SUBSCRIPTION {} REFRESH PUBLICATION").format(sql.Identifier(name)))
    return names


def migrate_federation(national_url: str, province_urls: Sequence[str], schema: str) -> None:
    """Apply pending migrations national first (it must accept every column provinces send), then provinces."""
    migrate(national_url, schema)
    for url in province_urls:
        migrate(url, schema)
    with connect(national_url, schema, autocommit=True) as conn:
        refresh(conn, schema)


def status(conn: psycopg.Connection, schema: str) -> dict[str, Any]:
    """What this deployment publishes and subscribes to, with lag, and the latest period per province."""
    with conn.cursor(row_factory=dict_row) as cur:
        pub = cur.execute(
            "SELECT p.pubname AS publication, obj_description(p.oid, 'pg_publication') AS comment, "
            "array_agg(t.tablename ORDER BY t.tablename) AS tables "
            "FROM pg_publication p LEFT JOIN pg_publication_tables t ON t.pubname = p.pubname "
            "WHERE p.pubname = %s GROUP BY p.oid, p.pubname",
            (publication_name(schema),),
        ).fetchall()
        slots = cur.execute(
            "SELECT slot_name, active, pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint AS lag_bytes "
            "FROM pg_replication_slots WHERE slot_type = 'logical' AND slot_name LIKE %s ORDER BY 1",
            (f"{schema}\\_%",),
        ).fetchall()
        subs = cur.execute(
            "SELECT s.subname AS subscription, s.subenabled AS enabled, st.pid IS NOT NULL AS connected, "
            "st.last_msg_receipt_time AS last_message, st.latest_end_time AS last_reported, "
            "(SELECT count(*) FROM pg_subscription_rel r WHERE r.srsubid = s.oid AND r.srsubstate <> 'r') "
            "AS tables_syncing "
            "FROM pg_subscription s LEFT JOIN pg_stat_subscription st ON st.subid = s.oid AND st.relid IS NULL "
            "WHERE s.subname LIKE %s ORDER BY 1",
            (f"{schema}\\_%",),
        ).fetchall()
        provinces = cur.execute(
            "SELECT r.code AS province, r.name_en AS name, max(d.period_end) AS latest_period_end, "
            "count(DISTINCT c.code) AS regions "
            "FROM regions r LEFT JOIN density d ON d.region_code = r.code "
            "LEFT JOIN regions c ON c.code >= r.code AND c.code < (substr(r.code, 1, 2)::int + 1)::text || '0000' "
            "WHERE r.level = 1 GROUP BY r.code, r.name_en ORDER BY r.code"
        ).fetchall()
    return {"publication": pub, "slots": slots, "subscriptions": subs, "provinces": provinces}


def synced(conn: psycopg.Connection, schema: str, province: str) -> bool:
    """True once the province's subscription finished its initial copy of every table and is streaming."""
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE r.srsubstate <> 'r'), count(r.srrelid), "
        "(SELECT count(*) FROM pg_stat_subscription st WHERE st.subid = s.oid AND st.pid IS NOT NULL) "
        "FROM pg_subscription s LEFT JOIN pg_subscription_rel r ON r.srsubid = s.oid "
        "WHERE s.subname = %s GROUP BY s.oid",
        (subscription_name(schema, province),),
    ).fetchone()
    return row is not None and row[0] == 0 and row[1] > 0 and row[2] > 0
