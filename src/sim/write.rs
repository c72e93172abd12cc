//! JSONL writers in the native record shapes of DESIGN.md, which `replay`, `import`
//! and the `native` / `evals` tail formats read.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use chrono::{DateTime, SecondsFormat};
use serde::Serialize;

use super::{SimError, SimRecord};
use crate::domain::{ChangeEvent, EvalScore, UsageEvent};

/// RFC 3339 UTC with milliseconds, as in DESIGN.md's examples.
fn rfc3339(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[derive(Serialize)]
struct NativeUsage<'a> {
    id: &'a str,
    ts: String,
    model: &'a str,
    resolved_model: Option<&'a str>,
    provider: Option<&'a str>,
    route: Option<&'a str>,
    tenant: Option<&'a str>,
    prompt_tokens: u64,
    completion_tokens: u64,
    cached_tokens: u64,
    cost_usd: Option<f64>,
    latency_ms: Option<u64>,
    ttft_ms: Option<u64>,
    status: Option<u16>,
    finish_reason: Option<&'a str>,
    error_type: Option<&'a str>,
}

impl<'a> From<&'a UsageEvent> for NativeUsage<'a> {
    fn from(e: &'a UsageEvent) -> Self {
        NativeUsage {
            id: &e.id,
            ts: rfc3339(e.ts_ms),
            model: &e.model,
            resolved_model: e.resolved_model.as_deref(),
            provider: e.provider.as_deref(),
            route: e.route.as_deref(),
            tenant: e.tenant.as_deref(),
            prompt_tokens: e.prompt_tokens,
            completion_tokens: e.completion_tokens,
            cached_tokens: e.cached_tokens,
            cost_usd: e.cost_usd,
            latency_ms: e.latency_ms,
            ttft_ms: e.ttft_ms,
            status: e.status,
            finish_reason: e.finish_reason.as_deref(),
            error_type: e.error_type.as_deref(),
        }
    }
}

#[derive(Serialize)]
struct NativeEval<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    ts: String,
    evaluator: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    score: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    passed: Option<bool>,
}

impl<'a> From<&'a EvalScore> for NativeEval<'a> {
    fn from(e: &'a EvalScore) -> Self {
        NativeEval {
            request_id: e.request_id.as_deref(),
            route: e.route.as_deref(),
            model: e.model.as_deref(),
            ts: rfc3339(e.ts_ms),
            evaluator: &e.evaluator,
            score: e.score,
            passed: e.passed,
        }
    }
}

#[derive(Serialize)]
struct NativeChange<'a> {
    kind: &'a str,
    ts: String,
    scope: &'a BTreeMap<String, String>,
    note: &'a str,
}

/// A buffered JSONL file that names its path in every error.
struct Jsonl {
    path: String,
    out: BufWriter<File>,
    lines: u64,
}

impl Jsonl {
    fn create(path: &Path) -> Result<Jsonl, SimError> {
        let name = path.display().to_string();
        let file = File::create(path).map_err(|source| SimError::Io {
            path: name.clone(),
            source,
        })?;
        Ok(Jsonl {
            path: name,
            out: BufWriter::with_capacity(1 << 20, file),
            lines: 0,
        })
    }

    fn line(&mut self, value: &impl Serialize) -> Result<(), SimError> {
        serde_json::to_writer(&mut self.out, value)
            .map_err(std::io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|source| self.io(source))?;
        self.lines += 1;
        Ok(())
    }

    fn finish(mut self) -> Result<u64, SimError> {
        self.out.flush().map_err(|source| self.io(source))?;
        Ok(self.lines)
    }

