//! New API's `logs` table as GORM creates it in SQLite (model/log.go), shared by the
//! gateway-database tests and the backfill benchmark. The simulator owns the one copy.

pub use driftwarden::sim::NEWAPI_SCHEMA;
