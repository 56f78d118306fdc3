-- Views and indexes that let the factory and drill-down panels read state intervals and
-- rollups instead of raw events (bench/bench_dashboards.py: p95 of each panel < 150 ms).
-- Plain PostgreSQL only, so they work with and without TimescaleDB. apply_roles() (008)
-- grants SELECT on every view to the reader role; departments get none of these.

-- State intervals as stored, without the joins and the now()-based duration of
-- v_state_intervals: the panels look them up by factory and time and by robot (primary key).
CREATE VIEW v_state_spans AS
SELECT robot_id, factory_id, start_ts, end_ts, state
FROM state_intervals;

-- One factory's intervals starting in a time range (state timeline); covering, so the
-- rows come from the index alone once the table has been vacuumed.
CREATE INDEX state_intervals_factory_start ON state_intervals (factory_id, start_ts)
    INCLUDE (robot_id, end_ts, state);
-- One factory's intervals of some states starting in a time range: the reliability panels
-- add up EXECUTING (MTBF) and FAULT (failures, MTTR, fault hours) intervals only.
CREATE INDEX state_intervals_factory_state_start ON state_intervals (factory_id, state, start_ts)
    INCLUDE (robot_id, end_ts);
-- Each robot's open (latest) interval, by factory: the robots that report there now.
CREATE INDEX state_intervals_factory_open ON state_intervals (factory_id, start_ts)
    INCLUDE (robot_id) WHERE end_ts IS NULL;
-- The factory state timeline over long ranges reads one factory's daily rollups.
CREATE INDEX rollup_daily_factory_day ON rollup_daily (factory_id, day);

-- Daily seconds in state per robot as the metrics job stores them, without v_robot_daily's
-- join with robots (a hash join of every robot-day the province drill-down reads). Row-level
-- security on robot_daily cuts it to a department's region, so departments may read it too.
CREATE VIEW v_robot_daily_seconds AS
SELECT robot_id, day, factory_id, executing_s, idle_s, fault_s, out_of_service_s, offline_s,
       executing_s / NULLIF(executing_s + idle_s + fault_s + out_of_service_s + offline_s, 0) AS utilisation
FROM robot_daily;
INSERT INTO department_views VALUES ('v_robot_daily_seconds') ON CONFLICT DO NOTHING;
