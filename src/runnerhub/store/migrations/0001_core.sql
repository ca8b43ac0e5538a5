-- Core control plane: deliveries, jobs, runners and the audit log.

CREATE TABLE webhook_deliveries (
    id            bigserial PRIMARY KEY,
    delivery_guid text        NOT NULL UNIQUE,
    event         text        NOT NULL,
    action        text,
    hook_id       bigint,
    received_at   timestamptz NOT NULL DEFAULT now(),
    received_by   text        NOT NULL,
    payload       jsonb,
    outcome       text        NOT NULL,
    detail        text,
    job_id        bigint
);
CREATE INDEX webhook_deliveries_received_idx ON webhook_deliveries (received_at);
CREATE INDEX webhook_deliveries_job_idx ON webhook_deliveries (job_id) WHERE job_id IS NOT NULL;

CREATE TABLE jobs (
    id                bigint      PRIMARY KEY,          -- GitHub's job id
    run_id            bigint      NOT NULL,
    run_attempt       integer     NOT NULL DEFAULT 1,
    repository        text        NOT NULL,
    name              text,
    workflow_name     text,
    labels            text[]      NOT NULL,
    state             text        NOT NULL
        CHECK (state IN ('waiting', 'queued', 'in_progress', 'completed')),
    conclusion        text,
    pool              text,
    hosted            boolean     NOT NULL DEFAULT false,
    runner_name       text,
    runner_id         bigint,
    waiting_reason    text,
    github_created_at timestamptz,
    started_at        timestamptz,
    completed_at      timestamptz,
    first_seen_at     timestamptz NOT NULL DEFAULT now(),
    queued_at         timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    last_source       text        NOT NULL
);
CREATE INDEX jobs_open_idx ON jobs (state, pool) WHERE state <> 'completed';
CREATE INDEX jobs_repository_idx ON jobs (repository, id);

CREATE TABLE runners (
    id               bigserial   PRIMARY KEY,
    name             text        NOT NULL UNIQUE,
    pool             text        NOT NULL,
    scope            text        NOT NULL,              -- 'repo:owner/name' or 'org:owner'
    labels           text[]      NOT NULL,
    provisioned_for  bigint,                            -- the job the name was made for
    generation       integer     NOT NULL DEFAULT 0,
    job_id           bigint,                            -- the job it serves now
    state            text        NOT NULL
        CHECK (state IN ('requested', 'registered', 'running', 'busy', 'exited', 'removed')),
    backend          text        NOT NULL,
    backend_ref      text,
    github_runner_id bigint,
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    registered_at    timestamptz,
    started_at       timestamptz,
    busy_at          timestamptz,
    exited_at        timestamptz,
    removed_at       timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX runners_live_idx ON runners (pool, state) WHERE state NOT IN ('exited', 'removed');
CREATE INDEX runners_job_idx ON runners (job_id) WHERE job_id IS NOT NULL;
CREATE INDEX runners_provisioned_for_idx ON runners (provisioned_for);
CREATE SEQUENCE runner_spare_serial;

-- Append-only: what happened, by whom, when. Nothing updates or deletes a row.
CREATE TABLE events (
    id      bigserial   PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    node    text        NOT NULL,
    kind    text        NOT NULL,
    subject text,
    detail  jsonb       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX events_subject_idx ON events (subject, id);

CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the events table is append-only';
END $$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only();
