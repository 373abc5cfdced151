//! What the root entity of a received message is. Only the root decides (EFAIL): ciphertext
//! or signatures below it are noted ([`nested`]), never opened.
//!
//! The root is classified by its own delimiter lines only, its parts kept as byte ranges
//! of the message, whether it is in memory or in a sealed file; OpenPGP data is read
//! through a transfer decoder ([`Data`]).
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::io::{self, Read};
use std::ops::Range;

use crate::blob::Blob;
use crate::mime::decode::{Cte, Decoder, Finder};
use crate::mime::entity::ContentType;
use crate::mime::headers::{self, Field};
use crate::mime::lines::HEAD_MAX;
use crate::mime::scan;

use super::armor;
use super::decrypt::Input;
use super::nested::{self, Nested};

/// OpenPGP data in memory up to this size is decoded up front ([`Data::input`]).
const DECODE_UP_TO: usize = 1 << 20;

/// Largest signature part read into memory: a real one is a few kilobytes.
const SIGNATURE_MAX: usize = 1 << 20;

/// The header fields and the body (a slice of `blob`, no copy) of an entity held in
/// `blob`; a header section with no end within [`HEAD_MAX`] leaves no body.
pub fn entity(blob: &Blob) -> io::Result<(Vec<Field>, Blob)> {
    let (head, body_at) = scan::head_of(blob.reader(), HEAD_MAX)?;
    let (fields, _) = headers::split(&[head.as_slice(), b"\r\n"].concat());
    let body = match body_at {
        Some(at) => blob.slice(at..blob.len()),
        None => Blob::default(),
    };
    Ok((fields, body))
}

/// The root entity.
pub enum Root {
    /// `multipart/encrypted` (RFC 3156 §4): the OpenPGP data of the second part, armored or
    /// binary, with its transfer encoding.
    PgpMime(Data),
    /// A single text part whose decoded body is exactly one armored `PGP MESSAGE`
    /// (encrypted, or signed only).
    Armored(Data),
    /// `multipart/signed` (RFC 3156 §5): the first part's range in the body (its exact
    /// bytes; made CRLF when read for checking), and the signature part's decoded body.
    Signed {
        signed: Range<usize>,
        signature: Vec<u8>,
    },
    /// A single text part whose decoded body is exactly one cleartext-signed block.
    Cleartext(Data),
    /// A root that claims PGP/MIME encryption (`encrypted`) or signing but breaks RFC 3156.
    Malformed { encrypted: bool },
    /// Not protected as a whole; what lies below the root.
    Plain(Nested),
}

/// A leaf body as received and its transfer encoding.
pub struct Data {
    pub body: Blob,
    pub cte: Cte,
    /// What the OpenPGP data looks like, found on the first read: it is read once per
    /// recipient, and the armor check is a pass over the whole body.
    form: std::sync::OnceLock<Form>,
}

/// How [`Data::openpgp`] reads the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// Armor of the plain shape, for the fast decoder.
    PlainArmor,
    /// Anything else, for sequoia as it is.
    AsIs,
}

impl Data {
    pub fn new(body: Blob, cte: Cte) -> Data {
        Data {
            body,
            cte,
            form: std::sync::OnceLock::new(),
        }
    }

    /// The decoded bytes, read as they come.
    pub fn reader(&self) -> Decoder<crate::blob::Reader<'_>> {
        Decoder::new(self.body.reader(), self.cte)
    }

    /// The decoded bytes as OpenPGP data for sequoia, as the in-memory path hands them
    /// over ([`super::decrypt::decrypt`]): armor of the plain shape, checked in a
    /// first pass, is dearmored while it is read by the fast decoder
    /// ([`armor::StreamDecoder`]); anything else, binary data or armor of any other shape,
    /// goes to sequoia as it is, which dearmors it itself. Handing sequoia a dearmoring
    /// reader of its own instead made broken armor fail at another point than in memory
    /// (a short block without its footer was `malformed` on disk and ciphertext for
    /// another key in memory).
    pub fn openpgp(&self) -> Box<dyn Read + Send + Sync + '_> {
        match *self.form.get_or_init(|| self.form()) {
            Form::PlainArmor => Box::new(armor::StreamDecoder::new(self.reader())),
            Form::AsIs => Box::new(self.reader()),
        }
    }

    /// [`Data::openpgp`] as sequoia gets it: decoded up front when the body is in memory
    /// and small, read as it comes otherwise.
    pub fn input(&self) -> Input<'_> {
        if !self.body.is_spilled() && self.body.len() <= DECODE_UP_TO {
            let mut bytes = Vec::with_capacity(self.body.len());
            if self.openpgp().read_to_end(&mut bytes).is_ok() {
                return Input::Bytes(bytes);
            }
        }
        Input::Reader(self.openpgp())
    }

    fn form(&self) -> Form {
        let mut start = Vec::with_capacity(256);
        let armored = self
            .reader()
            .take(4096)
            .read_to_end(&mut start)
            .is_ok_and(|_| start.trim_ascii_start().starts_with(BEGIN_MESSAGE));
        if armored && armor::Shape::check(self.reader()).unwrap_or(false) {
            Form::PlainArmor
        } else {
            Form::AsIs
        }
    }
}

