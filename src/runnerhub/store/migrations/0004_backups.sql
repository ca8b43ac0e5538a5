-- Backups and their checks (disaster recovery): what the leader backed up with pgBackRest,
-- into which repository, and what each `verify` and restore test found. One row per
-- attempt, written when it ends (a failed one too: it says why).

CREATE TABLE backups (
    id          bigserial   PRIMARY KEY,
    repo        integer     NOT NULL,   -- pgBackRest's repository index (1: this region's)
    kind        text        NOT NULL CHECK (kind IN ('full', 'diff', 'incr')),
    label       text,                   -- pgBackRest's backup label (NULL: it failed)
    ok          boolean     NOT NULL,
    error       text,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    size_bytes  bigint,                 -- the database it copied
    repo_bytes  bigint,                 -- what it takes in the repository
    wal_start   text,                   -- the WAL a restore of it needs, first and last
    wal_stop    text,
    lsn_start   text,
    lsn_stop    text,
    node        text        NOT NULL,
    epoch       bigint,                 -- the leader's, when it ran
    duration_s  double precision GENERATED ALWAYS AS
                    (extract(epoch FROM finished_at - started_at)) STORED
);
CREATE INDEX backups_repo_idx ON backups (repo, kind, finished_at DESC) WHERE ok;
CREATE INDEX backups_finished_idx ON backups (finished_at DESC);

CREATE TABLE backup_checks (
    id          bigserial   PRIMARY KEY,
    repo        integer     NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('verify', 'restore_test')),
    label       text,                   -- the backup a restore test restored
    ok          boolean     NOT NULL,
    error       text,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    detail      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    node        text        NOT NULL,
    epoch       bigint,
    duration_s  double precision GENERATED ALWAYS AS
                    (extract(epoch FROM finished_at - started_at)) STORED
);
CREATE INDEX backup_checks_repo_idx ON backup_checks (repo, kind, finished_at DESC);
