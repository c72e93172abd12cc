//! TLS to a gateway's PostgreSQL or MySQL server: the `sslmode` and `sslrootcert` URL
//! parameters (libpq's names and meanings, on both schemes), the rustls configuration
//! they stand for, and the words for a handshake that failed.
//!
//! Both parameters are taken out of the URL before the driver sees it: the PostgreSQL
//! driver knows no `verify-ca`/`verify-full` nor `sslrootcert`, the MySQL driver none
//! of them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use percent_encoding::percent_decode_str;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};

/// How a connection uses TLS (libpq's `sslmode`, without `allow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, unverified; plain TCP otherwise. The default
    /// without `sslrootcert`, as in libpq and the MySQL client.
    Prefer,
    /// TLS or no connection; the certificate is not checked.
    Require,
    /// TLS, with a certificate signed by a trusted CA, for whatever name.
    VerifyCa,
    /// TLS, with a certificate signed by a trusted CA, for the host in the URL.
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<SslMode, String> {
        match s {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            other => Err(format!(
                "sslmode={other:?} is not one of disable, prefer, require, verify-ca, verify-full"
            )),
        }
    }

    fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether the certificate's chain is checked.
    fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

impl std::fmt::Display for SslMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The TLS settings of one gateway database URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tls {
    /// The mode in force: `require` with an `sslrootcert` is `verify-ca` (as in libpq),
    /// and an `sslrootcert` without `sslmode` is `verify-full`.
    pub mode: SslMode,
    /// The CA file; `None` trusts the Mozilla roots (`webpki-roots`) when verifying.
    pub root_cert: Option<PathBuf>,
    /// The host the URL names, the name a `verify-full` certificate must carry.
    pub host: String,
}

/// Split a `postgres://` or `mysql://` URL into the URL for the driver (without
/// `sslmode` and `sslrootcert`) and its TLS settings. The error names the parameter.
pub(crate) fn split(url: &str) -> Result<(String, Tls), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("the URL has no scheme://".into());
    };
    let (userinfo, host_and_path) = super::split_userinfo(rest);
    let (path, query) = match host_and_path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (host_and_path, None),
    };
    let mut mode = None;
    let mut root_cert = None;
    let mut kept = Vec::new();
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = || percent_decode_str(value).decode_utf8_lossy().into_owned();
        match percent_decode_str(key).decode_utf8_lossy().as_ref() {
            "sslmode" => mode = Some(SslMode::parse(&decoded())?),
            "sslrootcert" if value.is_empty() => {
                return Err("sslrootcert is empty: give the path of a PEM CA file".into());
            }
            "sslrootcert" => root_cert = Some(PathBuf::from(decoded())),
            _ if !pair.is_empty() => kept.push(pair),
            _ => {}
        }
    }
    let mode = match (mode, &root_cert) {
        (None, None) => SslMode::Prefer,
        (None, Some(_)) => SslMode::VerifyFull,
        (Some(SslMode::Require), Some(_)) => SslMode::VerifyCa,
        (Some(m @ (SslMode::Disable | SslMode::Prefer)), Some(_)) => {
            return Err(format!(
                "sslrootcert is given but sslmode={m} never checks a certificate: \
                 use sslmode=verify-full (or verify-ca), or drop sslrootcert"
            ));
        }
        (Some(m), _) => m,
    };
    let mut driver_url = format!("{scheme}://");
    if let Some(info) = userinfo {
        driver_url.push_str(info);
        driver_url.push('@');
    }
    driver_url.push_str(path);
    if !kept.is_empty() {
        driver_url.push('?');
        driver_url.push_str(&kept.join("&"));
    }
    let host = host_of(path);
    Ok((
        driver_url,
        Tls {
            mode,
            root_cert,
            host,
        },
    ))
}

/// The host of `host[:port][/db]` (`[v6]` without its brackets).
fn host_of(path: &str) -> String {
    let authority = path.split('/').next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    percent_decode_str(host).decode_utf8_lossy().into_owned()
}

