-- Audit trail: every change to the registry, headcounts and targets (the numbers subsidies
-- are paid on) is recorded — who, when, old and new values — in an append-only table.
-- Who: the connection's robodensity.actor (set by robodensity.storage.db.connect to the
-- operating-system user that ran the command) and the database role. Rows are written by a
-- SECURITY DEFINER trigger as the schema owner; no application role has any grant on the
-- table, and a trigger refuses UPDATE, DELETE and TRUNCATE for everyone (removing that takes
-- DDL by the owner or a superuser, which PostgreSQL's own log records).
CREATE TABLE audit_log (
    audit_id   bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT clock_now(),
    actor      text NOT NULL,
    db_role    text NOT NULL,
    table_name text NOT NULL,
    action     text NOT NULL CHECK (action IN ('insert', 'update', 'delete')),
    row_key    jsonb NOT NULL,
    old_values jsonb,
    new_values jsonb
);
CREATE INDEX audit_log_at ON audit_log (at);

-- TG_ARGV: the table's key columns. An update records only the columns that changed, and
-- nothing when none did (an import that re-states the same row leaves no trace).
CREATE FUNCTION audit_row() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    old_row jsonb := CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END;
    new_row jsonb := CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END;
    key jsonb := '{}';
    col text;
    changed_old jsonb := '{}';
    changed_new jsonb := '{}';
BEGIN
    FOREACH col IN ARRAY TG_ARGV LOOP
        key := key || jsonb_build_object(col, coalesce(new_row, old_row) -> col);
    END LOOP;
    IF TG_OP = 'UPDATE' THEN
        FOR col IN SELECT jsonb_object_keys(new_row) LOOP
            IF (old_row -> col) IS DISTINCT FROM (new_row -> col) THEN
                changed_old := changed_old || jsonb_build_object(col, old_row -> col);
                changed_new := changed_new || jsonb_build_object(col, new_row -> col);
            END IF;
        END LOOP;
        IF changed_new = '{}' THEN
            RETURN NULL;
        END IF;
        old_row := changed_old;
        new_row := changed_new;
    END IF;
    INSERT INTO audit_log (actor, db_role, table_name, action, row_key, old_values, new_values)
    VALUES (coalesce(nullif(current_setting('robodensity.actor', true), ''), session_user::text),
            session_user::text, TG_TABLE_NAME, lower(TG_OP), key, old_row, new_row);
    RETURN NULL;
END
$$;

CREATE FUNCTION audit_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP;
END
$$;
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_refuse();
CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON audit_log FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse();

CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON regions
    FOR EACH ROW EXECUTE FUNCTION audit_row('code');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON industries
    FOR EACH ROW EXECUTE FUNCTION audit_row('code');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON factories
    FOR EACH ROW EXECUTE FUNCTION audit_row('factory_id');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON headcounts
    FOR EACH ROW EXECUTE FUNCTION audit_row('factory_id', 'valid_from');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON robots
    FOR EACH ROW EXECUTE FUNCTION audit_row('manufacturer', 'serial');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON assignments
    FOR EACH ROW EXECUTE FUNCTION audit_row('robot_id', 'valid_from');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON targets
    FOR EACH ROW EXECUTE FUNCTION audit_row('scope_region', 'scope_industry', 'metric', 'due_date');
