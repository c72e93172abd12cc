//! The integration suite, one test binary: each module is one area of driftwarden,
//! driven from outside (the real binary, a real SQLite file, private PostgreSQL and
//! MariaDB servers, HTTP and SMTP receivers). One binary instead of one per file: the
//! crate and its dependencies are linked once, and the tests of every area share the
//! test threads, so one area's waits overlap another's work.
//!
//! Run one area: `cargo test --release --test suite alerting::`; its PostgreSQL half:
//! `cargo test --release --test suite alerting::on_postgres`.

mod common;
mod support;

mod adapters_props;
mod alerting;
mod changes;
mod cli;
mod dashboard;
mod demo;
mod deploy;
mod docs_examples;
mod exceptions;
mod gateway_db;
mod gateway_db_servers;
mod layering;
mod notify;
mod notify_pg;
mod otlp;
mod replicas;
mod scenarios;
mod schedules;
mod snapshot;
mod store_pg;
mod store_pg_feed;
mod store_pg_ingest;
mod store_pg_lease;
mod store_reads;
mod store_stages;
mod tail;
mod webhook;
