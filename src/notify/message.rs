//! What a notification says, independent of the channel: a group of alert lines, or
//! an informational text (a change-impact report, a digest). Every renderer reads an
//! alert's evidence through `facts`, so each channel shows the same numbers.

use serde_json::Value;

use crate::domain::{Alert, AlertEvent, Message, rfc3339_ms, scope_label};

/// What a person needs from one alert, as text each channel formats its own way.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Facts {
    /// `FIRING` or `RESOLVED`.
    pub event: &'static str,
    /// `rule · kind`.
    pub what: String,
    /// The scope as `model=gpt-4o,route=chat`, or `global`.
    pub scope: String,
    /// When, RFC 3339.
    pub at: String,
    /// The alert's one-sentence summary.
    pub summary: String,
    /// `evidence.observed`, formatted.
    pub observed: Option<String>,
    /// `evidence.baseline`, formatted.
    pub baseline: Option<String>,
    /// Blast-radius numbers present in `evidence.impact`, one phrase each.
    pub impact: Vec<String>,
    /// Why it got its tier: the threshold the deviation's harm met, and how that
    /// harm was measured (`evidence.tier`).
    pub why_tier: Option<String>,
    /// Change events near the alert (`evidence.changes`), one line each.
    pub changes: Vec<String>,
    /// The incident's consequences, one line each.
    pub members: Vec<String>,
    /// How often the incident reopened.
    pub reopens: u32,
}

/// Read an alert's evidence, tolerating any field being absent or oddly typed.
pub fn facts(alert: &Alert) -> Facts {
    let ev = &alert.evidence;
    Facts {
        event: match alert.event {
            AlertEvent::Firing => "FIRING",
            AlertEvent::Updated => "UPDATED",
            AlertEvent::Reopened => "REOPENED",
            AlertEvent::Resolved => "RESOLVED",
        },
        what: format!("{} · {}", alert.rule, alert.kind.as_str()),
        scope: scope_label(&alert.scope),
        at: rfc3339_ms::format(alert.at_ms),
        summary: alert.summary.clone(),
        observed: ev.get("observed").filter(|v| !v.is_null()).map(value),
        baseline: ev.get("baseline").filter(|v| !v.is_null()).map(value),
        impact: ev.get("impact").map(impact).unwrap_or_default(),
        why_tier: ev.get("tier").and_then(why_tier),
        changes: ev
            .get("changes")
            .and_then(Value::as_array)
            .map(|list| list.iter().map(change).collect())
            .unwrap_or_default(),
        members: alert
            .members
            .iter()
            .map(|m| {
                format!(
                    "{} · {} on {} [{}]: {}",
                    m.rule,
                    m.kind.as_str(),
                    scope_label(&m.scope),
                    m.tier,
                    m.summary
                )
            })
            .collect(),
        reopens: alert.reopens,
    }
}

