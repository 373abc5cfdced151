//! Strict and bounded reads of one MIME entity, as the inbound transform needs them: a
//! content type with its parameters, the body parts of one multipart, a leaf body's
//! transfer decoding, CRLF line ends.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::borrow::Cow;

use mail_parser::decoders::quoted_printable::quoted_printable_decode;
use mail_parser::{MessageParser, MimeHeaders};

use crate::mime::headers::{self, Field};

/// A content type, lower-cased, with its parameters (names lower-cased, values as given).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContentType {
    pub kind: String,
    pub sub: String,
    pub params: Vec<(String, String)>,
}

/// The field `name` of a header section that counts when it is repeated: the last one, as
/// mail-parser reads it ([`headers::effective`], which the outbound transforms use too).
/// Every read of a content field takes the same one; otherwise a message with two
/// `Content-Type` fields is one thing to one reader and another thing to the next, and the
/// spilled path judges it differently.
pub fn field<'a>(fields: &'a [Field], name: &str) -> Option<&'a Field> {
    headers::effective(fields, name)
}

impl ContentType {
    /// The `Content-Type` of a header section ([`field`]); `None` when it has none
    /// (RFC 2045: then it is `text/plain`) or it cannot be read.
    pub fn of(fields: &[Field]) -> Option<ContentType> {
        let f = field(fields, "Content-Type")?;
        let wire = f.wire();
        let parsed = MessageParser::default().parse_headers(wire.as_bytes())?;
        let ct = parsed.content_type()?;
        Some(ContentType {
            kind: ct.ctype().to_ascii_lowercase(),
            sub: ct.subtype().unwrap_or_default().to_ascii_lowercase(),
            params: ct
                .attributes()
                .unwrap_or_default()
                .iter()
                .map(|a| (a.name.to_ascii_lowercase(), a.value.to_string()))
                .collect(),
        })
    }

    pub fn is(&self, kind: &str, sub: &str) -> bool {
        self.kind == kind && self.sub == sub
    }

    /// A parameter's value, the name matched case-insensitively.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether a parameter has this value, compared case-insensitively.
    pub fn param_is(&self, name: &str, value: &str) -> bool {
        self.param(name)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case(value))
    }
}

/// The body parts of a multipart body (RFC 2046 §5.1.1): the bytes between delimiter lines,
/// the line break before a delimiter belonging to the delimiter. `None` when the boundary is
/// empty or the close delimiter is missing.
pub fn parts<'a>(body: &'a [u8], boundary: &str) -> Option<Vec<&'a [u8]>> {
    if boundary.is_empty() {
        return None;
    }
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut open: Option<usize> = None;
    let mut at = 0;
    for line in body.split_inclusive(|&b| b == b'\n') {
        let start = at;
        at += line.len();
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        let Some(rest) = content.strip_prefix(delimiter.as_bytes()) else {
            continue;
        };
        let rest = rest.trim_ascii_end();
        let close = match rest {
            b"" => false,
            b"--" => true,
            _ => continue,
        };
        if let Some(from) = open {
            // The line break before the delimiter is the delimiter's.
            let before = body.get(..start).unwrap_or_default();
            let cut = if before.ends_with(b"\r\n") {
                start - 2
            } else if before.ends_with(b"\n") {
                start - 1
            } else {
                start
            };
            parts.push(body.get(from..cut.max(from)).unwrap_or_default());
        }
        if close {
            return Some(parts);
        }
        open = Some(at);
    }
    None
}

