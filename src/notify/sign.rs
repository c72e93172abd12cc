//! The signatures chat services define for their bots: a timestamp and a shared
//! secret, HMAC-SHA256, base64. The secret never leaves this module's callers'
//! `Secret`s; only the signature travels.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// base64(HMAC-SHA256(key, data)).
fn hmac_base64(key: &[u8], data: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Feishu/Lark custom bot: the key is `"{timestamp}\n{secret}"` (timestamp in
/// seconds) and the signed data is empty; `timestamp` and `sign` go in the body.
pub fn feishu(timestamp_s: i64, secret: &str) -> String {
    hmac_base64(format!("{timestamp_s}\n{secret}").as_bytes(), b"")
}

/// DingTalk robot: the key is the secret and the data `"{timestamp}\n{secret}"`
/// (timestamp in milliseconds); `timestamp` and the URL-encoded `sign` go in the query.
pub fn dingtalk(timestamp_ms: i64, secret: &str) -> String {
    hmac_base64(
        secret.as_bytes(),
        format!("{timestamp_ms}\n{secret}").as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2, so the primitive is HMAC-SHA256 itself.
    #[test]
    fn the_primitive_is_hmac_sha256() {
        let mac = hmac_base64(b"Jefe", b"what do ya want for nothing?");
        let hex: String = STANDARD
            .decode(mac)
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_two_services_sign_differently() {
        let (f, d) = (
            feishu(1_599_360_473, "s3cret"),
            dingtalk(1_599_360_473_000, "s3cret"),
        );
        assert_ne!(f, d);
        assert_eq!(STANDARD.decode(&f).unwrap().len(), 32);
        assert_eq!(f, hmac_base64(b"1599360473\ns3cret", b""));
        assert_eq!(d, hmac_base64(b"s3cret", b"1599360473000\ns3cret"));
    }
}
