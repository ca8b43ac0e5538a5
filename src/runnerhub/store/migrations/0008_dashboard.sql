-- The dashboard (issue 15): an operator acknowledges an incident (who, when), and the
-- per-minute activity (jobs queued and started, queue wait percentiles) is read by time.
ALTER TABLE incidents
    ADD COLUMN acknowledged_at timestamptz,
    ADD COLUMN acknowledged_by text;
CREATE INDEX jobs_queued_at_idx ON jobs (queued_at) WHERE queued_at IS NOT NULL;
CREATE INDEX jobs_started_at_idx ON jobs (started_at) WHERE started_at IS NOT NULL;
