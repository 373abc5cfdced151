//! The root of a large message without holding it: its header from the first bytes, its
//! parts as byte ranges found by the delimiter lines of the root alone (EFAIL: only the
//! root decides), its OpenPGP data read through a transfer decoder.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::io::{self, Read};
use std::ops::Range;

use crate::blob::Blob;
use crate::mime::headers::{self, Field};

use super::super::armor;
use super::decode::{Cte, Decoder, Finder};
use super::lines::{Lines, HEAD_MAX};
use super::nested::{self, Nested};
use crate::mime::entity::ContentType;

/// Largest signature part read into memory: a real one is a few kilobytes.
const SIGNATURE_MAX: usize = 1 << 20;

/// A header section read from the start of `blob`, and where the body starts (`None`
/// when no empty line ends it within [`HEAD_MAX`]).
pub fn head_of(blob: &Blob) -> io::Result<(Vec<u8>, Option<usize>)> {
    let mut head = Vec::new();
    let mut r = blob.reader();
    let mut buf = vec![0u8; 8 << 10];
    loop {
        let searched = head.len().saturating_sub(3);
        let n = r.read(&mut buf)?;
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
        if head.starts_with(b"\r\n") {
            return Ok((Vec::new(), Some(2)));
        }
        if let Some(i) = head
            .get(searched..)
            .and_then(|t| t.windows(4).position(|w| w == b"\r\n\r\n"))
        {
            let end = searched + i;
            head.truncate(end + 2);
            return Ok((head, Some(end + 4)));
        }
        if n == 0 || head.len() >= HEAD_MAX {
            return Ok((head, None));
        }
    }
}

/// A header section and body of an entity held in `blob`: the fields, and the body as a
/// slice of `blob` (no copy).
pub fn entity(blob: &Blob) -> io::Result<(Vec<Field>, Blob)> {
    let (head, body_at) = head_of(blob)?;
    let (fields, _) = headers::split(&[head.as_slice(), b"\r\n"].concat());
    let body = match body_at {
        Some(at) => blob.slice(at..blob.len()),
        None => Blob::default(),
    };
    Ok((fields, body))
}

/// The body parts of a multipart `body` as ranges, as [`crate::mime::entity::parts`]
/// finds them: only delimiter lines of this boundary count.
pub fn parts(body: &Blob, boundary: &str) -> io::Result<Option<Vec<Range<usize>>>> {
    if boundary.is_empty() {
        return Ok(None);
    }
    let delimiter = format!("--{boundary}");
    let mut out = Vec::new();
    let mut open: Option<usize> = None;
    let mut lines = Lines::new(body.reader());
    // The last two bytes before the current line.
    let mut before = [0u8; 2];
    while let Some(line) = lines.next(&mut |_| {})? {
        let (start, end) = (line.start, line.end);
        let is = line
            .content()
            .and_then(|c| c.strip_prefix(delimiter.as_bytes()))
            .map(|rest| match rest.trim_ascii_end() {
                b"" => Some(false),
                b"--" => Some(true),
                _ => None,
            });
        let this_last = lines.last();
        if let Some(Some(close)) = is {
            if let Some(from) = open {
                // The line break before the delimiter is the delimiter's.
                let cut = if start >= 2 && before == *b"\r\n" {
                    start - 2
                } else if start >= 1 && before[1] == b'\n' {
                    start - 1
                } else {
                    start
                };
                out.push(from..cut.max(from));
            }
            if close {
                return Ok(Some(out));
            }
            open = Some(end);
        }
        before = this_last;
    }
    Ok(None)
}

/// The root entity, as [`super::super::root::Root`] but by ranges and readers.
pub enum Root {
    /// The transfer-encoded OpenPGP data of a `multipart/encrypted` root.
    PgpMime(Data),
    /// A single text part that is exactly one armored `PGP MESSAGE`.
    Armored(Data),
    /// `multipart/signed`: the first part's range in the body, the signature.
    Signed {
        signed: Range<usize>,
        signature: Vec<u8>,
    },
    /// A single text part that is exactly one cleartext-signed block.
    Cleartext(Data),
    Malformed {
        encrypted: bool,
    },
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
    /// over ([`super::super::decrypt::Input::of`]): armor of the plain shape, checked in a
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
    Ok(parts(body, boundary)?.and_then(|p| <[Range<usize>; 2]>::try_from(p).ok()))
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

/// [`super::super::root`]'s test for a body that is exactly one armored block, over the
/// decoded body read as it comes; an undecodable body is none.
fn block(mut r: impl Read) -> Option<Block> {
    const MARK: usize = 40;
    let needles: [&[u8]; 3] = [b"-----BEGIN PGP ", b"-----END PGP ", BEGIN_SIGNATURE];
    let mut finder = Finder::new(&needles);
    // The first bytes after leading whitespace; the last bytes up to the last one that
    // is not whitespace, and the whitespace seen since.
    let (mut first, mut tail, mut pending) = (Vec::new(), Vec::new(), Vec::new());
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = r.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        let piece = buf.get(..n).unwrap_or_default();
        finder.feed(piece);
        for &b in piece {
            if first.len() < MARK && (!first.is_empty() || !b.is_ascii_whitespace()) {
                first.push(b);
            }
            if b.is_ascii_whitespace() {
                if !tail.is_empty() {
                    pending.push(b);
                    if pending.len() > MARK {
                        pending.remove(0);
                    }
                }
                continue;
            }
            tail.append(&mut pending);
            tail.push(b);
            if tail.len() > 4 * MARK {
                tail.drain(..tail.len() - MARK);
            }
        }
    }
    let t = tail.as_slice();
    let (begins, ends) = (finder.count(0), finder.count(1));
    if first.starts_with(BEGIN_MESSAGE) && t.ends_with(END_MESSAGE) && begins == 1 && ends == 1 {
        Some(Block::Message)
    } else if first.starts_with(BEGIN_SIGNED)
        && t.ends_with(END_SIGNATURE)
        && begins == 2
        && finder.count(2) == 1
        && ends == 1
    {
        Some(Block::Cleartext)
    } else {
        None
    }
}
