-- driftwarden schema: the notification outbox. A notification is written here before
-- any request is made, so it survives a restart; the delivery worker moves a row from
-- pending to sent (after a 2xx, never back) or to dead (after too many failures).
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    channel         TEXT NOT NULL,              -- a configured channel's name
    message         TEXT NOT NULL,              -- notify::Message as JSON
    created_ms      INTEGER NOT NULL,
    next_attempt_ms INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0, -- failed attempts so far
    state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'dead')),
    last_error      TEXT,                       -- scrubbed: never a URL or a password
    sent_ms         INTEGER
);
CREATE INDEX outbox_due ON outbox (channel, state, next_attempt_ms);
CREATE INDEX outbox_state ON outbox (state, id);
