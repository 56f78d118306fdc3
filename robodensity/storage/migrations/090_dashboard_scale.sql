-- Dashboards at province scale (issue 16): 100,000 robots, panels under 150 ms.

-- 1. The settings of the roles dashboards log in as (the reader, department roles): no JIT,
--    and memory enough to sort a province's factory x day rows without spilling to disk.
--    Panel queries are short; at province scale their estimated cost crosses jit_above_cost and
--    compiling the plan took ~460 ms of the drill-down's Factories table (bench/README.md). A
--    role setting applies at login, so Grafana's connections get it; the metrics job keeps JIT.
CREATE FUNCTION dashboard_role_settings(role text) RETURNS text
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    EXECUTE format('ALTER ROLE %I SET jit = off', role);
    EXECUTE format('ALTER ROLE %I SET work_mem = %L', role, '32MB');
    RETURN role;
END
$$;

INSERT INTO role_grants (migration, statement) VALUES
    (90, 'SELECT dashboard_role_settings(%2$L)'),
    (90, 'SELECT dashboard_role_settings(role_name) FROM schema_roles WHERE kind = ''department''');

-- 2. Today's robot in operation per factory, counted once a day instead of per query.
--    v_factory_fleet counted v_robot_current (one assignment lookup per robot) on every
--    query: ~200 ms at 100,000 robots. refresh_factory_fleet() stores the counts with the day
--    they hold for; the registry import, the metrics job and its --follow runs call it. A change to robots or
--    assignments empties the table (statement triggers below), and so does a new day: then
--    the view counts live, as before, so it is never stale, only slower until the next refresh.
CREATE TABLE factory_fleet_counts (
    factory_id  text PRIMARY KEY REFERENCES factories (factory_id) ON DELETE CASCADE,
    robot_count bigint NOT NULL,
    as_of       date NOT NULL
);

CREATE FUNCTION forget_factory_fleet() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    -- EXCLUSIVE until this transaction ends: a refresh running now waits, then counts what it committed.
    LOCK TABLE factory_fleet_counts IN EXCLUSIVE MODE;
    DELETE FROM factory_fleet_counts;
    RETURN NULL;
END
$$;

CREATE TRIGGER robots_forget_factory_fleet
    AFTER UPDATE OR DELETE OR TRUNCATE ON robots
    FOR EACH STATEMENT EXECUTE FUNCTION forget_factory_fleet();
CREATE TRIGGER assignments_forget_factory_fleet
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON assignments
    FOR EACH STATEMENT EXECUTE FUNCTION forget_factory_fleet();

-- Returns the factories counted; with stale_only, 0 without counting when today's counts are there.
CREATE FUNCTION refresh_factory_fleet(stale_only boolean DEFAULT false) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    today date := (clock_now() AT TIME ZONE 'Asia/Shanghai')::date;
    n integer;
BEGIN
    LOCK TABLE factory_fleet_counts IN EXCLUSIVE MODE;
    IF stale_only AND EXISTS (SELECT 1 FROM factory_fleet_counts WHERE as_of = today) THEN
        RETURN 0;
    END IF;
    DELETE FROM factory_fleet_counts;
    INSERT INTO factory_fleet_counts (factory_id, robot_count, as_of)
    SELECT f.factory_id, count(r.robot_id), today
    FROM factories f LEFT JOIN robots_in_operation(today) r ON r.factory_id = f.factory_id
    GROUP BY f.factory_id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

REVOKE ALL ON FUNCTION refresh_factory_fleet(boolean), forget_factory_fleet() FROM PUBLIC;