/// Classifies the root made of `fields` and `body`; `whole` is the message, walked for
/// nested OpenPGP data when the root is plain.
pub fn classify(fields: &[Field], body: &Blob, whole: &Blob) -> io::Result<Root> {
    let ct = ContentType::of(fields);
    match &ct {
        Some(ct) if ct.is("multipart", "encrypted") => {
            if !ct.param_is("protocol", "application/pgp-encrypted") {
                return Ok(Root::Plain(nested::walk(whole.reader())?));
            }
            return Ok(pgp_mime(ct, body)?.unwrap_or(Root::Malformed { encrypted: true }));
        }
        Some(ct) if ct.is("multipart", "signed") => {
            if !ct.param_is("protocol", "application/pgp-signature") {
                return Ok(Root::Plain(nested::walk(whole.reader())?));
            }
            return Ok(signed(ct, body)?.unwrap_or(Root::Malformed { encrypted: false }));
        }
        _ => {}
    }
    if ct.as_ref().is_none_or(|c| c.is("text", "plain")) {
        if let Some(cte) = Cte::of(fields) {
            let data = Data::new(body.clone(), cte);
            match block(data.reader()) {
                Some(Block::Message) => return Ok(Root::Armored(data)),
                Some(Block::Cleartext) => return Ok(Root::Cleartext(data)),
                None => {}
            }
        }
    }
    Ok(Root::Plain(nested::walk(whole.reader())?))
}

/// The signed part's range and the signature of a `multipart/signed` body, when it is one
/// (a decrypted payload may be one).
pub fn signed_halves(fields: &[Field], body: &Blob) -> io::Result<Option<(Range<usize>, Vec<u8>)>> {
    let Some(ct) = ContentType::of(fields) else {
        return Ok(None);
    };
    if !ct.is("multipart", "signed") || !ct.param_is("protocol", "application/pgp-signature") {
        return Ok(None);
    }
    Ok(match signed(&ct, body)? {
        Some(Root::Signed { signed, signature }) => Some((signed, signature)),
        _ => None,
    })
}

/// The byte ranges of a multipart body's parts when there are exactly two.
fn two_parts(ct: &ContentType, body: &Blob) -> io::Result<Option<[Range<usize>; 2]>> {
    let Some(boundary) = ct.param("boundary") else {
        return Ok(None);
    };
    Ok(scan::parts(body.reader(), boundary)?.and_then(|p| <[Range<usize>; 2]>::try_from(p).ok()))
}

/// RFC 3156 §4: exactly two parts, `application/pgp-encrypted` then the OpenPGP data.
fn pgp_mime(ct: &ContentType, body: &Blob) -> io::Result<Option<Root>> {
    let Some([control, data]) = two_parts(ct, body)? else {
        return Ok(None);
    };
    let (cf, _) = entity(&body.slice(control))?;
    if !ContentType::of(&cf).is_some_and(|c| c.is("application", "pgp-encrypted")) {
        return Ok(None);
    }
    let (df, db) = entity(&body.slice(data))?;
    Ok(Cte::of(&df).map(|cte| Root::PgpMime(Data::new(db, cte))))
}

/// RFC 3156 §5: exactly two parts, the second `application/pgp-signature`.
fn signed(ct: &ContentType, body: &Blob) -> io::Result<Option<Root>> {
    let Some([first, sig]) = two_parts(ct, body)? else {
        return Ok(None);
    };
    let (sf, sb) = entity(&body.slice(sig))?;
    if !ContentType::of(&sf).is_some_and(|c| c.is("application", "pgp-signature")) {
        return Ok(None);
    }
    let Some(cte) = Cte::of(&sf) else {
        return Ok(None);
    };
    let mut signature = Vec::new();
    let read = Decoder::new(sb.reader(), cte)
        .take(SIGNATURE_MAX as u64 + 1)
        .read_to_end(&mut signature);
    if read.is_err() || signature.len() > SIGNATURE_MAX {
        // Unreadable or absurd signature data: checked as it is, it is a bad signature.
        signature = b"not a signature".to_vec();
    }
    Ok(Some(Root::Signed {
        signed: first,
        signature,
    }))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Message,
    Cleartext,
}