/// The CA certificates of `sslrootcert`, checked to be readable PEM.
pub(crate) fn root_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|e| {
        format!("cannot read the CA file sslrootcert={shown}: {e} (it must be readable by the user driftwarden runs as)")
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the CA file sslrootcert={shown} is not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "the CA file sslrootcert={shown} holds no certificate (-----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(certs)
}

/// The rustls client configuration for `tls` (PostgreSQL; the MySQL driver builds its
/// own from `SslOpts`). ring is the crypto provider, as for reqwest and lettre.
pub(crate) fn client_config(tls: &Tls) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = if tls.mode.verifies() {
        let mut roots = RootCertStore::empty();
        match &tls.root_cert {
            Some(path) => {
                for cert in root_certs(path)? {
                    roots.add(cert).map_err(|e| {
                        format!(
                            "the CA file sslrootcert={} holds a certificate that cannot be a root: {e}",
                            path.display()
                        )
                    })?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("no CA to verify the server's certificate with: {e}"))?;
        Some(verifier)
    } else {
        None
    };
    let verifier = Verifier {
        chain,
        check_name: tls.mode == SslMode::VerifyFull,
        algorithms: provider.signature_verification_algorithms,
    };
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// The certificate check of one `sslmode`: none (`prefer`, `require`: encryption
/// only), the chain (`verify-ca`), or the chain and the name (`verify-full`). The
/// handshake's signatures are always checked, so the server holds the key of the
/// certificate it sent.
#[derive(Debug)]
struct Verifier {
    chain: Option<Arc<WebPkiServerVerifier>>,
    check_name: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            // webpki checks the chain before the name: a name error means the chain held.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// What to do when the server answered that it does not speak TLS.
pub(crate) fn not_offered(tls: &Tls) -> String {
    format!(
        "the server at {} does not offer TLS, and sslmode={} requires it: enable TLS on the \
         server (PostgreSQL: ssl = on; MySQL: ssl_cert and ssl_key), or on a trusted network \
         set sslmode=prefer",
        tls.host, tls.mode
    )
}

/// What to do when the server refused a plain connection (`sslmode=disable`).
pub(crate) fn plain_refused(tls: &Tls) -> String {
    format!(
        "the server at {} accepts this user only over TLS: drop sslmode={} (or set \
         sslmode=verify-full&sslrootcert=/path/to/ca.pem)",
        tls.host, tls.mode
    )
}

/// Words for a failed handshake, if `e` or one of its causes is a rustls error.
pub(crate) fn explain(e: &(dyn std::error::Error + 'static), tls: &Tls) -> Option<String> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(words(r, tls));
        }
        // io::Error's source() skips the error it wraps: look inside.
        let wrapped = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        if let Some(r) = wrapped {
            return Some(words(r, tls));
        }
        cur = err.source();
    }
    None
}

fn words(e: &rustls::Error, tls: &Tls) -> String {
    let host = &tls.host;
    match e {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            match &tls.root_cert {
                Some(path) => format!(
                    "the server's certificate is not signed by the CA in sslrootcert={}: {e}",
                    path.display()
                ),
                None => format!(
                    "the server's certificate is not signed by a publicly trusted CA: {e}; set \
                 sslrootcert=/path/to/ca.pem to the CA that signed it"
                ),
            }
        }
        rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            presented,
            ..
        }) => format!(
            "the certificate is for {}, not {host}; use the name in the certificate or \
             sslmode=verify-ca",
            names(presented)
        ),
        rustls::Error::InvalidCertificate(CertificateError::NotValidForName) => format!(
            "the certificate is not for {host}; use the name in the certificate or sslmode=verify-ca"
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => format!("the server's certificate has expired: {e}; renew it on the server"),
        _ if tls.mode == SslMode::Prefer => format!(
            "TLS with {host} failed (sslmode=prefer): {e}; fix the server's TLS setup, or set \
             sslmode=disable on a trusted network"
        ),
        _ => format!("TLS with {host} failed (sslmode={}): {e}", tls.mode),
    }
}

