//! Header fields, byte-exact: the header section split into fields (folding kept) and
//! the body, and which of repeated fields counts.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

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
    let (head, body) = split_bytes(message);
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

/// The header section (with the CRLF of its last line) and the body, as bytes.
pub fn split_bytes(message: &[u8]) -> (&[u8], &[u8]) {
    if message.starts_with(b"\r\n") {
        return (&[], message.get(2..).unwrap_or_default());
    }
    match message.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => (
            message.get(..i + 2).unwrap_or(message),
            message.get(i + 4..).unwrap_or_default(),
        ),
        None => (message, &[]),
    }
}

/// Whether `head` (a header section as [`split_bytes`] cuts it, CRLF line ends) reads as
/// one: every line a field (`name:`, the name printable ASCII without a colon, RFC 5322
/// `ftext`) or the continuation of one. Plain text that was meant as a body ("Hi Bob,")
/// is not, and must not be read as fields and dropped.
pub fn is_header_section(head: &[u8]) -> bool {
    let mut first = true;
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if continuation {
            if first {
                return false;
            }
        } else {
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                return false;
            };
            let name = line.get(..colon).unwrap_or_default();
            if name.is_empty() || !name.iter().all(|&b| (33..=126).contains(&b)) {
                return false;
            }
        }
        first = false;
    }
    true
}

/// The field `name` that counts when a header section has it more than once: the last
/// one, as mail-parser reads it. The classifier, the structure scan and the inbound
/// transform read `Content-Type` and `Content-Transfer-Encoding` through mail-parser or
/// this function, and so must every transform; otherwise a message with two
/// `Content-Type` fields is classified as one thing and signed or encrypted as another.
pub fn effective<'a>(fields: &'a [Field], name: &str) -> Option<&'a Field> {
    fields.iter().rev().find(|f| f.is(name))
}

/// Whether `f` is a `Content-Type` or `Content-Transfer-Encoding` field that a later one
/// of the same name overrides ([`effective`]): a transform that writes a new header
/// section leaves it out, so that what it writes means one thing to every reader.
pub fn overridden(fields: &[Field], f: &Field) -> bool {
    ["Content-Type", "Content-Transfer-Encoding"]
        .iter()
        .any(|name| f.is(name) && !effective(fields, name).is_some_and(|e| std::ptr::eq(e, f)))
}

/// Whether a field describes the MIME entity (and so belongs to the body part, not the
/// message).
pub fn is_content_field(f: &Field) -> bool {
    let n = f.name.to_ascii_lowercase();
    n.starts_with("content-") || n == "mime-version"
}

/// Trace fields (RFC 5322 §3.6.7): added in transit, kept outside, never recorded.
pub fn is_trace(f: &Field) -> bool {
    f.is("Received") || f.is("Return-Path")
}

/// The address of the single From field, lower-cased, if there is exactly one field with
/// exactly one valid address.
pub fn from_address(fields: &[Field]) -> Option<String> {
    let mut from = fields.iter().filter(|f| f.is("From"));
    let (Some(f), None) = (from.next(), from.next()) else {
        return None;
    };
    let head = f.wire();
    let parsed = mail_parser::MessageParser::default().parse_headers(head.as_bytes());
    single_address(parsed.as_ref()).ok()
}

/// The one address of a parsed header's From field, lower-cased; otherwise how many
/// addresses it has.
///
/// # Errors
/// The number of addresses, when it is not exactly one valid address.
pub fn single_address(parsed: Option<&mail_parser::Message>) -> Result<String, usize> {
    let addrs: Vec<&str> = parsed
        .and_then(|m| m.from())
        .map(|l| l.iter().filter_map(|a| a.address()).collect())
        .unwrap_or_default();
    match addrs[..] {
        [one] if valid_address(one) => Ok(one.to_ascii_lowercase()),
        _ => Err(addrs.len()),
    }
}

/// `local@domain`, with nothing that could break out of a header or an address.
fn valid_address(a: &str) -> bool {
    let Some((local, domain)) = a.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !a
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>,;\"".contains(c))
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
        assert_eq!(split_bytes(b"\r\nbody"), (&b""[..], &b"body"[..]));
        assert_eq!(split_bytes(b"A: b\r\n"), (&b"A: b\r\n"[..], &b""[..]));
    }
}
