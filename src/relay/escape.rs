//! Text from the network (addresses, upstream replies, spool errors) made safe to print on
//! an admin's terminal or in a log line: control characters become visible escapes.
//!
//! tracing-subscriber's `fmt` escapes ANSI sequences in an event's message only; a field
//! recorded with `%` (Display) is written as it is. An ESC from an envelope address or an
//! upstream reply would then reach the terminal that tails the log, and a line feed would
//! forge a log line. Every such field, and every such string `sealpost queue` prints, goes
//! through [`Escaped`].

use std::fmt::{self, Write};

/// Displays a string with C0 controls, DEL and C1 controls escaped (`\x1b`, `\n`, `\r`,
/// `\t`, `\u{9b}`) and a backslash doubled, so that an escape seen in the output is never
/// ambiguous with one that was in the input.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if (c as u32) < 0x20 || c == '\x7f' => write!(f, "\\x{:02x}", c as u32)?,
                // C1 controls: some terminals read 0x9b as CSI, like ESC [.
                c if ('\u{80}'..='\u{9f}').contains(&c) => write!(f, "\\u{{{:x}}}", c as u32)?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// [`Escaped`] as an owned string.
pub fn escape(s: &str) -> String {
    Escaped(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_become_visible_and_text_stays() {
        assert_eq!(
            escape("a\x1b[31mred\x1b[0m\r\nInjected: yes\tTab\x07\x7f\u{9b}2J"),
            "a\\x1b[31mred\\x1b[0m\\r\\nInjected: yes\\tTab\\x07\\x7f\\u{9b}2J"
        );
        assert_eq!(escape("grüße <a@b.example>"), "grüße <a@b.example>");
        // A literal backslash-x in the input cannot pass for an escaped ESC.
        assert_eq!(escape("\\x1b"), "\\\\x1b");
        assert!(!escape("\x00\x1f\u{85}").chars().any(char::is_control));
    }
}
