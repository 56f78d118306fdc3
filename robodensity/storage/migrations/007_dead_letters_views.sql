-- Dead letters counted per reason, and the registry views dashboards read (roles that see
-- views only cannot read the tables behind them).
-- The reason is the contract field that broke, with event indexes folded: events[3].ts and
-- events[17].ts are one reason, events[].ts.
CREATE VIEW v_dead_letters_by_reason AS
SELECT regexp_replace(coalesce(field, 'message'), '\[[0-9]+\]', '[]', 'g') AS reason,
       count(*) AS dead_letters,
       count(DISTINCT agent_id) AS agents,
       min(received_at) AS first_at,
       max(received_at) AS last_at,
       (array_agg(dead_letters.reason ORDER BY received_at DESC, id DESC))[1] AS latest_example
FROM dead_letters
GROUP BY 1;

CREATE VIEW v_regions AS SELECT code, name, name_en, parent_code, level FROM regions;
CREATE VIEW v_industries AS SELECT code, name, name_en, key_manufacturing FROM industries;
CREATE VIEW v_factories AS SELECT factory_id, name, region_code, industry_code FROM factories;
CREATE VIEW v_targets AS SELECT * FROM targets;
