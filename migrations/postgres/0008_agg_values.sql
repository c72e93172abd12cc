-- driftwarden schema on PostgreSQL, version 8: the values admitted per aggregate
-- dimension under the cardinality cap, so a restart admits no others.
CREATE TABLE agg_values (
    dim   TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (dim, value)
);
