//! RFC 9788 header protection: which fields the Cryptographic Payload carries, which stay
//! outside an encrypted message and how, and the `hp` parameter.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use crate::mime::headers::{is_trace, Field};

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

/// The raw value a kept field has outside: only the Subject changes, unless the policy
/// keeps it in the clear (`protect_subject = false`).
pub fn outer_raw(f: &Field, protect_subject: bool) -> String {
    if protect_subject && f.is("Subject") {
        format!(" {OBSCURED_SUBJECT}")
    } else {
        f.raw.clone()
    }
}

/// The `HP-Outer` fields (RFC 9788 §2.2) recording each non-trace field the outer header
/// of an encrypted message carries, so that a reader sees what was changed or removed.
pub fn hp_outer(fields: &[Field], protect_subject: bool) -> String {
    let mut out = String::new();
    for f in fields.iter().filter(|f| kept_outside(f) && !is_trace(f)) {
        out.push_str(&format!(
            "HP-Outer: {}:{}\r\n",
            f.name,
            outer_raw(f, protect_subject)
        ));
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
    use crate::mime::headers::split;

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
            hp_outer(&fields, true),
            "HP-Outer: From: a@b\r\nHP-Outer: Subject: [...]\r\n"
        );
    }
}
