//! Bearer-token check for write endpoints, in constant time.

use axum::http::{HeaderMap, StatusCode, header};
use subtle::ConstantTimeEq;

use super::ApiError;

/// Accept the request only if it carries `Authorization: Bearer <token>`.
pub fn require_token(headers: &HeaderMap, token: &str) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            // The scheme name is case-insensitive (RFC 9110).
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(rest)
        })
        .map(str::trim);
    match given {
        Some(g) if bool::from(g.as_bytes().ct_eq(token.as_bytes())) => Ok(()),
        Some(_) => Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid API token")),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing API token: send `Authorization: Bearer <token>` (the daemon's --token, DRIFTWARDEN_TOKEN, or the token file it printed at start)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn only_the_exact_token_passes() {
        let token = "0123456789abcdef";
        assert!(require_token(&headers("Bearer 0123456789abcdef"), token).is_ok());
        assert!(require_token(&headers("bearer 0123456789abcdef"), token).is_ok());
        assert!(require_token(&headers("Bearer 0123456789abcdeX"), token).is_err());
        assert!(require_token(&headers("Bearer 0123"), token).is_err());
        assert!(require_token(&headers("Basic 0123456789abcdef"), token).is_err());
        assert!(require_token(&HeaderMap::new(), token).is_err());
    }
}
