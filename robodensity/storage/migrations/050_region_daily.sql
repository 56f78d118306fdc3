-- Region x day aggregates of the daily metric blocks, for every region level (city, province):
-- what province-wide panels read instead of robot rows, and what a province publishes to the
-- national deployment (storage/federation.py) instead of robot-level data.
-- The metrics job refreshes the days it computed with refresh_region_daily(from, to).
CREATE TABLE region_daily (
    region_code      text NOT NULL,
    industry_code    text NOT NULL,               -- GB/T 4754 code of the factories, '*' for all
    day              date NOT NULL,
    robots           integer NOT NULL,            -- robots with a daily block in the region's factories
    reporting        integer NOT NULL,            -- of which sent telemetry (offline_s < covered_s)
    executing_s      double precision NOT NULL,
    idle_s           double precision NOT NULL,
    fault_s          double precision NOT NULL,
    out_of_service_s double precision NOT NULL,
    offline_s        double precision NOT NULL,
    planned_s        double precision NOT NULL,
    covered_s        double precision NOT NULL,
    failures         integer NOT NULL,
    repairs          integer NOT NULL,
    repair_s         double precision NOT NULL,
    PRIMARY KEY (region_code, industry_code, day)
);
CREATE INDEX region_daily_day ON region_daily (day);

-- A department sees its own region and the regions under it, as with density (008).
ALTER TABLE region_daily ENABLE ROW LEVEL SECURITY;
ALTER TABLE region_daily FORCE ROW LEVEL SECURITY;
CREATE POLICY region_scope ON region_daily USING (
    (SELECT department_region(current_user::text)) IS NULL
    OR region_within(region_code, (SELECT department_region(current_user::text))));

-- The same per factory and day (not published: factories stay in the province), for the
-- drill-down's factory table over a period without reading every robot-day.
CREATE TABLE factory_daily (
    factory_id  text NOT NULL,
    day         date NOT NULL,
    robots      integer NOT NULL,
    reporting   integer NOT NULL,
    executing_s double precision NOT NULL,
    covered_s   double precision NOT NULL,
    PRIMARY KEY (factory_id, day)
);
CREATE INDEX factory_daily_day ON factory_daily (day);
ALTER TABLE factory_daily ENABLE ROW LEVEL SECURITY;
ALTER TABLE factory_daily FORCE ROW LEVEL SECURITY;
CREATE POLICY region_scope ON factory_daily USING (
    (SELECT department_region(current_user::text)) IS NULL
    OR factory_id = ANY ((SELECT department_factories(current_user::text))::text[]));

CREATE FUNCTION refresh_region_daily(from_day date, to_day date) RETURNS integer
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    n integer;
BEGIN
    DELETE FROM region_daily WHERE day >= from_day AND day < to_day;
    INSERT INTO region_daily
    SELECT fr.region_code, CASE WHEN GROUPING(fr.industry_code) = 1 THEN '*' ELSE coalesce(fr.industry_code, '') END,
           b.day, count(*),
           count(*) FILTER (WHERE b.offline_s < b.executing_s + b.idle_s + b.fault_s + b.out_of_service_s
                                                + b.offline_s),
           sum(b.executing_s), sum(b.idle_s), sum(b.fault_s), sum(b.out_of_service_s), sum(b.offline_s),
           sum(b.planned_s), sum(b.executing_s + b.idle_s + b.fault_s + b.out_of_service_s + b.offline_s),
           sum(b.failures), sum(b.repairs), sum(b.repair_s)
    FROM robot_blocks_daily b
    JOIN v_factory_region fr ON fr.factory_id = b.factory_id
    WHERE b.day >= from_day AND b.day < to_day
    GROUP BY GROUPING SETS ((fr.region_code, fr.industry_code, b.day), (fr.region_code, b.day));
    GET DIAGNOSTICS n = ROW_COUNT;
    DELETE FROM factory_daily WHERE day >= from_day AND day < to_day;
    INSERT INTO factory_daily
    SELECT b.factory_id, b.day, count(*),
           count(*) FILTER (WHERE b.offline_s < b.executing_s + b.idle_s + b.fault_s + b.out_of_service_s
                                                + b.offline_s),
           sum(b.executing_s), sum(b.executing_s + b.idle_s + b.fault_s + b.out_of_service_s + b.offline_s)
    FROM robot_blocks_daily b
    WHERE b.day >= from_day AND b.day < to_day AND b.factory_id IS NOT NULL
    GROUP BY b.factory_id, b.day;
    RETURN n;
END
$$;

CREATE VIEW v_factory_daily AS SELECT * FROM factory_daily;

CREATE VIEW v_region_daily AS
SELECT d.*, r.name AS region_name, r.name_en AS region_name_en, r.parent_code, r.level
FROM region_daily d
JOIN regions r ON r.code = d.region_code;

-- The nation from its provinces' density rows (a national deployment holds only those, by
-- logical replication): sums of counts, densities recomputed from the sums.
CREATE VIEW v_national_density AS
SELECT d.definition, d.industry_code, d.period_start, d.period_end,
       count(*) AS provinces,
       sum(d.robot_count) AS robot_count, sum(d.employee_count) AS employee_count,
       sum(d.robot_count)::double precision * 10000 / NULLIF(sum(d.employee_count), 0) AS robot_density,
       sum(d.verified_count) AS verified_count,
       sum(d.verified_count)::double precision * 10000 / NULLIF(sum(d.employee_count), 0) AS verified_density,
       sum(d.reporting_count) AS reporting_count,
       sum(d.reporting_count)::double precision / NULLIF(sum(d.robot_count), 0) AS coverage
FROM density d
JOIN regions r ON r.code = d.region_code AND r.level = 1
GROUP BY d.definition, d.industry_code, d.period_start, d.period_end;

INSERT INTO department_views VALUES ('v_region_daily'), ('v_factory_daily'), ('v_national_density')
ON CONFLICT DO NOTHING;
