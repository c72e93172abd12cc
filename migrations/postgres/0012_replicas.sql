-- driftwarden schema on PostgreSQL, version 12: replicas. A lease names who leads
-- ('leader': analysis, alert decisions, schedules, delivery) or who follows a gateway
-- database source ('source:<name>') until expires_ms. Every new holder gets a larger
-- token than any before it (fencing): a write made as holder checks the token in its
-- own transaction, so a holder that lost its lease while paused writes nothing. The
-- row is never deleted, so tokens never go back.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    token       BIGINT NOT NULL,
    expires_ms  BIGINT NOT NULL,
    acquired_ms BIGINT NOT NULL,
    renewed_ms  BIGINT NOT NULL
);

-- A replica delivering an outbox row claims it until claim_until_ms; another may take
-- it over only after that.
ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
ALTER TABLE outbox ADD COLUMN claim_until_ms BIGINT;
