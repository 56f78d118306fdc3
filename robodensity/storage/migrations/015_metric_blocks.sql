-- One owner per figure: the metrics job (numpy, robodensity/metrics/blocks.py) writes additive
-- blocks per robot and bucket; every figure is a ratio of their sums. They replace robot_daily
-- (numpy, OFFLINE before a robot's first event) and rollup_15m/rollup_daily (PL/pgSQL, covered
-- time only), which counted the same seconds by two different rules. The one rule now: only
-- covered time counts, from a robot's first state event on (metrics/state_time.py says why).
-- Plain tables in both storage modes: blocks are computed outside the database, so a
-- TimescaleDB continuous aggregate has nothing to aggregate.
DROP TABLE robot_daily, rollup_15m, rollup_daily CASCADE;   -- and the views over them

-- refresh_rollups no longer computes anything: `robodensity metrics compute` writes the blocks.
-- Kept, as a no-op, for callers of the old interface; only the owner may execute it.
DROP FUNCTION refresh_rollups(timestamptz, timestamptz, timestamptz);
CREATE FUNCTION refresh_rollups(p_start timestamptz, p_end timestamptz, p_as_of timestamptz DEFAULT now())
RETURNS integer LANGUAGE sql SET search_path FROM CURRENT AS $$ SELECT 0 $$;

