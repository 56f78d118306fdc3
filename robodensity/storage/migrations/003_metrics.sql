-- Metric tables written by `robodensity metrics compute`, and the views dashboards read.
CREATE TABLE robot_daily (
    robot_id         bigint NOT NULL REFERENCES robots (robot_id),
    day              date NOT NULL,
    factory_id       text,
    executing_s      double precision NOT NULL,
    idle_s           double precision NOT NULL,
    fault_s          double precision NOT NULL,
    out_of_service_s double precision NOT NULL,
    offline_s        double precision NOT NULL,
    PRIMARY KEY (robot_id, day)
);

-- Robot density per region, industry ('*' = all manufacturing) and period.
CREATE TABLE density (
    region_code        text NOT NULL,
    industry_code      text NOT NULL,
    period_start       timestamptz NOT NULL,
    period_end         timestamptz NOT NULL,
    robot_count        integer NOT NULL,          -- registered, in operation
    employee_count     integer NOT NULL,
    robot_density      double precision,          -- NULL where employee_count = 0
    verified_count     integer NOT NULL,          -- robots that did real work in the period
    verified_density   double precision,
    reporting_count    integer NOT NULL,          -- robots that sent any telemetry
    coverage           double precision,
    domestic_share     double precision,
    utilisation        double precision,          -- mean of reporting robots, EXECUTING / calendar time
    computed_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (region_code, industry_code, period_start, period_end)
);

CREATE VIEW v_density AS
SELECT d.*, r.name AS region_name, r.name_en AS region_name_en, r.parent_code, r.level,
       t.value AS target, t.due_date AS target_due
FROM density d
JOIN regions r ON r.code = d.region_code
LEFT JOIN LATERAL (
    SELECT value, due_date FROM targets t
    WHERE t.metric = 'robot_density'
      AND t.scope_region IN (d.region_code, r.parent_code, 'CN')
    -- the region's own target before its parent's before the national one; an upcoming
    -- target (the nearest) before one already past due (the latest)
    ORDER BY (t.scope_region = d.region_code) DESC, (t.scope_region = 'CN'),
             (t.due_date < d.period_end::date), CASE WHEN t.due_date >= d.period_end::date THEN t.due_date END,
             t.due_date DESC
    LIMIT 1
) t ON true;

CREATE VIEW v_robot_daily AS
SELECT rd.*, ro.manufacturer, ro.serial, ro.model, ro.application, f.region_code, f.industry_code,
       rd.executing_s / NULLIF(rd.executing_s + rd.idle_s + rd.fault_s + rd.out_of_service_s + rd.offline_s, 0)
           AS utilisation
FROM robot_daily rd
JOIN robots ro USING (robot_id)
LEFT JOIN factories f USING (factory_id);
