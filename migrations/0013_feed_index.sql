-- driftwarden schema, version 13 (numbered as PostgreSQL's version 13). PostgreSQL's
-- leader reads back by received_ms what other replicas committed; a single SQLite
-- node feeds its analysis from its own writer and needs no index on event_rows. The
-- two small tables get theirs, so both backends answer "received since" alike.
CREATE INDEX eval_scores_received ON eval_scores (received_ms);
CREATE INDEX change_events_received ON change_events (received_ms);
