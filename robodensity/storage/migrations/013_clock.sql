-- One clock for SQL and Python (robodensity.core.clock). clock_now() is now() unless the
-- connection carries robodensity.now (tests freeze the clock to run at a month's or a
-- year's boundary on any day). Functions that decide by the current time ask clock_now().
CREATE FUNCTION clock_now() RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('robodensity.now', true), '')::timestamptz, now())
$$;

CREATE OR REPLACE FUNCTION ensure_event_partitions(months_back integer DEFAULT 1, months_ahead integer DEFAULT 3)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    created integer := 0;
    m date;
    part text;
    this_month timestamp := date_trunc('month', clock_now() AT TIME ZONE 'UTC');
BEGIN
    IF storage_mode() <> 'partitions' THEN
        RETURN 0;
    END IF;
    -- One maintainer at a time: two collectors starting together must not race on DDL.
    PERFORM pg_advisory_xact_lock(hashtext(current_schema() || '.ensure_event_partitions'));
    FOR m IN SELECT generate_series(this_month - make_interval(months => months_back),
                                    this_month + make_interval(months => months_ahead),
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

SELECT ensure_event_partitions();
