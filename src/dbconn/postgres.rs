//! One connection to a PostgreSQL server, TLS as the URL says, errors worded with
//! what to do: the gateway follower's and driftwarden's own PostgreSQL store's.

use postgres::Client;
use postgres::config::SslMode as PgSslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::DbError;
use super::tls::{self, SslMode, Tls};

/// One connection to the PostgreSQL server of `url` (TLS as its `sslmode` and
/// `sslrootcert` say), errors worded with what to do; `table` names the table a
/// missing privilege is about. Shared with driftwarden's own PostgreSQL store.
pub(crate) fn connect(url: &str, table: &str) -> Result<Client, DbError> {
    let (driver_url, tls) = tls::split(url).map_err(DbError)?;
    let err = |e: postgres::Error| DbError::from_driver(explain_connect(&e, table, &tls), url);
    let mut config: postgres::Config = driver_url.parse().map_err(err)?;
    config.ssl_mode(match tls.mode {
        SslMode::Disable => PgSslMode::Disable,
        SslMode::Prefer => PgSslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
    });
    let connector = MakeRustlsConnect::new(tls::client_config(&tls).map_err(DbError)?);
    config.connect(connector).map_err(err)
}

/// `explain`, and what to do about a failed TLS handshake or a server that wants
/// TLS when `sslmode=disable`.
fn explain_connect(e: &postgres::Error, table: &str, tls: &Tls) -> String {
    if let Some(words) = tls::explain(e, tls) {
        return format!("{e}: {words}");
    }
    let cause = std::error::Error::source(e).map(ToString::to_string);
    if cause.as_deref() == Some("server does not support TLS") {
        return format!("{e}: {}", tls::not_offered(tls));
    }
    let text = explain(e, table);
    // pg_hba.conf has only hostssl lines for this client: "... no encryption".
    let refused_plain = e.code()
        == Some(&postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION)
        && e.as_db_error()
            .is_some_and(|db| db.message().contains("no encryption"));
    if refused_plain && tls.mode == SslMode::Disable {
        return format!("{text}: {}", tls::plain_refused(tls));
    }
    text
}

/// The error with its cause (the client's own text is only its kind, "db error"),
/// and what to do about the ones operators meet first.
pub(crate) fn explain(e: &postgres::Error, table: &str) -> String {
    let text = match (e.as_db_error(), std::error::Error::source(e)) {
        (Some(db), _) => format!("{e}: {}", db.message()),
        (None, Some(cause)) => format!("{e}: {cause}"),
        (None, None) => e.to_string(),
    };
    match e.code() {
        Some(c) if *c == postgres::error::SqlState::INSUFFICIENT_PRIVILEGE => format!(
            "{text}: the user lacks SELECT on the logs table; run GRANT SELECT ON {} TO <user>",
            if table.is_empty() { "logs" } else { table }
        ),
        _ => text,
    }
}
