-- driftwarden schema, version 1.
-- Applied by src/store/migrate.rs; the version is recorded in PRAGMA user_version.

-- Settings that must survive restarts (the identity salt).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;

-- Names of the sources records came from (`tail:/path`, `http:events`,
-- `db:newapi:...`), stored once and referenced by id from every row.
CREATE TABLE sources (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);

-- Raw usage events, kept for the retention period. (ts_ms, id) is the idempotency
-- key: a resent record carries the same time and id. Keyed by time first, so
-- ingest appends, retention deletes a range and time-range reads are one scan.
CREATE TABLE events (
    ts_ms             INTEGER NOT NULL,
    id                TEXT NOT NULL,
    model             TEXT NOT NULL,
    resolved_model    TEXT,
    provider          TEXT,
    route             TEXT,
    tenant            TEXT,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cached_tokens     INTEGER NOT NULL,
    cost_usd          REAL,
    cost_source       TEXT NOT NULL,
    list_cost_usd     REAL,
    latency_ms        INTEGER,
    ttft_ms           INTEGER,
    status            INTEGER,
    finish_reason     TEXT,
    error_type        TEXT,
    source_id         INTEGER NOT NULL REFERENCES sources (id),
    received_ms       INTEGER NOT NULL,
    PRIMARY KEY (ts_ms, id)
) WITHOUT ROWID;

-- Per-minute aggregates per scope, updated in the same transaction as the events.
-- dim is 'global' (value ''), 'model', 'route', 'tenant' or 'provider'.
CREATE TABLE agg_minute (
    minute            INTEGER NOT NULL,  -- epoch minutes
    dim               TEXT NOT NULL,
    value             TEXT NOT NULL,
    requests          INTEGER NOT NULL,
    errors            INTEGER NOT NULL,
    truncated         INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cached_tokens     INTEGER NOT NULL,
    cost_usd          REAL NOT NULL,
    costed_requests   INTEGER NOT NULL,  -- requests whose cost is known
    list_cost_usd     REAL NOT NULL,
    latency_ms_sum    INTEGER NOT NULL,
    latency_count     INTEGER NOT NULL,
    PRIMARY KEY (minute, dim, value)
) WITHOUT ROWID;

-- Eval scores. `key` is the idempotency key (subject, evaluator, time).
CREATE TABLE eval_scores (
    key         TEXT PRIMARY KEY,
    request_id  TEXT,
    route       TEXT,
    model       TEXT,
    evaluator   TEXT NOT NULL,
    ts_ms       INTEGER NOT NULL,
    score       REAL,
    passed      INTEGER,
    source_id   INTEGER NOT NULL REFERENCES sources (id),
    received_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX eval_scores_ts ON eval_scores (ts_ms);

-- Records that could not become events, with the reason. `raw` is bounded and redacted.
CREATE TABLE dead_letters (
    id          INTEGER PRIMARY KEY,
    received_ms INTEGER NOT NULL,
    source      TEXT NOT NULL,
    position    TEXT NOT NULL,
    reason      TEXT NOT NULL,
    raw         TEXT NOT NULL
);
CREATE INDEX dead_letters_received ON dead_letters (received_ms);

-- How far each tailed path has been read; committed with the events it covers.
CREATE TABLE tail_checkpoints (
    path        TEXT PRIMARY KEY,
    dev         INTEGER NOT NULL,
    inode       INTEGER NOT NULL,
    head_len    INTEGER NOT NULL,
    head_hash   INTEGER NOT NULL,
    byte_offset INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL
) WITHOUT ROWID;
