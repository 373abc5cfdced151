//! Before any transform: is the message already encrypted (then it passes through
//! byte-exact), and is it sound enough to be protected (one From address, bounded shape)?
//!
//! Only a real OpenPGP encrypted message passes through: its packets are parsed (session
//! key packets, then one encrypted data packet), not its labels. A root
//! `multipart/signed`, S/MIME, a cleartext-signed text, or a `multipart/encrypted` with no
//! ciphertext in it is plaintext with a [`Info::label`]: encrypted like any other message
//! for a recipient with a key (a `require` recipient never gets it as it is), but never
//! signed a second time.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use mail_parser::{Address, MessageParser, MimeHeaders, PartType};
use sealpost_keyring::openpgp;

use super::error::Error;
use crate::mime::charset;
use crate::mime::headers::{self, Field};
use crate::mime::structure::{self, Shape};

/// Most header fields in the message's own header section.
pub const MAX_FIELDS: usize = 1000;

/// How an already protected message is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// A root `multipart/encrypted` (PGP/MIME, or anything else using it).
    Encrypted,
    /// A root `multipart/signed` (PGP/MIME or S/MIME).
    Signed,
    /// A root `application/pkcs7-mime` or `application/x-pkcs7-mime` (S/MIME).
    Pkcs7,
    /// A body that is exactly one armored `PGP MESSAGE` or `PGP SIGNED MESSAGE`.
    InlinePgp,
}

/// What the caller needs to route a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classification {
    /// A real OpenPGP encrypted message (a root `multipart/encrypted` or one armored
    /// block, holding session key packets and an encrypted data packet): pass it on byte
    /// for byte, never encrypted twice nor signed again.
    Protected {
        kind: Protection,
        /// Lower-cased addresses in To and Cc (envelope recipients not named are Bcc).
        named: Vec<String>,
    },
    /// Plaintext that can be protected.
    Plain(Info),
}

/// The addressing of a plaintext message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The address of the single From field, lower-cased: the signer is chosen by it.
    pub from: String,
    /// Lower-cased addresses in To and Cc (envelope recipients not named are Bcc).
    pub named: Vec<String>,
    /// The MIME shape, within the limits.
    pub shape: Shape,
    /// The protection the message is labelled with, when it is not real OpenPGP
    /// ciphertext (signed, S/MIME, an empty `multipart/encrypted`): it is encrypted like
    /// any plaintext, but a signed-only copy passes it on unchanged.
    pub label: Option<Protection>,
}

impl Classification {
    /// The addresses in To and Cc.
    pub fn named(&self) -> &[String] {
        match self {
            Classification::Protected { named, .. } => named,
            Classification::Plain(info) => &info.named,
        }
    }
}

