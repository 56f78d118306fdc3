-- Shift calendars (issue 15 item 4, storage/shifts.py, docs/clocks-and-shifts.md): optional
-- registry files. A factory without shifts (nor maintenance) is planned 24/7.
-- Times are local (the deployment's time zone): minutes after midnight, local timestamps.
CREATE TABLE factory_shifts (
    factory_id text NOT NULL REFERENCES factories (factory_id),
    valid_from date NOT NULL,           -- this calendar version holds from this day on
    days       text NOT NULL CHECK (days ~ '^1?2?3?4?5?6?7?$' AND days <> ''),   -- ISO weekdays, 1 Monday
    start_min  smallint NOT NULL CHECK (start_min BETWEEN 0 AND 1440),
    end_min    smallint NOT NULL CHECK (end_min BETWEEN 0 AND 1440),  -- <= start_min: the next day
    PRIMARY KEY (factory_id, valid_from, days, start_min)
);

CREATE TABLE factory_holidays (
    factory_id text NOT NULL,           -- a factory, or '*': every factory with a calendar
    day        date NOT NULL,
    name       text NOT NULL DEFAULT '',
    PRIMARY KEY (factory_id, day)
);

CREATE TABLE factory_maintenance (
    factory_id text NOT NULL REFERENCES factories (factory_id),
    start_at   timestamp NOT NULL,      -- local time
    hours      double precision NOT NULL CHECK (hours > 0),
    note       text NOT NULL DEFAULT '',
    PRIMARY KEY (factory_id, start_at)
);

-- Which plan each factory's figures use: 'planned: shift calendar' or 'planned: 24/7'.
CREATE VIEW v_factory_plan AS
SELECT f.factory_id,
       CASE WHEN EXISTS (SELECT 1 FROM factory_shifts s WHERE s.factory_id = f.factory_id)
              OR EXISTS (SELECT 1 FROM factory_maintenance m WHERE m.factory_id = f.factory_id)
            THEN 'planned: shift calendar' ELSE 'planned: 24/7' END AS plan
FROM factories f;
