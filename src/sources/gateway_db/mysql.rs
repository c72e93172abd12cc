//! A gateway's MySQL / MariaDB database: one connection (TLS as the URL's `sslmode`
//! says, through the driver's rustls), a read-only session, a statement time limit. A
//! lost connection is an error; the follower reconnects.

use crate::adapters::LogRow;
use mysql::prelude::Queryable;
use mysql::{Conn, DriverError, Opts, OptsBuilder, SslOpts};

use super::{Backend, Cell, DbError, DbSpec, Kind, LogReader, Queries, log_row};
use crate::dbconn::tls::{self, SslMode, Tls};

pub(super) struct Reader {
    conn: Conn,
    queries: Queries,
    url: String,
}

impl Reader {
    pub(super) fn open(spec: &DbSpec) -> Result<Reader, DbError> {
        let url = spec.url.replacen("mariadb://", "mysql://", 1);
        let (driver_url, tls) = tls::split(&url).map_err(DbError)?;
        let err = |e: mysql::Error| {
            DbError::from_driver(explain_connect(&e, &spec.table, &tls), &spec.url)
        };
        let opts = Opts::from_url(&driver_url).map_err(|e| DbError::from_driver(e, &spec.url))?;
        let with_tls = OptsBuilder::from_opts(opts.clone()).ssl_opts(ssl_opts(&tls)?);
        let mut conn = match Conn::new(with_tls) {
            // prefer: plain TCP to a server without TLS.
            Err(mysql::Error::DriverError(DriverError::TlsNotSupported))
                if tls.mode == SslMode::Prefer =>
            {
                Conn::new(opts)
            }
            other => other,
        }
        .map_err(err)?;
        conn.query_drop("SET SESSION TRANSACTION READ ONLY")
            .map_err(err)?;
        // MySQL names it max_execution_time (ms), MariaDB max_statement_time (s).
        let _ = conn.query_drop("SET SESSION max_execution_time = 30000");
        let _ = conn.query_drop("SET SESSION max_statement_time = 30");
        let present: Vec<String> = conn
            .exec(
                "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
                (spec.table.as_str(),),
            )
            .map_err(err)?;
        if present.is_empty() {
            return Err(DbError(format!(
                "no table {} visible to this user in {} (check the database name and GRANT SELECT ON <db>.{} TO <user>)",
                spec.table,
                super::printable_url(&spec.url),
                spec.table
            )));
        }
        let queries = Queries::new(Backend::Mysql, &spec.table, &present)?;
        Ok(Reader {
            conn,
            queries,
            url: spec.url.clone(),
        })
    }

    fn one_id(&mut self, sql: &str, args: mysql::Params) -> Result<Option<i64>, DbError> {
        let v: Option<Option<i64>> = self
            .conn
            .exec_first(sql, args)
            .map_err(|e| DbError::from_driver(explain(&e, ""), &self.url))?;
        Ok(v.flatten())
    }
}

/// The driver's TLS options for `tls`. The driver trusts the Mozilla roots besides
/// the CA file; the file is read here first so that a bad one is named in our words.
fn ssl_opts(tls: &Tls) -> Result<Option<SslOpts>, DbError> {
    if let Some(path) = &tls.root_cert {
        tls::root_certs(path).map_err(DbError)?;
    }
    let verified = || SslOpts::default().with_root_cert_path(tls.root_cert.clone());
    Ok(match tls.mode {
        SslMode::Disable => None,
        SslMode::Prefer | SslMode::Require => {
            Some(SslOpts::default().with_danger_accept_invalid_certs(true))
        }
        SslMode::VerifyCa => Some(verified().with_danger_skip_domain_validation(true)),
        SslMode::VerifyFull => Some(verified()),
    })
}

/// `explain`, and what to do about a failed TLS handshake, a server without TLS, or
/// one that wants TLS when `sslmode=disable`.
fn explain_connect(e: &mysql::Error, table: &str, tls: &Tls) -> String {
    let words = match e {
        mysql::Error::IoError(io) => tls::explain(io, tls),
        // The handshake runs inside the first packet written or read.
        mysql::Error::CodecError(c) => tls::explain(c, tls),
        mysql::Error::TlsError(t) => tls::explain(t, tls),
        mysql::Error::DriverError(DriverError::TlsNotSupported) => Some(tls::not_offered(tls)),
        // ER_SECURE_TRANSPORT_REQUIRED: MySQL's require_secure_transport=ON.
        mysql::Error::MySqlError(m) if tls.mode == SslMode::Disable && m.code == 3159 => {
            return format!("{e}: {}", tls::plain_refused(tls));
        }
        // MariaDB refuses a plain connection under require_secure_transport with
        // "access denied" (1045), as it does a wrong password.
        mysql::Error::MySqlError(m) if tls.mode == SslMode::Disable && m.code == 1045 => {
            return format!(
                "{e}: check the user and password; if the server requires TLS \
                 (require_secure_transport), drop sslmode=disable"
            );
        }
        _ => None,
    };
    words.unwrap_or_else(|| explain(e, table))
}

/// Say what to do about the errors operators meet first.
fn explain(e: &mysql::Error, table: &str) -> String {
    match e {
        // 1142: SELECT command denied.
        mysql::Error::MySqlError(m) if m.code == 1142 => format!(
            "{e}: the user lacks SELECT on the logs table; run GRANT SELECT ON <db>.{} TO <user>",
            if table.is_empty() { "logs" } else { table }
        ),
        _ => e.to_string(),
    }
}

impl LogReader for Reader {
    fn max_id(&mut self) -> Result<Option<i64>, DbError> {
        let sql = self.queries.max_id.clone();
        self.one_id(&sql, mysql::Params::Empty)
    }

    fn first_id_since(&mut self, created_at: i64) -> Result<Option<i64>, DbError> {
        let sql = self.queries.first_since.clone();
        self.one_id(&sql, (created_at,).into())
    }

    fn fetch(&mut self, after: i64, limit: u32) -> Result<Vec<LogRow<'static>>, DbError> {
        let sql = self.queries.fetch.clone();
        self.rows(&sql, (after, limit).into())
    }

    fn fetch_range(&mut self, from: i64, to: i64) -> Result<Vec<LogRow<'static>>, DbError> {
        let sql = self.queries.fetch_range.clone();
        self.rows(&sql, (from, to).into())
    }
}

impl Reader {
    fn rows(&mut self, sql: &str, args: mysql::Params) -> Result<Vec<LogRow<'static>>, DbError> {
        let url = self.url.clone();
        let rows: Vec<mysql::Row> = self
            .conn
            .exec(sql, args)
            .map_err(|e| DbError::from_driver(explain(&e, ""), &url))?;
        let columns = &self.queries.columns;
        let out = rows
            .into_iter()
            .map(|mut r| {
                log_row(columns, |i, kind| {
                    Ok::<_, std::convert::Infallible>(match kind {
                        Kind::Int => r
                            .take_opt::<Option<i64>, _>(i)
                            .and_then(Result::ok)
                            .flatten()
                            .map(Cell::Int),
                        Kind::Text => r
                            .take_opt::<Option<String>, _>(i)
                            .and_then(Result::ok)
                            .flatten()
                            .map(Cell::Text),
                    })
                })
            })
            .collect::<Result<_, _>>();
        Ok(out.unwrap_or_else(|never| match never {}))
    }
}
