//! driftwarden: a sidecar that watches an LLM gateway's usage stream.
//!
//! The modules follow the data flow (see ARCHITECTURE.md): `sources` and `api` read
//! records, `adapters` normalize them into `domain` types, `ingest` batches them,
//! and `store` commits them.

#![warn(missing_docs)]
// Our own code needs no unsafe; what does (SQLite, TLS, the allocator) stays in
// dependencies.
#![forbid(unsafe_code)]

pub mod adapters;
pub mod alerts;
pub mod analysis;
pub mod api;
pub mod baselines;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod dbconn;
pub mod demo;
pub mod detect;
pub mod domain;
pub mod engine;
pub mod exceptions;
pub mod identity;
pub mod ingest;
pub mod lanes;
pub mod notify;
pub mod pricing;
pub mod redact;
pub mod replay;
pub mod schedule;
pub mod shipped_rules;
pub mod sim;
pub mod sources;
pub mod stop;
pub mod store;
pub mod telemetry;
pub mod tiers;
