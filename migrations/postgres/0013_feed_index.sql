-- driftwarden schema on PostgreSQL, version 13: the leader's feed. Every replica
-- commits events, evals and change events; the leader reads back what any replica
-- committed in the order it was received (store::pg::feed). event_rows gets a BRIN
-- index: received_ms grows with insertion order, so the index stays a few pages per
-- partition and costs ingest next to nothing, where a B-tree would add one insert per
-- row. The two small tables get B-trees.
CREATE INDEX event_rows_received ON event_rows USING brin (received_ms);
CREATE INDEX eval_scores_received ON eval_scores (received_ms);
CREATE INDEX change_events_received ON change_events (received_ms);
