-- Event storage that scales: events partitioned by event time, idempotency in event_keys.
--
-- With TimescaleDB (available and preloaded) events becomes a hypertable with compression and
-- retention; otherwise it is natively partitioned by month of ts, partitions created ahead by
-- ensure_event_partitions(). Either way a unique key on a partitioned table must contain the
-- partition column, so (agent_id, seq) alone can no longer be the events primary key: it lives
-- in the narrow, unpartitioned event_keys, which also remembers where the stored event is
-- (robot_id, ts) so a repeated key with other content can be compared with what is stored.
CREATE TABLE storage_mode (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    mode     text NOT NULL CHECK (mode IN ('timescaledb', 'partitions'))
);

CREATE TABLE event_keys (
    agent_id text NOT NULL,
    seq      bigint NOT NULL,
    robot_id bigint NOT NULL,
    ts       timestamptz NOT NULL,
    PRIMARY KEY (agent_id, seq)
);

ALTER TABLE events RENAME TO events_v1;
ALTER TABLE events_v1 RENAME CONSTRAINT events_pkey TO events_v1_pkey;
ALTER INDEX events_robot_ts RENAME TO events_v1_robot_ts;

DO $$
DECLARE
    ts_schema text;
    ddl text := $ddl$
        CREATE TABLE events (
            agent_id     text NOT NULL,
            seq          bigint NOT NULL,
            robot_id     bigint NOT NULL,   -- resolved from robots by the collector; no FK on the hot path
            factory_id   text NOT NULL,
            ts           timestamptz NOT NULL,
            type         text NOT NULL CHECK (type IN ('state', 'counter', 'alarm')),
            state        text CHECK (state IN ('EXECUTING', 'IDLE', 'FAULT', 'OUT_OF_SERVICE', 'OFFLINE')),
            counter      text,
            value        double precision,
            alarm_code   text,
            alarm_text   text,
            alarm_active boolean,
            quality      text NOT NULL DEFAULT 'good',
            received_at  timestamptz NOT NULL DEFAULT now()
        )$ddl$;
BEGIN
    SELECT extnamespace::regnamespace::text INTO ts_schema FROM pg_extension WHERE extname = 'timescaledb';
    IF ts_schema IS NULL
       AND EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
       AND current_setting('shared_preload_libraries') LIKE '%timescaledb%' THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb SCHEMA public;
        ts_schema := 'public';
    END IF;
    IF ts_schema IS NOT NULL THEN
        EXECUTE ddl;
        EXECUTE format('SELECT %I.create_hypertable(%L::regclass, %L, chunk_time_interval => interval %L)',
                       ts_schema, 'events', 'ts', '7 days');
        EXECUTE 'ALTER TABLE events SET (timescaledb.compress, timescaledb.compress_segmentby = ''robot_id'', '
                'timescaledb.compress_orderby = ''ts'')';
        EXECUTE format('SELECT %I.add_compression_policy(%L::regclass, interval %L)', ts_schema, 'events', '30 days');
        EXECUTE format('SELECT %I.add_retention_policy(%L::regclass, interval %L)', ts_schema, 'events', '3 years');
        INSERT INTO storage_mode (mode) VALUES ('timescaledb');
    ELSE
        EXECUTE ddl || ' PARTITION BY RANGE (ts)';
        CREATE TABLE events_default PARTITION OF events DEFAULT;
        INSERT INTO storage_mode (mode) VALUES ('partitions');
    END IF;
END
$$;

CREATE INDEX events_robot_ts ON events (robot_id, ts);

CREATE FUNCTION storage_mode() RETURNS text LANGUAGE sql STABLE SET search_path FROM CURRENT
AS $$ SELECT mode FROM storage_mode $$;

-- Monthly partitions [first of month, first of next month) from months_back before the current
-- month to months_ahead after it. Rows already in the default partition for a new month are
-- moved into it. A no-op under TimescaleDB, which makes chunks itself.
CREATE FUNCTION ensure_event_partitions(months_back integer DEFAULT 1, months_ahead integer DEFAULT 3)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    created integer := 0;
    m date;
    part text;