/// Classifies and validates `message` (CRLF, as received after DATA).
///
/// # Errors
/// A `554 5.6.0` error ([`Error::is_input`]) when the message is malformed or over a
/// limit (NUL bytes, bare LF in the header, too many fields, a header line over 998
/// octets, MIME nesting over 50), and, for plaintext, when a text part's bytes are not in
/// its declared UTF-8 or US-ASCII, when it has no From field, several, or a From with
/// other than one address.
pub fn classify(message: &[u8]) -> Result<Classification, Error> {
    let (head, body) = headers::split_bytes(message);
    if head.contains(&0) || body.contains(&0) {
        return Err(Error::NulByte);
    }
    if head
        .split(|&b| b == b'\n')
        .any(|l| l.len() > structure::MAX_LINE + 1)
    {
        return Err(Error::HeaderLineTooLong(structure::MAX_LINE));
    }
    if head
        .windows(2)
        .any(|w| w.get(1) == Some(&b'\n') && w.first() != Some(&b'\r'))
        || head.first() == Some(&b'\n')
    {
        return Err(Error::BareLineFeed);
    }
    let (fields, _) = headers::split(message);
    if fields.len() > MAX_FIELDS {
        return Err(Error::TooManyFields(MAX_FIELDS));
    }
    let shape = structure::scan(message)?;
    // Only the fields read below are parsed: the rest (a Received chain, dates, IDs) would
    // be parsed for nothing on every message.
    let parsed = MessageParser::new()
        .with_address_headers()
        .with_mime_headers()
        .default_header_ignore()
        .parse_headers(head);
    let named = parsed
        .as_ref()
        .map(|m| {
            [m.to(), m.cc()]
                .into_iter()
                .flatten()
                .flat_map(Address::iter)
                .filter_map(|a| a.address())
                .map(str::to_ascii_lowercase)
                .collect()
        })
        .unwrap_or_default();
    let kind = parsed
        .as_ref()
        .and_then(|m| m.content_type())
        .and_then(|ct| {
            let sub = ct.subtype().unwrap_or("");
            let is = |t: &str, s: &str| {
                ct.ctype().eq_ignore_ascii_case(t) && sub.eq_ignore_ascii_case(s)
            };
            if is("multipart", "encrypted") {
                Some(Protection::Encrypted)
            } else if is("multipart", "signed") {
                Some(Protection::Signed)
            } else if is("application", "pkcs7-mime") || is("application", "x-pkcs7-mime") {
                Some(Protection::Pkcs7)
            } else {
                None
            }
        });
    let multipart = parsed
        .as_ref()
        .and_then(|m| m.content_type())
        .is_some_and(|ct| ct.ctype().eq_ignore_ascii_case("multipart"));
    let kind =
        kind.or_else(|| (!multipart && one_armored_block(body)).then_some(Protection::InlinePgp));
    if let Some(kind) = kind {
        if holds_ciphertext(kind, message, body) {
            return Ok(Classification::Protected { kind, named });
        }
    }
    charset::check(message)?;
    let from = single_from(&fields, parsed.as_ref())?;
    Ok(Classification::Plain(Info {
        from,
        named,
        shape,
        label: kind,
    }))
}

/// Whether a message labelled `kind` really is OpenPGP ciphertext: for a root
/// `multipart/encrypted`, exactly two parts, the second an armored OpenPGP message; for an
/// inline block, that block. Signed and S/MIME messages never are.
fn holds_ciphertext(kind: Protection, message: &[u8], body: &[u8]) -> bool {
    match kind {
        Protection::InlinePgp => is_openpgp_ciphertext(body),
        Protection::Encrypted => {
            let Some(parsed) = structure::parse(message) else {
                return false;
            };
            let Some(PartType::Multipart(children)) = parsed.parts.first().map(|p| &p.body) else {
                return false;
            };
            let [_, data] = children[..] else {
                return false;
            };
            parsed
                .parts
                .get(data as usize)
                .is_some_and(|p| is_openpgp_ciphertext(p.contents()))
        }
        Protection::Signed | Protection::Pkcs7 => false,
    }
}

/// An OpenPGP message made of session key packets (PKESK, SKESK) followed by exactly one
/// integrity-protected encrypted data packet, armored or binary. Only packet headers are
/// read; nothing is decrypted.
pub fn is_openpgp_ciphertext(data: &[u8]) -> bool {
    use openpgp::parse::{PacketParserResult, Parse};
    use openpgp::Packet;
    // The parser has panicked on crafted input before (see inbound::decrypt): a panic
    // here means "not ciphertext", never a dead session.
    std::panic::catch_unwind(|| {
        let Ok(mut ppr) = openpgp::parse::PacketParser::from_bytes(data) else {
            return false;
        };
        let (mut keys, mut encrypted) = (0usize, 0usize);
        while let PacketParserResult::Some(pp) = ppr {
            match &pp.packet {
                Packet::PKESK(_) | Packet::SKESK(_) if encrypted == 0 => keys += 1,
                Packet::SEIP(_) if keys > 0 && encrypted == 0 => encrypted += 1,
                _ => return false,
            }
            // `next` skips the encrypted container's body without decrypting it.
            ppr = match pp.next() {
                Ok((_, next)) => next,
                Err(_) => return false,
            };
        }
        keys > 0 && encrypted == 1
    })
    .unwrap_or(false)
}

