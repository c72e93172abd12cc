//! Email over SMTP (lettre): a multipart message with a plain-text and an HTML part,
//! every piece of alert text HTML-escaped.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::config::EmailTarget;
use super::message::{Facts, facts, plain_text};
use super::{SendError, chain};
use crate::domain::ExposeSecret;
use crate::domain::Message;

/// The subject line: `[driftwarden] [PAGE] title`.
pub fn subject(m: &Message) -> String {
    match &m.tier {
        Some(t) => format!("[driftwarden] [{}] {}", t.to_uppercase(), m.title),
        None => format!("[driftwarden] {}", m.title),
    }
}

/// The mail for `m`, from `from` to every `to`.
pub fn render(
    m: &Message,
    from: &Mailbox,
    to: &[Mailbox],
) -> Result<lettre::Message, lettre::error::Error> {
    let mut builder = lettre::Message::builder()
        .from(from.clone())
        .subject(subject(m));
    for t in to {
        builder = builder.to(t.clone());
    }
    builder.multipart(MultiPart::alternative_plain_html(plain_text(m), html(m)))
}

/// The HTML part. Everything that came from data or config is escaped.
pub fn html(m: &Message) -> String {
    let mut out = String::from("<!DOCTYPE html><html><body style=\"font-family:sans-serif\">");
    out.push_str(&format!("<h2>{}</h2>", escape(&m.title)));
    if let Some(t) = &m.tier {
        out.push_str(&format!("<p><b>Tier:</b> {}</p>", escape(t)));
    }
    if !m.text.is_empty() {
        out.push_str(&format!(
            "<pre style=\"white-space:pre-wrap\">{}</pre>",
            escape(&m.text)
        ));
    }
    for alert in &m.alerts {
        out.push_str(&alert_html(&facts(alert)));
    }
    out.push_str("</body></html>");
    out
}

fn alert_html(f: &Facts) -> String {
    let mut out = format!(
        "<hr><h3>{} {} on <code>{}</code></h3><p>{}</p>",
        f.event,
        escape(&f.what),
        escape(&f.scope),
        escape(&f.at)
    );
    if !f.summary.is_empty() {
        out.push_str(&format!("<p>{}</p>", escape(&f.summary)));
    }
    let mut rows = Vec::new();
    if let Some(o) = &f.observed {
        rows.push(("Observed", escape(o)));
    }
    if let Some(b) = &f.baseline {
        rows.push(("Baseline", escape(b)));
    }
    if !f.impact.is_empty() {
        rows.push(("Blast radius", escape(&f.impact.join(", "))));
    }
    if let Some(why) = &f.why_tier {
        rows.push(("Why this tier", escape(why)));
    }
    if !rows.is_empty() {
        out.push_str("<table>");
        for (k, v) in rows {
            out.push_str(&format!("<tr><th align=\"left\">{k}</th><td>{v}</td></tr>"));
        }
        out.push_str("</table>");
    }
    if !f.changes.is_empty() {
        out.push_str("<p><b>Changes nearby</b></p><ul>");
        for c in &f.changes {
            out.push_str(&format!("<li>{}</li>", escape(c)));
        }
        out.push_str("</ul>");
    }
    if !f.members.is_empty() {
        out.push_str("<p><b>Same incident</b></p><ul>");
        for m in &f.members {
            out.push_str(&format!("<li>{}</li>", escape(m)));
        }
        out.push_str("</ul>");
    }
    if f.reopens > 0 {
        out.push_str(&format!("<p>Reopened {} time(s)</p>", f.reopens));
    }
    out
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The SMTP transport of an email channel.
pub fn transport(
    target: &EmailTarget,
    timeout: Duration,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, SendError> {
    let builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(target.smtp_url.expose_secret())
        .map_err(|e| SendError::Permanent(format!("SMTP settings: {}", chain(&e))))?;
    Ok(builder.timeout(Some(timeout)).build())
}

/// Send one message; SMTP 5xx answers are permanent, anything else may pass.
pub async fn send(
    mailer: &AsyncSmtpTransport<Tokio1Executor>,
    target: &EmailTarget,
    m: &Message,
) -> Result<(), SendError> {
    let mail = render(m, &target.from, &target.to)
        .map_err(|e| SendError::Permanent(format!("building the mail: {e}")))?;
    match mailer.send(mail).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_permanent() => Err(SendError::Permanent(chain(&e))),
        Err(e) => Err(SendError::Transient(chain(&e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::message::tests::alert;

    #[test]
    fn html_escapes_everything_and_has_the_numbers() {
        let mut a = alert();
        a.scope
            .insert("route".into(), "<script>alert(1)</script>".into());
        let m = Message {
            title: "Cost & \"quality\"".into(),
            tier: Some("page".into()),
            alerts: vec![a],
            text: String::new(),
        };
        let html = html(&m);
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(
            html.contains("<h2>Cost &amp; &quot;quality&quot;</h2>"),
            "{html}"
        );
        assert!(html.contains("$182.50/day spent"), "{html}");
        assert!(
            html.contains("<li>deploy at 2026-06-06T09:00:00Z"),
            "{html}"
        );
        assert_eq!(subject(&m), "[driftwarden] [PAGE] Cost & \"quality\"");
    }
}
