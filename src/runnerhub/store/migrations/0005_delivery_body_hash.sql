-- A delivery's body hash (SHA-256 of the signed bytes). The delivery GUID and the event
-- header are not signed: one captured body could be stored again and again under new GUIDs.
-- GitHub's own redeliveries keep their GUID, and no two real deliveries share a body, so a
-- body seen before is a duplicate whatever its GUID. Rows from before this have none.
ALTER TABLE webhook_deliveries ADD COLUMN body_sha256 bytea;
CREATE UNIQUE INDEX webhook_deliveries_body_idx ON webhook_deliveries (body_sha256)
    WHERE body_sha256 IS NOT NULL;
