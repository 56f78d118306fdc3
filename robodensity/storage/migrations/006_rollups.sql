-- Seconds per state per robot in 15-minute buckets and China Standard Time days, from
-- state_intervals. Tables refreshed by refresh_rollups(start, end) (collector.rollups.refresh,
-- called by the metrics job) in both storage modes: a TimescaleDB continuous aggregate cannot
-- split an interval across buckets or bound an open one (that needs generate_series/lead,
-- which continuous aggregates do not allow), so it would count the wrong seconds.
-- Only covered time is counted: before a robot's first state event nothing is known.
CREATE TABLE rollup_15m (
    robot_id         bigint NOT NULL,
    bucket           timestamptz NOT NULL,
    factory_id       text,
    executing_s      double precision NOT NULL DEFAULT 0,
    idle_s           double precision NOT NULL DEFAULT 0,
    fault_s          double precision NOT NULL DEFAULT 0,
    out_of_service_s double precision NOT NULL DEFAULT 0,
    offline_s        double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (robot_id, bucket)
);
CREATE INDEX rollup_15m_bucket ON rollup_15m (bucket);

CREATE TABLE rollup_daily (
    robot_id         bigint NOT NULL,
    day              date NOT NULL,
    factory_id       text,
    executing_s      double precision NOT NULL DEFAULT 0,
    idle_s           double precision NOT NULL DEFAULT 0,
    fault_s          double precision NOT NULL DEFAULT 0,
    out_of_service_s double precision NOT NULL DEFAULT 0,
    offline_s        double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (robot_id, day)
);
CREATE INDEX rollup_daily_day ON rollup_daily (day);

-- Recompute the rollups of every whole local day that [p_start, p_end) touches; an open
-- interval counts until p_as_of. Returns the 15-minute rows written.
CREATE FUNCTION refresh_rollups(p_start timestamptz, p_end timestamptz, p_as_of timestamptz DEFAULT now())
RETURNS integer LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    tz constant text := 'Asia/Shanghai';
    s timestamptz := date_trunc('day', p_start AT TIME ZONE tz) AT TIME ZONE tz;
    e timestamptz := (date_trunc('day', (p_end AT TIME ZONE tz) - interval '1 microsecond') + interval '1 day')
                     AT TIME ZONE tz;
    n integer;
BEGIN
    IF p_end <= p_start THEN
        RETURN 0;
    END IF;
    DELETE FROM rollup_15m WHERE bucket >= s AND bucket < e;
    INSERT INTO rollup_15m (robot_id, bucket, factory_id, executing_s, idle_s, fault_s, out_of_service_s,
                            offline_s)
    SELECT i.robot_id, b.bucket, (array_agg(i.factory_id ORDER BY i.lo DESC))[1],
           coalesce(sum(x.secs) FILTER (WHERE i.state = 'EXECUTING'), 0),
           coalesce(sum(x.secs) FILTER (WHERE i.state = 'IDLE'), 0),
           coalesce(sum(x.secs) FILTER (WHERE i.state = 'FAULT'), 0),
           coalesce(sum(x.secs) FILTER (WHERE i.state = 'OUT_OF_SERVICE'), 0),
           coalesce(sum(x.secs) FILTER (WHERE i.state = 'OFFLINE'), 0)
    FROM (
        SELECT robot_id, state, factory_id, greatest(start_ts, s) AS lo,
               least(coalesce(end_ts, p_as_of), e) AS hi
        FROM state_intervals
        WHERE start_ts < e AND (end_ts IS NULL OR end_ts > s)
    ) i
    CROSS JOIN LATERAL generate_series(date_bin('15 minutes', i.lo, timestamptz '2000-01-01 00:00+00'),
                                       i.hi - interval '1 microsecond', interval '15 minutes') AS b(bucket)
    CROSS JOIN LATERAL (SELECT extract(epoch FROM least(i.hi, b.bucket + interval '15 minutes')
                                                - greatest(i.lo, b.bucket))::double precision AS secs) x
    WHERE i.hi > i.lo
    GROUP BY i.robot_id, b.bucket;
    GET DIAGNOSTICS n = ROW_COUNT;
    DELETE FROM rollup_daily WHERE day >= (s AT TIME ZONE tz)::date AND day < (e AT TIME ZONE tz)::date;
    INSERT INTO rollup_daily (robot_id, day, factory_id, executing_s, idle_s, fault_s, out_of_service_s,
                              offline_s)
    SELECT robot_id, (bucket AT TIME ZONE tz)::date, (array_agg(factory_id ORDER BY bucket DESC))[1],
           sum(executing_s), sum(idle_s), sum(fault_s), sum(out_of_service_s), sum(offline_s)
    FROM rollup_15m WHERE bucket >= s AND bucket < e
    GROUP BY 1, 2;
    RETURN n;
END
$$;

CREATE VIEW v_state_intervals AS
SELECT i.robot_id, i.start_ts, i.end_ts, i.state, i.factory_id, f.region_code, f.industry_code,
       ro.manufacturer, ro.serial,
       extract(epoch FROM coalesce(i.end_ts, now()) - i.start_ts)::double precision AS duration_s
FROM state_intervals i
JOIN robots ro USING (robot_id)
LEFT JOIN factories f USING (factory_id);

CREATE VIEW v_robot_state_15m AS
SELECT r.*, f.region_code, f.industry_code,
       r.executing_s / NULLIF(r.executing_s + r.idle_s + r.fault_s + r.out_of_service_s + r.offline_s, 0)
           AS utilisation
FROM rollup_15m r
LEFT JOIN factories f USING (factory_id);

CREATE VIEW v_robot_state_daily AS
SELECT r.*, ro.manufacturer, ro.serial, ro.model, f.region_code, f.industry_code,
       r.executing_s / NULLIF(r.executing_s + r.idle_s + r.fault_s + r.out_of_service_s + r.offline_s, 0)
           AS utilisation
FROM rollup_daily r
JOIN robots ro USING (robot_id)
LEFT JOIN factories f USING (factory_id);
