-- Events per robot, type and 15 minutes, read through v_event_counts_15m in both modes.
-- With TimescaleDB a continuous aggregate keeps it (refreshed every 15 minutes for the last
-- 3 days; older buckets are final once the edge has delivered). Without it the view counts
-- from events directly: dashboards filter it by bucket, and month partitions keep it bounded.
DO $$
DECLARE
    ts_schema text;
BEGIN
    SELECT extnamespace::regnamespace::text INTO ts_schema FROM pg_extension WHERE extname = 'timescaledb';
    IF storage_mode() = 'timescaledb' AND ts_schema IS NOT NULL THEN
        EXECUTE format(
            'CREATE MATERIALIZED VIEW events_15m WITH (timescaledb.continuous) AS '
            'SELECT %I.time_bucket(interval ''15 minutes'', ts) AS bucket, robot_id, factory_id, type, '
            'count(*) AS event_count, count(*) FILTER (WHERE quality <> ''good'') AS not_good_count '
            'FROM events GROUP BY 1, 2, 3, 4 WITH NO DATA', ts_schema);
        EXECUTE format('SELECT %I.add_continuous_aggregate_policy(%L::regclass, start_offset => interval %L, '
                       'end_offset => interval %L, schedule_interval => interval %L)',
                       ts_schema, 'events_15m', '3 days', '15 minutes', '15 minutes');
        CREATE VIEW v_event_counts_15m AS SELECT * FROM events_15m;
    ELSE
        CREATE VIEW v_event_counts_15m AS
        SELECT date_bin('15 minutes', ts, timestamptz '2000-01-01 00:00+00') AS bucket, robot_id, factory_id, type,
               count(*) AS event_count, count(*) FILTER (WHERE quality <> 'good') AS not_good_count
        FROM events GROUP BY 1, 2, 3, 4;
    END IF;
END
$$;
