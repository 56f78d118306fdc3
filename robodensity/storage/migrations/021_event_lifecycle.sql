-- The raw events' lifecycle as settings (collector.raw_events_days, collector.compress_after_days;
-- issue 14). State intervals, rollups and metric tables are kept forever: only raw events age out.
-- The collector calls apply_event_lifecycle at start and hourly:
-- - TimescaleDB: the retention and compression policies of events (004) get these intervals
--   (changed only when they differ; the background jobs do the work).
-- - Plain PostgreSQL: whole month partitions older than keep are dropped (drop_event_partitions,
--   020); there is no compression.
-- Returns the partitions dropped (0 under TimescaleDB).
CREATE FUNCTION apply_event_lifecycle(keep interval, compress_after interval) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    ts_schema text;
    j record;
BEGIN
    IF storage_mode() = 'partitions' THEN
        RETURN drop_event_partitions(keep);
    END IF;
    SELECT extnamespace::regnamespace::text INTO ts_schema FROM pg_extension WHERE extname = 'timescaledb';
    -- 004's jobs, changed in place: a new job would need an owner that can log in, and the
    -- schema's owner role cannot.
    FOR j IN SELECT job_id, config, CASE proc_name WHEN 'policy_retention' THEN 'drop_after'
                                                    ELSE 'compress_after' END AS setting
             FROM timescaledb_information.jobs
             WHERE hypertable_schema = current_schema() AND hypertable_name = 'events'
               AND proc_name IN ('policy_retention', 'policy_compression')
    LOOP
        CONTINUE WHEN (j.config ->> j.setting)::interval
                      = CASE j.setting WHEN 'drop_after' THEN keep ELSE compress_after END;
        EXECUTE format('SELECT %I.alter_job($1, config => $2)', ts_schema)
        USING j.job_id, jsonb_set(j.config, ARRAY[j.setting],
                                  to_jsonb((CASE j.setting WHEN 'drop_after' THEN keep ELSE compress_after END)::text));
    END LOOP;
    RETURN 0;
END
$$;

-- The settings' defaults for the policies (004 kept raw events 3 years). No partition is dropped
-- here: the collector does that with the deployment's own setting.
SELECT apply_event_lifecycle(interval '400 days', interval '30 days') WHERE storage_mode() = 'timescaledb';

-- TimescaleDB runs a background job as its owner, and that role must be able to log in ("Hypertable
-- owner must have LOGIN permission to run background tasks"); ALTER TABLE ... OWNER hands the jobs
-- to the table's new owner, which here cannot log in, so every policy job would fail. The jobs of
-- a schema belong to {schema}_jobs instead: a LOGIN role without a password (it can log in only
-- where pg_hba.conf allows passwordless logins, which a deployment must not allow for it) that is
-- a member of the owner role. apply_event_lifecycle runs as it, so it may alter those jobs.
ALTER TABLE schema_roles DROP CONSTRAINT schema_roles_kind_check;
ALTER TABLE schema_roles ADD CONSTRAINT schema_roles_kind_check
    CHECK (kind IN ('owner', 'collector', 'reader', 'department_group', 'department', 'jobs'));

ALTER FUNCTION apply_roles() RENAME TO apply_roles_020;
CREATE FUNCTION apply_roles() RETURNS text
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    owner_role text := apply_roles_020();
    jobs_role text := role_prefix() || '_jobs';
BEGIN
    IF owner_role IS NULL THEN   -- no CREATEROLE: 008 said so
        RETURN NULL;
    END IF;
    EXECUTE format('GRANT EXECUTE ON FUNCTION apply_event_lifecycle(interval, interval) TO %I',
                   role_prefix() || '_collector');
    IF storage_mode() = 'timescaledb' THEN
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = jobs_role) THEN
            EXECUTE format('CREATE ROLE %I LOGIN', jobs_role);
        END IF;
        INSERT INTO schema_roles (role_name, kind) VALUES (jobs_role, 'jobs') ON CONFLICT DO NOTHING;
        EXECUTE format('GRANT %I TO %I', owner_role, jobs_role);
        EXECUTE format('ALTER FUNCTION apply_event_lifecycle(interval, interval) OWNER TO %I', jobs_role);
        BEGIN
            UPDATE _timescaledb_config.bgw_job SET owner = jobs_role::regrole WHERE owner = owner_role::regrole;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE WARNING 'TimescaleDB jobs of schema % stay with %, which cannot log in: they will fail '
                          '(run the migrations as a superuser to hand them to %)', current_schema(), owner_role,
                          jobs_role;
        END;
    END IF;
    RETURN owner_role;
END
$$;
