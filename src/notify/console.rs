//! The console notifier: human lines on stdout, for trying driftwarden locally.

use std::io::Write;

use super::message::{Message, plain_text};

/// The message as printed: its plain text between separator lines.
pub fn render(m: &Message) -> String {
    format!("──── driftwarden ────\n{}", plain_text(m))
}

/// Print the message to stdout.
pub fn print(m: &Message) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(render(m).as_bytes())?;
    out.flush()
}
