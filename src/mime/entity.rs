//! One MIME entity's fields as every reader takes them (the field that counts, a content
//! type with its parameters) and CRLF line ends. Its parts and its transfer decoding are
//! read as they come ([`super::scan`], [`super::decode`]).
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

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
    fn content_types_and_encodings() {
        let (f, _) = headers::split(b"Content-Type: Multipart/Encrypted;\r\n Protocol=\"application/pgp-encrypted\"; boundary=x\r\nContent-Transfer-Encoding: BASE64\r\n\r\n");
        let ct = ContentType::of(&f).unwrap();
        assert!(ct.is("multipart", "encrypted"));
        assert!(ct.param_is("protocol", "application/pgp-encrypted"));
        assert_eq!(ct.param("BOUNDARY"), Some("x"));
        assert_eq!(crlf(b"a\nb\r\nc\n"), b"a\r\nb\r\nc\r\n");
        assert!(has_bare_lf(b"\n") && has_bare_lf(b"a\r\nb\n") && has_bare_lf(b"\r\r\n\n"));
        assert!(!has_bare_lf(b"") && !has_bare_lf(b"a\r\nb\r\n") && !has_bare_lf(b"\r"));
    }
}
