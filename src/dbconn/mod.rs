//! Connections to SQL servers, shared by the gateway-database sources and
//! driftwarden's own PostgreSQL store: URLs without their passwords, driver errors
//! scrubbed of them, TLS (`sslmode`, `sslrootcert`) and the PostgreSQL connect.

pub mod postgres;
pub mod tls;

/// A database URL as configured: as given, or read from the environment when it is
/// `env:VAR` (so the password stays out of files and command lines). The error names
/// `what` the URL is for and the unset variable.
pub fn url_from(value: &str, what: &str) -> Result<String, String> {
    match value.strip_prefix("env:") {
        Some(var) => {
            std::env::var(var).map_err(|_| format!("{what} is env:{var}, but {var} is not set"))
        }
        None => Ok(value.to_string()),
    }
}

/// The URL without password or query parameters (the user stays, so two sources
/// that differ only by user keep separate cursors).
pub fn printable_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<invalid url>".to_string();
    };
    let (userinfo, host_and_path) = split_userinfo(rest);
    let host_and_path = host_and_path.split('?').next().unwrap_or("");
    match userinfo {
        Some(info) => {
            let user = info.split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{host_and_path}")
        }
        None => format!("{scheme}://{host_and_path}"),
    }
}

/// Split `user:password@host/path` at the last `@` before the host. A password may
/// hold `/`, `?` or `@` (drivers split on the last `@`), so the authority does not end
/// at the first `/` when an `@` follows it.
pub(crate) fn split_userinfo(rest: &str) -> (Option<&str>, &str) {
    match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    }
}

/// A database error, with credentials already removed from the message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DbError(pub String);

impl DbError {
    /// Wrap a driver error, removing the URL's password if the driver echoed it.
    pub(crate) fn from_driver(e: impl std::fmt::Display, url: &str) -> DbError {
        let mut msg = e.to_string();
        if let Some(pw) = password_of(url).filter(|p| !p.is_empty()) {
            msg = msg.replace(&pw, "***");
        }
        DbError(msg)
    }
}

fn password_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let userinfo = split_userinfo(rest).0?;
    userinfo.split_once(':').map(|(_, p)| p.to_string())
}
