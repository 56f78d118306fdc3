-- The metrics job follows the collector (`robodensity metrics compute --follow`,
-- robodensity/app/metrics_follow.py): it recomputes only the blocks of robots whose state events
-- changed since its last run. The collector's flush already records which robots got state
-- events from when (state_marks, 012), but its interval stage deletes those marks; the job keeps
-- its own copy, appended by a statement trigger in the flush's transaction, and deletes exactly
-- the marks it has taken in the transaction that stores the recomputed blocks.
CREATE TABLE metric_marks (
    id       bigserial PRIMARY KEY,
    robot_id bigint NOT NULL,
    lo       timestamptz NOT NULL   -- the robot's earliest new state event
);

CREATE FUNCTION copy_state_marks() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO metric_marks (robot_id, lo) SELECT robot_id, min(lo) FROM new_marks GROUP BY robot_id;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION copy_state_marks() FROM PUBLIC;

CREATE TRIGGER state_marks_to_metric_marks AFTER INSERT ON state_marks
REFERENCING NEW TABLE AS new_marks FOR EACH STATEMENT EXECUTE FUNCTION copy_state_marks();

-- Where the following job has brought the blocks: every robot's blocks are current up to
-- done_until, except for robots with marks (their new events are recomputed on the next run).
CREATE TABLE metric_job_state (
    only_row   boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    done_until timestamptz NOT NULL
);
