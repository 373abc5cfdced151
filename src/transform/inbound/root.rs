//! What the root entity of a received message is. Only the root decides (EFAIL): ciphertext
//! or signatures below it are noted, never opened.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::borrow::Cow;

use crate::mime::headers::{self, Field};

pub use super::spilled::nested::Nested;
use crate::mime::entity::{self, ContentType};

const BEGIN_MESSAGE: &[u8] = b"-----BEGIN PGP MESSAGE-----";
const END_MESSAGE: &[u8] = b"-----END PGP MESSAGE-----";
const BEGIN_SIGNED: &[u8] = b"-----BEGIN PGP SIGNED MESSAGE-----";
const BEGIN_SIGNATURE: &[u8] = b"-----BEGIN PGP SIGNATURE-----";
const END_SIGNATURE: &[u8] = b"-----END PGP SIGNATURE-----";

/// The root entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root<'a> {
    /// `multipart/encrypted` (RFC 3156 §4): the OpenPGP data of the second part, transfer
    /// decoded (armored or binary).
    PgpMime(Cow<'a, [u8]>),
    /// A single text part whose decoded body is exactly one armored `PGP MESSAGE`
    /// (encrypted, or signed only).
    Armored(Cow<'a, [u8]>),
    /// `multipart/signed` (RFC 3156 §5): the first part's exact bytes in CRLF form, and the
    /// signature part's decoded body.
    Signed { signed: Vec<u8>, signature: Vec<u8> },
    /// A single text part whose decoded body is exactly one cleartext-signed block.
    Cleartext(Cow<'a, [u8]>),
    /// A root that claims PGP/MIME encryption (`encrypted`) or signing but breaks RFC 3156.
    Malformed { encrypted: bool },
    /// Not protected as a whole; what lies below the root.
    Plain(Nested),
}

/// Classifies the entity made of `fields` and `body`; `whole` is the same entity as bytes
/// (the header section and the body), scanned for nested OpenPGP data when it is plain.
pub fn classify<'a>(fields: &[Field], body: &'a [u8], whole: &[u8]) -> Root<'a> {
    let ct = ContentType::of(fields);
    match &ct {
        Some(ct) if ct.is("multipart", "encrypted") => {
            if !ct.param_is("protocol", "application/pgp-encrypted") {
                return Root::Plain(nested(whole));
            }
            return pgp_mime(ct, body).unwrap_or(Root::Malformed { encrypted: true });
        }
        Some(ct) if ct.is("multipart", "signed") => {
            if !ct.param_is("protocol", "application/pgp-signature") {
                return Root::Plain(nested(whole));
            }
            return signed(ct, body).unwrap_or(Root::Malformed { encrypted: false });
        }
        _ => {}
    }
    let text_plain = ct.as_ref().is_none_or(|c| c.is("text", "plain"));
    if text_plain {
        if let Some(decoded) = entity::decode(fields, body) {
            match armored(&decoded) {
                Some(Block::Message) => return Root::Armored(decoded),
                Some(Block::Cleartext) => return Root::Cleartext(decoded),
                None => {}
            }
        }
    }
    Root::Plain(nested(whole))
}

/// The signed part (CRLF) and the signature of a `multipart/signed` entity (RFC 3156 §5),
/// when it is one: a decrypted payload may be one (§6.1).
pub fn signed_halves(fields: &[Field], body: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let ct = ContentType::of(fields)?;
    if !ct.is("multipart", "signed") || !ct.param_is("protocol", "application/pgp-signature") {
        return None;
    }
    match signed(&ct, body)? {
        Root::Signed { signed, signature } => Some((signed, signature)),
        _ => None,
    }
}

/// RFC 3156 §4: exactly two parts, `application/pgp-encrypted` then the OpenPGP data.
fn pgp_mime<'a>(ct: &ContentType, body: &'a [u8]) -> Option<Root<'a>> {
    let parts = entity::parts(body, ct.param("boundary")?)?;
    let [control, data] = parts.as_slice() else {
        return None;
    };
    let (cf, _) = headers::split(control);
    if !ContentType::of(&cf).is_some_and(|c| c.is("application", "pgp-encrypted")) {
        return None;
    }
    let (df, db) = headers::split(data);
    Some(Root::PgpMime(entity::decode(&df, db)?))
}

/// RFC 3156 §5: exactly two parts, the second `application/pgp-signature`.
fn signed<'a>(ct: &ContentType, body: &'a [u8]) -> Option<Root<'a>> {
    let parts = entity::parts(body, ct.param("boundary")?)?;
    let [first, sig] = parts.as_slice() else {
        return None;
    };
    let (sf, sb) = headers::split(sig);
    if !ContentType::of(&sf).is_some_and(|c| c.is("application", "pgp-signature")) {
        return None;
    }
    Some(Root::Signed {
        signed: entity::crlf(first),
        signature: entity::decode(&sf, sb)?.into_owned(),
    })
}

/// The kinds of whole armored bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Message,
    Cleartext,
}

