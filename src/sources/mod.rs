//! Sources read records from outside: the file tailer lives here; the HTTP webhooks
//! are in `api` and hand their bodies to the same ingest path.

pub mod fingerprint;
pub mod tail;
