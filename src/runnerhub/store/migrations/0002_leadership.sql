-- Orchestrator redundancy: the leader's epoch (fencing token) and the nodes of the cluster.

-- One row: the newest leader's epoch. It only ever moves up. Every control-loop write checks
-- it (FOR SHARE) in its own transaction, so once a new leader has recorded its epoch
-- (FOR UPDATE waits for those checks to finish) no write of an older leader can commit.
CREATE TABLE leadership (
    id     smallint    PRIMARY KEY CHECK (id = 1),
    epoch  bigint      NOT NULL,
    node   text        NOT NULL,
    since  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE nodes (
    id         text        PRIMARY KEY,
    url        text,
    pid        integer,
    role       text        NOT NULL DEFAULT 'follower',
    started_at timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz NOT NULL DEFAULT now(),
    draining   boolean     NOT NULL DEFAULT false
);
