-- Utilisation on planned time (issue 15 item 4, docs/clocks-and-shifts.md): the blocks gain
-- planned_executing_s, EXECUTING time inside the factory's planned time (ISO 22400-2 APT), by
-- the rule of planned_s: executing_s x the planned share of the bucket (robodensity/metrics/
-- blocks.py, app/shift_plan.py). Utilisation and ISO 22400-2 availability are then one figure,
-- sum(planned_executing_s) / sum(planned_s); under 24/7 it is sum(executing_s) / sum(covered_s)
-- as before. Overtime (EXECUTING outside the plan) no longer counts in the numerator.
-- Every density row names the plan its utilisation used (density.plan).

-- Backfill, exact: a stored 15-minute block's planned share is planned_s / covered_s (the job
-- stored planned_s = covered_s x share), so executing_s x planned_s / covered_s is the new rule;
-- 24/7 blocks (planned_s = covered_s) get executing_s itself, bit for bit.
ALTER TABLE robot_blocks_15m ADD COLUMN planned_executing_s double precision;
UPDATE robot_blocks_15m SET planned_executing_s = CASE
    WHEN planned_s >= executing_s + idle_s + fault_s + out_of_service_s + offline_s THEN executing_s
    ELSE coalesce(executing_s * planned_s
                  / NULLIF(executing_s + idle_s + fault_s + out_of_service_s + offline_s, 0), 0) END;
ALTER TABLE robot_blocks_15m ALTER COLUMN planned_executing_s SET NOT NULL;

-- A day is the sum of its 15-minute blocks: 24/7 days keep executing_s, the others sum the
-- backfilled 15-minute blocks of the local day (the proportional rule where those are gone).
ALTER TABLE robot_blocks_daily ADD COLUMN planned_executing_s double precision;
UPDATE robot_blocks_daily SET planned_executing_s = CASE
    WHEN planned_s >= executing_s + idle_s + fault_s + out_of_service_s + offline_s THEN executing_s
    ELSE coalesce(executing_s * planned_s
                  / NULLIF(executing_s + idle_s + fault_s + out_of_service_s + offline_s, 0), 0) END;
UPDATE robot_blocks_daily d SET planned_executing_s = q.planned_executing_s
FROM (
    SELECT robot_id, (bucket AT TIME ZONE 'Asia/Shanghai')::date AS day, sum(planned_executing_s) AS planned_executing_s
    FROM robot_blocks_15m GROUP BY 1, 2
) q
WHERE q.robot_id = d.robot_id AND q.day = d.day
  AND d.planned_s < d.executing_s + d.idle_s + d.fault_s + d.out_of_service_s + d.offline_s;
ALTER TABLE robot_blocks_daily ALTER COLUMN planned_executing_s SET NOT NULL;

-- The views over the blocks carry it (b.* was expanded when they were made: made again).
DROP VIEW v_robot_daily;
DROP VIEW v_robot_blocks_15m;
DROP VIEW v_robot_blocks_daily;
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

CREATE VIEW v_robot_daily AS
SELECT b.robot_id, b.day, b.factory_id, b.executing_s, b.idle_s, b.fault_s, b.out_of_service_s, b.offline_s,
       b.planned_s, b.planned_executing_s, b.failures, b.repairs, b.repair_s, b.covered_s,
       ro.manufacturer, ro.serial, ro.model, ro.application, b.region_code, b.industry_code,
       b.planned_executing_s / NULLIF(b.planned_s, 0) AS utilisation
FROM v_robot_blocks_daily b
JOIN robots ro USING (robot_id);

-- The aggregates of migration 050. A national deployment holds region_daily only by
-- replication (no blocks): the proportional rule there, exact again once its provinces,
-- migrated after it, replace their rows by the refresh below.
ALTER TABLE region_daily ADD COLUMN planned_executing_s double precision;
UPDATE region_daily SET planned_executing_s = CASE WHEN planned_s >= covered_s THEN executing_s
    ELSE coalesce(executing_s * planned_s / NULLIF(covered_s, 0), 0) END;
ALTER TABLE region_daily ALTER COLUMN planned_executing_s SET NOT NULL;
ALTER TABLE factory_daily ADD COLUMN planned_s double precision, ADD COLUMN planned_executing_s double precision;
UPDATE factory_daily SET planned_s = covered_s, planned_executing_s = executing_s;
ALTER TABLE factory_daily ALTER COLUMN planned_s SET NOT NULL, ALTER COLUMN planned_executing_s SET NOT NULL;