BEGIN
    IF storage_mode() <> 'partitions' THEN
        RETURN 0;
    END IF;
    -- One maintainer at a time: two collectors starting together must not race on DDL.
    PERFORM pg_advisory_xact_lock(hashtext(current_schema() || '.ensure_event_partitions'));
    FOR m IN SELECT generate_series(date_trunc('month', now() AT TIME ZONE 'UTC') - make_interval(months => months_back),
                                    date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => months_ahead),
                                    interval '1 month')::date
    LOOP
        part := format('events_y%sm%s', to_char(m, 'YYYY'), to_char(m, 'MM'));
        CONTINUE WHEN to_regclass(quote_ident(current_schema()) || '.' || part) IS NOT NULL;
        PERFORM add_event_partition(m);
        created := created + 1;
    END LOOP;
    RETURN created;
END
$$;

CREATE FUNCTION add_event_partition(month date) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    lo timestamptz := date_trunc('month', month::timestamp) AT TIME ZONE 'UTC';
    hi timestamptz := (date_trunc('month', month::timestamp) + interval '1 month') AT TIME ZONE 'UTC';
    part text := format('events_y%sm%s', to_char(month, 'YYYY'), to_char(month, 'MM'));
BEGIN
    IF to_regclass(quote_ident(current_schema()) || '.' || part) IS NOT NULL THEN
        RETURN part;
    END IF;
    IF EXISTS (SELECT 1 FROM events_default WHERE ts >= lo AND ts < hi) THEN
        -- Attaching beside a default partition that holds rows of the range fails: move them.
        EXECUTE format('CREATE TABLE %I (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
        EXECUTE format('WITH moved AS (DELETE FROM events_default WHERE ts >= $1 AND ts < $2 RETURNING *) '
                       'INSERT INTO %I SELECT * FROM moved', part) USING lo, hi;
        EXECUTE format('ALTER TABLE events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
    ELSE
        EXECUTE format('CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
    END IF;
    RETURN part;
END
$$;

-- Plain-PostgreSQL retention: drop whole months of raw events older than keep (and their keys).
-- Rollups and metric tables are kept. Under TimescaleDB the retention policy does this.
CREATE FUNCTION drop_event_partitions(keep interval) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    dropped integer := 0;
    p record;
    cutoff timestamptz := now() - keep;
    upto timestamptz := '-infinity';
    hi timestamptz;
BEGIN
    IF storage_mode() <> 'partitions' THEN
        RETURN 0;
    END IF;
    FOR p IN SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'events'::regclass AND c.relname ~ '^events_y[0-9]{4}m[0-9]{2}$'
    LOOP
        hi := (substring(p.bound FROM 'TO \(''([^'']+)''\)'))::timestamptz;
        IF hi <= cutoff THEN
            EXECUTE format('DROP TABLE %I', p.relname);
            dropped := dropped + 1;
            upto := greatest(upto, hi);
        END IF;
    END LOOP;
    DELETE FROM event_keys k WHERE k.ts < upto
        AND NOT EXISTS (SELECT 1 FROM events_default d WHERE d.agent_id = k.agent_id AND d.seq = k.seq);
    RETURN dropped;
END
$$;

SELECT ensure_event_partitions();

INSERT INTO event_keys (agent_id, seq, robot_id, ts) SELECT agent_id, seq, robot_id, ts FROM events_v1;
INSERT INTO events (agent_id, seq, robot_id, factory_id, ts, type, state, counter, value, alarm_code,
                    alarm_text, alarm_active, quality, received_at)
SELECT agent_id, seq, robot_id, factory_id, ts, type, state, counter, value, alarm_code,
       alarm_text, alarm_active, quality, received_at FROM events_v1;
DROP TABLE events_v1;
