//! Notification channels: `[[channel]]` entries of the config file, plus the default
//! Slack and email channels a sidecar gets from the environment alone.

use std::collections::BTreeSet;

use lettre::message::Mailbox;
use reqwest::Url;
use serde::Deserialize;

use crate::domain::ExposeSecret;
use crate::domain::Secret;

/// Variable holding a Slack incoming-webhook URL for the default `slack` channel.
pub const ENV_SLACK_WEBHOOK: &str = "DRIFTWARDEN_SLACK_WEBHOOK";
/// Variable holding an SMTP URL for the default `email` channel.
pub const ENV_SMTP_URL: &str = "DRIFTWARDEN_SMTP_URL";
/// Comma-separated recipients of the default `email` channel.
pub const ENV_EMAIL_TO: &str = "DRIFTWARDEN_EMAIL_TO";
/// Sender of the default `email` channel (default `driftwarden@localhost`).
pub const ENV_EMAIL_FROM: &str = "DRIFTWARDEN_EMAIL_FROM";
/// Sender used when none is configured.
pub const DEFAULT_FROM: &str = "driftwarden@localhost";

/// One `[[channel]]` entry, as written in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// The name tiers route to (`channels = ["oncall"]`); unique.
    pub name: String,
    /// `slack`, `discord`, `email`, `webhook` or `console`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Slack, Discord: the webhook URL.
    pub webhook_url: Option<Secret>,
    /// Slack, Discord: an environment variable holding the webhook URL instead.
    pub webhook_url_env: Option<String>,
    /// Email: `smtp://user:pass@host:port?tls=starttls|tls|none`, or `smtps://` for TLS.
    pub smtp_url: Option<Secret>,
    /// Email: an environment variable holding the SMTP URL instead.
    pub smtp_url_env: Option<String>,
    /// Email: the sender (default `driftwarden@localhost`).
    pub from: Option<String>,
    /// Email: the recipients.
    #[serde(default)]
    pub to: Vec<String>,
    /// Webhook: the URL the JSON message is posted to.
    pub url: Option<Secret>,
    /// Webhook: an environment variable holding the URL instead.
    pub url_env: Option<String>,
}

/// A validated channel.
#[derive(Debug, Clone)]
pub struct Channel {
    /// Its unique name.
    pub name: String,
    /// Where and how it delivers.
    pub target: Target,
}

/// Where a channel delivers.
#[derive(Debug, Clone)]
pub enum Target {
    /// A Slack incoming webhook: Block Kit with a text fallback, at most one message a second.
    Slack {
        /// The webhook URL (its path is the credential).
        webhook_url: Secret,
    },
    /// Mail over SMTP, plain text and HTML.
    Email(EmailTarget),
    /// A Discord webhook: the title as content, an embed per alert, no mentions.
    Discord {
        /// The webhook URL (its path is the credential).
        webhook_url: Secret,
    },
    /// A generic webhook: the message as JSON.
    Webhook {
        /// The URL (may carry a token).
        url: Secret,
    },
    /// Human lines on stdout, for local use.
    Console,
}

impl Target {
    /// The `type` name of the target.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Slack { .. } => "slack",
            Target::Discord { .. } => "discord",
            Target::Email(_) => "email",
            Target::Webhook { .. } => "webhook",
            Target::Console => "console",
        }
    }
}

/// How an email channel connects and whom it writes to.
#[derive(Debug, Clone)]
pub struct EmailTarget {
    /// The SMTP server as a URL in lettre's own form (checked at load time).
    pub smtp_url: Secret,
    /// Sender.
    pub from: Mailbox,
    /// Recipients, at least one.
    pub to: Vec<Mailbox>,
}

