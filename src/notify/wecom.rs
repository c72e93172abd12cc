//! WeCom (企业微信) group robots: a `markdown` message of at most 4096 bytes of
//! UTF-8. A robot takes 20 messages a minute, so the worker paces it to one every 3
//! seconds. The robot's key in the URL is its only credential (WeCom defines no
//! signature). Refusals come inside a 200 (`errcode`; 45009: over the limit).

use std::time::Duration;

use serde_json::{Value, json};

use super::message::{bytes, markdown};
use super::webhook::Refusals;
use crate::domain::Message;

/// Bytes of `markdown.content` WeCom accepts.
const MAX_CONTENT: usize = 4096;

/// How WeCom refuses inside a 200.
pub const REFUSALS: Refusals = Refusals {
    code: "errcode",
    text: "errmsg",
    rate_limited: &[(45009, Duration::from_secs(60))],
    transient: &[-1],
};

/// The JSON body for a WeCom group robot.
pub fn render(m: &Message, dashboard_url: Option<&str>) -> Value {
    json!({
        "msgtype": "markdown",
        "markdown": {"content": markdown(m, MAX_CONTENT, bytes, dashboard_url)},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::message::tests::message_with;

    #[test]
    fn the_content_fits_4096_bytes_of_utf8() {
        for n in [1, 3, 30] {
            let body = render(
                &message_with(n, &"成本上升 ".repeat(200)),
                Some("https://dw.example/"),
            );
            let content = body["markdown"]["content"].as_str().unwrap();
            assert!(content.len() <= MAX_CONTENT, "{n}: {}", content.len());
            assert!(content.contains("**FIRING** cost-per-request"), "{content}");
        }
        let one = render(&message_with(1, "cost up"), None);
        assert!(
            !one["markdown"]["content"]
                .as_str()
                .unwrap()
                .contains("more alert")
        );
    }
}
