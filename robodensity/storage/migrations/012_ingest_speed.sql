-- Less work per stored event (bench/bench_ingest.py).
-- The factory panels read state intervals since 011; no query reads events by factory any more,
-- and this index cost a fifth of every event insert.
DROP INDEX IF EXISTS events_factory_state_ts;

-- State intervals leave the commit path. A flush records which robots got state events from
-- when (state_marks, in the transaction that stores them) and a second stage rebuilds the marked
-- robots about once a second, many flushes at once: per robot, one seed lookup, one read of its
-- new events and one rewrite of its open interval per second instead of per flush. A crash
-- loses nothing: the marks commit with the events and wait for the next collector.
CREATE TABLE state_marks (
    id       bigserial PRIMARY KEY,
    robot_id bigint NOT NULL,
    lo       timestamptz NOT NULL   -- the flush's earliest state event of this robot
);

CREATE FUNCTION mark_state_robots(robots bigint[], los timestamptz[]) RETURNS void
LANGUAGE sql SET search_path FROM CURRENT AS $$
    INSERT INTO state_marks (robot_id, lo) SELECT * FROM unnest(robots, los)
$$;

-- Rebuild the robots of up to max_marks marks; (robots, intervals written). Flushes only append
-- marks, so they never wait for a rebuild; the rebuild deletes exactly the marks it read (a mark
-- committed meanwhile is left for the next call, even one with a lower id). One stage at a time
-- per schema: while another collector's stage runs, a call returns at once with busy set.
CREATE FUNCTION build_state_intervals(max_marks integer DEFAULT 100000,
                                      OUT marks integer, OUT intervals integer, OUT busy boolean)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    ids bigint[];
    rs bigint[];
    ls timestamptz[];
BEGIN
    marks := 0;
    intervals := 0;
    busy := NOT pg_try_advisory_xact_lock(hashtext(current_schema() || '.build_state_intervals'));
    IF busy THEN
        RETURN;
    END IF;
    SELECT array_agg(id) INTO ids FROM (SELECT id FROM state_marks ORDER BY id LIMIT max_marks) m;
    IF ids IS NULL THEN
        RETURN;
    END IF;
    marks := cardinality(ids);
    SELECT array_agg(robot_id ORDER BY robot_id), array_agg(lo ORDER BY robot_id) INTO rs, ls
    FROM (SELECT robot_id, min(lo) AS lo FROM state_marks WHERE id = ANY(ids) GROUP BY robot_id) r;
    intervals := rebuild_state_intervals(rs, ls);
    DELETE FROM state_marks WHERE id = ANY(ids);
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
    EXECUTE format('GRANT SELECT, INSERT, DELETE ON state_marks TO %I', collector_role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION mark_state_robots(bigint[], timestamptz[]), '
                   'build_state_intervals(integer) TO %I', collector_role);
    RETURN owner_role;
END
$$;
