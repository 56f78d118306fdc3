-- Density definitions as data (issue 15): what a density counts and what it divides by.
-- Every density row names its definition, its denominator's source and vintage, and its
-- coverage; targets name the definition they are measured in. docs/definitions.md explains
-- each shipped definition with a worked example.

-- Above-designated-size firms (规模以上工业企业: annual revenue of 20 million yuan or more).
ALTER TABLE factories ADD COLUMN above_designated_size boolean NOT NULL DEFAULT false;

CREATE TABLE density_definitions (
    definition  text PRIMARY KEY CHECK (definition ~ '^[a-z][a-z0-9-]{0,62}$'),
    numerator   text NOT NULL CHECK (numerator IN ('in_operation', 'verified')),
    scope       text NOT NULL CHECK (scope IN ('all', 'key', 'above_designated_size')),
    unit        text NOT NULL CHECK (unit IN ('robots', 'robot_days')),
    denominator text NOT NULL CHECK (denominator IN ('participating', 'official')),
    title       text NOT NULL,
    title_zh    text NOT NULL DEFAULT ''
);

-- The shipped defaults; `robodensity definitions import FILE` adds or replaces rows.
INSERT INTO density_definitions VALUES
    ('participating', 'in_operation', 'all', 'robots', 'participating',
     'Robots in operation per 10,000 employees of the participating factories', '参与企业在用机器人密度'),
    ('participating-verified', 'verified', 'all', 'robots', 'participating',
     'Verified working robots per 10,000 employees of the participating factories', '参与企业核验机器人密度'),
    ('participating-robot-days', 'in_operation', 'all', 'robot_days', 'participating',
     'Robot-days in operation / days, per 10,000 employees of the participating factories', '参与企业机器人日密度'),
    ('participating-key-manufacturing', 'in_operation', 'key', 'robots', 'participating',
     'Robots in operation in key industries per 10,000 employees of the participating factories there',
     '参与企业重点行业机器人密度'),
    ('official-manufacturing', 'in_operation', 'all', 'robots', 'official',
     'Robots in operation per 10,000 manufacturing employees (official statistics)', '制造业机器人密度（官方就业统计）'),
    ('official-key-manufacturing', 'in_operation', 'key', 'robots', 'official',
     'Robots in operation in key industries per 10,000 employees there (official statistics)',
     '重点行业机器人密度（官方就业统计）'),
    ('official-above-designated-size', 'in_operation', 'above_designated_size', 'robots', 'official',
     'Robots in operation in above-designated-size firms per 10,000 of their employees (official statistics)',
     '规模以上企业机器人密度（官方就业统计）');

-- Key industries per region (GB/T 4754 codes; a code covers its sub-codes). A region without
-- a list uses its nearest ancestor's, and without any the industries flagged key_manufacturing.
CREATE TABLE key_industries (
    region_code   text NOT NULL CHECK (region_code ~ '^[0-9]{6}$'),
    industry_code text NOT NULL CHECK (industry_code ~ '^[A-T]?[0-9]{2,4}$'),
    source        text NOT NULL DEFAULT '',
    PRIMARY KEY (region_code, industry_code)
);

-- Official employment by region x industry x year ('*': all manufacturing), for all firms or
-- the above-designated-size ones, as `robodensity stats import FILE` validated it.
CREATE TABLE employment_statistics (
    region_code   text NOT NULL CHECK (region_code ~ '^[0-9]{6}$'),
    industry_code text NOT NULL CHECK (industry_code = '*' OR industry_code ~ '^[A-T]?[0-9]{2,4}$'),
    year          integer NOT NULL CHECK (year BETWEEN 1949 AND 2200),
    firms         text NOT NULL DEFAULT 'all' CHECK (firms IN ('all', 'above_designated_size')),
    employees     bigint NOT NULL CHECK (employees >= 0),
    source        text NOT NULL,
    vintage       text NOT NULL,
    PRIMARY KEY (region_code, industry_code, year, firms)
);

-- Industrial-robot installations by region and year (the top-down side of the reconciliation
-- report: operational stock by the IFR method, metrics/stock.py).
CREATE TABLE installation_statistics (
    region_code   text NOT NULL CHECK (region_code ~ '^[0-9]{6}$'),
    year          integer NOT NULL CHECK (year BETWEEN 1949 AND 2200),
    installations bigint NOT NULL CHECK (installations >= 0),
    source        text NOT NULL,
    vintage       text NOT NULL,
    PRIMARY KEY (region_code, year)
);

ALTER TABLE targets ADD COLUMN definition text;
UPDATE targets SET definition = CASE scope_industry WHEN 'key_manufacturing' THEN 'official-key-manufacturing'
                                                    ELSE 'official-manufacturing' END;

-- Density rows per definition. The rows of 'participating' are those the table held before.
ALTER TABLE density
    ADD COLUMN definition text NOT NULL DEFAULT 'participating' REFERENCES density_definitions ON UPDATE CASCADE,
    ADD COLUMN denominator_source text NOT NULL DEFAULT 'participating factories'' headcounts (registry)',
    ADD COLUMN vintage text NOT NULL DEFAULT '',
    ADD COLUMN denominator_year integer,                 -- official statistics: the year used
    ADD COLUMN robot_days double precision,              -- robot-days definitions: days robots stood here
    ADD COLUMN period_days integer,                      -- local days of the period (robot-days)
    ADD COLUMN participating_employee_count integer,     -- headcounts of participating factories in scope
    ADD COLUMN participating_density double precision,   -- the same numerator over them
    ADD COLUMN employment_coverage double precision;     -- participating_employee_count / employee_count
ALTER TABLE density DROP CONSTRAINT density_pkey;
ALTER TABLE density ADD PRIMARY KEY (definition, region_code, industry_code, period_start, period_end);
COMMENT ON COLUMN density.coverage IS 'reporting robots / robots counted (telemetry coverage)';
COMMENT ON COLUMN density.employment_coverage IS
    'employees of participating factories in scope / the denominator (1 for participating definitions)';

-- Every definition's rows with their definition, region names and the target of that
-- definition (another definition's target is never shown against them).
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

-- The participating-factories rows, as dashboards read them since 003. The target shown is
-- the region's whichever its definition, so it carries target_definition: a panel or the
-- bulletin names the definition a target is measured in next to it.
DROP VIEW v_density;
CREATE VIEW v_density AS
SELECT d.region_code, d.industry_code, d.period_start, d.period_end, d.robot_count, d.employee_count,
       d.robot_density, d.verified_count, d.verified_density, d.reporting_count, d.coverage, d.domestic_share,
       d.utilisation, d.computed_at, r.name AS region_name, r.name_en AS region_name_en, r.parent_code, r.level,
       t.value AS target, t.due_date AS target_due,
       d.definition, d.denominator_source, d.vintage, d.employment_coverage, t.definition AS target_definition
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

CREATE VIEW v_density_definitions AS SELECT * FROM density_definitions;
CREATE VIEW v_employment_statistics AS SELECT * FROM employment_statistics;
CREATE VIEW v_installation_statistics AS SELECT * FROM installation_statistics;

INSERT INTO department_views VALUES ('v_density'), ('v_density_defined'), ('v_density_definitions'),
    ('v_employment_statistics'), ('v_installation_statistics') ON CONFLICT DO NOTHING;
