-- Less work per stored event (bench/bench_ingest.py).
-- The factory panels read state intervals since 011; no query reads events by factory any more,
-- and this index cost a fifth of every event insert.
DROP INDEX IF EXISTS events_factory_state_ts;

-- State intervals leave the commit path. The collector marks the robots whose state events a
-- flush stored (state_dirty, in the transaction that stores them) and a second stage rebuilds
-- the marked robots about once a second, many flushes at once: per robot, one seed lookup, one
-- read of its new events and one rewrite of its open interval per second instead of per flush.
-- A crash loses nothing: the marks commit with the events and wait for the next collector.
CREATE TABLE state_dirty (
    robot_id bigint PRIMARY KEY,
    lo       timestamptz NOT NULL   -- the earliest state event stored since the last rebuild
);

CREATE FUNCTION mark_state_dirty(robots bigint[], los timestamptz[]) RETURNS void
LANGUAGE sql SET search_path FROM CURRENT AS $$
    INSERT INTO state_dirty AS d (robot_id, lo)
    SELECT r, l FROM unnest(robots, los) AS u(r, l) ORDER BY r   -- one lock order for every collector
    ON CONFLICT (robot_id) DO UPDATE SET lo = least(d.lo, excluded.lo)
$$;

-- Rebuild up to max_robots marked robots; (robots, intervals written). Marks held by a flush
-- still in progress are skipped (SKIP LOCKED): that flush's commit leaves them for the next call.
-- A flush that marks a robot this call took waits for it (the key's lock) and marks it anew, and
-- its events, committed after this call's read, are rebuilt by the next one.
CREATE FUNCTION build_state_intervals(max_robots integer DEFAULT 20000, OUT robots integer, OUT intervals integer)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    rs bigint[];
    ls timestamptz[];
BEGIN
    WITH taken AS (
        DELETE FROM state_dirty WHERE robot_id IN (
            SELECT robot_id FROM state_dirty ORDER BY robot_id LIMIT max_robots FOR UPDATE SKIP LOCKED)
        RETURNING robot_id, lo
    )
    SELECT array_agg(robot_id ORDER BY robot_id), array_agg(lo ORDER BY robot_id) INTO rs, ls FROM taken;
    robots := coalesce(cardinality(rs), 0);
    intervals := CASE WHEN robots > 0 THEN rebuild_state_intervals(rs, ls) ELSE 0 END;
END
$$;

-- The collector role may use them: apply_roles() keeps 008's grants and adds these.
ALTER FUNCTION apply_roles() RENAME TO apply_roles_008;
CREATE FUNCTION apply_roles() RETURNS text
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    owner_role text := apply_roles_008();
    collector_role text := role_prefix() || '_collector';
BEGIN
    IF owner_role IS NULL THEN   -- no CREATEROLE: 008 said so
        RETURN NULL;
    END IF;
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON state_dirty TO %I', collector_role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION mark_state_dirty(bigint[], timestamptz[]), '
                   'build_state_intervals(integer) TO %I', collector_role);
    RETURN owner_role;
END
$$;
