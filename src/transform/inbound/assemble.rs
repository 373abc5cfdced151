//! The delivered message: our result fields on top, the outer header (with the header
//! protection edits), and either the received body byte for byte or the decrypted payload
//! alone, never spliced with cleartext parts, 7-bit clean for any next hop.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use crate::mime::headers;
use crate::mime::seven_bit;
use crate::wipe::Buf;

use super::results::RawField;
use crate::mime::entity::ContentType;

/// What header protection changes in the outer header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edits {
    None,
    /// Outer fields of these (lower-cased) names go; these lines come instead.
    Applied {
        names: Vec<String>,
        lines: String,
    },
    /// These `X-Sealpost-Protected-*` lines are added.
    KeptApart(String),
    /// A decrypted message whose outer Subject is the placeholder and whose signature is
    /// not `valid`: the informational fields (these names) replace the outer ones, the
    /// others are kept apart; `lines` holds both.
    Confidential {
        names: Vec<String>,
        lines: String,
    },
}

/// A message delivered as received: our fields, the outer fields (edited), the body byte
/// for byte.
pub fn unchanged(results: &str, outer: &[RawField<'_>], edits: &Edits, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(results.len() + body.len() + 4096);
    out.extend_from_slice(results.as_bytes());
    for f in outer.iter().filter(|f| !replaced(f, edits)) {
        push_field(&mut out, f.bytes);
    }
    push_edits(&mut out, edits);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// A decrypted PGP/MIME payload: our fields, the outer trace fields, the other outer
/// fields that do not describe the encrypted wrapper (edited), `MIME-Version`, the
/// payload root's content fields and the payload body, made 7-bit.
///
/// `None` when the payload cannot be made safe for any next hop: a container with 8-bit
/// data outside its parts, or NUL bytes. Passed on as it is, a lenient next hop could read
/// a bare CR or a NUL in a preamble as the end of the data (SMTP smuggling from inside a
/// decrypted message), so the caller delivers the received ciphertext instead.
pub fn decrypted(
    results: &str,
    outer: &[RawField<'_>],
    edits: &Edits,
    content: &[RawField<'_>],
    body: &[u8],
) -> Option<Vec<u8>> {
    if seven_bit::is_clean(body) {
        let mut head = decrypted_head(results, outer, edits, content);
        head.reserve_exact(body.len());
        head.extend_from_slice(body);
        return Some(head);
    }
    let mut head = outer_head(results, outer, edits);
    let fields: Vec<headers::Field> = content.iter().filter_map(|r| r.field.clone()).collect();
    let ct = ContentType::of(&fields);
    let container = ct
        .as_ref()
        .is_some_and(|c| c.kind == "multipart" || c.kind == "message");
    if container {
        for f in content {
            push_field(&mut head, f.bytes);
        }
        head.extend_from_slice(b"\r\n");
        // A copy of the plaintext that is not delivered: zeroed when dropped.
        let mut head = Buf::from(head);
        head.reserve_exact(body.len());
        head.extend_from_slice(body);
        return match seven_bit::rewrite(&head) {
            Ok(clean) if !clean.contains(&0) && !has_bare_cr(&clean) => Some(clean),
            Ok(clean) => {
                drop(Buf::from(clean));
                tracing::warn!("decrypted content holds NUL or bare CR bytes outside its parts: the ciphertext is delivered instead");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "decrypted content cannot be made 7-bit: the ciphertext is delivered instead");
                None
            }
        };
    }
    for f in content
        .iter()
        .filter(|f| !f.is("Content-Transfer-Encoding"))
    {
        push_field(&mut head, f.bytes);
    }
    let text = ct.as_ref().is_none_or(|c| c.kind == "text");
    let (cte, encoded) = encode(body, text);
    head.extend_from_slice(format!("Content-Transfer-Encoding: {cte}\r\n\r\n").as_bytes());
    head.reserve_exact(encoded.len());
    head.extend_from_slice(&encoded);
    Some(head)
}

/// A CR that does not begin a CRLF.
fn has_bare_cr(data: &[u8]) -> bool {
    data.iter()
        .enumerate()
        .any(|(i, &b)| b == b'\r' && data.get(i + 1) != Some(&b'\n'))
}

/// What [`decrypted`] puts before a body that goes out byte for byte (it is 7-bit clean,
/// which the caller checked), up to and with the empty line. The caller can put this head
/// in front of the plaintext it already holds instead of copying a large body.
pub fn decrypted_head(
    results: &str,
    outer: &[RawField<'_>],
    edits: &Edits,
    content: &[RawField<'_>],
) -> Vec<u8> {
    let mut head = outer_head(results, outer, edits);
    for f in content {
        push_field(&mut head, f.bytes);
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Decrypted inline PGP: the plaintext becomes the text body, in the outer charset.
pub fn inline(results: &str, outer: &[RawField<'_>], plaintext: &[u8]) -> Vec<u8> {
    let mut head = outer_head(results, outer, &Edits::None);
    let binary = plaintext.contains(&0);
    // Copies of the plaintext on the way to `head`: zeroed when dropped.
    let text = Buf::from(if binary {
        plaintext.to_vec()
    } else {
        crate::mime::entity::crlf(plaintext)
    });
    let kept: Vec<&RawField<'_>> = outer
        .iter()
        .filter(|f| {
            f.field.as_ref().is_some_and(headers::is_content_field)
                && !f.is("MIME-Version")
                && !f.is("Content-Transfer-Encoding")
        })
        .collect();
    if kept.iter().any(|f| f.is("Content-Type")) {
        for f in &kept {
            push_field(&mut head, f.bytes);
        }
    } else {
        let charset = if text.is_ascii() {
            "us-ascii"
        } else if std::str::from_utf8(&text).is_ok() {
            "utf-8"
        } else {
            "unknown-8bit"
        };
        head.extend_from_slice(
            format!("Content-Type: text/plain; charset={charset}\r\n").as_bytes(),
        );
        for f in &kept {
            push_field(&mut head, f.bytes);
        }
    }
    let (cte, body) = if seven_bit::is_clean(&text) {
        ("7bit", text)
    } else {
        encode(&text, !binary)
    };
    head.extend_from_slice(format!("Content-Transfer-Encoding: {cte}\r\n\r\n").as_bytes());
    head.reserve_exact(body.len());
    head.extend_from_slice(&body);
    head
}

/// Our fields, the outer trace fields in their order, then every other outer field that
/// is not about the wrapper's MIME entity, then the edits and `MIME-Version: 1.0`.
fn outer_head(results: &str, outer: &[RawField<'_>], edits: &Edits) -> Vec<u8> {
    let mut head = Vec::with_capacity(results.len() + 4096);
    head.extend_from_slice(results.as_bytes());
    let trace = |f: &RawField<'_>| f.field.as_ref().is_some_and(headers::is_trace);
    for f in outer.iter().filter(|f| trace(f)) {
        push_field(&mut head, f.bytes);
    }
    for f in outer.iter().filter(|f| {
        !trace(f) && !f.field.as_ref().is_some_and(headers::is_content_field) && !replaced(f, edits)
    }) {
        push_field(&mut head, f.bytes);
    }
    push_edits(&mut head, edits);
    head.extend_from_slice(b"MIME-Version: 1.0\r\n");
    head
}

fn replaced(f: &RawField<'_>, edits: &Edits) -> bool {
    let (Edits::Applied { names, .. } | Edits::Confidential { names, .. }) = edits else {
        return false;
    };
    f.field
        .as_ref()
        .is_some_and(|x| !headers::is_trace(x) && names.contains(&x.name.to_ascii_lowercase()))
}

fn push_edits(out: &mut Vec<u8>, edits: &Edits) {
    match edits {
        Edits::None => {}
        Edits::Applied { lines, .. }
        | Edits::Confidential { lines, .. }
        | Edits::KeptApart(lines) => out.extend_from_slice(lines.as_bytes()),
    }
}

/// A field's bytes, with a line end when the header ended without one.
fn push_field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes);
    if !bytes.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    } else if !bytes.ends_with(b"\r\n") {
        out.pop();
        out.extend_from_slice(b"\r\n");
    }
}

/// A leaf body in a 7-bit encoding: quoted-printable for mostly ASCII text, base64
/// otherwise ([`seven_bit::encode`]). The decoded bytes are the same.
/// The encoded body is zeroed when dropped (it is the plaintext, encoded).
fn encode(body: &[u8], text: bool) -> (&'static str, Buf) {
    let eight_bit = body.iter().filter(|b| !b.is_ascii()).count();
    let (name, encoded) = seven_bit::encode(body, text && eight_bit * 3 < body.len().max(1));
    (name, Buf::from(encoded))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::inbound::results;

    #[test]
    fn unchanged_keeps_the_body_and_applies_edits() {
        let head = b"Received: x\r\nSubject: [...]\r\nFrom: a@x.org\r\nSubject: two\r\n";
        let outer = results::fields(head);
        let edits = Edits::Applied {
            names: vec!["subject".into()],
            lines: "Subject: real\r\n".into(),
        };
        let out = unchanged("R: 1\r\n", &outer, &edits, b"body\xff");
        assert_eq!(
            out,
            b"R: 1\r\nReceived: x\r\nFrom: a@x.org\r\nSubject: real\r\n\r\nbody\xff"
        );
    }

    #[test]
    fn decrypted_leaves_are_re_encoded() {
        let outer = results::fields(
            b"From: a@x.org\r\nContent-Type: multipart/encrypted\r\nReceived: r\r\n",
        );
        let content = results::fields(
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n",
        );
        let out = decrypted(
            "",
            &outer,
            &Edits::None,
            &content,
            "Viele Grüße\r\n".as_bytes(),
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "Received: r\r\nFrom: a@x.org\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nViele Gr=C3=BC=C3=9Fe\r\n");
        let outer = results::fields(b"From: a@x.org\r\nContent-Transfer-Encoding: 7bit\r\n");
        let out = inline("", &outer, "привет\n".as_bytes());
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n0L/RgNC40LLQtdGCDQo=\r\n"), "{text}");
    }

    #[test]
    fn a_payload_that_cannot_be_made_safe_is_not_released() {
        let outer = results::fields(b"From: a@x.org\r\nContent-Type: multipart/encrypted\r\n");
        let content = results::fields(b"Content-Type: multipart/mixed; boundary=b\r\n");
        for body in [
            // 8-bit in the preamble: no part to re-encode it in.
            &b"pr\xc3\xa9ambule\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b--\r\n"[..],
            // A bare CR and a dot in the preamble: the smuggling shape.
            b"x\r.\r\nMAIL FROM:<a@evil.test>\r\n\xff\r\n--b\r\n\r\nhi\r\n--b--\r\n",
            // NUL bytes outside any part.
            b"\0\r\n--b\r\n\r\nhi\r\n--b--\r\n\xe9",
        ] {
            assert_eq!(
                decrypted("", &outer, &Edits::None, &content, body),
                None,
                "{body:?}"
            );
        }
    }
}
