-- driftwarden schema: compact raw events. The strings an event shares with thousands
-- of others (model, provider, route, finish reason, status, ...) are stored once in
-- event_labels, tenants once in event_tenants, and each row of event_rows holds their
-- ids: rows are mostly small integers, half the bytes of the 0001 rows, with one text
-- value to bind instead of eight. The `events` view puts every field back under its
-- 0001 name and type, so readers are unchanged.

-- One row per distinct combination of an event's low-cardinality fields. The writer
-- keeps them in memory and assigns ids; NULL means absent, as in 0001.
CREATE TABLE event_labels (
    id             INTEGER PRIMARY KEY,
    model          TEXT NOT NULL,
    resolved_model TEXT,
    provider       TEXT,
    route          TEXT,
    status         INTEGER,
    finish_reason  TEXT,
    error_type     TEXT,
    cost_source    TEXT NOT NULL,
    source_id      INTEGER NOT NULL REFERENCES sources (id)
);

-- Tenant labels, which can be many (one per user or key), each stored once.
CREATE TABLE event_tenants (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);

-- Raw usage events, kept for the retention period; (ts_ms, id) is the idempotency key,
-- time first so ingest appends and retention deletes a range (as in 0001). labels_id
-- and tenant_id are declared without REFERENCES: the writer takes them from the rows
-- it inserted, and a foreign key would cost two extra B-tree lookups per event.
CREATE TABLE event_rows (
    ts_ms             INTEGER NOT NULL,
    id                TEXT NOT NULL,
    labels_id         INTEGER NOT NULL, -- event_labels (id)
    tenant_id         INTEGER,          -- event_tenants (id); NULL: no tenant
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cached_tokens     INTEGER NOT NULL,
    cost_usd          REAL,
    list_cost_usd     REAL,
    latency_ms        INTEGER,
    ttft_ms           INTEGER,
    received_ms       INTEGER NOT NULL,
    PRIMARY KEY (ts_ms, id)
) WITHOUT ROWID;

-- Move the 0001 rows over.
INSERT INTO event_labels (model, resolved_model, provider, route, status, finish_reason,
                          error_type, cost_source, source_id)
SELECT DISTINCT model, resolved_model, provider, route, status, finish_reason, error_type,
       cost_source, source_id
FROM events;
INSERT INTO event_tenants (name) SELECT DISTINCT tenant FROM events WHERE tenant IS NOT NULL;
-- Only for the copy below, which matches every old row to its labels (IS: NULL = NULL).
CREATE INDEX event_labels_copy ON event_labels (model, resolved_model, provider, route,
    status, finish_reason, error_type, cost_source, source_id);
INSERT INTO event_rows (ts_ms, id, labels_id, tenant_id, prompt_tokens, completion_tokens,
                        cached_tokens, cost_usd, list_cost_usd, latency_ms, ttft_ms, received_ms)
SELECT e.ts_ms, e.id, l.id, t.id, e.prompt_tokens, e.completion_tokens, e.cached_tokens,
       e.cost_usd, e.list_cost_usd, e.latency_ms, e.ttft_ms, e.received_ms
FROM events e
JOIN event_labels l
  ON l.model = e.model AND l.resolved_model IS e.resolved_model AND l.provider IS e.provider
 AND l.route IS e.route AND l.status IS e.status AND l.finish_reason IS e.finish_reason
 AND l.error_type IS e.error_type AND l.cost_source = e.cost_source AND l.source_id = e.source_id
LEFT JOIN event_tenants t ON t.name = e.tenant;
DROP INDEX event_labels_copy;
DROP TABLE events;

-- Every 0001 column, in the 0001 order. LEFT JOINs on primary keys: a query that does
-- not read a label (COUNT(*), a time range) never touches the label tables.
CREATE VIEW events AS
SELECT e.ts_ms, e.id, l.model, l.resolved_model, l.provider, l.route, t.name AS tenant,
       e.prompt_tokens, e.completion_tokens, e.cached_tokens, e.cost_usd, l.cost_source,
       e.list_cost_usd, e.latency_ms, e.ttft_ms, l.status, l.finish_reason, l.error_type,
       l.source_id, e.received_ms
FROM event_rows e
LEFT JOIN event_labels l ON l.id = e.labels_id
LEFT JOIN event_tenants t ON t.id = e.tenant_id;
