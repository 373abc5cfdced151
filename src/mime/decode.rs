//! Reading a large body part as it is meant: transfer decoded (RFC 2045 §6), line ends
//! made CRLF, searched for markers; a piece at a time, never whole.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::io::{self, Read};

use base64::Engine;
use mail_parser::decoders::quoted_printable::quoted_printable_decode;

use crate::mime::headers::Field;

use super::pending::Pending;

/// Input read at a time.
const CHUNK: usize = 64 << 10;

/// A `Content-Transfer-Encoding` this decoder knows (RFC 2045 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cte {
    Identity,
    Base64,
    QuotedPrintable,
}

impl Cte {
    /// The encoding of a header section (the field [`crate::mime::entity::field`] picks);
    /// `None` for one that is not known.
    pub fn of(fields: &[Field]) -> Option<Cte> {
        let cte = crate::mime::entity::field(fields, "Content-Transfer-Encoding")
            .map(|f| f.value().to_ascii_lowercase());
        match cte.as_deref() {
            None | Some("7bit") | Some("8bit") | Some("binary") => Some(Cte::Identity),
            Some("quoted-printable") => Some(Cte::QuotedPrintable),
            Some("base64") => Some(Cte::Base64),
            _ => None,
        }
    }
}

/// Decodes what `inner` gives. An undecodable body is a read error.
pub struct Decoder<R> {
    inner: R,
    cte: Cte,
    raw: Vec<u8>,
    /// Input not decoded yet: base64 text short of a quad, or a quoted-printable line
    /// without its end.
    carry: Vec<u8>,
    out: Pending,
    eof: bool,
}

impl<R: Read> Decoder<R> {
    pub fn new(inner: R, cte: Cte) -> Decoder<R> {
        Decoder {
            inner,
            cte,
            raw: Vec::new(),
            carry: Vec::new(),
            out: Pending::default(),
            eof: false,
        }
    }

    /// Decodes more into `out`; false at the end.
    fn refill(&mut self) -> io::Result<bool> {
        let out = self.out.next_batch();
        while out.is_empty() && !self.eof {
            self.raw.resize(CHUNK, 0);
            let n = self.inner.read(&mut self.raw)?;
            self.eof = n == 0;
            let raw = self.raw.get(..n).unwrap_or_default();
            match self.cte {
                Cte::Identity => out.extend_from_slice(raw),
                Cte::Base64 => {
                    self.carry
                        .extend(raw.iter().copied().filter(|b| !b.is_ascii_whitespace()));
                    let whole = if self.eof {
                        self.carry.len()
                    } else {
                        self.carry.len() / 4 * 4
                    };
                    let text = self.carry.get(..whole).unwrap_or_default();
                    base64_into(text, self.eof, out)?;
                    self.carry.drain(..whole);
                }
                Cte::QuotedPrintable => {
                    self.carry.extend_from_slice(raw);
                    // Whole lines only: a soft line break is decoded with its line.
                    let whole = if self.eof {
                        self.carry.len()
                    } else {
                        self.carry
                            .iter()
                            .rposition(|&b| b == b'\n')
                            .map_or(0, |i| i + 1)
                    };
                    let text = self.carry.get(..whole).unwrap_or_default();
                    if !text.is_empty() {
                        let decoded = quoted_printable_decode(text).ok_or_else(invalid)?;
                        out.extend_from_slice(&decoded);
                    }
                    self.carry.drain(..whole);
                }
            }
        }
        Ok(!out.is_empty())
    }
}

/// Appends the decoding of whole quads (`last`: the end of the text, where padding or a
/// short quad may be): with standard padding, or without it where a writer left it out.
fn base64_into(text: &[u8], last: bool, out: &mut Vec<u8>) -> io::Result<()> {
    if text.is_empty() {
        return Ok(());
    }
    let std = base64::engine::general_purpose::STANDARD;
    let len = out.len();
    if std.decode_vec(text, out).is_ok() {
        return Ok(());
    }
    // A failed decoding may have grown the vector.
    out.truncate(len);
    if last {
        let text = text.strip_suffix(b"=").unwrap_or(text);
        if base64::engine::general_purpose::STANDARD_NO_PAD
            .decode_vec(text, out)
            .is_ok()
        {
            return Ok(());
        }
    }
    Err(invalid())
}

fn invalid() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "undecodable transfer encoding")
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cte == Cte::Identity {
            return self.inner.read(buf);
        }
        while self.out.is_drained() {
            if !self.refill()? {
                return Ok(0);
            }
        }
        Ok(self.out.take(buf))
    }
}

/// Gives what `inner` gives with every bare LF made CRLF, as
/// [`crate::mime::entity::crlf`] does.
pub struct Crlf<R> {
    inner: R,
    raw: Vec<u8>,
    out: Pending,
    prev: u8,
}

impl<R: Read> Crlf<R> {
    pub fn new(inner: R) -> Crlf<R> {
        Crlf {
            inner,
            raw: Vec::new(),
            out: Pending::default(),
            prev: 0,
        }
    }
}

