-- driftwarden schema, version 2: cursors of gateway database sources.
-- Each cursor is the highest `id` of the gateway's logs table whose row is stored,
-- committed in the same transaction as the events it covers.
CREATE TABLE db_cursors (
    source     TEXT PRIMARY KEY,
    last_id    INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
) WITHOUT ROWID;
