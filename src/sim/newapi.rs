//! A simulated New API gateway's database: its `logs` table, and a writer that puts
//! simulated requests in it as New API itself would (model/log.go), so that the
//! gateway-database follower can read them like a real gateway's.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{Connection, params};

use super::{Profile, SimError};
use crate::domain::UsageEvent;

/// New API's `logs` table and index as GORM creates them in SQLite (model/log.go).
/// `IF NOT EXISTS` so an existing gateway database can be opened again.
pub const NEWAPI_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS logs (
    id integer PRIMARY KEY AUTOINCREMENT,
    user_id integer, created_at integer, type integer, content text,
    username text DEFAULT '', token_name text DEFAULT '', model_name text DEFAULT '',
    quota integer DEFAULT 0, prompt_tokens integer DEFAULT 0, completion_tokens integer DEFAULT 0,
    use_time integer DEFAULT 0, is_stream numeric, channel_id integer, token_id integer DEFAULT 0,
    "group" text, ip text, other text
);
CREATE INDEX IF NOT EXISTS idx_created_at_type ON logs (created_at, type);
"#;

/// New API's default `QuotaPerUnit`: quota units per US dollar.
pub const QUOTA_PER_USD: f64 = 500_000.0;

const TYPE_CONSUME: i64 = 2;
const TYPE_ERROR: i64 = 5;

const INSERT: &str = "INSERT INTO logs (created_at, type, content, username, token_name, model_name, \
     quota, prompt_tokens, completion_tokens, use_time, is_stream, channel_id, \"group\", other) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)";

/// Writes usage events as rows of a New API `logs` table.
///
/// How a `UsageEvent` maps to a row: `created_at` is the request time in seconds;
/// `type` 2 (consume) or 5 (error, with quota and tokens 0 and the status in `other`);
/// `username` and `token_name` are the tenant; `model_name` the requested model;
/// `quota` the cost × `QUOTA_PER_USD`; `use_time` the latency in whole seconds;
/// `channel_id` the provider's channel (`channels`); `group` the route; `other` holds
/// `frt` (time to first token), `cache_tokens` and `upstream_model_name`. New API keeps
/// no finish reason, so truncation does not survive the trip.
pub struct NewApiLogWriter {
    conn: Connection,
    path: String,
    channels: BTreeMap<String, i64>,
    streaming: BTreeMap<String, bool>,
}

