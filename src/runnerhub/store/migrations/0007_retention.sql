-- Retention (store/retention.py): deliveries and events older than a configured age are
-- deleted by the leader, in batches. The events table stays append-only for everything
-- else: a DELETE passes its trigger only for rows older than the cutoff that the deleting
-- transaction has declared (set_config('runnerhub.retention_cutoff', ..., true)).
CREATE OR REPLACE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    cutoff text := current_setting('runnerhub.retention_cutoff', true);
BEGIN
    IF TG_OP = 'DELETE' AND coalesce(cutoff, '') <> '' AND OLD.at < cutoff::timestamptz THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'the events table is append-only';
END $$;
CREATE INDEX events_at_idx ON events (at);
