-- Roles and row-level security. Roles are cluster-wide, so their names start with the schema:
--   {schema}_owner       owns the schema and every object in it; cannot log in.
--   {schema}_collector   logs in; inserts telemetry and reads what the writer needs; owns
--                        nothing, so it cannot ALTER or DROP anything.
--   {schema}_reader      logs in (Grafana); SELECT on views only.
--   {schema}_department  group of department roles: SELECT on the aggregated views; the rows
--                        they see are cut to the department's region by forced row-level
--                        security on the tables behind those views.
-- apply_roles() creates what is missing and re-applies ownership and grants; migrate() calls
-- it after every run so objects of later migrations are covered. It needs CREATEROLE: without
-- it the schema stays as it is and a notice says so.
CREATE TABLE schema_roles (
    role_name   text PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('owner', 'collector', 'reader', 'department_group', 'department')),
    region_code text REFERENCES regions (code),
    CHECK ((kind = 'department') = (region_code IS NOT NULL))
);

-- Region codes are GB/T 2260: a province (xx0000) contains its cities (xxxx00) and districts.
CREATE FUNCTION region_within(code text, scope text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN scope LIKE '__0000' THEN left(code, 2) = left(scope, 2)
                WHEN scope LIKE '____00' THEN left(code, 4) = left(scope, 4)
                ELSE code = scope END
$$;

-- The region of a department role, NULL for every other role (which sees all rows).
CREATE FUNCTION department_region(role text) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT region_code FROM schema_roles WHERE role_name = role AND kind = 'department'
$$;

CREATE FUNCTION department_factories(role text) RETURNS text[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT coalesce(array_agg(f.factory_id), '{}') FROM factories f
    WHERE region_within(f.region_code, department_region(role))
$$;

-- Policies name current_user, which a view does not change: a department reading a view
-- owned by the owner still gets its own region. The sub-selects run once per query.
ALTER TABLE density ENABLE ROW LEVEL SECURITY;
ALTER TABLE density FORCE ROW LEVEL SECURITY;
CREATE POLICY region_scope ON density USING (
    (SELECT department_region(current_user::text)) IS NULL
    OR region_within(region_code, (SELECT department_region(current_user::text))));

ALTER TABLE factories ENABLE ROW LEVEL SECURITY;
ALTER TABLE factories FORCE ROW LEVEL SECURITY;
CREATE POLICY region_scope ON factories USING (
    (SELECT department_region(current_user::text)) IS NULL
    OR region_within(region_code, (SELECT department_region(current_user::text))));

ALTER TABLE robot_daily ENABLE ROW LEVEL SECURITY;
ALTER TABLE robot_daily FORCE ROW LEVEL SECURITY;
CREATE POLICY region_scope ON robot_daily USING (
    (SELECT department_region(current_user::text)) IS NULL
    OR factory_id = ANY ((SELECT department_factories(current_user::text))::text[]));

ALTER TABLE rollup_15m ENABLE ROW LEVEL SECURITY;
ALTER TABLE rollup_15m FORCE ROW LEVEL SECURITY;
CREATE POLICY region_scope ON rollup_15m USING (
    (SELECT department_region(current_user::text)) IS NULL
    OR factory_id = ANY ((SELECT department_factories(current_user::text))::text[]));

ALTER TABLE rollup_daily ENABLE ROW LEVEL SECURITY;
ALTER TABLE rollup_daily FORCE ROW LEVEL SECURITY;
CREATE POLICY region_scope ON rollup_daily USING (
    (SELECT department_region(current_user::text)) IS NULL
    OR factory_id = ANY ((SELECT department_factories(current_user::text))::text[]));

-- Views a department may read: aggregated rows, cut by the policies above, and reference data.
CREATE TABLE department_views (view_name text PRIMARY KEY);
INSERT INTO department_views VALUES
    ('v_density'), ('v_robot_daily'), ('v_robot_state_15m'), ('v_robot_state_daily'), ('v_regions'),
    ('v_industries'), ('v_factories'), ('v_targets'), ('v_factory_fleet'), ('v_factory_region'),
    ('v_region_ancestors');

CREATE FUNCTION role_prefix() RETURNS text LANGUAGE sql STABLE SET search_path FROM CURRENT
AS $$ SELECT left(current_schema(), 40) $$;

CREATE FUNCTION apply_roles() RETURNS text
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    sch text := current_schema();
    owner_role text := role_prefix() || '_owner';
    collector_role text := role_prefix() || '_collector';
    reader_role text := role_prefix() || '_reader';
    dept_role text := role_prefix() || '_department';
    o record;
BEGIN
    IF NOT (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user) THEN
        RAISE NOTICE 'roles of schema % not applied: % has no CREATEROLE', sch, current_user;
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext(sch || '.apply_roles'));
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = owner_role) THEN
        EXECUTE format('CREATE ROLE %I NOLOGIN', owner_role);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = collector_role) THEN
        EXECUTE format('CREATE ROLE %I LOGIN', collector_role);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = reader_role) THEN
        EXECUTE format('CREATE ROLE %I LOGIN', reader_role);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = dept_role) THEN
        EXECUTE format('CREATE ROLE %I NOLOGIN', dept_role);
    END IF;
    INSERT INTO schema_roles (role_name, kind) VALUES
        (owner_role, 'owner'), (collector_role, 'collector'), (reader_role, 'reader'),
        (dept_role, 'department_group')
    ON CONFLICT DO NOTHING;

    -- Ownership: the schema and everything in it (partitions too), but not extension objects.
    EXECUTE format('ALTER SCHEMA %I OWNER TO %I', sch, owner_role);
    FOR o IN SELECT c.oid::regclass AS name, c.relkind FROM pg_class c
             WHERE c.relnamespace = sch::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
               AND c.relowner <> owner_role::regrole
               AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
    LOOP
        BEGIN
            EXECUTE format('ALTER %s %s OWNER TO %I',
                           CASE WHEN o.relkind = 'v' THEN 'VIEW' WHEN o.relkind = 'm' THEN 'MATERIALIZED VIEW'
                                ELSE 'TABLE' END, o.name, owner_role);
        EXCEPTION WHEN feature_not_supported OR wrong_object_type THEN
            -- A TimescaleDB continuous aggregate is a view that only ALTER MATERIALIZED VIEW may change.
            EXECUTE format('ALTER MATERIALIZED VIEW %s OWNER TO %I', o.name, owner_role);
        END;
    END LOOP;
    FOR o IN SELECT p.oid::regprocedure AS name FROM pg_proc p
             WHERE p.pronamespace = sch::regnamespace AND p.proowner <> owner_role::regrole
               AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
    LOOP
        EXECUTE format('ALTER ROUTINE %s OWNER TO %I', o.name, owner_role);
    END LOOP;

    -- Nobody but the owner by default; then exactly what each role needs.
    EXECUTE format('REVOKE ALL ON SCHEMA %I FROM PUBLIC', sch);
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I, %I, %I', sch, collector_role, reader_role, dept_role);
    EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM PUBLIC, %I, %I, %I',
                   sch, collector_role, reader_role, dept_role);
    EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA %I FROM PUBLIC', sch);
    FOR o IN SELECT p.oid::regprocedure AS name, p.proname FROM pg_proc p
             WHERE p.pronamespace = sch::regnamespace
               AND p.proname IN ('region_within', 'department_region', 'department_factories', 'storage_mode',
                                 'rebuild_state_intervals', 'ensure_event_partitions', 'role_prefix')
    LOOP
        IF o.proname IN ('rebuild_state_intervals', 'ensure_event_partitions') THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', o.name, collector_role);
        ELSE
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I, %I, %I', o.name, collector_role, reader_role,
                           dept_role);
        END IF;
    END LOOP;
    EXECUTE format('GRANT SELECT ON robots, assignments, agents, event_keys, events, dead_letters, '
                   'state_intervals, storage_mode, schema_migrations TO %I', collector_role);
    EXECUTE format('GRANT INSERT ON events, event_keys, event_conflicts, dead_letters, robots, agents, '
                   'state_intervals TO %I', collector_role);
    EXECUTE format('GRANT UPDATE (last_seen, acked_through) ON agents TO %I', collector_role);
    EXECUTE format('GRANT DELETE ON state_intervals TO %I', collector_role);
    EXECUTE format('GRANT USAGE ON ALL SEQUENCES IN SCHEMA %I TO %I', sch, collector_role);
    FOR o IN SELECT c.oid::regclass AS name, c.relname FROM pg_class c
             WHERE c.relnamespace = sch::regnamespace AND c.relkind IN ('v', 'm')
    LOOP
        EXECUTE format('GRANT SELECT ON %s TO %I', o.name, reader_role);
        IF EXISTS (SELECT 1 FROM department_views WHERE view_name = o.relname) THEN
            EXECUTE format('GRANT SELECT ON %s TO %I', o.name, dept_role);
        END IF;
    END LOOP;
    RETURN owner_role;
END
$$;

CREATE FUNCTION create_department_role(role text, region text) RETURNS text
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM regions WHERE code = region) THEN
        RAISE EXCEPTION 'region % is not in the registry', region USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role) THEN
        EXECUTE format('CREATE ROLE %I LOGIN', role);
    ELSIF NOT EXISTS (SELECT 1 FROM schema_roles WHERE role_name = role AND kind = 'department') THEN
        RAISE EXCEPTION 'role % exists and is not a department role of schema %', role, current_schema()
            USING ERRCODE = 'duplicate_object';
    END IF;
    EXECUTE format('GRANT %I TO %I', role_prefix() || '_department', role);
    INSERT INTO schema_roles (role_name, kind, region_code) VALUES (role, 'department', region)
    ON CONFLICT (role_name) DO UPDATE SET region_code = EXCLUDED.region_code;
    RETURN role;
END
$$;

SELECT apply_roles();
