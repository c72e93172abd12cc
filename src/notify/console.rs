//! The console notifier: human lines on stdout, for trying driftwarden locally.

use std::io::Write;

use super::message::plain_text;
use crate::domain::Message;

/// The message as printed: a separator line naming the channel, then its plain text.
/// The name shows which real channel (`slack`, `email`) a console stands in for.
pub fn render(channel: &str, m: &Message) -> String {
    format!("──── driftwarden → {channel} ────\n{}", plain_text(m))
}

/// Print the message of channel `channel` to stdout.
pub fn print(channel: &str, m: &Message) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(render(channel, m).as_bytes())?;
    out.flush()
}
