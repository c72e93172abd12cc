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
