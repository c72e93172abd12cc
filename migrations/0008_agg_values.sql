-- driftwarden schema, version 8: the values each aggregated dimension keeps its own
-- rows for. Past the cardinality cap, new values are counted under '_other', so a
-- dimension with thousands of values (tenants) cannot grow agg_minute without bound.
CREATE TABLE agg_values (
    dim   TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (dim, value)
) WITHOUT ROWID;
INSERT INTO agg_values (dim, value) SELECT DISTINCT dim, value FROM agg_minute WHERE dim != 'global';