CREATE OR REPLACE FUNCTION refresh_region_daily(from_day date, to_day date) RETURNS integer
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    n integer;
BEGIN
    DELETE FROM region_daily WHERE day >= from_day AND day < to_day;
    INSERT INTO region_daily (region_code, industry_code, day, robots, reporting, executing_s, idle_s, fault_s,
                              out_of_service_s, offline_s, planned_s, covered_s, failures, repairs, repair_s,
                              planned_executing_s)
    SELECT fr.region_code, CASE WHEN GROUPING(fr.industry_code) = 1 THEN '*' ELSE coalesce(fr.industry_code, '') END,
           b.day, count(*),
           count(*) FILTER (WHERE b.offline_s < b.executing_s + b.idle_s + b.fault_s + b.out_of_service_s
                                                + b.offline_s),
           sum(b.executing_s), sum(b.idle_s), sum(b.fault_s), sum(b.out_of_service_s), sum(b.offline_s),
           sum(b.planned_s), sum(b.executing_s + b.idle_s + b.fault_s + b.out_of_service_s + b.offline_s),
           sum(b.failures), sum(b.repairs), sum(b.repair_s), sum(b.planned_executing_s)
    FROM robot_blocks_daily b
    JOIN v_factory_region fr ON fr.factory_id = b.factory_id
    WHERE b.day >= from_day AND b.day < to_day
    GROUP BY GROUPING SETS ((fr.region_code, fr.industry_code, b.day), (fr.region_code, b.day));
    GET DIAGNOSTICS n = ROW_COUNT;
    DELETE FROM factory_daily WHERE day >= from_day AND day < to_day;
    INSERT INTO factory_daily (factory_id, day, robots, reporting, executing_s, covered_s, planned_s,
                               planned_executing_s)
    SELECT b.factory_id, b.day, count(*),
           count(*) FILTER (WHERE b.offline_s < b.executing_s + b.idle_s + b.fault_s + b.out_of_service_s
                                                + b.offline_s),
           sum(b.executing_s), sum(b.executing_s + b.idle_s + b.fault_s + b.out_of_service_s + b.offline_s),
           sum(b.planned_s), sum(b.planned_executing_s)
    FROM robot_blocks_daily b
    WHERE b.day >= from_day AND b.day < to_day AND b.factory_id IS NOT NULL
    GROUP BY b.factory_id, b.day;
    RETURN n;
END
$$;

SELECT refresh_region_daily(min(day), max(day) + 1) FROM robot_blocks_daily;

DROP VIEW v_factory_daily;
CREATE VIEW v_factory_daily AS SELECT * FROM factory_daily;
DROP VIEW v_region_daily;
CREATE VIEW v_region_daily AS
SELECT d.*, r.name AS region_name, r.name_en AS region_name_en, r.parent_code, r.level
FROM region_daily d
JOIN regions r ON r.code = d.region_code;

-- The plan each density row's utilisation used: 'planned: 24/7' or 'planned: shift calendars
-- (N of M factories)' (storage/shifts.py plan_label). Rows computed before this migration divided
-- by covered time, which is the 24/7 plan.
ALTER TABLE density ADD COLUMN plan text;
UPDATE density SET plan = 'planned: 24/7';
COMMENT ON COLUMN density.utilisation IS
    'sum(planned_executing_s) / sum(planned_s) of the blocks in the period attributed to the region''s factories '
    '(utilisation on planned time = ISO 22400-2 availability); the plan is in density.plan';
COMMENT ON COLUMN density.plan IS 'the plan utilisation divides by: planned: 24/7, or shift calendars (N of M factories)';

DROP VIEW v_density_defined;
CREATE VIEW v_density_defined AS
SELECT d.*, r.name AS region_name, r.name_en AS region_name_en, r.parent_code, r.level,
       t.value AS target, t.due_date AS target_due, t.definition AS target_definition,
       dd.numerator, dd.scope, dd.unit, dd.denominator, dd.title AS definition_title,
       dd.title_zh AS definition_title_zh
FROM density d
JOIN regions r ON r.code = d.region_code
JOIN density_definitions dd USING (definition)
LEFT JOIN LATERAL (
    SELECT value, due_date, definition FROM targets t
    WHERE t.metric = 'robot_density' AND t.definition = d.definition
      AND t.scope_region IN (d.region_code, r.parent_code, 'CN')
    ORDER BY (t.scope_region = d.region_code) DESC, (t.scope_region = 'CN'),
             (t.due_date < d.period_end::date), CASE WHEN t.due_date >= d.period_end::date THEN t.due_date END,
             t.due_date DESC
    LIMIT 1
) t ON true;

CREATE OR REPLACE VIEW v_density AS
SELECT d.region_code, d.industry_code, d.period_start, d.period_end, d.robot_count, d.employee_count,
       d.robot_density, d.verified_count, d.verified_density, d.reporting_count, d.coverage, d.domestic_share,
       d.utilisation, d.computed_at, r.name AS region_name, r.name_en AS region_name_en, r.parent_code, r.level,
       t.value AS target, t.due_date AS target_due,
       d.definition, d.denominator_source, d.vintage, d.employment_coverage, t.definition AS target_definition,
       d.plan
FROM density d
JOIN regions r ON r.code = d.region_code
LEFT JOIN LATERAL (
    SELECT value, due_date, definition FROM targets t
    WHERE t.metric = 'robot_density'
      AND t.scope_region IN (d.region_code, r.parent_code, 'CN')
    ORDER BY (t.definition = d.definition) DESC, (t.scope_region = d.region_code) DESC, (t.scope_region = 'CN'),
             (t.due_date < d.period_end::date), CASE WHEN t.due_date >= d.period_end::date THEN t.due_date END,
             t.due_date DESC
    LIMIT 1
) t ON true
WHERE d.definition = 'participating';
