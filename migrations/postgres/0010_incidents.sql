-- driftwarden schema on PostgreSQL, version 10: each alert's incident and reopen count.
ALTER TABLE alerts ADD COLUMN incident_id BIGINT;
ALTER TABLE alerts ADD COLUMN reopens BIGINT NOT NULL DEFAULT 0;
