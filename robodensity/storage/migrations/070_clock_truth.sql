-- Clock truth (issue 15 item 3, docs/clocks-and-shifts.md): the edge corrects the timestamps of a
-- controller whose clock is off and says by how much; the agent measures its own clock against
-- the collector's (from the acks) and sends the offset now and then in a batch's head.
--
-- events.clock_offset_s: [s] the correction the edge added to the source's timestamp (its
--   estimate of receive time - source time); NULL when ts is the source's own (not corrected).
-- agents.clock_offset_s / clock_offset_at: [s] the agent's last reported offset (collector -
--   agent) and when the collector received it.
ALTER TABLE events ADD COLUMN clock_offset_s double precision;
ALTER TABLE agents ADD COLUMN clock_offset_s double precision, ADD COLUMN clock_offset_at timestamptz;

-- Corrected events are few (only robots with a bad clock): a partial index finds them.
CREATE INDEX events_clock_corrected ON events (robot_id, ts) WHERE clock_offset_s IS NOT NULL;

-- Per robot: its clock corrections in a time range, for the operators' dashboard.
CREATE VIEW v_clock_corrections AS
SELECT e.robot_id, r.manufacturer, r.serial, e.factory_id, e.agent_id, e.ts, e.clock_offset_s
FROM events e
JOIN robots r ON r.robot_id = e.robot_id
WHERE e.clock_offset_s IS NOT NULL;

-- Per agent: its own clock against the collector's.
CREATE VIEW v_agent_clocks AS
SELECT a.agent_id, a.factory_id, a.clock_offset_s, a.clock_offset_at
FROM agents a;

-- The collector records the agents' offsets.
INSERT INTO role_grants (migration, statement) VALUES
    (70, 'GRANT UPDATE (clock_offset_s, clock_offset_at) ON agents TO %1$I');