-- Same columns as 010's view; the counts come from factory_fleet_counts when they hold for
-- today, else (one-time filter: the live branch runs only then) from v_robot_current.
CREATE OR REPLACE VIEW v_factory_fleet AS
WITH counted AS (
    SELECT c.factory_id, c.robot_count FROM factory_fleet_counts c
    WHERE c.as_of = (clock_now() AT TIME ZONE 'Asia/Shanghai')::date
), counts AS (
    SELECT factory_id, robot_count FROM counted
    UNION ALL
    SELECT factory_id, count(*) FROM v_robot_current
    WHERE in_operation AND NOT EXISTS (SELECT 1 FROM counted)
    GROUP BY factory_id
)
SELECT f.factory_id, f.name, f.region_code, f.industry_code,
       coalesce(h.employee_count, 0) AS employee_count,
       coalesce(c.robot_count, 0) AS robot_count,
       coalesce(c.robot_count, 0)::double precision * 10000 / NULLIF(h.employee_count, 0) AS robot_density
FROM factories f
LEFT JOIN LATERAL (
    SELECT employee_count FROM headcounts h
    WHERE h.factory_id = f.factory_id AND h.valid_from <= (clock_now() AT TIME ZONE 'Asia/Shanghai')::date
    ORDER BY h.valid_from DESC LIMIT 1
) h ON true
LEFT JOIN counts c ON c.factory_id = f.factory_id;

-- 3. v_robot_current with the current assignment as an anti-join instead of a LIMIT 1 lookup
--    per robot, so a filter on factory_id (the factory dashboard) reaches the assignments
--    index and reads that factory's robots only, not every robot of the province.
CREATE INDEX assignments_factory ON assignments (factory_id, robot_id);

CREATE OR REPLACE VIEW v_robot_current AS
SELECT r.robot_id, r.manufacturer, r.serial, r.model, r.category, r.application, r.domestic,
       r.commissioned, r.decommissioned, r.subsidy_programme, r.registered, r.first_seen,
       a.factory_id,
       robot_in_operation(r.registered, r.commissioned, r.decommissioned, o.today) AS in_operation
FROM robots r
CROSS JOIN (SELECT (clock_now() AT TIME ZONE 'Asia/Shanghai')::date AS today) o
LEFT JOIN assignments a
       ON a.robot_id = r.robot_id AND a.valid_from <= o.today
      AND NOT EXISTS (SELECT 1 FROM assignments later
                      WHERE later.robot_id = a.robot_id AND later.valid_from > a.valid_from
                        AND later.valid_from <= o.today);

-- 4. The national view gets each province's own density definitions (federation.py). Who
--    defined a definition: 'shipped' (these migrations: the same on every deployment),
--    'local' (imported for this deployment only), or the GB/T 2260 code of the region whose
--    statisticians defined it; a province publishes the definitions of its own codes, beside
--    the key industries and the official employment its density rows divide by.
ALTER TABLE density_definitions ADD COLUMN origin text NOT NULL DEFAULT 'local'
    CHECK (origin IN ('shipped', 'local') OR origin ~ '^[1-9][0-9]{5}$');
UPDATE density_definitions SET origin = 'shipped'
WHERE definition IN ('participating', 'participating-verified', 'participating-robot-days',
                     'participating-key-manufacturing', 'official-manufacturing',
                     'official-key-manufacturing', 'official-above-designated-size');
COMMENT ON COLUMN density_definitions.origin IS
    'shipped (migrations), local (this deployment only) or the region code of who defined it (replicated)';
-- A publication's row filter may use only replica-identity columns (origin is not in the key).
ALTER TABLE density_definitions REPLICA IDENTITY FULL;

-- 5. Robots' names for the factory dashboard's labels, without v_robot_current's assignment
--    lookup (the factory dashboard joins only the robots of the rows it shows).
CREATE VIEW v_robot_identity AS
SELECT robot_id, manufacturer, serial, model, application FROM robots;

-- 6. The drill-down's Factories table sums each factory's days of a period (a lateral lookup per
--    factory, no sort of a province's factory x day rows): read from the index alone.
CREATE INDEX factory_daily_factory ON factory_daily (factory_id, day)
    INCLUDE (reporting, planned_executing_s, planned_s);

-- Every robot ever assigned to a factory: the metrics job attributes blocks by assignment, so
-- these are the robots whose blocks a factory can have (the factory dashboard's labels).
CREATE VIEW v_factory_robots AS
SELECT DISTINCT factory_id, robot_id FROM assignments;