/// webpki's names (`DnsName("db.internal")`, `IpAddress(10.0.0.5)`) as written in a URL.
fn names(presented: &[String]) -> String {
    if presented.is_empty() {
        return "no name".into();
    }
    presented
        .iter()
        .map(|n| {
            n.strip_prefix("DnsName(\"")
                .and_then(|n| n.strip_suffix("\")"))
                .or_else(|| {
                    n.strip_prefix("IpAddress(")
                        .and_then(|n| n.strip_suffix(')'))
                })
                .unwrap_or(n)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(mode: SslMode, root: Option<&str>, host: &str) -> Tls {
        Tls {
            mode,
            root_cert: root.map(PathBuf::from),
            host: host.into(),
        }
    }

    #[test]
    fn split_takes_out_the_tls_parameters_only() {
        let (url, t) = split(
            "postgres://u:p?w@d@db.internal:5432/newapi?application_name=dw&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=5",
        )
        .unwrap();
        assert_eq!(
            url,
            "postgres://u:p?w@d@db.internal:5432/newapi?application_name=dw&connect_timeout=5"
        );
        assert_eq!(
            t,
            tls(SslMode::VerifyFull, Some("/etc/ca.pem"), "db.internal")
        );
        let (url, t) = split("mysql://u@[::1]:3306/oneapi?sslmode=require").unwrap();
        assert_eq!(url, "mysql://u@[::1]:3306/oneapi");
        assert_eq!(t, tls(SslMode::Require, None, "::1"));
        let (url, t) = split("mysql://u:pw@localhost/db").unwrap();
        assert_eq!(url, "mysql://u:pw@localhost/db");
        assert_eq!(t, tls(SslMode::Prefer, None, "localhost"));
    }

    #[test]
    fn a_ca_file_means_verification() {
        let mode = |q: &str| split(&format!("postgres://h/db?{q}")).map(|(_, t)| t.mode);
        assert_eq!(mode("sslrootcert=/ca.pem"), Ok(SslMode::VerifyFull));
        assert_eq!(
            mode("sslmode=require&sslrootcert=/ca.pem"),
            Ok(SslMode::VerifyCa),
            "libpq: require with a CA file is verify-ca"
        );
        assert_eq!(mode("sslmode=verify-ca"), Ok(SslMode::VerifyCa));
        let err = mode("sslmode=disable&sslrootcert=/ca.pem").unwrap_err();
        assert!(err.contains("never checks a certificate"), "{err}");
        let err = mode("sslmode=allow").unwrap_err();
        assert!(err.contains("not one of disable, prefer"), "{err}");
        assert!(mode("sslrootcert=").is_err());
    }

    #[test]
    fn unreadable_and_empty_ca_files_are_named() {
        let err = root_certs(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(
            err.starts_with("cannot read the CA file sslrootcert=/nonexistent/ca.pem"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("ca.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = root_certs(&empty).unwrap_err();
        assert!(err.contains("holds no certificate"), "{err}");
        let err =
            client_config(&tls(SslMode::VerifyFull, Some("/nonexistent/ca.pem"), "h")).unwrap_err();
        assert!(err.contains("cannot read the CA file"), "{err}");
    }

    #[test]
    fn handshake_errors_say_what_to_do() {
        let t = tls(SslMode::VerifyFull, Some("/etc/dw/ca.pem"), "127.0.0.1");
        let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, unknown);
        let said = explain(&io, &t).unwrap();
        assert!(
            said.starts_with(
                "the server's certificate is not signed by the CA in sslrootcert=/etc/dw/ca.pem: "
            ),
            "{said}"
        );
        let mismatch =
            rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                expected: ServerName::try_from("127.0.0.1").unwrap(),
                presented: vec![
                    "DnsName(\"localhost\")".into(),
                    "IpAddress(10.0.0.5)".into(),
                ],
            });
        assert_eq!(
            explain(&mismatch, &t).unwrap(),
            "the certificate is for localhost, 10.0.0.5, not 127.0.0.1; use the name in the \
             certificate or sslmode=verify-ca"
        );
        let other = std::io::Error::other("connection reset");
        assert_eq!(explain(&other, &t), None);
    }
}