impl NewApiLogWriter {
    /// Opens (creating when missing) the SQLite database at `path` and its `logs`
    /// table. `profile` names the providers (channels 1, 2, .. in the order they first
    /// appear in its models) and which routes stream.
    pub fn open(path: &Path, profile: &Profile) -> Result<NewApiLogWriter, SimError> {
        let name = path.display().to_string();
        let err = |source| SimError::Sqlite {
            path: name.clone(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        // New API runs SQLite in WAL mode, so a follower reads while it writes.
        conn.pragma_update(None, "journal_mode", "wal")
            .map_err(err)?;
        conn.execute_batch(NEWAPI_SCHEMA).map_err(err)?;
        let mut channels = BTreeMap::new();
        for m in &profile.models {
            let next = channels.len() as i64 + 1;
            channels.entry(m.provider.clone()).or_insert(next);
        }
        let streaming = profile
            .routes
            .iter()
            .map(|r| (r.name.clone(), r.stream))
            .collect();
        Ok(NewApiLogWriter {
            conn,
            path: name,
            channels,
            streaming,
        })
    }

    /// Provider name to channel id: configure these as the gateway database's
    /// `channels` so the follower reports providers by name.
    pub fn channels(&self) -> &BTreeMap<String, i64> {
        &self.channels
    }

    /// Inserts `events` in one transaction (New API commits each row on its own; one
    /// transaction per batch is what makes a backfill of a million rows take seconds).
    pub fn insert(&mut self, events: &[UsageEvent]) -> Result<(), SimError> {
        let path = &self.path;
        let err = |source| SimError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut stmt = tx.prepare_cached(INSERT).map_err(err)?;
            for e in events {
                let failed = e.is_error();
                let other = if failed {
                    serde_json::json!({
                        "status_code": e.status.unwrap_or(500),
                        "error_type": e.error_type,
                    })
                } else {
                    serde_json::json!({
                        "frt": e.ttft_ms,
                        "cache_tokens": e.cached_tokens,
                        "is_model_mapped": e.resolved_model.is_some(),
                        "upstream_model_name": e.resolved_model,
                    })
                };
                let content = if failed {
                    format!("upstream status {}", e.status.unwrap_or(500))
                } else {
                    String::new()
                };
                let (kind, quota, prompt, completion) = if failed {
                    (TYPE_ERROR, 0, 0, 0)
                } else {
                    (
                        TYPE_CONSUME,
                        (e.cost_usd.unwrap_or(0.0) * QUOTA_PER_USD).round() as i64,
                        e.prompt_tokens as i64,
                        e.completion_tokens as i64,
                    )
                };
                let route = e.route.as_deref();
                stmt.execute(params![
                    e.ts_ms.div_euclid(1000),
                    kind,
                    content,
                    e.tenant.as_deref(),
                    e.tenant.as_deref(),
                    e.model.as_str(),
                    quota,
                    prompt,
                    completion,
                    (e.latency_ms.unwrap_or(0) as f64 / 1000.0).round() as i64,
                    route
                        .and_then(|r| self.streaming.get(r))
                        .copied()
                        .unwrap_or(false),
                    e.provider.as_deref().and_then(|p| self.channels.get(p)),
                    route,
                    other.to_string(),
                ])
                .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::super::generate::tests::run;
    use super::super::scenarios;
    use super::*;
    use crate::adapters::test_support::ctx;
    use crate::adapters::{Decoder, Format, Record};

    #[test]
    fn rows_round_trip_through_the_newapi_adapter() {
        let profile = Profile {
            days: 0.25,
            peak_rpm: 20.0,
            error_rate: 0.1,
            ..Profile::default()
        };
        let (events, _) = run(&scenarios::quiet(profile.clone()), 2);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("one-api.db");
        let mut writer = NewApiLogWriter::open(&path, &profile).unwrap();
        let (head, tail) = events.split_at(events.len() / 2);
        writer.insert(head).unwrap();
        drop(writer);
        // Opening an existing gateway database appends to its table.
        let mut writer = NewApiLogWriter::open(&path, &profile).unwrap();
        writer.insert(tail).unwrap();
        assert_eq!(writer.channels()["openai"], 1);
        assert_eq!(writer.channels()["anthropic"], 2);

        // The webhook's JSON shape of a row, built by SQLite from the columns.
        let conn = Connection::open(&path).unwrap();
        let mut stmt = conn
            .prepare(
                "SELECT json_object('id', id, 'created_at', created_at, 'type', type, 'username', username, \
                 'token_name', token_name, 'model_name', model_name, 'quota', quota, 'prompt_tokens', prompt_tokens, \
                 'completion_tokens', completion_tokens, 'use_time', use_time, 'is_stream', is_stream, \
                 'channel_id', channel_id, 'group', \"group\", 'other', other) FROM logs ORDER BY id",
            )
            .unwrap();
        let rows: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows.len(), events.len());
        let ctx = ctx();
        let mut decoder = Decoder::new(Format::NewApi, ctx.clone());
        let now = profile.end_ms();
        let mut failures = 0;
        for (i, (row, want)) in rows.iter().zip(&events).enumerate() {
            let Ok(Some(Record::Usage(got))) = decoder.decode(row.as_bytes(), 0, now) else {
                panic!("row {row} did not decode");
            };
            let channel = writer.channels()[want.provider.as_deref().unwrap()];
            assert_eq!(got.id, format!("newapi:{}", i + 1));
            assert_eq!(got.ts_ms, want.ts_ms / 1000 * 1000);
            assert_eq!(got.model, want.model);
            assert_eq!(
                got.provider.as_deref(),
                Some(format!("channel-{channel}").as_str())
            );
            assert_eq!(got.route, want.route);
            assert_eq!(
                got.tenant,
                Some(ctx.identity.label(want.tenant.as_deref().unwrap()))
            );
            assert_eq!(got.status, want.status);
            assert_eq!(got.is_error(), want.is_error());
            assert_eq!(
                got.latency_ms,
                want.latency_ms
                    .map(|ms| (ms as f64 / 1000.0).round() as u64 * 1000)
            );
            assert!((got.cost_usd.unwrap() - want.cost_usd.unwrap()).abs() <= 1.0 / QUOTA_PER_USD);
            if want.is_error() {
                failures += 1;
                continue;
            }
            assert_eq!(got.resolved_model, want.resolved_model);
            assert_eq!(
                (got.prompt_tokens, got.completion_tokens, got.cached_tokens),
                (
                    want.prompt_tokens,
                    want.completion_tokens,
                    want.cached_tokens
                )
            );
            assert_eq!(got.ttft_ms, want.ttft_ms);
        }
        assert!(failures > 10, "error rows were covered: {failures}");
        let streamed: i64 = conn
            .query_row(
                "SELECT count(*) FROM logs WHERE is_stream = 1 AND \"group\" != 'chat'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(streamed, 0, "only chat streams");
    }
}
