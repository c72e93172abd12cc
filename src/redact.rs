//! Making untrusted record text safe to keep: bounded, valid UTF-8, and with anything
//! that looks like a credential replaced. Used for dead letters, the only place raw
//! record text is stored.

use std::sync::LazyLock;

use regex::Regex;

/// Raw text kept per dead letter, at most.
pub const MAX_RAW_BYTES: usize = 2048;

static SECRETS: LazyLock<[(Regex, &'static str); 3]> = LazyLock::new(|| {
    [
        // JSON members whose name says they hold a secret.
        // JSON members whose name says they hold a secret or a person: credentials,
        // user identities, addresses, and prompt or answer text. A value cut off by
        // the length bound (no closing quote) is redacted too.
        (
            Regex::new(r#"(?i)("[^"]*(?:key|token|secret|password|authorization|user|email|ip|messages|response|content|prompt)[^"]*"\s*:\s*)"(?:[^"\\]|\\.)*(?:"|$)"#)
                .expect("valid regex"),
            r#"$1"[redacted]""#,
        ),
        (
            Regex::new(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}").expect("valid regex"),
            "Bearer [redacted]",
        ),
        // Provider-style API keys (sk-..., sk-proj-..., sk-ant-...).
        (
            Regex::new(r"\bsk-[A-Za-z0-9_-]{8,}").expect("valid regex"),
            "[redacted]",
        ),
    ]
});

/// Whether a short value (a label) looks like a credential. Runs per ingested event,
/// so the regexes only see values that contain one of their literal anchors.
pub fn looks_like_secret(value: &str) -> bool {
    let maybe = value.len() >= 11
        && (value.contains("sk-")
            || value
                .as_bytes()
                .windows(6)
                .any(|w| w.eq_ignore_ascii_case(b"bearer")));
    maybe && SECRETS[1..].iter().any(|(re, _)| re.is_match(value))
}

/// Bound `raw` to `MAX_RAW_BYTES` (on a character boundary) and redact secrets.
pub fn for_storage(raw: &[u8]) -> String {
    // Cut before redacting, so a 16 MiB body costs no more than a short record.
    let text = String::from_utf8_lossy(&raw[..raw.len().min(4 * MAX_RAW_BYTES)]);
    let mut text = SECRETS.iter().fold(text.into_owned(), |t, (re, with)| {
        re.replace_all(&t, *with).into_owned()
    });
    if text.len() > MAX_RAW_BYTES {
        let mut end = MAX_RAW_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("…[truncated]");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_bearer_tokens_are_redacted() {
        let raw = br#"{"id":"a","api_key":"sk-live-abcdefghijk","note":"Bearer abcdefgh12345 and sk-proj-ZZZZZZZZZZ","user_api_key_hash":"9f"}"#;
        let safe = for_storage(raw);
        assert!(!safe.contains("abcdefghijk"), "{safe}");
        assert!(!safe.contains("abcdefgh12345"), "{safe}");
        assert!(!safe.contains("ZZZZZZZZZZ"), "{safe}");
        assert!(safe.contains(r#""id":"a""#), "{safe}");
    }

    #[test]
    fn people_and_text_are_redacted_even_when_cut_off() {
        let raw = br#"{"id":1,"username":"alice","ip":"10.1.2.3","messages":[{"content":"my diagnosis"}],"email":"a@b.c"}"#;
        let safe = for_storage(raw);
        for leak in ["alice", "10.1.2.3", "diagnosis", "a@b.c"] {
            assert!(!safe.contains(leak), "{leak} in {safe}");
        }
        let cut = for_storage(br#"{"api_key":"sk_live_unterminated_secret_value"#);
        assert!(!cut.contains("unterminated_secret"), "{cut}");
    }

    #[test]
    fn long_text_is_bounded_on_a_char_boundary() {
        let raw = "é".repeat(MAX_RAW_BYTES);
        let safe = for_storage(raw.as_bytes());
        assert!(safe.len() <= MAX_RAW_BYTES + "…[truncated]".len());
        assert!(safe.ends_with("[truncated]"));
    }
}
