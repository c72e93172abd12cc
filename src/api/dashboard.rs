//! The dashboard: one page (`GET /`) and its script, style sheet and icon
//! (`GET /assets/NAME`), compiled into the binary so the daemon serves it offline,
//! with no CDN. The page reads the same JSON API everything else uses.

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Only the daemon's own origin, for everything: the page has no inline script or
/// style, loads nothing from elsewhere, and may not be framed.
const CSP: &str = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'";

/// A file of the page, as compiled in.
struct Asset {
    body: &'static str,
    content_type: &'static str,
    /// `no-cache` for the page, so a new daemon's page is seen at once; the assets may
    /// be reused for a few minutes and are revalidated by their ETag after that.
    cache_control: &'static str,
}

const INDEX: Asset = Asset {
    body: include_str!("dashboard/index.html"),
    content_type: "text/html; charset=utf-8",
    cache_control: "no-cache",
};

fn asset(name: &str) -> Option<Asset> {
    let (body, content_type) = match name {
        "app.js" => (
            include_str!("dashboard/app.js"),
            "text/javascript; charset=utf-8",
        ),
        "app.css" => (include_str!("dashboard/app.css"), "text/css; charset=utf-8"),
        "favicon.svg" => (include_str!("dashboard/favicon.svg"), "image/svg+xml"),
        _ => return None,
    };
    Some(Asset {
        body,
        content_type,
        cache_control: "public, max-age=300",
    })
}

/// Answer with `a`, or 304 when the client already has this version.
fn serve(a: &Asset, headers: &HeaderMap) -> Response {
    let etag = format!("\"{}\"", &blake3::hash(a.body.as_bytes()).to_hex()[..20]);
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let common = [
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static(a.cache_control),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (
            header::ETAG,
            HeaderValue::from_str(&etag).expect("a hex ETag is a valid header"),
        ),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(a.content_type),
        )],
        a.body,
    )
        .into_response()
}

/// `GET /`: the dashboard page.
pub async fn index(headers: HeaderMap) -> Response {
    serve(&INDEX, &headers)
}

/// `GET /assets/NAME`: the page's script, style sheet and icon.
pub async fn assets(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match asset(&name) {
        Some(a) => serve(&a, &headers),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_served_with_a_strict_policy_and_revalidated_by_etag() {
        let a = asset("app.js").expect("app.js is compiled in");
        let r = serve(&a, &HeaderMap::new());
        assert_eq!(r.status(), StatusCode::OK);
        let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(csp.starts_with("default-src 'self'"), "{csp}");
        let etag = r.headers()[header::ETAG].clone();
        let mut again = HeaderMap::new();
        again.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(serve(&a, &again).status(), StatusCode::NOT_MODIFIED);
        assert!(asset("../Cargo.toml").is_none());
    }

    #[test]
    fn the_page_loads_only_its_own_assets() {
        for needle in ["http://", "https://", "<script>", "style="] {
            assert!(!INDEX.body.contains(needle), "index.html contains {needle}");
        }
        for name in ["app.js", "app.css", "favicon.svg"] {
            assert!(INDEX.body.contains(&format!("/assets/{name}")), "{name}");
        }
    }
}
