//! The path every source shares: decode a raw record with the source's adapter and
//! put the result in the batch the source will commit: an event, an eval score,
//! a skip, or a dead letter with the reason.

use crate::adapters::{Decoder, LogRow, Record, Rejected};
use crate::domain::DeadLetter;
use crate::redact;
use crate::store::Batch;

/// Decode `raw` into `batch`. `position` is the record's offset or number in its
/// source; `where_` renders it for a dead letter. Returns the rejection reason, if any.
pub fn add_record(
    batch: &mut Batch,
    decoder: &mut Decoder,
    raw: &[u8],
    position: u64,
    where_: impl FnOnce() -> String,
    now_ms: i64,
) -> Option<String> {
    let decoded = decoder.decode(raw, position, now_ms);
    add_decoded(batch, decoded, where_, || raw.to_vec())
}

/// Like `add_record` for a gateway `logs` row read from its database.
pub fn add_row(
    batch: &mut Batch,
    decoder: &mut Decoder,
    row: &LogRow,
    where_: impl FnOnce() -> String,
    now_ms: i64,
) -> Option<String> {
    let decoded = decoder.decode_row(row, now_ms);
    // The row's text is made only for a dead letter.
    add_decoded(batch, decoded, where_, || {
        serde_json::to_vec(row).expect("a row serializes")
    })
}

/// Put what a record became into the batch: an event, an eval score, a skip, or a
/// dead letter (with `raw`, made only then). Returns the rejection reason, if any.
pub fn add_decoded(
    batch: &mut Batch,
    decoded: Result<Option<Record>, Rejected>,
    where_: impl FnOnce() -> String,
    raw: impl FnOnce() -> Vec<u8>,
) -> Option<String> {
    match decoded {
        Ok(Some(Record::Usage(e))) => batch.events.push(e),
        Ok(Some(Record::Eval(e))) => batch.evals.push(e),
        Ok(None) => batch.skipped += 1,
        Err(rejected) => {
            // Reasons may quote the offending value (serde does): redact them too.
            let reason = redact::for_storage(rejected.0.as_bytes());
            add_dead_letter(batch, where_(), reason.clone(), &raw());
            return Some(reason);
        }
    }
    None
}

/// Put a dead letter for `raw` into the batch: bounded, redacted, with the reason.
pub fn add_dead_letter(batch: &mut Batch, position: String, reason: String, raw: &[u8]) {
    batch.dead_letters.push(DeadLetter {
        source: batch.source.clone(),
        position,
        reason: redact::for_storage(reason.as_bytes()),
        raw: redact::for_storage(raw),
    });
}
