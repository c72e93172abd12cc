-- driftwarden schema, version 11: the analysis snapshot. One row (id 1): the engine's
-- state encoded by `engine::snapshot` (its own header carries the format version, which
-- is repeated here so a start can refuse or rebuild without decoding), the data time it
-- covers, when it was written and how long encoding it took.
CREATE TABLE analysis_snapshot (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    format_version INTEGER NOT NULL,
    watermark_ms INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    encode_ms INTEGER NOT NULL,
    size INTEGER NOT NULL,
    bytes BLOB NOT NULL
);

-- The data time up to which the alert decisions are stored: written with every step
-- that judged a bucket. Snapshots are written at most every few seconds, so a start
-- re-judges the buckets between the snapshot and this point silently (their
-- decisions are stored) before it judges anything anew.
CREATE TABLE analysis_decided (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    watermark_ms INTEGER NOT NULL
);
