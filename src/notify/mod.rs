//! Notification delivery: render a `Message` for a channel (Slack, Discord, Teams,
//! Telegram, Feishu, DingTalk, WeCom, PagerDuty, email, generic webhook, console) and
//! deliver it from the durable outbox (`store::outbox`).
//!
//! The alert stage only enqueues (`store::outbox::enqueue`); the worker started by
//! `spawn` delivers. A row is sent at most once after a channel accepted it, retried
//! with backoff otherwise, and given up (dead) after `max_attempts` failures.
//!
//! **Invariant:** webhook URLs, bot tokens, signing secrets, routing keys and SMTP
//! passwords live in `domain::Secret` and are never logged nor stored: every error text passes through `scrub` first.

pub mod config;
pub mod console;
pub mod dingtalk;
pub mod discord;
pub mod email;
pub mod feishu;
pub mod message;
pub mod pagerduty;
pub mod sign;
pub mod slack;
pub mod teams;
pub mod telegram;
pub mod webhook;
pub mod wecom;
pub mod worker;

use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;

pub use config::{Channel, ChannelConfig, Target, channels_from_env};
// `Message` lives in `domain` (the outbox below us stores it); kept here as well, where
// callers of the notifier look for it.
pub use crate::domain::Message;
pub use worker::{Notifier, WorkerOptions, spawn};

/// Why one delivery attempt failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SendError {
    /// May pass: a connection failure, a timeout, a 5xx, an SMTP 4xx.
    #[error("{0}")]
    Transient(String),
    /// The receiver asked us to slow down (HTTP 429).
    #[error("{message}")]
    RateLimited {
        /// The answer, as in `Transient`.
        message: String,
        /// How long the receiver asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// Sending the same message again cannot succeed (a 4xx, an SMTP 5xx, bad settings).
    #[error("{0}")]
    Permanent(String),
}

/// Why the delivery worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The outbox could not be opened or read.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A channel's client could not be set up; the message names the channel.
    #[error("notification channel {channel:?}: {message}")]
    Channel {
        /// The channel's name.
        channel: String,
        /// What went wrong, without secrets.
        message: String,
    },
}

/// An error and its causes, `: `-joined (reqwest's own message alone says only
/// "error sending request").
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Longest error text kept in `last_error` and logs.
const MAX_ERROR_CHARS: usize = 300;

static URL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\b[a-z][a-z0-9+.-]*://\S+").expect("valid regex"));

/// `text` without any of `secrets` and without anything shaped like a URL, bounded:
/// the only form in which a delivery error is logged or stored.
pub fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(s.as_str(), "[redacted]");
    }
    let out = URL.replace_all(&out, "[url]");
    let mut bounded: String = out.chars().take(MAX_ERROR_CHARS).collect();
    if out.chars().count() > MAX_ERROR_CHARS {
        bounded.push('…');
    }
    bounded
}

/// The parts of a secret URL that must never show: the whole, its path and query
/// (where webhook services keep their tokens) and its password, raw and decoded.
pub(crate) fn secret_parts(url: &str) -> Vec<String> {
    let mut parts = vec![url.to_string()];
    if let Ok(u) = reqwest::Url::parse(url) {
        if u.path().len() > 1 {
            parts.push(u.path().to_string());
        }
        parts.extend(u.query().map(String::from));
        if let Some(p) = u.password() {
            parts.push(p.to_string());
            parts.push(percent_decode(p));
        }
    }
    parts
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_urls_passwords_and_tokens() {
        let secrets = secret_parts("smtp://bob:p%40ss-word@mail.example.com:587?tls=required");
        let text = "auth failed for p@ss-word and p%40ss-word via smtp://bob:x@h and https://hooks.slack.com/services/T/B/Z";
        let clean = scrub(text, &secrets);
        assert!(!clean.contains("ss-word"), "{clean}");
        assert!(!clean.contains("hooks.slack.com"), "{clean}");
        assert!(clean.starts_with("auth failed for [redacted]"), "{clean}");
        let slack = secret_parts("https://hooks.slack.com/services/T0/B0/abcdef");
        assert!(!scrub("no_service at /services/T0/B0/abcdef", &slack).contains("abcdef"));
        assert!(scrub(&"x".repeat(1000), &[]).chars().count() <= MAX_ERROR_CHARS + 1);
    }
}
