//! Header fields, byte-exact, and the RFC 9788 header protection built from them.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

/// What the outer Subject of an encrypted message becomes (RFC 9788, `hcp_baseline`).
pub const OBSCURED_SUBJECT: &str = "[...]";

/// The header fields RFC 9788 protects, in the order they are copied into the
/// Cryptographic Payload.
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

/// The Header Confidentiality Policy for encrypted messages: the outer header keeps only
/// what delivery, trace and threading need, with the Subject obscured. Everything else
/// (X-Mailer, User-Agent, Keywords, …) travels inside only.
pub fn kept_outside(f: &Field) -> bool {
    const OUTSIDE: &[&str] = &[
        "Received",
        "Return-Path",
        "From",
        "Sender",
        "To",
        "Cc",
        "Reply-To",
        "Date",
        "Message-ID",
        "References",
        "In-Reply-To",
        "Subject",
    ];
    OUTSIDE.iter().any(|n| f.is(n)) || f.name.to_ascii_lowercase().starts_with("resent-")
}

/// The raw value a kept field has outside (only the Subject changes).
pub fn outer_raw(f: &Field) -> String {
    if f.is("Subject") {
        format!(" {OBSCURED_SUBJECT}")
    } else {
        f.raw.clone()
    }
}

/// The `HP-Outer` fields (RFC 9788 §2.2) recording each non-trace field the outer header
/// of an encrypted message carries, so that a reader sees what was changed or removed.
pub fn hp_outer(fields: &[Field]) -> String {
    let mut out = String::new();
    for f in fields.iter().filter(|f| kept_outside(f) && !is_trace(f)) {
        out.push_str(&format!("HP-Outer: {}:{}\r\n", f.name, outer_raw(f)));
    }
    if !fields.iter().any(|f| f.is("Subject")) {
        out.push_str(&format!("HP-Outer: Subject: {OBSCURED_SUBJECT}\r\n"));
    }
    out
}

/// The protected fields, byte for byte, in [`PROTECTED`] order.
pub fn protected(fields: &[Field]) -> String {
    let mut out = String::new();
    for name in PROTECTED {
        for f in fields.iter().filter(|f| f.is(name)) {
            out.push_str(&f.wire());
        }
    }
    out
}

/// `Content-Type:` for the Cryptographic Payload: the original value (folding kept) with
/// any `hp` parameter it already had replaced by `hp="<hp>"` (RFC 9788 §2.1).
pub fn content_type_with_hp(original: Option<&Field>, hp: &str) -> String {
    let raw = original.map_or(" text/plain; charset=us-ascii", |f| f.raw.as_str());
    let kept: Vec<&str> = params(raw)
        .into_iter()
        .filter(|p| {
            let name = p.split('=').next().unwrap_or("").trim();
            !name.eq_ignore_ascii_case("hp")
        })
        .collect();
    let value = kept.join(";");
    let value = value.trim_end_matches([' ', '\t', '\r', '\n', ';']);
    let param = format!("hp=\"{hp}\"");
    // Folded only when the last line would grow past 78 columns.
    let last = format!("Content-Type:{value}; {param}");
    let last = last.rsplit("\r\n").next().unwrap_or_default();
    if last.len() <= 78 {
        format!("Content-Type:{value}; {param}\r\n")
    } else {
        format!("Content-Type:{value};\r\n {param}\r\n")
    }
}

/// Splits a structured value at the semicolons outside quoted strings.
fn params(raw: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in raw.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                out.push(raw.get(start..i).unwrap_or(""));
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(raw.get(start..).unwrap_or(""));
    out
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

    #[test]
    fn hp_parameter_is_added_once() {
        let f = |raw: &str| Field {
            name: "Content-Type".into(),
            raw: raw.into(),
        };
        assert_eq!(
            content_type_with_hp(Some(&f(" text/plain; charset=utf-8")), "cipher"),
            "Content-Type: text/plain; charset=utf-8; hp=\"cipher\"\r\n"
        );
        assert_eq!(
            content_type_with_hp(
                Some(&f(" multipart/mixed; boundary=\"a;hp=x\"; HP=\"clear\"")),
                "cipher"
            ),
            "Content-Type: multipart/mixed; boundary=\"a;hp=x\"; hp=\"cipher\"\r\n"
        );
        let long = format!(" multipart/mixed; boundary=\"{}\"", "b".repeat(50));
        assert_eq!(
            content_type_with_hp(Some(&f(&long)), "cipher"),
            format!("Content-Type:{long};\r\n hp=\"cipher\"\r\n")
        );
        assert_eq!(
            content_type_with_hp(None, "clear"),
            "Content-Type: text/plain; charset=us-ascii; hp=\"clear\"\r\n"
        );
    }

    #[test]
    fn hp_outer_records_what_stays_outside() {
        let (fields, _) =
            split(b"Received: x\r\nFrom: a@b\r\nSubject: secret\r\nX-Mailer: m\r\n\r\n");
        assert_eq!(
            hp_outer(&fields),
            "HP-Outer: From: a@b\r\nHP-Outer: Subject: [...]\r\n"
        );
    }
}
