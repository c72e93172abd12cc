-- driftwarden schema on PostgreSQL, version 11: the analysis snapshot (one row) and
-- the data time up to which alert decisions are stored (one row).
CREATE TABLE analysis_snapshot (
    id             BIGINT PRIMARY KEY CHECK (id = 1),
    format_version BIGINT NOT NULL,
    watermark_ms   BIGINT NOT NULL,
    created_ms     BIGINT NOT NULL,
    encode_ms      BIGINT NOT NULL,
    size           BIGINT NOT NULL,
    bytes          BYTEA NOT NULL
);

CREATE TABLE analysis_decided (
    id           BIGINT PRIMARY KEY CHECK (id = 1),
    watermark_ms BIGINT NOT NULL
);