/// A `[[channel]]` entry or an environment default that cannot be used; the message
/// names the channel and the key to fix, never a secret's value.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// Two channels share a name.
    #[error(
        "[[channel]] {0:?} is defined twice (the environment defines `slack` and `email` when {slack} or {smtp} is set); give each channel its own name",
        slack = ENV_SLACK_WEBHOOK,
        smtp = ENV_SMTP_URL
    )]
    Duplicate(String),
    /// An entry without a name.
    #[error("[[channel]] needs a non-empty `name`")]
    NoName,
    /// `KEY_env` names a variable that is not set.
    #[error("[[channel]] {name:?}: {key}_env is {env}, but {env} is not set")]
    EnvUnset {
        /// The channel.
        name: String,
        /// The key (`webhook_url`, `smtp_url`, `url`).
        key: &'static str,
        /// The variable it names.
        env: String,
    },
    /// Both `KEY` and `KEY_env` are given.
    #[error("[[channel]] {name:?}: give {key} or {key}_env, not both")]
    Both {
        /// The channel.
        name: String,
        /// The key.
        key: &'static str,
    },
    /// Neither `KEY` nor `KEY_env` is given.
    #[error("[[channel]] {name:?} (type = {kind:?}) needs {key} (or {key}_env)")]
    Missing {
        /// The channel.
        name: String,
        /// Its `type`.
        kind: String,
        /// The key.
        key: &'static str,
    },
    /// A key of another channel type.
    #[error("[[channel]] {name:?}: {key} does not apply to type = {kind:?}")]
    DoesNotApply {
        /// The channel.
        name: String,
        /// The key that does not belong.
        key: &'static str,
        /// Its `type`.
        kind: String,
    },
    /// A `type` driftwarden has no sender for.
    #[error(
        "[[channel]] {name:?}: unknown type {kind:?}; use slack, discord, email, webhook or console"
    )]
    UnknownType {
        /// The channel.
        name: String,
        /// The `type` given.
        kind: String,
    },
    /// A webhook URL that is not http(s) with a host (its value is not shown).
    #[error("channel {name:?}: {key} must be an http:// or https:// URL (value not shown)")]
    NotHttp {
        /// The channel.
        name: String,
        /// The key (or variable) that held it.
        key: String,
    },
    /// A sender that is not a mail address.
    #[error("channel {name:?}: sender {from:?} is not an address: {source}")]
    Sender {
        /// The channel.
        name: String,
        /// The sender given.
        from: String,
        /// What lettre found wrong.
        source: lettre::address::AddressError,
    },
    /// An email channel without recipients.
    #[error("channel {name:?}: email needs at least one recipient ({key})")]
    NoRecipient {
        /// The channel.
        name: String,
        /// Where recipients go (`to`, or the variable).
        key: String,
    },
    /// A recipient that is not a mail address.
    #[error("channel {name:?}: recipient {to:?} is not an address: {source}")]
    Recipient {
        /// The channel.
        name: String,
        /// The recipient given.
        to: String,
        /// What lettre found wrong.
        source: lettre::address::AddressError,
    },
    /// An unusable SMTP URL.
    #[error("channel {name:?}: {source}")]
    Smtp {
        /// The channel.
        name: String,
        /// What is wrong with the URL.
        source: SmtpUrlError,
    },
}

/// An SMTP URL that cannot be used; the message shows the forms that can, never the URL.
#[derive(Debug, thiserror::Error)]
pub enum SmtpUrlError {
    /// Not a URL at all.
    #[error(
        "smtp_url is not a URL ({0}); expected smtp://user:pass@host:port?tls=starttls|tls|none"
    )]
    NotUrl(<Url as std::str::FromStr>::Err),
    /// A URL without a host.
    #[error("smtp_url has no host")]
    NoHost,
    /// A `tls` parameter other than starttls, tls or none.
    #[error("smtp_url has tls={0:?}; use starttls, tls or none")]
    Tls(String),
    /// A scheme other than smtp or smtps.
    #[error("smtp_url scheme is {0:?}; use smtp:// or smtps://")]
    Scheme(String),
    /// The url crate refused to switch between smtp and smtps.
    #[error("smtp_url scheme cannot be changed")]
    SchemeChange,
}

/// Validate the file's entries and add the environment's default channels.
pub fn resolve(entries: Vec<ChannelConfig>) -> Result<Vec<Channel>, ChannelError> {
    resolve_with(entries, |k| std::env::var(k).ok())
}

/// The default channels from `DRIFTWARDEN_SLACK_WEBHOOK` (named `slack`) and
/// `DRIFTWARDEN_SMTP_URL` with `DRIFTWARDEN_EMAIL_TO` (named `email`).
pub fn channels_from_env() -> Result<Vec<Channel>, ChannelError> {
    from_vars(&|k| std::env::var(k).ok())
}

