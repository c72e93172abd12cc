//! New API's `logs` table as GORM creates it in SQLite (model/log.go), shared by the
//! gateway-database tests and the backfill benchmark.

/// The `CREATE` statements for the table and its index.
pub const NEWAPI_SCHEMA: &str = r#"
CREATE TABLE logs (
    id integer PRIMARY KEY AUTOINCREMENT,
    user_id integer, created_at integer, type integer, content text,
    username text DEFAULT '', token_name text DEFAULT '', model_name text DEFAULT '',
    quota integer DEFAULT 0, prompt_tokens integer DEFAULT 0, completion_tokens integer DEFAULT 0,
    use_time integer DEFAULT 0, is_stream numeric, channel_id integer, token_id integer DEFAULT 0,
    "group" text, ip text, other text
);
CREATE INDEX idx_created_at_type ON logs (created_at, type);
"#;
