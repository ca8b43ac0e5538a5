-- Failover and incident records (issue 5): what failed, when it began, when RunnerHub
-- noticed, what was done, when service was back. One row per incident, whichever node
-- saw it: `key` names it (component and when it began) so a second observer only fills in.

CREATE TABLE incidents (
    id           bigserial   PRIMARY KEY,
    key          text        NOT NULL UNIQUE,
    component    text        NOT NULL,   -- leader, postgres, etcd, redis, github, node:<id>, breaker:<name>
    kind         text        NOT NULL,   -- failover, outage, leader_change, node_lost, breaker_open
    summary      text        NOT NULL,
    node         text        NOT NULL,   -- the node that recorded it
    started_at   timestamptz,            -- last known good (the fault began after it)
    detected_at  timestamptz NOT NULL,
    recovered_at timestamptz,            -- service back (NULL: still open)
    action       text,
    detail       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    detection_s  double precision GENERATED ALWAYS AS
                     (extract(epoch FROM detected_at - started_at)) STORED,
    recovery_s   double precision GENERATED ALWAYS AS
                     (extract(epoch FROM recovered_at - coalesce(started_at, detected_at))) STORED
);
CREATE INDEX incidents_open_idx ON incidents (component) WHERE recovered_at IS NULL;
CREATE INDEX incidents_detected_idx ON incidents (detected_at DESC);
