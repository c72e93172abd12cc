-- driftwarden schema on PostgreSQL, version 2: cursors of gateway database sources,
-- committed in the same transaction as the events they cover.
CREATE TABLE db_cursors (
    source     TEXT PRIMARY KEY,
    last_id    BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
