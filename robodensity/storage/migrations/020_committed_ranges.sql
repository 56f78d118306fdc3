-- Exactly-once by ranges, not by a row per event (issue 14).
--
-- An edge agent numbers its events 1, 2, 3, ... densely, so what the collectors have settled for
-- it (stored in events, or dead-lettered) is a handful of ranges: agents.committed. A flush locks
-- its agents' rows (sorted, so two collectors writing one agent serialise on that row and never
-- deadlock), skips the re-sent seqs by range arithmetic, COPYs the new events straight into
-- events and adds their seqs to committed, all in one transaction. The acknowledgement comes
-- from it too: acked_through is the end of the range that holds acked_through + 1.
--
-- event_keys (one row and one index entry per event, 004) goes: its rows become ranges here.
ALTER TABLE agents ADD COLUMN committed int8multirange NOT NULL DEFAULT '{}';

-- Agents known only by their keys (a bulk load stored events without an agent row).
INSERT INTO agents (agent_id, factory_id, first_seen, last_seen)
SELECT k.agent_id, min(e.factory_id), min(k.ts), max(k.ts)
FROM event_keys k
JOIN events e ON e.robot_id = k.robot_id AND e.ts = k.ts AND e.agent_id = k.agent_id AND e.seq = k.seq
WHERE NOT EXISTS (SELECT 1 FROM agents a WHERE a.agent_id = k.agent_id)
GROUP BY k.agent_id;

-- Stored keys, dead-lettered seqs and the acknowledged run (whose keys retention may have dropped).
UPDATE agents a SET committed = s.m
FROM (
    SELECT agent_id, range_agg(r) AS m
    FROM (
        SELECT agent_id, int8range(seq, seq, '[]') AS r FROM event_keys
        UNION ALL
        SELECT agent_id, int8range(seq, seq, '[]') FROM dead_letters WHERE agent_id IS NOT NULL AND seq IS NOT NULL
        UNION ALL
        SELECT agent_id, int8range(1, acked_through, '[]') FROM agents WHERE acked_through > 0
    ) u
    GROUP BY agent_id
) s
WHERE a.agent_id = s.agent_id;
UPDATE agents a SET acked_through = upper(r) - 1
FROM (SELECT agent_id, acked_through, unnest(committed) AS r FROM agents) u
WHERE a.agent_id = u.agent_id AND u.r @> (u.acked_through + 1);

-- The backlog: seqs settled beyond the contiguous acknowledged run.
CREATE OR REPLACE VIEW v_agent_health AS
SELECT a.agent_id, a.factory_id, f.name AS factory, a.first_seen, a.last_seen, a.acked_through,
       upper(a.committed) - 1 AS max_seq,
       greatest(coalesce(upper(a.committed) - 1, 0) - a.acked_through, 0) AS backlog,
       extract(epoch FROM now() - a.last_seen)::double precision AS ack_age_s
FROM agents a
LEFT JOIN factories f ON f.factory_id = a.factory_id;

-- Plain-PostgreSQL retention: drop whole months of raw events that ended before clock_now() - keep.
-- committed keeps their seqs, so a late re-send of a dropped event is still a repeat.
CREATE OR REPLACE FUNCTION drop_event_partitions(keep interval) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    dropped integer := 0;
    p record;
    cutoff timestamptz := clock_now() - keep;
BEGIN
    IF storage_mode() <> 'partitions' THEN
        RETURN 0;
    END IF;
    FOR p IN SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'events'::regclass AND c.relname ~ '^events_y[0-9]{4}m[0-9]{2}$'
    LOOP
        IF (substring(p.bound FROM 'TO \(''([^'']+)''\)'))::timestamptz <= cutoff THEN
            EXECUTE format('DROP TABLE %I', p.relname);
            dropped := dropped + 1;
        END IF;
    END LOOP;
    RETURN dropped;
END
$$;

DROP TABLE event_keys;

-- 008's grants named event_keys: the same function without it.
DO $$
BEGIN
    EXECUTE replace(pg_get_functiondef('apply_roles_008()'::regprocedure), ' event_keys,', '');
END
$$;

-- The collector updates committed with acked_through.
INSERT INTO role_grants (migration, statement) VALUES (20, 'GRANT UPDATE (committed) ON agents TO %1$I');