/// The one address of the one From field.
fn single_from(fields: &[Field], parsed: Option<&mail_parser::Message>) -> Result<String, Error> {
    match fields.iter().filter(|f| f.is("From")).count() {
        0 => return Err(Error::NoFrom),
        1 => {}
        n => return Err(Error::SeveralFrom(n)),
    }
    headers::single_address(parsed).map_err(Error::FromAddresses)
}

/// A body that is exactly one armored OpenPGP message or cleartext-signed message.
fn one_armored_block(body: &[u8]) -> bool {
    const MESSAGE: (&[u8], &[u8]) = (b"-----BEGIN PGP MESSAGE-----", b"-----END PGP MESSAGE-----");
    const SIGNED: (&[u8], &[u8]) = (
        b"-----BEGIN PGP SIGNED MESSAGE-----",
        b"-----END PGP SIGNATURE-----",
    );
    let t = body.trim_ascii();
    let count = |needle: &[u8]| t.windows(needle.len()).filter(|w| *w == needle).count();
    if t.starts_with(MESSAGE.0) && t.ends_with(MESSAGE.1) {
        count(b"-----BEGIN PGP ") == 1 && count(b"-----END PGP ") == 1
    } else if t.starts_with(SIGNED.0) && t.ends_with(SIGNED.1) {
        count(b"-----BEGIN PGP ") == 2
            && count(b"-----BEGIN PGP SIGNATURE-----") == 1
            && count(b"-----END PGP ") == 1
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message and the error it must cause.
    type Case<M> = (M, fn(&Error) -> bool);

    fn plain(m: &[u8]) -> Info {
        match classify(m) {
            Ok(Classification::Plain(info)) => info,
            other => panic!("{other:?}"),
        }
    }

    fn kind(m: &[u8]) -> Option<Protection> {
        match classify(m).unwrap() {
            Classification::Protected { kind, .. } => Some(kind),
            Classification::Plain(_) => None,
        }
    }

    /// The label of a message that is not real ciphertext.
    fn label(m: &[u8]) -> Option<Protection> {
        match classify(m).unwrap() {
            Classification::Protected { kind, .. } => panic!("passed through as {kind:?}"),
            Classification::Plain(info) => info.label,
        }
    }

    /// A real armored OpenPGP message: a PKESK and a SEIPD packet.
    fn ciphertext() -> String {
        use openpgp::cert::CertBuilder;
        use openpgp::serialize::stream::{Armorer, Encryptor, LiteralWriter, Message};
        use std::io::Write;
        let (cert, _) = CertBuilder::general_purpose(Some("<b@y.org>"))
            .generate()
            .unwrap();
        let p = openpgp::policy::StandardPolicy::new();
        let keys = cert
            .keys()
            .with_policy(&p, None)
            .supported()
            .for_transport_encryption();
        let mut out = Vec::new();
        let m = Armorer::new(Message::new(&mut out)).build().unwrap();
        let m = Encryptor::for_recipients(m, keys).build().unwrap();
        let mut w = LiteralWriter::new(m).build().unwrap();
        w.write_all(b"secret").unwrap();
        w.finalize().unwrap();
        String::from_utf8(out).unwrap().replace('\n', "\r\n")
    }

    #[test]
    fn from_and_named_addresses() {
        let info = plain(b"From: A <a@X.org>\r\nTo: b@y.org, \"C, Jr\" <C@z.org>\r\nCc: team: d@w.org;\r\nSubject: s\r\n\r\nbody\r\n");
        assert_eq!(info.from, "a@x.org");
        assert_eq!(info.named, ["b@y.org", "c@z.org", "d@w.org"]);
    }

    #[test]
    fn only_real_ciphertext_passes_through() {
        let armor = ciphertext();
        let enc = format!("From: a@x.org\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\r\n\r\n--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\n{armor}\r\n--b--\r\n");
        assert_eq!(kind(enc.as_bytes()), Some(Protection::Encrypted));
        // No From is fine for what passes through untouched.
        assert_eq!(kind(&enc.as_bytes()[15..]), Some(Protection::Encrypted));
        let inline = format!("From: a@x.org\r\n\r\n\r\n{armor}");
        assert_eq!(kind(inline.as_bytes()), Some(Protection::InlinePgp));
    }

    #[test]
    fn labels_without_ciphertext_are_plaintext_with_their_label() {
        let empty = b"From: a@x.org\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\r\n\r\n--b\r\n\r\nVersion: 1\r\n--b--\r\n";
        assert_eq!(label(empty), Some(Protection::Encrypted));
        let fake = b"From: a@x.org\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\r\n\r\n--b\r\n\r\nVersion: 1\r\n--b\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nhQ\r\n-----END PGP MESSAGE-----\r\n--b--\r\n";
        assert_eq!(label(fake), Some(Protection::Encrypted));
        let signed = b"From: a@x.org\r\nContent-Type: Multipart/Signed; micalg=pgp-sha256;\r\n protocol=\"application/pgp-signature\"; boundary=b\r\n\r\n--b--\r\n";
        assert_eq!(label(signed), Some(Protection::Signed));
        for ct in [
            "application/pkcs7-mime",
            "application/x-pkcs7-mime; smime-type=enveloped-data",
        ] {
            let m = format!("From: a@x.org\r\nContent-Type: {ct}\r\n\r\nMIIB\r\n");
            assert_eq!(label(m.as_bytes()), Some(Protection::Pkcs7));
        }
        let armored = b"From: a@x.org\r\n\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nhQ\r\n-----END PGP MESSAGE-----\r\n";
        assert_eq!(label(armored), Some(Protection::InlinePgp));
        let clearsigned = b"From: a@x.org\r\n\r\n-----BEGIN PGP SIGNED MESSAGE-----\r\nHash: SHA256\r\n\r\nhi\r\n-----BEGIN PGP SIGNATURE-----\r\n\r\niQ\r\n-----END PGP SIGNATURE-----\r\n";
        assert_eq!(label(clearsigned), Some(Protection::InlinePgp));
        assert_eq!(label(b"From: a@x.org\r\n\r\nhi\r\n"), None);
    }

    #[test]
    fn look_alikes_are_plain() {
        let quoted = b"From: a@x.org\r\n\r\nsee:\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nhQ\r\n-----END PGP MESSAGE-----\r\n";
        assert_eq!(kind(quoted), None);
        let two = b"From: a@x.org\r\n\r\n-----BEGIN PGP MESSAGE-----\r\nhQ\r\n-----END PGP MESSAGE-----\r\nplain text\r\n-----BEGIN PGP MESSAGE-----\r\nhQ\r\n-----END PGP MESSAGE-----\r\n";
        assert_eq!(kind(two), None, "two blocks with cleartext between");
        let inside = b"From: a@x.org\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: multipart/encrypted; boundary=c\r\n\r\n--c--\r\n--b--\r\n";
        assert_eq!(kind(inside), None, "only the root counts");
        let part = b"From: a@x.org\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n-----END PGP MESSAGE-----\r\n";
        assert_eq!(kind(part), None);
    }

    #[test]
    fn bad_from_is_refused() {
        let cases: [Case<&[u8]>; 5] = [
            (b"To: b@y.org\r\n\r\nx\r\n", |e| matches!(e, Error::NoFrom)),
            (b"From: a@x.org\r\nFrom: b@x.org\r\n\r\nx\r\n", |e| {
                matches!(e, Error::SeveralFrom(2))
            }),
            (b"From: a@x.org, b@x.org\r\n\r\nx\r\n", |e| {
                matches!(e, Error::FromAddresses(2))
            }),
            (b"From: Alice\r\n\r\nx\r\n", |e| {
                matches!(e, Error::FromAddresses(_))
            }),
            (b"From: undisclosed:;\r\n\r\nx\r\n", |e| {
                matches!(e, Error::FromAddresses(0))
            }),
        ];
        for (m, want) in cases {
            let e = classify(m).unwrap_err();
            assert!(want(&e), "{e:?}");
            assert!(e.is_input());
        }
    }

    #[test]
    fn limits_are_5xx_not_panics() {
        let long = format!(
            "From: a@x.org\r\nX-Long: {}\r\n\r\nb\r\n",
            "a".repeat(100 * 1024)
        );
        let mut deep =
            String::from("From: a@x.org\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n");
        for i in 0..200 {
            deep.push_str(&format!(
                "--b{i}\r\nContent-Type: multipart/mixed; boundary=b{}\r\n\r\n",
                i + 1
            ));
        }
        let many = format!(
            "From: a@x.org\r\n{}\r\nb\r\n",
            "X-A: b\r\n".repeat(MAX_FIELDS + 1)
        );
        let cases: Vec<Case<Vec<u8>>> = vec![
            (long.into_bytes(), |e| {
                matches!(e, Error::HeaderLineTooLong(_))
            }),
            (deep.into_bytes(), |e| matches!(e, Error::TooDeep(_))),
            (many.into_bytes(), |e| matches!(e, Error::TooManyFields(_))),
            (b"From: a@x.org\r\n\r\na\0b\r\n".to_vec(), |e| {
                matches!(e, Error::NulByte)
            }),
            (b"From: a@x.org\nTo: b@y.org\r\n\r\nb\r\n".to_vec(), |e| {
                matches!(e, Error::BareLineFeed)
            }),
        ];
        for (m, want) in cases {
            let e = classify(&m).unwrap_err();
            assert!(want(&e), "{e:?}");
            assert!(e.is_input(), "{e}");
        }
    }

    #[test]
    fn a_text_part_must_hold_its_declared_charset() {
        let ok = "From: a@x.org\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nGrüße\r\n";
        assert_eq!(plain(ok.as_bytes()).from, "a@x.org");
        let bad = b"From: a@x.org\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\xff\xfe\r\n";
        let e = classify(bad).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidCharset(c) if c == "utf-8"),
            "{e:?}"
        );
        assert!(e.is_input());
        let ascii =
            b"From: a@x.org\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nna\xefve\r\n";
        assert!(matches!(classify(ascii), Err(Error::InvalidCharset(_))));
        let latin1 =
            b"From: a@x.org\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\nna\xefve\r\n";
        assert!(classify(latin1).is_ok());
        let qp = b"From: a@x.org\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\xff\r\n";
        assert!(classify(qp).is_ok(), "an encoded part's bytes are not text");
    }

    /// Found by the `outbound` fuzz target: mail-parser panics on this MIME tree.
    #[test]
    fn a_message_the_mime_parser_panics_on_is_classified_not_a_panic() {
        let m = include_bytes!("../../../fuzz/regressions/outbound/mail-parser-panics-on-parts");
        assert!(structure::parse(m).is_none());
        let _ = classify(m);
        assert!(matches!(
            crate::mime::seven_bit::rewrite(m),
            Err(crate::mime::Error::NotSevenBit)
        ));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let seeds: [&[u8]; 6] = [
            b"",
            b"\r\n",
            b"From:\r\n\r\n",
            b"Content-Type: multipart/mixed; boundary=\"\"\r\n\r\n--\r\n",
            b"Content-Type: message/rfc822\r\n\r\n",
            b"From: a@x.org\r\n\r\n-----BEGIN PGP MESSAGE-----",
        ];
        for s in seeds {
            for cut in 0..=s.len() {
                let _ = classify(&s[..cut]);
            }
        }
    }
}
