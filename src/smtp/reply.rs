//! SMTP replies: a code, an enhanced status code (RFC 3463) and a text a person can act on.

use std::fmt;

/// Whether a failure is worth retrying. An enum, so that no code path does digit arithmetic
/// on reply codes to decide it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// 2xx: done.
    Success,
    /// 3xx: go on (354 after DATA, 334 during AUTH).
    Intermediate,
    /// 4xx: try again later.
    Transient,
    /// 5xx: do not try again.
    Permanent,
}

/// One SMTP reply, possibly multi-line.
///
/// `enhanced` is `None` only for replies that RFC 2034 exempts (the greeting and 354/334
/// continuations); every other reply the gateway sends carries one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<Enhanced>,
    /// One entry per line, without CRLF.
    pub lines: Vec<String>,
}

/// An enhanced status code, `class.subject.detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enhanced(pub u8, pub u16, pub u16);

impl fmt::Display for Enhanced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

impl Reply {
    /// A one-line reply with an enhanced status code.
    pub fn new(code: u16, enhanced: Enhanced, text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced: Some(enhanced),
            lines: vec![text.into()],
        }
    }

    /// A reply without an enhanced status code (greeting, 354, 334).
    pub fn bare(code: u16, text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced: None,
            lines: vec![text.into()],
        }
    }

    pub fn class(&self) -> Class {
        match self.code / 100 {
            2 => Class::Success,
            3 => Class::Intermediate,
            4 => Class::Transient,
            _ => Class::Permanent,
        }
    }

    pub fn is_success(&self) -> bool {
        self.class() == Class::Success
    }

    /// The text as one string, lines joined by a space (for logs and DSNs).
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }

    /// The wire form: every line but the last as `code-`, the last as `code `, each
    /// with the enhanced code, each ending in CRLF. Line breaks inside a text line are
    /// replaced, so no caller can inject a reply line.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        let last = self.lines.len().saturating_sub(1);
        let empty = [String::new()];
        let lines: &[String] = if self.lines.is_empty() {
            &empty
        } else {
            &self.lines
        };
        for (i, line) in lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            let clean: String = line
                .chars()
                .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
                .collect();
            let text = match self.enhanced {
                Some(e) => format!("{}{}{} {}\r\n", self.code, sep, e, clean),
                None => format!("{}{}{}\r\n", self.code, sep, clean),
            };
            out.extend_from_slice(text.as_bytes());
        }
        out
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.enhanced {
            Some(e) => write!(f, "{} {} {}", self.code, e, self.text()),
            None => write!(f, "{} {}", self.code, self.text()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_wire_form() {
        let r = Reply::new(250, Enhanced(2, 0, 0), "OK");
        assert_eq!(r.to_wire(), b"250 2.0.0 OK\r\n");
    }

    #[test]
    fn multi_line_wire_form_and_no_injection() {
        let r = Reply {
            code: 550,
            enhanced: Some(Enhanced(5, 7, 1)),
            lines: vec!["first".into(), "second\r\n250 fake".into()],
        };
        assert_eq!(
            r.to_wire(),
            b"550-5.7.1 first\r\n550 5.7.1 second  250 fake\r\n".to_vec()
        );
        assert_eq!(r.class(), Class::Permanent);
    }
}
