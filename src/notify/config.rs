//! Notification channels: `[[channel]]` entries of the config file, plus the default
//! Slack and email channels a sidecar gets from the environment alone.

use std::collections::BTreeSet;
use std::time::Duration;

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
    /// `slack`, `discord`, `teams`, `telegram`, `feishu`, `dingtalk`, `wecom`,
    /// `pagerduty`, `email`, `webhook` or `console`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Slack, Discord, Teams, Feishu, DingTalk, WeCom: the webhook URL.
    pub webhook_url: Option<Secret>,
    /// An environment variable holding the webhook URL instead.
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
    /// Webhook: the URL the JSON message is posted to. PagerDuty: the events endpoint
    /// (default PagerDuty's US one). Telegram: the Bot API's base URL (default
    /// `https://api.telegram.org`).
    pub url: Option<Secret>,
    /// Webhook: an environment variable holding the URL instead.
    pub url_env: Option<String>,
    /// PagerDuty: the integration's routing key (Events API v2).
    pub routing_key: Option<Secret>,
    /// PagerDuty: an environment variable holding the routing key instead.
    pub routing_key_env: Option<String>,
    /// Telegram: the bot's token.
    pub bot_token: Option<Secret>,
    /// Telegram: an environment variable holding the bot's token instead.
    pub bot_token_env: Option<String>,
    /// Telegram: the chat (a number such as `-1001234567890`, or `@channelname`).
    pub chat_id: Option<String>,
    /// Feishu, DingTalk: the bot's signing secret, if its security setting signs.
    pub secret: Option<Secret>,
    /// Feishu, DingTalk: an environment variable holding the signing secret instead.
    pub secret_env: Option<String>,
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
    /// A Microsoft Teams Workflows webhook: an Adaptive Card.
    Teams {
        /// The workflow's URL (its signature parameter is the credential).
        webhook_url: Secret,
    },
    /// A Telegram bot writing to one chat.
    Telegram {
        /// The `sendMessage` URL, bot token included.
        send_url: Secret,
        /// The chat.
        chat_id: String,
    },
    /// A Feishu/Lark custom bot: an interactive card, signed if it has a secret.
    Feishu {
        /// The bot's webhook URL.
        webhook_url: Secret,
        /// Its signing secret.
        secret: Option<Secret>,
    },
    /// A DingTalk robot: markdown, signed if it has a secret, 20 messages a minute.
    DingTalk {
        /// The robot's URL with its `access_token`.
        webhook_url: Secret,
        /// Its signing secret.
        secret: Option<Secret>,
    },
    /// A WeCom group robot: markdown, 20 messages a minute.
    WeCom {
        /// The robot's URL with its `key`.
        webhook_url: Secret,
    },
    /// PagerDuty Events API v2: trigger and resolve, one `dedup_key` per incident.
    PagerDuty {
        /// The events endpoint.
        url: Secret,
        /// The integration's routing key.
        routing_key: Secret,
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
            Target::Teams { .. } => "teams",
            Target::Telegram { .. } => "telegram",
            Target::Feishu { .. } => "feishu",
            Target::DingTalk { .. } => "dingtalk",
            Target::WeCom { .. } => "wecom",
            Target::PagerDuty { .. } => "pagerduty",
            Target::Email(_) => "email",
            Target::Webhook { .. } => "webhook",
            Target::Console => "console",
        }
    }

    /// How deliveries to this target are paced, and what they are paced by: the
    /// service's documented limit per webhook (or bot and chat), shared by channels
    /// that name the same one.
    pub fn pace(&self) -> Option<(String, Duration)> {
        let (key, every) = match self {
            // Slack: one a second; Discord 5 per 2 s; Teams and Feishu 5 a second.
            Target::Slack { webhook_url }
            | Target::Discord { webhook_url }
            | Target::Teams { webhook_url }
            | Target::Feishu { webhook_url, .. } => (webhook_url, 1),
            // 20 a minute per robot; Telegram allows 20 a minute into one group.
            Target::DingTalk { webhook_url, .. } | Target::WeCom { webhook_url } => {
                (webhook_url, 3)
            }
            Target::Telegram { send_url, chat_id } => {
                return Some((
                    format!("{}#{chat_id}", send_url.expose_secret()),
                    Duration::from_secs(3),
                ));
            }
            Target::PagerDuty { .. }
            | Target::Webhook { .. }
            | Target::Email(_)
            | Target::Console => {
                return None;
            }
        };
        Some((key.expose_secret().to_string(), Duration::from_secs(every)))
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
        "[[channel]] {name:?}: unknown type {kind:?}; use slack, discord, teams, telegram, feishu, dingtalk, wecom, pagerduty, email, webhook or console"
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
    let set = [
        (
            "webhook_url",
            e.webhook_url.is_some() || e.webhook_url_env.is_some(),
        ),
        ("smtp_url", e.smtp_url.is_some() || e.smtp_url_env.is_some()),
        ("url", e.url.is_some() || e.url_env.is_some()),
        ("from/to", e.from.is_some() || !e.to.is_empty()),
        (
            "routing_key",
            e.routing_key.is_some() || e.routing_key_env.is_some(),
        ),
        (
            "bot_token",
            e.bot_token.is_some() || e.bot_token_env.is_some(),
        ),
        ("chat_id", e.chat_id.is_some()),
        ("secret", e.secret.is_some() || e.secret_env.is_some()),
    ];
    let allowed: &[&str] = match e.kind.as_str() {
        "slack" | "discord" | "teams" | "wecom" => &["webhook_url"],
        "feishu" | "dingtalk" => &["webhook_url", "secret"],
        "pagerduty" => &["routing_key", "url"],
        "telegram" => &["bot_token", "chat_id", "url"],
        "webhook" => &["url"],
        "email" => &["smtp_url", "from/to"],
        "console" => &[],
        other => {
            return Err(ChannelError::UnknownType {
                name,
                kind: other.to_string(),
            });
        }
    };
    if let Some((key, _)) = set.iter().find(|(k, on)| *on && !allowed.contains(k)) {
        return Err(ChannelError::DoesNotApply {
            name: name.clone(),
            key,
            kind: e.kind.clone(),
        });
    }
    let webhook = || -> Result<Secret, ChannelError> {
        let url = secret(
            e.webhook_url.clone(),
            e.webhook_url_env.clone(),
            "webhook_url",
        )?;
        http_url(&url, &name, "webhook_url")
    };
    let signing = || -> Result<Option<Secret>, ChannelError> {
        match (&e.secret, &e.secret_env) {
            (None, None) => Ok(None),
            _ => Ok(Some(Secret::from(secret(
                e.secret.clone(),
                e.secret_env.clone(),
                "secret",
            )?))),
        }
    };
    // An optional URL with a default (PagerDuty's endpoint, Telegram's API).
    let url_or = |default: &str| -> Result<Secret, ChannelError> {
        match (&e.url, &e.url_env) {
            (None, None) => Ok(Secret::from(default)),
            _ => http_url(
                &secret(e.url.clone(), e.url_env.clone(), "url")?,
                &name,
                "url",
            ),
        }
    };
    let target = match e.kind.as_str() {
        "slack" => Target::Slack {
            webhook_url: webhook()?,
        },
        "discord" => Target::Discord {
            webhook_url: webhook()?,
        },
        "teams" => Target::Teams {
            webhook_url: webhook()?,
        },
        "wecom" => Target::WeCom {
            webhook_url: webhook()?,
        },
        "feishu" => Target::Feishu {
            webhook_url: webhook()?,
            secret: signing()?,
        },
        "dingtalk" => Target::DingTalk {
            webhook_url: webhook()?,
            secret: signing()?,
        },
        "pagerduty" => Target::PagerDuty {
            url: url_or(super::pagerduty::EVENTS_URL)?,
            routing_key: Secret::from(secret(
                e.routing_key.clone(),
                e.routing_key_env.clone(),
                "routing_key",
            )?),
        },
        "telegram" => {
            let token = secret(e.bot_token.clone(), e.bot_token_env.clone(), "bot_token")?;
            let chat_id = e
                .chat_id
                .clone()
                .filter(|c| !c.trim().is_empty())
                .ok_or_else(|| ChannelError::Missing {
                    name: name.clone(),
                    kind: e.kind.clone(),
                    key: "chat_id",
                })?;
            let api = url_or(super::telegram::API_URL)?;
            Target::Telegram {
                send_url: Secret::from(
                    super::telegram::send_url(api.expose_secret(), token.trim()).as_str(),
                ),
                chat_id: chat_id.trim().to_string(),
            }
        }
        "webhook" => {
            let url = secret(e.url.clone(), e.url_env.clone(), "url")?;
            Target::Webhook {
                url: http_url(&url, &name, "url")?,
            }
        }
        "email" => {
            let url = secret(e.smtp_url.clone(), e.smtp_url_env.clone(), "smtp_url")?;
            Target::Email(email(&name, &url, e.from.as_deref(), &e.to, "to")?)
        }
        _ => Target::Console,
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
    fn the_chat_and_paging_services_resolve_with_their_keys() {
        let channels = resolve_with(
            parse(
                r#"
[[channel]]
name = "pd"
type = "pagerduty"
routing_key_env = "PD_KEY"
[[channel]]
name = "pd-eu"
type = "pagerduty"
routing_key = "R0UTE"
url = "https://events.eu.pagerduty.com/v2/enqueue"
[[channel]]
name = "tg"
type = "telegram"
bot_token = "123:sekrit-token"
chat_id = "-1001234567890"
[[channel]]
name = "lark"
type = "feishu"
webhook_url = "https://open.feishu.cn/open-apis/bot/v2/hook/sekrit-hook"
secret = "sekrit-sign"
[[channel]]
name = "ding"
type = "dingtalk"
webhook_url = "https://oapi.dingtalk.com/robot/send?access_token=sekrit-tok"
[[channel]]
name = "wx"
type = "wecom"
webhook_url = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=sekrit-key"
[[channel]]
name = "ms"
type = "teams"
webhook_url = "https://prod.westus.logic.azure.com/workflows/1/triggers/manual/paths/invoke?sig=sekrit-sig"
"#,
            ),
            |k| (k == "PD_KEY").then(|| "sekrit-routing".to_string()),
        )
        .unwrap();
        let kinds: Vec<_> = channels.iter().map(|c| c.target.kind()).collect();
        assert_eq!(
            kinds,
            [
                "pagerduty",
                "pagerduty",
                "telegram",
                "feishu",
                "dingtalk",
                "wecom",
                "teams"
            ]
        );
        let Target::PagerDuty { url, routing_key } = &channels[0].target else {
            panic!("not pagerduty")
        };
        assert_eq!(url.expose_secret(), super::super::pagerduty::EVENTS_URL);
        assert_eq!(routing_key.expose_secret(), "sekrit-routing");
        let Target::Telegram { send_url, chat_id } = &channels[2].target else {
            panic!("not telegram")
        };
        assert_eq!(
            send_url.expose_secret(),
            "https://api.telegram.org/bot123:sekrit-token/sendMessage"
        );
        assert_eq!(chat_id, "-1001234567890");
        assert!(matches!(
            &channels[3].target,
            Target::Feishu {
                secret: Some(_),
                ..
            }
        ));
        assert!(matches!(
            &channels[4].target,
            Target::DingTalk { secret: None, .. }
        ));
        // DingTalk and WeCom allow 20 a minute; the rest one a second or no pacing.
        let paces: Vec<_> = channels
            .iter()
            .map(|c| c.target.pace().map(|(_, d)| d.as_secs()))
            .collect();
        assert_eq!(
            paces,
            [None, None, Some(3), Some(1), Some(3), Some(3), Some(1)]
        );
        let debug = format!("{channels:?}");
        assert!(!debug.contains("sekrit"), "{debug}");
        for (text, want) in [
            ("type = \"telegram\"\nbot_token = \"1:x\"", "needs chat_id"),
            ("type = \"pagerduty\"", "needs routing_key"),
            (
                "type = \"wecom\"\nwebhook_url = \"https://h/x\"\nsecret = \"s\"",
                "secret does not apply",
            ),
            (
                "type = \"slack\"\nwebhook_url = \"https://h/x\"\nchat_id = \"1\"",
                "chat_id does not apply",
            ),
        ] {
            let err = resolve_with(parse(&format!("[[channel]]\nname = \"x\"\n{text}")), no_env)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{text}: {err}");
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
