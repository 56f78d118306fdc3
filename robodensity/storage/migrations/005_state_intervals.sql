-- State intervals per robot, built incrementally by the collector in the transaction that
-- stores the state events (collector/intervals.py). A state holds from its event until the
-- robot's next state event with another state; the last interval is open (end_ts NULL).
-- An OFFLINE event closes the interval before it and opens an OFFLINE interval, so offline
-- time is counted as the metrics count it. (agent_id, seq) name the event that started it.
CREATE TABLE state_intervals (
    robot_id   bigint NOT NULL,
    start_ts   timestamptz NOT NULL,
    end_ts     timestamptz CHECK (end_ts > start_ts),
    state      text NOT NULL CHECK (state IN ('EXECUTING', 'IDLE', 'FAULT', 'OUT_OF_SERVICE', 'OFFLINE')),
    factory_id text NOT NULL,
    agent_id   text NOT NULL,
    seq        bigint NOT NULL,
    PRIMARY KEY (robot_id, start_ts)
);
CREATE INDEX state_intervals_end ON state_intervals (end_ts);
CREATE INDEX state_intervals_open ON state_intervals (robot_id) WHERE end_ts IS NULL;

-- Rebuild the intervals of every robot that has state events at or after lo since lo.
-- Called by the collector with state_touched (robot_id, lo) filled in; see collector/intervals.py.
-- Arrival order does not matter: a late event reopens the interval it falls into, and the
-- work is proportional to the events after it.
CREATE FUNCTION rebuild_state_intervals(robots bigint[], los timestamptz[]) RETURNS integer
LANGUAGE plpgsql SET search_path FROM CURRENT
-- The planner knows nothing of the temp table and would scan whole tables to hash them; per
-- robot index lookups are what this needs, at any size of the tables.
SET enable_hashjoin = off SET enable_mergejoin = off
-- Disabled join kinds make for huge cost estimates, which would make JIT compile every call.
SET jit = off
AS $$
DECLARE
    n integer;
BEGIN
    -- Two collectors touching one robot take turns; later statements then see the other's rows.
    PERFORM pg_advisory_xact_lock(hashtext(current_schema() || '.state_intervals'), (r % 2147483647)::int)
    FROM unnest(robots) AS r ORDER BY (r % 2147483647)::int;
    IF to_regclass('pg_temp.state_touched') IS NULL THEN
        CREATE TEMP TABLE state_touched (
            robot_id bigint PRIMARY KEY, lo timestamptz NOT NULL, since timestamptz,
            seed_state text, seed_factory text, seed_agent text, seed_seq bigint
        ) ON COMMIT DELETE ROWS;
    END IF;
    DELETE FROM state_touched;
    -- The last interval starting strictly before each robot's earliest new event seeds the
    -- rebuild: every stored event from its start up to lo has its state, and the events at lo
    -- itself (old and new: the last by seq wins) are read again.
    INSERT INTO state_touched
    SELECT u.robot_id, u.lo, i.start_ts, i.state, i.factory_id, i.agent_id, i.seq
    FROM unnest(robots, los) AS u(robot_id, lo)
    LEFT JOIN LATERAL (
        SELECT * FROM state_intervals j WHERE j.robot_id = u.robot_id AND j.start_ts < u.lo
        ORDER BY j.start_ts DESC LIMIT 1
    ) i ON true;
    DELETE FROM state_intervals i USING state_touched t
    WHERE i.robot_id = t.robot_id AND i.start_ts >= coalesce(t.since, t.lo);
    INSERT INTO state_intervals (robot_id, start_ts, end_ts, state, factory_id, agent_id, seq)
    WITH ev AS (
        SELECT t.robot_id, t.since AS ts, t.seed_state AS state, t.seed_factory AS factory_id,
               t.seed_agent AS agent_id, t.seed_seq AS seq, 0 AS prio
        FROM state_touched t WHERE t.since IS NOT NULL
        UNION ALL
        SELECT t.robot_id, e.ts, e.state, e.factory_id, e.agent_id, e.seq, 1
        FROM state_touched t
        CROSS JOIN LATERAL (SELECT * FROM events e
                            WHERE e.robot_id = t.robot_id AND e.ts >= t.lo AND e.type = 'state'
                            OFFSET 0) e   -- kept as a subquery: one index range scan per robot
    ), last_at AS (   -- of several events at one instant the last (by seq) wins, as in the metrics
        SELECT DISTINCT ON (robot_id, ts) * FROM ev ORDER BY robot_id, ts, prio DESC, seq DESC, agent_id DESC
    ), marked AS (
        SELECT *, lag(state) OVER (PARTITION BY robot_id ORDER BY ts) AS prev FROM last_at
    ), starts AS (
        SELECT * FROM marked WHERE prev IS DISTINCT FROM state
    )
    SELECT robot_id, ts, lead(ts) OVER (PARTITION BY robot_id ORDER BY ts), state, factory_id, agent_id, seq
    FROM starts;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