impl<R: Read> Read for Crlf<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.out.is_drained() {
            self.raw.resize(CHUNK, 0);
            let n = self.inner.read(&mut self.raw)?;
            let out = self.out.next_batch();
            for &b in self.raw.get(..n).unwrap_or_default() {
                if b == b'\n' && self.prev != b'\r' {
                    out.push(b'\r');
                }
                out.push(b);
                self.prev = b;
            }
            if n == 0 {
                return Ok(0);
            }
        }
        Ok(self.out.take(buf))
    }
}

/// Counts occurrences of a few short needles in data fed in pieces, matches across piece
/// borders included. Each needle is searched with memchr's SIMD searcher: this runs over
/// the body of every received message.
pub struct Finder<'n> {
    searchers: Vec<memchr::memmem::Finder<'n>>,
    counts: Vec<usize>,
    /// The last bytes fed, one short of the longest needle.
    tail: Vec<u8>,
    /// The tail and the start of the next piece, where a match can straddle the border.
    border: Vec<u8>,
    keep: usize,
}

impl<'n> Finder<'n> {
    pub fn new(needles: &'n [&'n [u8]]) -> Finder<'n> {
        Finder {
            searchers: needles.iter().map(memchr::memmem::Finder::new).collect(),
            counts: vec![0; needles.len()],
            tail: Vec::new(),
            border: Vec::new(),
            keep: needles
                .iter()
                .map(|n| n.len())
                .max()
                .unwrap_or(1)
                .saturating_sub(1),
        }
    }

    pub fn feed(&mut self, piece: &[u8]) {
        if piece.is_empty() {
            return;
        }
        let old = self.tail.len();
        self.border.clear();
        self.border.extend_from_slice(&self.tail);
        self.border
            .extend_from_slice(piece.get(..piece.len().min(self.keep)).unwrap_or_default());
        for (s, count) in self.searchers.iter().zip(self.counts.iter_mut()) {
            if s.needle().is_empty() {
                continue;
            }
            // Matches that start in the tail and end in this piece; those wholly in the
            // tail were counted with the piece before.
            *count += s
                .find_iter(&self.border)
                .filter(|&i| i < old && i + s.needle().len() > old)
                .count();
            *count += s.find_iter(piece).count();
        }
        if piece.len() >= self.keep {
            self.tail.clear();
            self.tail
                .extend_from_slice(piece.get(piece.len() - self.keep..).unwrap_or_default());
        } else {
            self.tail.extend_from_slice(piece);
            let extra = self.tail.len().saturating_sub(self.keep);
            self.tail.drain(..extra);
        }
    }

    /// How often the needle at `i` occurred.
    pub fn count(&self, i: usize) -> usize {
        self.counts.get(i).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mime::entity as mime;
    use crate::mime::headers;

    fn read_all(mut r: impl Read) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn decodes_base64_and_quoted_printable() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let text = "Grüße, a=b\r\n".repeat(3000) + &"x".repeat(5000) + "\r\n";
        let b64 = crate::mime::seven_bit::base64_lines(&data);
        let qp = crate::mime::seven_bit::quoted_printable(text.as_bytes());
        for (name, body, data) in [
            ("base64", &b64, &data[..]),
            ("quoted-printable", &qp, text.as_bytes()),
        ] {
            let (f, _) =
                headers::split(format!("Content-Transfer-Encoding: {name}\r\n\r\n").as_bytes());
            let cte = Cte::of(&f).unwrap();
            let got = read_all(Decoder::new(&body[..], cte)).unwrap();
            assert_eq!(got, data, "{name}");
        }
        let bad = read_all(Decoder::new(&b"aGVs!!bG8="[..], Cte::Base64));
        assert!(bad.is_err());
        let short = read_all(Decoder::new(&b"aGVsbG8\r\n"[..], Cte::Base64)).unwrap();
        assert_eq!(short, b"hello");
        let soft = read_all(Decoder::new(&b"a=3D=\r\nb\r\n"[..], Cte::QuotedPrintable));
        assert_eq!(soft.unwrap(), b"a=b\r\n");
        let (x, _) = headers::split(b"Content-Transfer-Encoding: x-uuencode\r\n\r\n");
        assert_eq!(Cte::of(&x), None);
    }

    #[test]
    fn crlf_and_finder_work_across_pieces() {
        let text = b"a\nb\r\nc\n\n".repeat(20_000);
        let got = read_all(Crlf::new(&text[..])).unwrap();
        assert_eq!(got, mime::crlf(&text));
        let needles: [&[u8]; 2] = [b"-----BEGIN PGP ", b"xyz"];
        let hay = b"..-----BEGIN PGP MESSAGE----- xyzxyz -----BEGIN PGP xyxyz";
        for size in 1..hay.len() {
            let mut f = Finder::new(&needles);
            for piece in hay.chunks(size) {
                f.feed(piece);
            }
            assert_eq!((f.count(0), f.count(1)), (2, 3), "pieces of {size}");
        }
    }
}
