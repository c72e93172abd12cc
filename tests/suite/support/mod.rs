//! What tests stand up beside driftwarden: private database servers, the HTTP and
//! SMTP receivers standing in for Slack and email, a New API `logs` table in SQLite.

pub mod dbservers;
pub mod newapi_sqlite;
pub mod receivers;