-- Per robot and bucket (bucket start, on the 15-minute grid of China Standard Time, or a
-- period's own start when it is off the grid). Column rules: robodensity/metrics/blocks.py.
-- factory_id: the registry assignment in effect on the bucket's local day (NULL: none).
CREATE TABLE robot_blocks_15m (
    robot_id         bigint NOT NULL,
    bucket           timestamptz NOT NULL,
    factory_id       text,
    executing_s      double precision NOT NULL,
    idle_s           double precision NOT NULL,
    fault_s          double precision NOT NULL,
    out_of_service_s double precision NOT NULL,
    offline_s        double precision NOT NULL,
    planned_s        double precision NOT NULL,
    failures         integer NOT NULL,
    repairs          integer NOT NULL,
    repair_s         double precision NOT NULL,
    PRIMARY KEY (robot_id, bucket)
);
CREATE INDEX robot_blocks_15m_factory ON robot_blocks_15m (factory_id, bucket);
CREATE INDEX robot_blocks_15m_bucket ON robot_blocks_15m (bucket);

-- The same per China Standard Time day: the sums of the day's 15-minute blocks.
CREATE TABLE robot_blocks_daily (
    robot_id         bigint NOT NULL,
    day              date NOT NULL,
    factory_id       text,
    executing_s      double precision NOT NULL,
    idle_s           double precision NOT NULL,
    fault_s          double precision NOT NULL,
    out_of_service_s double precision NOT NULL,
    offline_s        double precision NOT NULL,
    planned_s        double precision NOT NULL,
    failures         integer NOT NULL,
    repairs          integer NOT NULL,
    repair_s         double precision NOT NULL,
    PRIMARY KEY (robot_id, day)
);
CREATE INDEX robot_blocks_daily_factory ON robot_blocks_daily (factory_id, day);
CREATE INDEX robot_blocks_daily_day ON robot_blocks_daily (day);

-- A department sees the blocks of its region's factories (as 008 does for the other tables).
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['robot_blocks_15m', 'robot_blocks_daily'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY region_scope ON %I USING ('
                       '(SELECT department_region(current_user::text)) IS NULL '
                       'OR factory_id = ANY ((SELECT department_factories(current_user::text))::text[]))', t);
    END LOOP;
END
$$;

-- Blocks with the factory's region and industry. covered_s: the sum of the states.
CREATE VIEW v_robot_blocks_15m AS
SELECT b.*, b.executing_s + b.idle_s + b.fault_s + b.out_of_service_s + b.offline_s AS covered_s,
       f.region_code, f.industry_code
FROM robot_blocks_15m b
LEFT JOIN factories f USING (factory_id);

CREATE VIEW v_robot_blocks_daily AS
SELECT b.*, b.executing_s + b.idle_s + b.fault_s + b.out_of_service_s + b.offline_s AS covered_s,
       f.region_code, f.industry_code
FROM robot_blocks_daily b
LEFT JOIN factories f USING (factory_id);

-- Daily blocks with the robot's identity (the former robot_daily's view, same name).
CREATE VIEW v_robot_daily AS
SELECT b.robot_id, b.day, b.factory_id, b.executing_s, b.idle_s, b.fault_s, b.out_of_service_s, b.offline_s,
       b.planned_s, b.failures, b.repairs, b.repair_s, b.covered_s,
       ro.manufacturer, ro.serial, ro.model, ro.application, b.region_code, b.industry_code,
       b.executing_s / NULLIF(b.covered_s, 0) AS utilisation
FROM v_robot_blocks_daily b
JOIN robots ro USING (robot_id);

-- The one "robot in operation" rule. A registered robot is in operation on day `at` from its
-- commissioning date (inclusive) until its decommissioning date (exclusive). A NULL
-- commissioning date counts as commissioned: the robot is declared in the registry, and a
-- missing date is a gap in the registry, not evidence that the robot does not run (excluding
-- it would silently lower the density). The metrics job, the reports and the views use it.
CREATE FUNCTION robot_in_operation(registered boolean, commissioned date, decommissioned date, at date)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT registered AND (commissioned IS NULL OR commissioned <= at)
           AND (decommissioned IS NULL OR decommissioned > at)
$$;

-- Robots in operation on day `at`, with the factory they are assigned to then (NULL: none).
CREATE FUNCTION robots_in_operation(at date)
RETURNS TABLE (robot_id bigint, factory_id text, domestic boolean)
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT r.robot_id, a.factory_id, coalesce(r.domestic, false)
    FROM robots r
    LEFT JOIN LATERAL (
        SELECT a.factory_id FROM assignments a
        WHERE a.robot_id = r.robot_id AND a.valid_from <= at
        ORDER BY a.valid_from DESC LIMIT 1
    ) a ON true
    WHERE robot_in_operation(r.registered, r.commissioned, r.decommissioned, at)
$$;

-- Robots with today's (China Standard Time, clock_now()) factory and in-operation flag.
CREATE OR REPLACE VIEW v_robot_current AS
SELECT r.robot_id, r.manufacturer, r.serial, r.model, r.category, r.application, r.domestic,
       r.commissioned, r.decommissioned, r.subsidy_programme, r.registered, r.first_seen,
       a.factory_id,
       robot_in_operation(r.registered, r.commissioned, r.decommissioned, o.today) AS in_operation
FROM robots r
CROSS JOIN (SELECT (clock_now() AT TIME ZONE 'Asia/Shanghai')::date AS today) o
LEFT JOIN LATERAL (
    SELECT factory_id FROM assignments a
    WHERE a.robot_id = r.robot_id AND a.valid_from <= o.today
    ORDER BY a.valid_from DESC LIMIT 1
) a ON true;

COMMENT ON COLUMN density.utilisation IS
    'sum(executing_s) / sum(covered_s) of the blocks in the period attributed to the region''s factories';

DELETE FROM department_views WHERE view_name IN ('v_robot_state_15m', 'v_robot_state_daily', 'v_robot_daily_seconds');
INSERT INTO department_views VALUES ('v_robot_blocks_15m'), ('v_robot_blocks_daily') ON CONFLICT DO NOTHING;

-- Grants of later objects: a row each in role_grants, run by apply_roles() after the grants of
-- 008 and 012, with %1$I the collector, %2$I the reader and %3$I the department group role
-- (format()'s positional arguments). A migration adds a row instead of wrapping apply_roles().
CREATE TABLE role_grants (
    grant_id   serial PRIMARY KEY,
    migration  integer NOT NULL,
    statement  text NOT NULL
);
ALTER FUNCTION apply_roles() RENAME TO apply_roles_012;
CREATE FUNCTION apply_roles() RETURNS text
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    owner_role text := apply_roles_012();
    g record;
BEGIN
    IF owner_role IS NULL THEN   -- no CREATEROLE: 008 said so
        RETURN NULL;
    END IF;
    FOR g IN SELECT statement FROM role_grants ORDER BY migration, grant_id LOOP
        EXECUTE format(g.statement, role_prefix() || '_collector', role_prefix() || '_reader',
                       role_prefix() || '_department');
    END LOOP;
    RETURN owner_role;
END
$$;

-- Views call robot_in_operation and clock_now (013) as the reading role: every role that reads
-- views may execute them.
INSERT INTO role_grants (migration, statement) VALUES
    (15, 'GRANT EXECUTE ON FUNCTION robot_in_operation(boolean, date, date, date), clock_now() TO %1$I, %2$I, %3$I');
