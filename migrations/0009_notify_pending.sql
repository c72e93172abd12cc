-- driftwarden schema, version 9: notifications waiting in a group. An admitted alert
-- line waits up to `group_wait` / `group_interval` for company before it becomes an
-- outbox message; this row keeps it through a crash or restart in the meantime, and
-- is deleted in the same transaction that writes its message to the outbox.
CREATE TABLE notify_pending (
    transition_id INTEGER NOT NULL REFERENCES alert_transitions (id),
    channel       TEXT NOT NULL,
    tier          TEXT NOT NULL,
    PRIMARY KEY (transition_id, channel)
) WITHOUT ROWID;