/// A leaf body decoded by its `Content-Transfer-Encoding`; `None` for an unknown encoding
/// or an undecodable body. An identity encoding borrows the body (it can be the size of
/// the message).
pub fn decode<'a>(fields: &[Field], body: &'a [u8]) -> Option<Cow<'a, [u8]>> {
    let cte = field(fields, "Content-Transfer-Encoding").map(|f| f.value().to_ascii_lowercase());
    match cte.as_deref() {
        None | Some("7bit") | Some("8bit") | Some("binary") => Some(Cow::Borrowed(body)),
        Some("quoted-printable") => quoted_printable_decode(body).map(Cow::Owned),
        Some("base64") => {
            use base64::Engine;
            let clean: Vec<u8> = body
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            base64::engine::general_purpose::STANDARD
                .decode(&clean)
                .ok()
                .or_else(|| {
                    base64::engine::general_purpose::STANDARD_NO_PAD
                        .decode(clean.strip_suffix(b"=").unwrap_or(&clean))
                        .ok()
                })
                .map(Cow::Owned)
        }
        _ => None,
    }
}

/// Whether `data` has a line feed without a carriage return before it (then it needs
/// [`crlf`]).
pub fn has_bare_lf(data: &[u8]) -> bool {
    // A fold over pairs of slices, not `any`: the compiler vectorises it, and it runs over
    // whole decrypted messages.
    data.first() == Some(&b'\n')
        || data
            .iter()
            .zip(data.get(1..).unwrap_or_default())
            .fold(false, |bare, (&prev, &b)| {
                bare | (b == b'\n' && prev != b'\r')
            })
}

/// Line ends made CRLF (a bare LF gains its CR), as MIME canonical form wants them.
pub fn crlf(data: &[u8]) -> Vec<u8> {
    // Sized exactly (counting the LFs is cheap): a vector that grows leaves a copy of
    // what it held so far in the memory it frees, and this is decrypted text.
    let lfs = data.iter().filter(|&&b| b == b'\n').count();
    let mut out = Vec::with_capacity(data.len() + lfs);
    let mut prev = 0u8;
    for &b in data {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mime::headers;

    #[test]
    fn parts_are_exact() {
        let body = b"preamble\r\n--b\r\nA: 1\r\n\r\none\r\n--b \r\n\r\ntwo\r\n\r\n--b--\r\nepilogue\r\n--b\r\n";
        let p = parts(body, "b").unwrap();
        assert_eq!(p, vec![&b"A: 1\r\n\r\none"[..], &b"\r\ntwo\r\n"[..]]);
        assert_eq!(parts(b"--b\r\nx\r\n", "b"), None, "no close delimiter");
        assert_eq!(parts(b"--bb\r\nx\r\n--b--", "b").unwrap().len(), 0);
        assert_eq!(parts(b"x", ""), None);
    }

    #[test]
    fn content_types_and_encodings() {
        let (f, _) = headers::split(b"Content-Type: Multipart/Encrypted;\r\n Protocol=\"application/pgp-encrypted\"; boundary=x\r\nContent-Transfer-Encoding: BASE64\r\n\r\n");
        let ct = ContentType::of(&f).unwrap();
        assert!(ct.is("multipart", "encrypted"));
        assert!(ct.param_is("protocol", "application/pgp-encrypted"));
        assert_eq!(ct.param("BOUNDARY"), Some("x"));
        assert_eq!(decode(&f, b"aGVs\r\nbG8=\r\n").unwrap().as_ref(), b"hello");
        let (q, _) = headers::split(b"Content-Transfer-Encoding: quoted-printable\r\n\r\n");
        assert_eq!(decode(&q, b"a=3D=\r\nb\r\n").unwrap().as_ref(), b"a=b\r\n");
        let (x, _) = headers::split(b"Content-Transfer-Encoding: x-uuencode\r\n\r\n");
        assert_eq!(decode(&x, b"a"), None);
        assert_eq!(crlf(b"a\nb\r\nc\n"), b"a\r\nb\r\nc\r\n");
        assert!(has_bare_lf(b"\n") && has_bare_lf(b"a\r\nb\n") && has_bare_lf(b"\r\r\n\n"));
        assert!(!has_bare_lf(b"") && !has_bare_lf(b"a\r\nb\r\n") && !has_bare_lf(b"\r"));
    }
}
