-- driftwarden schema, version 12: replicas (the same tables as PostgreSQL's version
-- 12, so both backends share one numbering). A single SQLite node is its own leader:
-- it holds the 'leader' lease with token 1 and never loses it. See
-- migrations/postgres/0012_replicas.sql for what the columns mean.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    token       INTEGER NOT NULL,
    expires_ms  INTEGER NOT NULL,
    acquired_ms INTEGER NOT NULL,
    renewed_ms  INTEGER NOT NULL
) WITHOUT ROWID;

ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
ALTER TABLE outbox ADD COLUMN claim_until_ms INTEGER;
