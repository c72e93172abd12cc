-- driftwarden schema on PostgreSQL, version 9: alert transitions waiting in a
-- notification group, per channel.
CREATE TABLE notify_pending (
    transition_id BIGINT NOT NULL REFERENCES alert_transitions (id),
    channel       TEXT NOT NULL,
    tier          TEXT NOT NULL,
    PRIMARY KEY (transition_id, channel)
);