const BEGIN_MESSAGE: &[u8] = b"-----BEGIN PGP MESSAGE-----";
const END_MESSAGE: &[u8] = b"-----END PGP MESSAGE-----";
const BEGIN_SIGNED: &[u8] = b"-----BEGIN PGP SIGNED MESSAGE-----";
const BEGIN_SIGNATURE: &[u8] = b"-----BEGIN PGP SIGNATURE-----";
const END_SIGNATURE: &[u8] = b"-----END PGP SIGNATURE-----";

/// A body that is exactly one armored message or one cleartext-signed message, with nothing
/// but whitespace around it, read decoded as it comes; an undecodable body is none.
fn block(mut r: impl Read) -> Option<Block> {
    let needles: [&[u8]; 3] = [b"-----BEGIN PGP ", b"-----END PGP ", BEGIN_SIGNATURE];
    let mut finder = Finder::new(&needles);
    let mut ends = Ends::default();
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = r.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        let piece = buf.get(..n).unwrap_or_default();
        finder.feed(piece);
        ends.feed(piece);
    }
    let (first, last) = (ends.first.as_slice(), ends.last.as_slice());
    let (begins, end_lines) = (finder.count(0), finder.count(1));
    if first.starts_with(BEGIN_MESSAGE)
        && last.ends_with(END_MESSAGE)
        && begins == 1
        && end_lines == 1
    {
        Some(Block::Message)
    } else if first.starts_with(BEGIN_SIGNED)
        && last.ends_with(END_SIGNATURE)
        && begins == 2
        && finder.count(2) == 1
        && end_lines == 1
    {
        Some(Block::Cleartext)
    } else {
        None
    }
}

/// The first bytes of a stream after its leading whitespace, and its last bytes up to its
/// last one that is not whitespace, taken a piece at a time (not a byte at a time: this
/// runs over the body of every plain text message).
#[derive(Default)]
struct Ends {
    first: Vec<u8>,
    /// The last bytes up to the last non-whitespace byte so far.
    last: Vec<u8>,
    /// Whitespace after `last`, kept short: it matters only if content follows.
    gap: Vec<u8>,
}

impl Ends {
    /// Bytes kept at either end: more than the longest armor line looked for.
    const KEEP: usize = 40;

    fn feed(&mut self, piece: &[u8]) {
        let content = |b: &u8| !b.is_ascii_whitespace();
        if self.first.len() < Self::KEEP {
            let from = if self.first.is_empty() {
                piece.iter().position(content)
            } else {
                Some(0)
            };
            if let Some(rest) = from.and_then(|i| piece.get(i..)) {
                let take = (Self::KEEP - self.first.len()).min(rest.len());
                self.first
                    .extend_from_slice(rest.get(..take).unwrap_or_default());
            }
        }
        match piece.iter().rposition(content) {
            Some(j) => {
                self.last.append(&mut self.gap);
                self.last
                    .extend_from_slice(piece.get(..=j).unwrap_or_default());
                keep_last(&mut self.last, Self::KEEP);
                self.gap
                    .extend_from_slice(piece.get(j + 1..).unwrap_or_default());
            }
            None => self.gap.extend_from_slice(piece),
        }
        keep_last(&mut self.gap, Self::KEEP);
    }
}

