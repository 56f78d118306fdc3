-- Telemetry as it arrives: one row per wire-contract event, keyed for idempotency.
CREATE TABLE agents (
    agent_id      text PRIMARY KEY,
    factory_id    text NOT NULL,
    first_seen    timestamptz NOT NULL DEFAULT now(),
    last_seen     timestamptz NOT NULL DEFAULT now(),
    acked_through bigint NOT NULL DEFAULT 0
);

CREATE TABLE events (
    agent_id     text NOT NULL,
    seq          bigint NOT NULL,
    robot_id     bigint NOT NULL REFERENCES robots (robot_id),
    factory_id   text NOT NULL,
    ts           timestamptz NOT NULL,
    type         text NOT NULL CHECK (type IN ('state', 'counter', 'alarm')),
    state        text CHECK (state IN ('EXECUTING', 'IDLE', 'FAULT', 'OUT_OF_SERVICE', 'OFFLINE')),
    counter      text,
    value        double precision,
    alarm_code   text,
    alarm_text   text,
    alarm_active boolean,
    quality      text NOT NULL DEFAULT 'good',
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, seq)
);
CREATE INDEX events_robot_ts ON events (robot_id, ts) WHERE type = 'state';

-- A repeated (agent, seq) whose content differs from what is stored: kept, never overwritten.
CREATE TABLE event_conflicts (
    agent_id    text NOT NULL,
    seq         bigint NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    payload     jsonb NOT NULL
);

CREATE TABLE dead_letters (
    id          bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    topic       text NOT NULL,
    agent_id    text,
    seq         bigint,
    reason      text NOT NULL,
    field       text,
    payload     bytea NOT NULL
);
CREATE INDEX dead_letters_agent_seq ON dead_letters (agent_id, seq) WHERE seq IS NOT NULL;
