-- Views and indexes the Grafana dashboards and the printable bulletin read.
-- Plain PostgreSQL only, so they work with and without TimescaleDB.

-- Every region paired with itself and each of its ancestors (depth 0 = itself).
CREATE VIEW v_region_ancestors AS
WITH RECURSIVE up (region_code, ancestor_code, depth) AS (
    SELECT code, code, 0 FROM regions
    UNION ALL
    SELECT up.region_code, r.parent_code, up.depth + 1
    FROM up JOIN regions r ON r.code = up.ancestor_code
    WHERE r.parent_code IS NOT NULL
)
SELECT region_code, ancestor_code, depth FROM up;

-- Each factory under every region that contains it (its own district or city, the city, the province).
CREATE VIEW v_factory_region AS
SELECT f.factory_id, a.ancestor_code AS region_code, f.industry_code
FROM factories f
JOIN v_region_ancestors a ON a.region_code = f.region_code;

-- Robots with the factory they are assigned to today and whether they count as in operation
-- (the registered-density definition of the metrics job, evaluated today).
CREATE VIEW v_robot_current AS
SELECT r.robot_id, r.manufacturer, r.serial, r.model, r.category, r.application, r.domestic,
       r.commissioned, r.decommissioned, r.subsidy_programme, r.registered, r.first_seen,
       a.factory_id,
       (r.registered AND (r.commissioned IS NULL OR r.commissioned <= current_date)
        AND (r.decommissioned IS NULL OR r.decommissioned > current_date)) AS in_operation
FROM robots r
LEFT JOIN LATERAL (
    SELECT factory_id FROM assignments a
    WHERE a.robot_id = r.robot_id AND a.valid_from <= current_date
    ORDER BY a.valid_from DESC LIMIT 1
) a ON true;

-- Factories with their latest headcount and the robots in operation there today.
CREATE VIEW v_factory_fleet AS
SELECT f.factory_id, f.name, f.region_code, f.industry_code,
       coalesce(h.employee_count, 0) AS employee_count,
       coalesce(c.robot_count, 0) AS robot_count,
       coalesce(c.robot_count, 0)::double precision * 10000 / NULLIF(h.employee_count, 0) AS robot_density
FROM factories f
LEFT JOIN LATERAL (
    SELECT employee_count FROM headcounts h
    WHERE h.factory_id = f.factory_id AND h.valid_from <= current_date
    ORDER BY h.valid_from DESC LIMIT 1
) h ON true
LEFT JOIN (
    SELECT factory_id, count(*) AS robot_count FROM v_robot_current WHERE in_operation GROUP BY factory_id
) c ON c.factory_id = f.factory_id;

-- Factory dashboards read one factory's state events over a time range.
CREATE INDEX events_factory_state_ts ON events (factory_id, ts) WHERE type = 'state';
-- Utilisation by factory and day (factory heatmap, drill-down, bulletin).
CREATE INDEX robot_daily_factory_day ON robot_daily (factory_id, day);
-- Dead letters over the dashboard's time range.
CREATE INDEX dead_letters_received_at ON dead_letters (received_at);
-- The fleet dashboard lists robots seen in telemetry but absent from the registry.
CREATE INDEX robots_unregistered ON robots (first_seen) WHERE NOT registered;
-- Density rows of one period across regions (city and industry comparisons).
CREATE INDEX density_period ON density (period_end, period_start, industry_code);

-- Roles that may read views only (see 008_roles) reach telemetry through these.
-- State events, without payload columns the dashboards do not show.
CREATE VIEW v_state_events AS
SELECT robot_id, factory_id, ts, seq, agent_id, state
FROM events
WHERE type = 'state';

-- Edge agents with their backlog: sequence numbers stored beyond the contiguous acknowledged
-- run (events held back by a gap a re-send has not filled), and the age of the last commit.
CREATE VIEW v_agent_health AS
SELECT a.agent_id, a.factory_id, f.name AS factory, a.first_seen, a.last_seen, a.acked_through,
       k.max_seq,
       greatest(coalesce(k.max_seq, 0) - a.acked_through, 0) AS backlog,
       extract(epoch FROM now() - a.last_seen)::double precision AS ack_age_s
FROM agents a
LEFT JOIN factories f ON f.factory_id = a.factory_id
LEFT JOIN LATERAL (SELECT max(seq) AS max_seq FROM event_keys k WHERE k.agent_id = a.agent_id) k ON true;

-- Dead letters without their payload (which may hold anything a sender put there).
CREATE VIEW v_dead_letters AS
SELECT id, received_at, topic, agent_id, seq, reason, field
FROM dead_letters;
