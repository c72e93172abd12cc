-- driftwarden schema, version 3: change events (deploys, model bumps, config changes).
-- Each starts a new baseline epoch for the series in its scope. A deploy hook that
-- retries posts the same event again: the UNIQUE key makes that a no-op.
CREATE TABLE change_events (
    id          INTEGER PRIMARY KEY,
    ts_ms       INTEGER NOT NULL,
    kind        TEXT NOT NULL,          -- deploy | model_bump | config_change
    scope       TEXT NOT NULL,          -- canonical JSON object, {} for everything
    note        TEXT NOT NULL,
    origin      TEXT NOT NULL,          -- api | detected
    received_ms INTEGER NOT NULL,
    UNIQUE (kind, ts_ms, scope, note)
);
CREATE INDEX change_events_ts ON change_events (ts_ms);
