-- An operator's "back up now" (`runnerhub backups run`, POST /api/v1/backups/run), asked of
-- any node: the leader's backup loop runs the oldest unfinished request before anything
-- the schedule calls for, and records the result here too. A request a deposed leader had
-- begun is run again by the next one (finished_at still NULL).
CREATE TABLE backup_requests (
    id bigserial PRIMARY KEY,
    repo integer NOT NULL,
    what text NOT NULL CHECK (what IN ('full', 'diff', 'incr', 'verify', 'restore_test')),
    requested_by text NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz,
    ok boolean,
    error text,
    node text
);
CREATE INDEX backup_requests_unfinished_idx ON backup_requests (id) WHERE finished_at IS NULL;
