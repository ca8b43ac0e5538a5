-- The dashboard's charts and drill record (issue 15).
--
-- Replication lag per minute: the most any replica was behind the primary in that minute,
-- as the nodes' replication watchers read it (each node writes a minute's row once, and
-- again only when it saw more lag). Kept two days by the retention loop.
CREATE TABLE replication_lag (
    id bigserial PRIMARY KEY,
    minute timestamptz NOT NULL,
    replica text NOT NULL,
    replay_lag_s double precision,
    replay_lag_bytes bigint NOT NULL DEFAULT 0,
    UNIQUE (minute, replica)
);

-- Disaster-recovery drills (`runnerhub dr drill`): the figures that matter at a glance,
-- and the whole report. Written into the active region's database when the drill ends.
CREATE TABLE dr_drills (
    id bigserial PRIMARY KEY,
    started_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    jobs_lost integer NOT NULL,
    ran_twice integer NOT NULL,
    rto_webhook_s double precision,
    rto_runner_s double precision,
    acknowledged_missing integer NOT NULL,
    report jsonb NOT NULL
);
