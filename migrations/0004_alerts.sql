-- driftwarden schema, version 4: alerts and their transitions, change-impact reports.

-- One row per alert episode of a rule on a scope: pending → firing → resolved.
-- Suppressed alerts are stored too, with the exception that suppressed them.
CREATE TABLE alerts (
    id            INTEGER PRIMARY KEY,
    rule          TEXT NOT NULL,
    scope         TEXT NOT NULL,          -- canonical JSON object
    lane          TEXT NOT NULL,
    kind          TEXT NOT NULL,
    state         TEXT NOT NULL,          -- pending | firing | resolved
    tier          TEXT,
    tier_rank     INTEGER,
    started_ms    INTEGER NOT NULL,       -- data time the condition was first seen
    fired_ms      INTEGER,
    resolved_ms   INTEGER,
    summary       TEXT NOT NULL,
    evidence      TEXT NOT NULL,          -- JSON
    suppressed_by INTEGER                 -- exception id, when an exception matched
);
CREATE INDEX alerts_state ON alerts (state, started_ms);
CREATE INDEX alerts_rule_scope ON alerts (rule, scope);

-- Every transition, as the alert line that announced it.
CREATE TABLE alert_transitions (
    id            INTEGER PRIMARY KEY,
    alert_id      INTEGER NOT NULL REFERENCES alerts (id),
    at_ms         INTEGER NOT NULL,
    state         TEXT NOT NULL,
    suppressed_by INTEGER,
    line          TEXT NOT NULL           -- the alert line JSON
);
CREATE INDEX alert_transitions_alert ON alert_transitions (alert_id);

-- The before/after report of a change event, once its warm-up is over.
ALTER TABLE change_events ADD COLUMN impact TEXT;
