//! A message's header section as fields, byte-exact: split, unfolded for reading, and
//! written back as they were.

/// One header field: its name and its raw value (after the colon, folding kept, CRLF
/// excluded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub raw: String,
}

impl Field {
    /// The value unfolded and trimmed, for reading.
    pub fn value(&self) -> String {
        self.raw
            .split("\r\n")
            .map(|l| l.trim_end_matches('\r'))
            .collect::<Vec<_>>()
            .join("")
            .trim()
            .to_string()
    }

    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// The field as it goes on the wire.
    pub fn wire(&self) -> String {
        format!("{}:{}\r\n", self.name, self.raw)
    }
}

/// Splits a message into header fields and the body (everything after the empty line).
/// A message without an empty line has no body.
pub fn split(message: &[u8]) -> (Vec<Field>, &[u8]) {
    let (head, body) = match message.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => (&message[..i + 2], &message[i + 4..]),
        None => (message, &message[message.len()..]),
    };
    let text = String::from_utf8_lossy(head);
    let mut fields: Vec<Field> = Vec::new();
    for line in text.split_inclusive("\r\n") {
        let content = line.strip_suffix("\r\n").unwrap_or(line);
        if content.starts_with([' ', '\t']) {
            if let Some(last) = fields.last_mut() {
                last.raw.push_str("\r\n");
                last.raw.push_str(content);
            }
            continue;
        }
        if let Some((name, raw)) = content.split_once(':') {
            fields.push(Field {
                name: name.trim_end().to_string(),
                raw: raw.to_string(),
            });
        }
    }
    (fields, body)
}

/// The header fields RFC 9788 protects, in the order they are copied.
pub const PROTECTED: &[&str] = &[
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "References",
    "In-Reply-To",
    "Reply-To",
];

/// Whether a field describes the MIME entity (and so belongs to the body part, not the
/// message).
pub fn is_content_field(f: &Field) -> bool {
    let n = f.name.to_ascii_lowercase();
    n.starts_with("content-") || n == "mime-version"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_fields_round_trip() {
        let m = b"Subject: a\r\n b\r\nFrom: x@y\r\n\r\nbody\r\n";
        let (fields, body) = split(m);
        assert_eq!(fields.len(), 2);
        assert_eq!(fields[0].value(), "a b");
        assert_eq!(fields[0].wire(), "Subject: a\r\n b\r\n");
        assert_eq!(body, b"body\r\n");
    }
}