    fn io(&self, source: std::io::Error) -> SimError {
        SimError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

/// Writes usage events as native `UsageEvent` JSON lines; returns how many.
pub fn write_native_jsonl<I>(events: I, path: &Path) -> Result<u64, SimError>
where
    I: IntoIterator,
    I::Item: Borrow<UsageEvent>,
{
    let mut out = Jsonl::create(path)?;
    for e in events {
        out.line(&NativeUsage::from(e.borrow()))?;
    }
    out.finish()
}

/// Writes eval scores as native `EvalScore` JSON lines; returns how many.
pub fn write_evals_jsonl<I>(evals: I, path: &Path) -> Result<u64, SimError>
where
    I: IntoIterator,
    I::Item: Borrow<EvalScore>,
{
    let mut out = Jsonl::create(path)?;
    for e in evals {
        out.line(&NativeEval::from(e.borrow()))?;
    }
    out.finish()
}

/// Writes change events as `/recalibrate` bodies, one per line; returns how many.
pub fn write_changes_jsonl<I>(changes: I, path: &Path) -> Result<u64, SimError>
where
    I: IntoIterator,
    I::Item: Borrow<ChangeEvent>,
{
    let mut out = Jsonl::create(path)?;
    for c in changes {
        let c = c.borrow();
        out.line(&NativeChange {
            kind: c.kind.as_str(),
            ts: rfc3339(c.ts_ms),
            scope: &c.scope,
            note: &c.note,
        })?;
    }
    out.finish()
}

/// Writes a record stream in one pass: usage events to `events`, eval scores to
/// `evals` (dropped when it is `None`). Returns (events, evals) written.
pub fn write_records_jsonl(
    records: impl IntoIterator<Item = SimRecord>,
    events: &Path,
    evals: Option<&Path>,
) -> Result<(u64, u64), SimError> {
    let mut usage_out = Jsonl::create(events)?;
    let mut eval_out = evals.map(Jsonl::create).transpose()?;
    for record in records {
        match (&record, eval_out.as_mut()) {
            (SimRecord::Usage(e), _) => usage_out.line(&NativeUsage::from(e))?,
            (SimRecord::Eval(e), Some(out)) => out.line(&NativeEval::from(e))?,
            (SimRecord::Eval(_), None) => {}
        }
    }
    let written_evals = eval_out.map(Jsonl::finish).transpose()?.unwrap_or(0);
    Ok((usage_out.finish()?, written_evals))
}

#[cfg(test)]
mod tests {
    use super::super::generate::tests::run;
    use super::super::{Profile, scenarios};
    use super::*;
    use crate::adapters::test_support::ctx;
    use crate::adapters::{Decoder, Format, Record};
    use crate::domain::CostSource;

    fn decode_lines(path: &Path, format: Format) -> Vec<Record> {
        let mut d = Decoder::new(format, ctx());
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| d.decode(l.as_bytes(), 0, i64::MAX / 2).unwrap().unwrap())
            .collect()
    }

    #[test]
    fn native_files_decode_back_into_the_same_records() {
        let s = scenarios::announced_deploy(Profile {
            days: 0.2,
            peak_rpm: 10.0,
            ..Profile::default()
        });
        let (events, evals) = run(&s, 8);
        let dir = tempfile::tempdir().unwrap();
        let (u, e, c) = (
            dir.path().join("u.jsonl"),
            dir.path().join("e.jsonl"),
            dir.path().join("c.jsonl"),
        );
        assert_eq!(
            write_native_jsonl(&events, &u).unwrap(),
            events.len() as u64
        );
        assert_eq!(write_evals_jsonl(&evals, &e).unwrap(), evals.len() as u64);
        for (got, want) in decode_lines(&u, Format::Native).into_iter().zip(&events) {
            let Record::Usage(mut got) = got else {
                panic!("not usage")
            };
            // The decoder prices with its own table; the charged cost is what travels, up
            // to serde_json's last-digit float parsing.
            got.list_cost_usd = want.list_cost_usd;
            let (g, w) = (got.cost_usd.unwrap(), want.cost_usd.unwrap());
            assert!((g - w).abs() <= 1e-12 * w, "{g} {w}");
            got.cost_usd = want.cost_usd;
            assert_eq!(got.cost_source, CostSource::Gateway);
            assert_eq!(&got, want);
        }
        let got: Vec<Record> = decode_lines(&e, Format::Evals);
        assert_eq!(
            got,
            evals.iter().cloned().map(Record::Eval).collect::<Vec<_>>()
        );

        let (n_events, n_evals) =
            write_records_jsonl(s.generator(8).unwrap(), &u, Some(&e)).unwrap();
        assert_eq!(
            (n_events, n_evals),
            (events.len() as u64, evals.len() as u64)
        );

        write_changes_jsonl(&s.changes, &c).unwrap();
        let line: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(&c).unwrap().trim()).unwrap();
        assert_eq!(
            line,
            serde_json::json!({"kind": "deploy", "ts": "2026-06-15T00:00:00.000Z", "scope": {"route": "summarize"}, "note": "summarize prompt template v2"})
        );
    }
}
