-- driftwarden schema, version 5: the exception registry and its audit log.
-- An exception suppresses notification (never recording) of a rule's alerts in a
-- scope until it expires; renewals are limited. Every change is audited; hits are
-- counters only (hits, last_hit_ms), since one suppressed alert is one alert row.
CREATE TABLE exceptions (
    id          INTEGER PRIMARY KEY,
    rule        TEXT NOT NULL,
    scope       TEXT NOT NULL,          -- canonical JSON object; a value "*" matches any value
    reason      TEXT NOT NULL,
    owner       TEXT NOT NULL,
    ticket      TEXT,
    created_ms  INTEGER NOT NULL,
    expires_ms  INTEGER NOT NULL,
    renewals    INTEGER NOT NULL DEFAULT 0,
    hits        INTEGER NOT NULL DEFAULT 0,
    last_hit_ms INTEGER,
    revoked_ms  INTEGER,
    expired_ms  INTEGER                 -- set by the sweep that audited the expiry, cleared by a renewal
);
CREATE INDEX exceptions_rule ON exceptions (rule, expires_ms);

CREATE TABLE exception_audit (
    id           INTEGER PRIMARY KEY,
    exception_id INTEGER NOT NULL REFERENCES exceptions (id),
    at_ms        INTEGER NOT NULL,
    action       TEXT NOT NULL CHECK (action IN ('created', 'renewed', 'revoked', 'expired')),
    actor        TEXT NOT NULL,
    details      TEXT NOT NULL          -- JSON object: what changed
);
CREATE INDEX exception_audit_exception ON exception_audit (exception_id, id);
