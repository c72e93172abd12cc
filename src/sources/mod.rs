//! Sources read records from outside: the file tailer and the gateway database
//! follower live here; the HTTP webhooks
//! are in `api` and hand their bodies to the same ingest path.

pub mod fingerprint;
pub mod gateway_db;
pub mod tail;