/// `v` cut to its last `n` bytes.
fn keep_last(v: &mut Vec<u8>, n: usize) {
    if v.len() > n {
        v.drain(..v.len() - n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(m: &[u8]) -> Root {
        let whole = Blob::from(m.to_vec());
        let (fields, body) = entity(&whole).unwrap();
        classify(&fields, &body, &whole).unwrap()
    }

    /// The OpenPGP data of a root, as sequoia gets it.
    fn openpgp(data: &Data) -> Vec<u8> {
        let mut out = Vec::new();
        data.openpgp().read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn only_whole_roots_are_protected() {
        let enc = b"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\r\n\r\n--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nhQ\r\n-----END PGP MESSAGE-----\r\n--b--\r\n";
        match root(enc) {
            Root::PgpMime(d) => assert_eq!(
                d.body.to_vec().unwrap(),
                b"-----BEGIN PGP MESSAGE-----\r\n\r\nhQ\r\n-----END PGP MESSAGE-----"
            ),
            _ => panic!("not PGP/MIME"),
        }
        let three = b"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\r\n\r\n--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--b\r\n\r\nx\r\n--b\r\n\r\ny\r\n--b--\r\n";
        assert!(matches!(root(three), Root::Malformed { encrypted: true }));
        let inline = b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\nICAtLS0tLUJFR0lOIFBHUCBNRVNTQUdFLS0tLS0KaFEKLS0tLS1FTkQgUEdQIE1FU1NBR0UtLS0tLQo=\r\n";
        match root(inline) {
            // Transfer decoded, then left to sequoia (a body of two bytes is not the plain
            // armor shape).
            Root::Armored(d) => assert_eq!(
                openpgp(&d),
                b"  -----BEGIN PGP MESSAGE-----\nhQ\n-----END PGP MESSAGE-----\n"
            ),
            _ => panic!("not armored"),
        }
        let html = b"Content-Type: text/html\r\n\r\n-----BEGIN PGP MESSAGE-----\r\nhQ\r\n-----END PGP MESSAGE-----\r\n";
        assert!(matches!(
            root(html),
            Root::Plain(Nested {
                ciphertext: true,
                signature: false
            })
        ));
        let beside = b"\r\nhello\r\n-----BEGIN PGP SIGNED MESSAGE-----\r\n\r\nx\r\n-----BEGIN PGP SIGNATURE-----\r\n\r\n-----END PGP SIGNATURE-----\r\n";
        assert!(matches!(
            root(beside),
            Root::Plain(Nested {
                ciphertext: false,
                signature: true
            })
        ));
    }

    #[test]
    fn signed_part_is_exact() {
        let m = b"Content-Type: multipart/signed; micalg=pgp-sha256; protocol=\"application/pgp-signature\"; boundary=\"s\"\r\n\r\npre\r\n--s\r\nContent-Type: text/plain\r\n\r\nsigned \r\n\r\n--s\r\nContent-Type: application/pgp-signature\r\n\r\nSIG\r\n--s--\r\n";
        let whole = Blob::from(m.to_vec());
        let (fields, body) = entity(&whole).unwrap();
        match classify(&fields, &body, &whole).unwrap() {
            Root::Signed { signed, signature } => {
                assert_eq!(
                    body.slice(signed).to_vec().unwrap(),
                    b"Content-Type: text/plain\r\n\r\nsigned \r\n"
                );
                assert_eq!(signature, b"SIG");
            }
            _ => panic!("not signed"),
        }
    }

    #[test]
    fn a_block_is_found_whatever_the_pieces() {
        let armored = b"\r\n  -----BEGIN PGP MESSAGE-----\r\n\r\nhQ\r\n-----END PGP MESSAGE-----\r\n \r\n\r\n";
        let signed = b"-----BEGIN PGP SIGNED MESSAGE-----\r\nHash: SHA256\r\n\r\nhi\r\n-----BEGIN PGP SIGNATURE-----\r\n\r\nwA\r\n-----END PGP SIGNATURE-----";
        let beside = b"hello\r\n-----BEGIN PGP MESSAGE-----\r\nhQ\r\n-----END PGP MESSAGE-----\r\n";
        let trailing = b"-----BEGIN PGP MESSAGE-----\r\nhQ\r\n-----END PGP MESSAGE-----\r\nbye";
        for size in [1, 2, 3, 7, 40, 1000] {
            let pieces = |data: &[u8]| {
                let mut e = Ends::default();
                let mut f = Finder::new(&[b"-----BEGIN PGP "]);
                for p in data.chunks(size) {
                    e.feed(p);
                    f.feed(p);
                }
                (e, f.count(0))
            };
            let (e, _) = pieces(armored);
            assert!(e.first.starts_with(BEGIN_MESSAGE) && e.last.ends_with(END_MESSAGE));
            let (e, begins) = pieces(signed);
            assert!(e.first.starts_with(BEGIN_SIGNED) && e.last.ends_with(END_SIGNATURE));
            assert_eq!(begins, 2);
            assert!(!pieces(beside).0.first.starts_with(BEGIN_MESSAGE));
            assert!(!pieces(trailing).0.last.ends_with(END_MESSAGE));
        }
        assert_eq!(block(&armored[..]), Some(Block::Message));
        assert_eq!(block(&signed[..]), Some(Block::Cleartext));
        assert_eq!(block(&beside[..]), None);
        assert_eq!(block(&b" \r\n"[..]), None);
    }

    #[test]
    fn other_protocols_at_the_root_are_plain() {
        let smime = b"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=s\r\n\r\n--s\r\n\r\nx\r\n--s\r\nContent-Type: application/pkcs7-signature\r\n\r\nMII\r\n--s--\r\n";
        assert!(matches!(root(smime), Root::Plain(n) if n == Nested::default()));
    }

    #[test]
    fn nested_protection_is_seen_in_parts_and_attached_messages() {
        let m = b"Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: text/plain\r\n\r\nhi\r\n--o\r\nContent-Type: message/rfc822\r\n\r\nFrom: x@y\r\nContent-Type: multipart/signed; protocol=\"application/pgp-signature\"; boundary=i\r\n\r\n--i\r\n\r\nx\r\n--i\r\nContent-Type: application/pgp-signature\r\n\r\ns\r\n--i--\r\n--o--\r\n";
        assert!(matches!(
            root(m),
            Root::Plain(Nested {
                ciphertext: false,
                signature: true
            })
        ));
    }
}