fn resolve_with(
    entries: Vec<ChannelConfig>,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Vec<Channel>, ChannelError> {
    let mut channels = Vec::new();
    for entry in entries {
        channels.push(channel(entry, &var)?);
    }
    channels.extend(from_vars(&var)?);
    let mut names = BTreeSet::new();
    for c in &channels {
        if !names.insert(c.name.as_str()) {
            return Err(ChannelError::Duplicate(c.name.clone()));
        }
    }
    Ok(channels)
}

fn from_vars(var: &dyn Fn(&str) -> Option<String>) -> Result<Vec<Channel>, ChannelError> {
    let set = |k: &str| var(k).filter(|v| !v.trim().is_empty());
    let mut out = Vec::new();
    if let Some(url) = set(ENV_SLACK_WEBHOOK) {
        out.push(Channel {
            name: "slack".into(),
            target: Target::Slack {
                webhook_url: http_url(&url, "slack", ENV_SLACK_WEBHOOK)?,
            },
        });
    }
    if let Some(url) = set(ENV_SMTP_URL) {
        let to: Vec<String> = set(ENV_EMAIL_TO)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        let from = set(ENV_EMAIL_FROM);
        out.push(Channel {
            name: "email".into(),
            target: Target::Email(email("email", &url, from.as_deref(), &to, ENV_EMAIL_TO)?),
        });
    }
    Ok(out)
}

fn channel(
    e: ChannelConfig,
    var: &impl Fn(&str) -> Option<String>,
) -> Result<Channel, ChannelError> {
    let name = e.name.trim().to_string();
    if name.is_empty() {
        return Err(ChannelError::NoName);
    }
    let secret = |value: Option<Secret>, env: Option<String>, key: &'static str| match (value, env)
    {
        (Some(v), None) => Ok(v.expose_secret().to_string()),
        (None, Some(env)) => {
            var(&env)
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| ChannelError::EnvUnset {
                    name: name.clone(),
                    key,
                    env,
                })
        }
        (Some(_), Some(_)) => Err(ChannelError::Both {
            name: name.clone(),
            key,
        }),
        (None, None) => Err(ChannelError::Missing {
            name: name.clone(),
            kind: e.kind.clone(),
            key,
        }),
    };
    let unused = |fields: &[(&'static str, bool)]| -> Result<(), ChannelError> {
        match fields.iter().find(|(_, set)| *set) {
            Some((key, _)) => Err(ChannelError::DoesNotApply {
                name: name.clone(),
                key,
                kind: e.kind.clone(),
            }),
            None => Ok(()),
        }
    };
    let slack_keys = e.webhook_url.is_some() || e.webhook_url_env.is_some();
    let email_keys = e.smtp_url.is_some() || e.smtp_url_env.is_some();
    let webhook_keys = e.url.is_some() || e.url_env.is_some();
    let mail_keys = e.from.is_some() || !e.to.is_empty();
    let target = match e.kind.as_str() {
        "slack" | "discord" => {
            unused(&[
                ("smtp_url", email_keys),
                ("url", webhook_keys),
                ("from/to", mail_keys),
            ])?;
            let url = secret(
                e.webhook_url.clone(),
                e.webhook_url_env.clone(),
                "webhook_url",
            )?;
            let webhook_url = http_url(&url, &name, "webhook_url")?;
            match e.kind.as_str() {
                "slack" => Target::Slack { webhook_url },
                _ => Target::Discord { webhook_url },
            }
        }
        "webhook" => {
            unused(&[
                ("webhook_url", slack_keys),
                ("smtp_url", email_keys),
                ("from/to", mail_keys),
            ])?;
            let url = secret(e.url.clone(), e.url_env.clone(), "url")?;
            Target::Webhook {
                url: http_url(&url, &name, "url")?,
            }
        }
        "email" => {
            unused(&[("webhook_url", slack_keys), ("url", webhook_keys)])?;
            let url = secret(e.smtp_url.clone(), e.smtp_url_env.clone(), "smtp_url")?;
            Target::Email(email(&name, &url, e.from.as_deref(), &e.to, "to")?)
        }
        "console" => {
            unused(&[
                ("webhook_url", slack_keys),
                ("smtp_url", email_keys),
                ("url", webhook_keys),
                ("from/to", mail_keys),
            ])?;
            Target::Console
        }
        other => {
            return Err(ChannelError::UnknownType {
                name,
                kind: other.to_string(),
            });
        }
    };
    Ok(Channel { name, target })
}

/// Check an http(s) URL without ever putting it in the message.
fn http_url(url: &str, name: &str, key: &str) -> Result<Secret, ChannelError> {
    match Url::parse(url.trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
            Ok(Secret::from(url.trim()))
        }
        _ => Err(ChannelError::NotHttp {
            name: name.to_string(),
            key: key.to_string(),
        }),
    }
}