/// A body that is exactly one armored message or one cleartext-signed message, with
/// nothing but whitespace around it.
fn armored(body: &[u8]) -> Option<Block> {
    let t = body.trim_ascii();
    let count = |needle: &[u8]| t.windows(needle.len()).filter(|w| *w == needle).count();
    let (begins, ends) = (count(b"-----BEGIN PGP "), count(b"-----END PGP "));
    if t.starts_with(BEGIN_MESSAGE) && t.ends_with(END_MESSAGE) && begins == 1 && ends == 1 {
        Some(Block::Message)
    } else if t.starts_with(BEGIN_SIGNED)
        && t.ends_with(END_SIGNATURE)
        && begins == 2
        && count(BEGIN_SIGNATURE) == 1
        && ends == 1
    {
        Some(Block::Cleartext)
    } else {
        None
    }
}

/// OpenPGP data anywhere in a plain message: PGP/MIME parts below the root, armored blocks
/// in text or HTML (the root's own text too, when it is not exactly one block), attached
/// messages. A message over the structure limits is not looked into.
///
/// This is the line walk a spilled message gets ([`super::spilled::nested::walk`]), run
/// over the bytes: one reading of the MIME structure for both paths. mail-parser's tree
/// is not used here because it reads malformed MIME differently from every other reader
/// in the inbound transform (the root's classifier, the spilled walk): it takes
/// `--boundary` anywhere in a line, even followed by other text, as a delimiter, turns an
/// attached message whose header section never ends into text, and panics on some trees.
/// The same message then got a different verdict in memory and on disk.
pub fn nested(whole: &[u8]) -> Nested {
    // Reading a slice cannot fail.
    super::spilled::nested::walk(whole).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(m: &[u8]) -> Root<'_> {
        let (fields, body) = headers::split(m);
        classify(&fields, body, m)
    }

    #[test]
    fn only_whole_roots_are_protected() {
        let enc = b"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\r\n\r\n--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nhQ\r\n-----END PGP MESSAGE-----\r\n--b--\r\n";
        assert_eq!(
            root(enc),
            Root::PgpMime(
                b"-----BEGIN PGP MESSAGE-----\r\n\r\nhQ\r\n-----END PGP MESSAGE-----"[..].into()
            )
        );
        let three = b"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\r\n\r\n--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--b\r\n\r\nx\r\n--b\r\n\r\ny\r\n--b--\r\n";
        assert_eq!(root(three), Root::Malformed { encrypted: true });
        let inline = b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\nICAtLS0tLUJFR0lOIFBHUCBNRVNTQUdFLS0tLS0KaFEKLS0tLS1FTkQgUEdQIE1FU1NBR0UtLS0tLQo=\r\n";
        assert!(matches!(root(inline), Root::Armored(_)));
        let html = b"Content-Type: text/html\r\n\r\n-----BEGIN PGP MESSAGE-----\r\nhQ\r\n-----END PGP MESSAGE-----\r\n";
        assert_eq!(
            root(html),
            Root::Plain(Nested {
                ciphertext: true,
                signature: false
            })
        );
        let beside = b"\r\nhello\r\n-----BEGIN PGP SIGNED MESSAGE-----\r\n\r\nx\r\n-----BEGIN PGP SIGNATURE-----\r\n\r\n-----END PGP SIGNATURE-----\r\n";
        assert_eq!(
            root(beside),
            Root::Plain(Nested {
                ciphertext: false,
                signature: true
            })
        );
    }

    #[test]
    fn signed_part_is_exact() {
        let m = b"Content-Type: multipart/signed; micalg=pgp-sha256; protocol=\"application/pgp-signature\"; boundary=\"s\"\r\n\r\npre\r\n--s\r\nContent-Type: text/plain\r\n\r\nsigned \r\n\r\n--s\r\nContent-Type: application/pgp-signature\r\n\r\nSIG\r\n--s--\r\n";
        assert_eq!(
            root(m),
            Root::Signed {
                signed: b"Content-Type: text/plain\r\n\r\nsigned \r\n".to_vec(),
                signature: b"SIG".to_vec()
            }
        );
    }

    #[test]
    fn other_protocols_at_the_root_are_plain() {
        let smime = b"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=s\r\n\r\n--s\r\n\r\nx\r\n--s\r\nContent-Type: application/pkcs7-signature\r\n\r\nMII\r\n--s--\r\n";
        assert_eq!(root(smime), Root::Plain(Nested::default()));
    }

    #[test]
    fn nested_protection_is_seen_in_parts_and_attached_messages() {
        let m = b"Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: text/plain\r\n\r\nhi\r\n--o\r\nContent-Type: message/rfc822\r\n\r\nFrom: x@y\r\nContent-Type: multipart/signed; protocol=\"application/pgp-signature\"; boundary=i\r\n\r\n--i\r\n\r\nx\r\n--i\r\nContent-Type: application/pgp-signature\r\n\r\ns\r\n--i--\r\n--o--\r\n";
        assert_eq!(
            root(m),
            Root::Plain(Nested {
                ciphertext: false,
                signature: true
            })
        );
    }
}
