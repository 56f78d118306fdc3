-- Registry: who has which robots where, and how many people work there.
CREATE TABLE regions (
    code        text PRIMARY KEY CHECK (code ~ '^[0-9]{6}$'),   -- GB/T 2260
    name        text NOT NULL,
    name_en     text NOT NULL DEFAULT '',
    parent_code text REFERENCES regions (code),
    level       smallint NOT NULL GENERATED ALWAYS AS (
                    CASE WHEN code LIKE '%0000' THEN 1 WHEN code LIKE '%00' THEN 2 ELSE 3 END) STORED
);

CREATE TABLE industries (
    code              text PRIMARY KEY CHECK (code ~ '^[A-T]?[0-9]{2,4}$'),   -- GB/T 4754-2017
    name              text NOT NULL,
    name_en           text NOT NULL DEFAULT '',
    key_manufacturing boolean NOT NULL DEFAULT false
);

CREATE TABLE factories (
    factory_id    text PRIMARY KEY,
    name          text NOT NULL,
    region_code   text NOT NULL REFERENCES regions (code),
    industry_code text NOT NULL REFERENCES industries (code)
);

-- Employee headcount as a time series: a row holds from valid_from to the next row.
CREATE TABLE headcounts (
    factory_id     text NOT NULL REFERENCES factories (factory_id),
    valid_from     date NOT NULL,
    employee_count integer NOT NULL CHECK (employee_count >= 0),
    PRIMARY KEY (factory_id, valid_from)
);

CREATE TABLE robots (
    robot_id          bigserial PRIMARY KEY,
    manufacturer      text NOT NULL,
    serial            text NOT NULL,
    model             text NOT NULL DEFAULT '',
    category          text NOT NULL DEFAULT '',
    application       text NOT NULL DEFAULT '',
    domestic          boolean,
    commissioned      date,
    decommissioned    date,
    subsidy_programme text,
    registered        boolean NOT NULL DEFAULT true,   -- false: seen in telemetry, not in the registry
    first_seen        timestamptz,
    UNIQUE (manufacturer, serial)
);

-- Where a robot works over time: a leased robot that moves keeps its history.
CREATE TABLE assignments (
    robot_id   bigint NOT NULL REFERENCES robots (robot_id),
    factory_id text NOT NULL REFERENCES factories (factory_id),
    valid_from date NOT NULL,
    PRIMARY KEY (robot_id, valid_from)
);

CREATE TABLE targets (
    scope_region   text NOT NULL,          -- GB/T 2260 code, or CN for national
    scope_industry text NOT NULL,          -- manufacturing, key_manufacturing, or a GB/T 4754 code
    metric         text NOT NULL,
    value          double precision NOT NULL,
    unit           text NOT NULL,
    due_date       date NOT NULL,
    source         text NOT NULL,
    PRIMARY KEY (scope_region, scope_industry, metric, due_date)
);