/// A number with at most four significant digits; anything else compactly.
fn value(v: &Value) -> String {
    match v {
        Value::Number(n) => n.as_f64().map(number).unwrap_or_else(|| n.to_string()),
        Value::String(s) => s.clone(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k}={}", value(v)))
            .collect::<Vec<_>>()
            .join(", "),
        Value::Array(items) => items.iter().map(value).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

fn number(x: f64) -> String {
    if x == x.trunc() && x.abs() < 1e15 {
        return format!("{x:.0}");
    }
    let digits = (3 - x.abs().log10().floor() as i32).clamp(0, 8) as usize;
    let text = format!("{x:.digits$}");
    if digits == 0 {
        return text;
    }
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn impact(v: &Value) -> Vec<String> {
    let f = |k: &str| v.get(k).and_then(Value::as_f64);
    let mut out = Vec::new();
    if let Some(s) = f("requests_share") {
        out.push(format!("{} of requests", percent(s)));
    }
    if let Some(s) = f("spend_share") {
        out.push(format!("{} of spend", percent(s)));
    }
    if let Some(t) = v.get("tenants").and_then(Value::as_u64) {
        out.push(format!("{t} tenant{}", if t == 1 { "" } else { "s" }));
    }
    if let Some(m) = f("money_at_risk_per_day_usd") {
        out.push(format!("${m:.2}/day spent"));
    }
    if v.get("customer_facing").and_then(Value::as_bool) == Some(true) {
        out.push("customer-facing".to_string());
    }
    out
}

fn why_tier(v: &Value) -> Option<String> {
    let s = |k: &str| v.get(k).and_then(Value::as_str);
    let mut line = format!("{} because {}", s("tier")?, s("chosen_by")?);
    if let Some(harm) = s("harm") {
        line.push_str(&format!(" (harm: {harm})"));
    }
    Some(line)
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

fn change(v: &Value) -> String {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("");
    let kind = match s("kind") {
        "" => "change",
        k => k,
    };
    let mut line = kind.to_string();
    if !s("at").is_empty() {
        line.push_str(&format!(" at {}", s("at")));
    }
    let scope = match v.get("scope") {
        Some(Value::Object(map)) if !map.is_empty() => Some(value(&Value::Object(map.clone()))),
        Some(Value::String(text)) if !text.is_empty() => Some(text.clone()),
        _ => None,
    };
    line.push_str(&format!(" ({})", scope.as_deref().unwrap_or("global")));
    if !s("note").is_empty() {
        line.push_str(&format!(": {}", s("note")));
    }
    line
}

/// The message as plain text: the console's output, the email's text part and the
/// source of Slack's fallback text.
pub fn plain_text(m: &Message) -> String {
    let mut out = String::new();
    match &m.tier {
        Some(tier) => out.push_str(&format!("[{}] {}\n", tier.to_uppercase(), m.title)),
        None => out.push_str(&format!("{}\n", m.title)),
    }
    if !m.text.is_empty() {
        out.push_str(&format!("\n{}\n", m.text.trim_end()));
    }
    for alert in &m.alerts {
        out.push('\n');
        out.push_str(&alert_text(&facts(alert)));
    }
    out
}

/// An alert's evidence as short lines, after its headline and summary: observed vs
/// baseline, blast radius, why this tier, nearby changes, consequences, reopens.
fn detail_lines(f: &Facts) -> Vec<String> {
    let mut out = Vec::new();
    if f.observed.is_some() || f.baseline.is_some() {
        out.push(format!(
            "observed {} vs baseline {}",
            f.observed.as_deref().unwrap_or("n/a"),
            f.baseline.as_deref().unwrap_or("n/a")
        ));
    }
    if !f.impact.is_empty() {
        out.push(format!("blast radius: {}", f.impact.join(", ")));
    }
    if let Some(why) = &f.why_tier {
        out.push(format!("tier: {why}"));
    }
    out.extend(f.changes.iter().map(|c| format!("change nearby: {c}")));
    out.extend(f.members.iter().map(|m| format!("consequence: {m}")));
    if f.reopens > 0 {
        out.push(format!("reopened {} time(s)", f.reopens));
    }
    out
}

/// One alert as plain text lines.
pub fn alert_text(f: &Facts) -> String {
    let mut out = format!("{} {} on {} at {}\n", f.event, f.what, f.scope, f.at);
    if !f.summary.is_empty() {
        out.push_str(&format!("  {}\n", f.summary));
    }
    for line in detail_lines(f) {
        out.push_str(&format!("  {line}\n"));
    }
    out
}

/// One alert in the Markdown subset the chat bots share (bold, inline code, lists):
/// Feishu's `lark_md`, DingTalk's and WeCom's `markdown`.
pub fn markdown_alert(f: &Facts) -> String {
    let mut out = format!("**{}** {} on `{}`\n", f.event, f.what, f.scope);
    if !f.summary.is_empty() {
        out.push_str(&format!("{}\n", f.summary));
    }
    for line in detail_lines(f) {
        out.push_str(&format!("- {line}\n"));
    }
    out.push_str(&format!("- at {}\n", f.at));
    out
}

/// The headline as chat services show it: `[TIER] title`, or the title alone.
pub fn headline(m: &Message) -> String {
    let title = match m.title.trim() {
        "" => "driftwarden",
        t => t,
    };
    match &m.tier {
        Some(tier) => format!("[{}] {title}", tier.to_uppercase()),
        None => title.to_string(),
    }
}

/// A whole message as Markdown for a chat bot, within `max` as `len` measures it.
pub fn markdown(
    m: &Message,
    max: usize,
    len: fn(&str) -> usize,
    dashboard_url: Option<&str>,
) -> String {
    let mut head = format!("**{}**", headline(m));
    if !m.text.is_empty() {
        head.push_str(&format!("\n\n{}", m.text.trim_end()));
    }
    // An informational message is all head; an alert message keeps room for its alerts.
    let room = if m.alerts.is_empty() { max } else { max / 2 };
    let head = cut_to(&head, room, len);
    fit(
        &head,
        m.alerts.iter().map(|a| markdown_alert(&facts(a))),
        max,
        len,
        dashboard_url,
    )
}

/// At most `max` characters, marked when cut.
pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The line that stands for alerts a message had no room for: how many, and where a
/// person reads them all (the dashboard when its public URL is configured).
pub fn more_alerts(n: usize, dashboard_url: Option<&str>) -> String {
    let noun = if n == 1 { "alert" } else { "alerts" };
    match dashboard_url {
        Some(url) => format!("…and {n} more {noun}: {url}"),
        None => format!("…and {n} more {noun} (see `driftwarden alerts` or the dashboard)"),
    }
}

/// A chat message within a size limit: `head`, then each alert's section as long as
/// the whole stays within `max` (as `len` measures it), then `more_alerts` for the
/// rest. The first section is cut rather than dropped, so a message always shows at
/// least one alert.
pub fn fit(
    head: &str,
    sections: impl ExactSizeIterator<Item = String>,
    max: usize,
    len: fn(&str) -> usize,
    dashboard_url: Option<&str>,
) -> String {
    let total = sections.len();
    // Room kept for the "more" line, whatever its count.
    let reserve = len(&more_alerts(total, dashboard_url)) + 2;
    let mut out = head.trim_end().to_string();
    for (shown, section) in sections.enumerate() {
        let room = max.saturating_sub(len(&out) + 2 + if shown + 1 < total { reserve } else { 0 });
        if len(&section) <= room {
            out.push_str("\n\n");
            out.push_str(section.trim_end());
            continue;
        }
        if shown == 0 {
            out.push_str("\n\n");
            out.push_str(&cut_to(&section, room, len));
            if total == 1 {
                return out;
            }
        }
        let left = total - shown - usize::from(shown == 0);
        out.push_str("\n\n");
        out.push_str(&more_alerts(left, dashboard_url));
        return out;
    }
    out
}

/// `s` cut to at most `max` as `len` measures it (characters or bytes): the longest
/// `cut` that fits, found by bisection.
fn cut_to(s: &str, max: usize, len: fn(&str) -> usize) -> String {
    if len(s) <= max {
        return s.to_string();
    }
    let (mut lo, mut hi) = (0, s.chars().count());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if len(&cut(s, mid)) <= max {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    cut(s, lo)
}

/// Characters, for `fit`.
pub fn chars(s: &str) -> usize {
    s.chars().count()
}

/// UTF-8 bytes, for `fit`.
pub fn bytes(s: &str) -> usize {
    s.len()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::{Kind, Lane};
    use serde_json::json;

    /// A page-tier message of `n` such alerts, each with `summary`.
    pub(crate) fn message_with(n: usize, summary: &str) -> Message {
        let alerts = (0..n)
            .map(|_| Alert {
                summary: summary.into(),
                ..alert()
            })
            .collect();
        Message {
            title: "Cost drift on gpt-4o".into(),
            tier: Some("page".into()),
            alerts,
            text: String::new(),
        }
    }

    /// An alert with every evidence convention filled in.
    pub(crate) fn alert() -> Alert {
        Alert {
            event: AlertEvent::Firing,
            members: Vec::new(),
            reopens: 0,
            incident: None,
            rule: "cost-per-request".into(),
            lane: Lane::Cost,
            kind: Kind::CostDrift,
            scope: [("model".to_string(), "gpt-4o".to_string())].into(),
            at_ms: 1_780_738_800_000,
            tier: "page".into(),
            tier_rank: 1,
            summary: "cost per request up 48% <since> the deploy".into(),
            evidence: json!({
                "observed": 0.01234567,
                "baseline": {"median": 0.0083, "mad": 0.0004},
                "impact": {"requests_share": 0.42, "spend_share": 0.615, "tenants": 7,
                           "money_at_risk_per_day_usd": 182.5, "customer_facing": true},
                "changes": [{"kind": "deploy", "at": "2026-06-06T09:00:00Z",
                             "scope": {"route": "summarize"}, "note": "prompt template v2"}],
                "tier": {"tier": "page", "chosen_by": "money_at_risk_per_day_usd 76.04 >= 50",
                         "harm": "extra money per day"}
            }),
        }
    }

    #[test]
    fn evidence_conventions_are_read() {
        let f = facts(&alert());
        assert_eq!(f.event, "FIRING");
        assert_eq!(f.scope, "model=gpt-4o");
        assert_eq!(f.observed.as_deref(), Some("0.01235"));
        assert_eq!(f.baseline.as_deref(), Some("mad=0.0004, median=0.0083"));
        assert_eq!(
            f.impact,
            [
                "42.0% of requests",
                "61.5% of spend",
                "7 tenants",
                "$182.50/day spent",
                "customer-facing"
            ]
        );
        assert_eq!(
            f.changes,
            ["deploy at 2026-06-06T09:00:00Z (route=summarize): prompt template v2"]
        );
    }

    #[test]
    fn absent_or_odd_evidence_renders_without_it() {
        let mut a = alert();
        a.evidence = json!({"observed": 120, "impact": {"tenants": "many"}, "changes": "none"});
        let f = facts(&a);
        assert_eq!(f.observed.as_deref(), Some("120"));
        assert_eq!((f.baseline, f.impact.len(), f.changes.len()), (None, 0, 0));
        a.evidence = Value::Null;
        let text = alert_text(&facts(&a));
        assert!(!text.contains("observed"), "{text}");
        assert!(text.starts_with("FIRING cost-per-request · cost_drift on model=gpt-4o"));
    }

    #[test]
    fn plain_text_has_everything_a_reader_needs() {
        let m = Message {
            title: "Cost drift on gpt-4o".into(),
            tier: Some("page".into()),
            alerts: vec![alert()],
            text: String::new(),
        };
        let text = plain_text(&m);
        for want in [
            "[PAGE] Cost drift on gpt-4o",
            "observed 0.01235 vs baseline mad=0.0004, median=0.0083",
            "blast radius: 42.0% of requests, 61.5% of spend, 7 tenants",
            "change nearby: deploy at 2026-06-06T09:00:00Z",
            "tier: page because money_at_risk_per_day_usd 76.04 >= 50 (harm: extra money per day)",
        ] {
            assert!(text.contains(want), "{want} missing from {text}");
        }
    }

    #[test]
    fn fit_keeps_whole_sections_and_counts_the_rest() {
        let sections = || (0..10).map(|i| format!("section {i} {}", "x".repeat(80)));
        let text = fit("HEAD", sections(), 400, chars, Some("https://dw.example/"));
        assert!(chars(&text) <= 400, "{}", chars(&text));
        assert!(text.starts_with("HEAD\n\nsection 0 "), "{text}");
        let shown = text.matches("section ").count();
        assert!(shown >= 3, "{text}");
        assert!(
            text.ends_with(&format!(
                "…and {} more alerts: https://dw.example/",
                10 - shown
            )),
            "{text}"
        );
        let all = fit("HEAD", sections(), 10_000, chars, None);
        assert_eq!(all.matches("section ").count(), 10);
        assert!(!all.contains("more alert"));
        // One section longer than the whole limit is cut, in bytes, on a char boundary.
        let one = fit("H", ["é".repeat(500)].into_iter(), 101, bytes, None);
        assert!(one.len() <= 101 && one.ends_with('…'), "{one}");
    }

    #[test]
    fn numbers_keep_four_significant_digits() {
        assert_eq!(number(1234.5678), "1235");
        assert_eq!(number(0.5), "0.5");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(1230.4), "1230");
        assert_eq!(number(-0.000123456), "-0.0001235");
    }
}