fn email(
    name: &str,
    smtp_url: &str,
    from: Option<&str>,
    to: &[String],
    to_key: &str,
) -> Result<EmailTarget, ChannelError> {
    let from = from.unwrap_or(DEFAULT_FROM);
    let from: Mailbox = from.parse().map_err(|source| ChannelError::Sender {
        name: name.to_string(),
        from: from.to_string(),
        source,
    })?;
    if to.is_empty() {
        return Err(ChannelError::NoRecipient {
            name: name.to_string(),
            key: to_key.to_string(),
        });
    }
    let to = to
        .iter()
        .map(|t| {
            t.parse::<Mailbox>()
                .map_err(|source| ChannelError::Recipient {
                    name: name.to_string(),
                    to: t.clone(),
                    source,
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(EmailTarget {
        smtp_url: Secret::from(
            lettre_url(smtp_url)
                .map_err(|source| ChannelError::Smtp {
                    name: name.to_string(),
                    source,
                })?
                .as_str(),
        ),
        from,
        to,
    })
}

/// Translate our SMTP URL (`?tls=starttls|tls|none`, `smtps://`) into lettre's form
/// (`?tls=required`, `smtps://`, no parameter for plain). Without `tls`, `smtp://`
/// means STARTTLS, so a password is never sent in clear unless asked for.
fn lettre_url(raw: &str) -> Result<String, SmtpUrlError> {
    let mut url = Url::parse(raw.trim()).map_err(SmtpUrlError::NotUrl)?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(SmtpUrlError::NoHost);
    }
    let mut tls = None;
    let mut rest = Vec::new();
    for (k, v) in url.query_pairs() {
        if k == "tls" {
            tls = Some(v.into_owned());
        } else {
            rest.push((k.into_owned(), v.into_owned()));
        }
    }
    let (scheme, param) = match (url.scheme(), tls.as_deref()) {
        ("smtps", None | Some("tls")) | ("smtp", Some("tls")) => ("smtps", None),
        ("smtp", None | Some("starttls")) => ("smtp", Some("required")),
        ("smtp", Some("none")) => ("smtp", None),
        ("smtp" | "smtps", Some(other)) => {
            return Err(SmtpUrlError::Tls(other.to_string()));
        }
        (other, _) => {
            return Err(SmtpUrlError::Scheme(other.to_string()));
        }
    };
    if url.scheme() != scheme {
        // `Url::set_scheme` refuses no change between these two special-less schemes.
        url.set_scheme(scheme)
            .map_err(|_| SmtpUrlError::SchemeChange)?;
    }
    {
        let mut query = url.query_pairs_mut();
        query.clear();
        if let Some(p) = param {
            query.append_pair("tls", p);
        }
        for (k, v) in &rest {
            query.append_pair(k, v);
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Vec<ChannelConfig> {
        #[derive(Deserialize)]
        struct File {
            channel: Vec<ChannelConfig>,
        }
        toml::from_str::<File>(toml_text).unwrap().channel
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn every_type_resolves() {
        let channels = resolve_with(
            parse(
                r#"
[[channel]]
name = "oncall"
type = "slack"
webhook_url = "https://hooks.slack.com/services/T0/B0/sekrit"
[[channel]]
name = "team-mail"
type = "email"
smtp_url_env = "MY_SMTP"
from = "Drift <drift@example.com>"
to = ["a@example.com", "b@example.com"]
[[channel]]
name = "hook"
type = "webhook"
url = "http://127.0.0.1:9000/alerts?token=abc"
[[channel]]
name = "local"
type = "console"
[[channel]]
name = "team"
type = "discord"
webhook_url = "https://discord.com/api/webhooks/1/sekrit"
"#,
            ),
            |k| (k == "MY_SMTP").then(|| "smtp://u:hunter2@mail.example.com:587".to_string()),
        )
        .unwrap();
        let kinds: Vec<_> = channels.iter().map(|c| c.target.kind()).collect();
        assert_eq!(kinds, ["slack", "email", "webhook", "console", "discord"]);
        let Target::Email(mail) = &channels[1].target else {
            panic!("not email")
        };
        assert_eq!(
            mail.smtp_url.expose_secret(),
            "smtp://u:hunter2@mail.example.com:587?tls=required"
        );
        assert_eq!(mail.to.len(), 2);
        let debug = format!("{channels:?}");
        for secret in ["sekrit", "hunter2", "token=abc"] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
    }

    #[test]
    fn smtp_url_forms_map_to_lettre() {
        for (ours, theirs) in [
            ("smtp://h:2525?tls=none", "smtp://h:2525"),
            ("smtp://h", "smtp://h?tls=required"),
            ("smtp://h?tls=starttls", "smtp://h?tls=required"),
            ("smtp://u:p@h:465?tls=tls", "smtps://u:p@h:465"),
            ("smtps://u:p%40x@h", "smtps://u:p%40x@h"),
        ] {
            assert_eq!(lettre_url(ours).unwrap(), theirs, "{ours}");
        }
        for bad in [
            "smtp://h?tls=maybe",
            "http://h",
            "not a url",
            "smtp://u:pw@",
        ] {
            let err = lettre_url(bad).unwrap_err().to_string();
            assert!(!err.contains("pw@"), "{err}");
        }
    }

    #[test]
    fn the_environment_alone_sets_up_slack_and_email() {
        let vars = |k: &str| match k {
            ENV_SLACK_WEBHOOK => Some("https://hooks.slack.com/services/T/B/x".to_string()),
            ENV_SMTP_URL => Some("smtp://relay:25?tls=none".to_string()),
            ENV_EMAIL_TO => Some("ops@example.com, sre@example.com".to_string()),
            _ => None,
        };
        let channels = resolve_with(Vec::new(), vars).unwrap();
        assert_eq!(channels.len(), 2);
        assert_eq!(channels[0].name, "slack");
        let Target::Email(mail) = &channels[1].target else {
            panic!("not email")
        };
        assert_eq!(mail.from.email.to_string(), DEFAULT_FROM);
        assert_eq!(mail.to.len(), 2);
        let no_recipients = |k: &str| (k == ENV_SMTP_URL).then(|| "smtp://relay".to_string());
        let err = resolve_with(Vec::new(), no_recipients)
            .unwrap_err()
            .to_string();
        assert!(err.contains(ENV_EMAIL_TO), "{err}");
    }

    #[test]
    fn mistakes_name_the_channel_and_never_the_secret() {
        for (text, want) in [
            (
                "[[channel]]\nname = \"x\"\ntype = \"pager\"",
                "\"x\": unknown type \"pager\"",
            ),
            (
                "[[channel]]\nname = \"x\"\ntype = \"slack\"",
                "\"x\" (type = \"slack\") needs webhook_url",
            ),
            (
                "[[channel]]\nname = \"x\"\ntype = \"webhook\"\nurl_env = \"NOPE\"",
                "\"x\": url_env is NOPE, but NOPE is not set",
            ),
            (
                "[[channel]]\nname = \"x\"\ntype = \"console\"\n[[channel]]\nname = \"x\"\ntype = \"console\"",
                "\"x\" is defined twice",
            ),
            (
                "[[channel]]\nname = \"x\"\ntype = \"slack\"\nwebhook_url = \"ftp://sekrit-host/p\"",
                "must be an http:// or https:// URL",
            ),
            (
                "[[channel]]\nname = \"x\"\ntype = \"console\"\nto = [\"a@b.c\"]",
                "from/to does not apply",
            ),
            (
                "[[channel]]\nname = \"x\"\ntype = \"email\"\nsmtp_url = \"smtp://u:sekrit@h\"\nto = [\"not an address\"]",
                "recipient \"not an address\"",
            ),
        ] {
            let err = resolve_with(parse(text), no_env).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
            assert!(!err.contains("sekrit"), "{err}");
        }
        let dup = |k: &str| (k == ENV_SLACK_WEBHOOK).then(|| "https://h/x".to_string());
        let err = resolve_with(
            parse("[[channel]]\nname = \"slack\"\ntype = \"console\""),
            dup,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("\"slack\" is defined twice"), "{err}");
    }
}
