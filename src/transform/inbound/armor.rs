//! A fast path for ASCII-armored `PGP MESSAGE` blocks (RFC 9580 §6.2): sequoia's armor
//! reader filters the base64 byte by byte, which costs more than decrypting. Only the
//! plain, well-formed shape is taken here; anything else is left to sequoia unchanged, so
//! what is accepted and what is refused stays sequoia's decision.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use base64::Engine;

use crate::mime::pending::Pending;

const BEGIN: &[u8] = b"-----BEGIN PGP MESSAGE-----";
const END: &[u8] = b"-----END PGP MESSAGE-----";
/// The bytes a base64 line may hold (padding included).
// Built at compile time; the index stays below 256.
#[allow(clippy::indexing_slicing)]
const BASE64: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'+' || c == b'/' || c == b'=';
        b += 1;
    }
    t
};
/// Base64 text decoded at a time (a multiple of 4), so that no whole-message copy of the
/// text or of the binary data is made.
const CHUNK: usize = 64 * 1024;

/// The plain shape of one armored `PGP MESSAGE` (with optional armor headers and
/// checksum, whitespace around it) whose base64 text decodes, checked a line at a time
/// (without its line end and trailing whitespace) as the data is read. The checksum is
/// not checked: RFC 9580 §6.1 says to ignore it, as sequoia does.
#[derive(Debug, Default)]
pub struct Shape {
    stage: Stage,
    checksum: bool,
    /// Padding ends the base64 text: a line after it is not the plain shape.
    padded: bool,
    total: usize,
    last_quad: [u8; 4],
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Blank lines, up to the begin line.
    #[default]
    Before,
    Headers,
    Text,
    /// After the end line: whitespace only.
    After,
    Bad,
}

/// What one line was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// Base64 text.
    Text,
    /// Armor around the text (begin, headers, checksum, end) or blank.
    Other,
    /// Not the plain shape: the whole is left to sequoia.
    Bad,
}

impl Shape {
    /// Takes the next line.
    pub fn line(&mut self, line: &[u8]) -> Line {
        let kind = self.step(line);
        if kind == Line::Bad {
            self.stage = Stage::Bad;
        }
        kind
    }

    fn step(&mut self, line: &[u8]) -> Line {
        match self.stage {
            Stage::Bad => Line::Bad,
            Stage::Before => {
                let l = line.trim_ascii_start();
                if l.is_empty() {
                    Line::Other
                } else if l == BEGIN {
                    self.stage = Stage::Headers;
                    Line::Other
                } else {
                    Line::Bad
                }
            }
            Stage::Headers => {
                if line.is_empty() {
                    self.stage = Stage::Text;
                    return Line::Other;
                }
                match split_header(line) {
                    Some((key, _))
                        if !key.is_empty() && key.iter().all(|b| b.is_ascii_graphic()) =>
                    {
                        Line::Other
                    }
                    _ => Line::Bad,
                }
            }
            Stage::Text => self.text(line),
            Stage::After => {
                if line.trim_ascii().is_empty() {
                    Line::Other
                } else {
                    Line::Bad
                }
            }
        }
    }

    fn text(&mut self, line: &[u8]) -> Line {
        if line == END {
            // Whole quads, and a valid last one.
            let mut scratch = Vec::with_capacity(3);
            if self.total == 0
                || !self.total.is_multiple_of(4)
                || decode_into(&self.last_quad, &mut scratch).is_none()
            {
                return Line::Bad;
            }
            self.stage = Stage::After;
            return Line::Other;
        }
        if line.len() == 5 && line.starts_with(b"=") && !self.checksum {
            self.checksum = true;
            return Line::Other;
        }
        if self.checksum || self.padded {
            // Only the end line may follow the checksum, only the checksum the padding.
            return Line::Bad;
        }
        if !line.iter().fold(true, |ok, &b| {
            ok & BASE64.get(usize::from(b)).copied().unwrap_or(false)
        }) {
            return Line::Bad;
        }
        if let Some(at) = line.iter().position(|&b| b == b'=') {
            // At most two `=`, and only at the end.
            let pad = line.get(at..).unwrap_or_default();
            if pad.len() > 2 || pad.iter().any(|&b| b != b'=') {
                return Line::Bad;
            }
            self.padded = true;
        }
        let tail = line.get(line.len().saturating_sub(4)..).unwrap_or_default();
        if let Ok(quad) = <[u8; 4]>::try_from(tail) {
            self.last_quad = quad;
        } else {
            for &b in tail {
                self.last_quad.rotate_left(1);
                if let Some(slot) = self.last_quad.last_mut() {
                    *slot = b;
                }
            }
        }
        self.total += line.len();
        Line::Text
    }

    /// Whether everything so far was one whole armored message.
    pub fn is_whole(&self) -> bool {
        self.stage == Stage::After
    }

    /// Whether what `r` gives has the plain shape, read a line at a time.
    ///
    /// # Errors
    /// Read errors.
    pub fn check(r: impl std::io::Read) -> std::io::Result<bool> {
        let mut r = std::io::BufReader::with_capacity(CHUNK, r);
        let mut shape = Shape::default();
        let mut line = Vec::with_capacity(128);
        loop {
            line.clear();
            if std::io::BufRead::read_until(&mut r, b'\n', &mut line)? == 0 {
                return Ok(shape.is_whole());
            }
            if shape.line(trim_line(&line)) == Line::Bad {
                return Ok(false);
            }
        }
    }
}

/// A line without its line end and trailing whitespace.
fn trim_line(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    line.trim_ascii_end()
}

/// The lines of an armored message read as it comes, each without its line end and
/// trailing whitespace.
struct ReadLines<R> {
    inner: std::io::BufReader<R>,
    line: Vec<u8>,
}

impl<R: std::io::Read> ReadLines<R> {
    /// The next line; `None` at the end.
    fn next_line(&mut self) -> std::io::Result<Option<&[u8]>> {
        self.line.clear();
        if std::io::BufRead::read_until(&mut self.inner, b'\n', &mut self.line)? == 0 {
            return Ok(None);
        }
        Ok(Some(trim_line(&self.line)))
    }
}

/// Reads the binary data of an armored message as it comes, a chunk at a time. The shape
/// is checked before ([`Shape::check`]); a line that breaks it is a read error all the
/// same.
pub struct StreamDecoder<R> {
    lines: ReadLines<R>,
    shape: Shape,
    /// Base64 text not decoded yet.
    text: Vec<u8>,
    /// Decoded data not read yet.
    out: Pending,
    done: bool,
}

impl<R: std::io::Read> StreamDecoder<R> {
    pub fn new(inner: R) -> StreamDecoder<R> {
        StreamDecoder {
            lines: ReadLines {
                inner: std::io::BufReader::with_capacity(CHUNK, inner),
                line: Vec::with_capacity(128),
            },
            shape: Shape::default(),
            text: Vec::with_capacity(CHUNK + 128),
            out: Pending::with_capacity(CHUNK / 4 * 3 + 96),
            done: false,
        }
    }

    /// Decodes the next chunk; false at the end.
    fn refill(&mut self) -> std::io::Result<bool> {
        let invalid = |what: &str| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("armor: {what}"))
        };
        let out = self.out.next_batch();
        while out.is_empty() && !(self.done && self.text.is_empty()) {
            while self.text.len() < CHUNK && !self.done {
                let Some(line) = self.lines.next_line()? else {
                    self.done = true;
                    if !self.shape.is_whole() {
                        return Err(invalid("not one whole armored message"));
                    }
                    break;
                };
                match self.shape.line(line) {
                    Line::Text => self.text.extend_from_slice(line),
                    Line::Other => {}
                    Line::Bad => return Err(invalid("not the plain shape")),
                }
            }
            let whole = if self.done {
                self.text.len()
            } else {
                self.text.len() / 4 * 4
            };
            decode_into(self.text.get(..whole).unwrap_or_default(), out)
                .ok_or_else(|| invalid("base64"))?;
            self.text.drain(..whole);
        }
        Ok(!out.is_empty())
    }
}

impl<R: std::io::Read> std::io::Read for StreamDecoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.out.is_drained() {
            if !self.refill()? {
                return Ok(0);
            }
        }
        Ok(self.out.take(buf))
    }
}

/// The binary data of an armored message of the plain shape, all at once; `None` when
/// the shape is not the plain one (sequoia gets such data as it is).
#[cfg(test)]
pub fn dearmor(data: &[u8]) -> Option<Vec<u8>> {
    if !Shape::check(data).ok()? {
        return None;
    }
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut StreamDecoder::new(data), &mut out).ok()?;
    Some(out)
}

fn split_header(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = line.windows(2).position(|w| w == b": ")?;
    Some((line.get(..at)?, line.get(at + 2..)?))
}

/// Appends the decoding of `text` (padding only at its end) to `out`.
fn decode_into(text: &[u8], out: &mut Vec<u8>) -> Option<()> {
    if text.is_empty() {
        return Some(());
    }
    base64::engine::general_purpose::STANDARD
        .decode_vec(text, out)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealpost_keyring::openpgp::armor::{Kind, Reader, ReaderMode, Writer};
    use std::io::{Read, Write};

    fn armored(data: &[u8], headers: &[(&str, &str)]) -> Vec<u8> {
        let mut w = Writer::with_headers(Vec::new(), Kind::Message, headers.to_vec()).unwrap();
        w.write_all(data).unwrap();
        w.finalize().unwrap()
    }

    fn sequoia(data: &[u8]) -> Option<Vec<u8>> {
        let mut r = Reader::from_bytes(data, ReaderMode::Tolerant(Some(Kind::Message)));
        let mut out = Vec::new();
        r.read_to_end(&mut out).ok()?;
        Some(out)
    }

    #[test]
    fn decodes_what_sequoia_decodes() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for len in [1, 2, 3, 47, 48, 49, 65_536, 200_000] {
            let a = armored(&data[..len], &[("Comment", "x: y")]);
            assert_eq!(dearmor(&a).as_deref(), Some(&data[..len]), "{len}");
            assert_eq!(sequoia(&a).as_deref(), Some(&data[..len]));
            let crlf = String::from_utf8(a).unwrap().replace('\n', "\r\n");
            let spaced = format!("\r\n  {crlf}\r\n\r\n");
            assert_eq!(dearmor(spaced.as_bytes()).as_deref(), Some(&data[..len]));
        }
    }

    #[test]
    fn anything_unusual_is_left_to_sequoia() {
        let a = String::from_utf8(armored(b"hello world", &[])).unwrap();
        let cases = [
            a.replace("MESSAGE", "SIGNATURE"),
            a.replace("-----END PGP MESSAGE-----", ""),
            format!("junk\n{a}"),
            format!("{a}junk\n"),
            a.replacen("\n\n", "\nno header line\n\n", 1),
            a.replacen("aGVsbG8", "aG!sbG8", 1),
            a.replacen("aGVsbG8", "aG=sbG8", 1),
            a.replacen("\n\n", "\n\naGk=\n", 1),
            String::new(),
        ];
        for c in cases {
            assert_eq!(dearmor(c.as_bytes()), None, "{c:?}");
        }
        let binary = b"\xc1\x0c\x03 not armored";
        assert_eq!(dearmor(binary), None);
        assert!(!Shape::check(&binary[..]).unwrap());
    }

    /// The check and the decoder give the same when the data comes in pieces that end
    /// anywhere.
    #[test]
    fn reading_in_pieces_changes_nothing() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 13 % 251) as u8).collect();
        let a = String::from_utf8(armored(&data, &[("Comment", "x: y")])).unwrap();
        let small = String::from_utf8(armored(b"hello world", &[])).unwrap();
        let mut cases = vec![
            a.clone(),
            a.replace('\n', "\r\n"),
            format!("\r\n  {}\r\n\r\n", a.replace('\n', "\r\n")),
            small.replace("MESSAGE", "SIGNATURE"),
            small.replace("-----END PGP MESSAGE-----", ""),
            format!("junk\n{small}"),
            format!("{small}junk\n"),
            small.replacen("\n\n", "\nno header line\n\n", 1),
            small.replacen("aGVsbG8", "aG!sbG8", 1),
            small.replacen("aGVsbG8", "aG=sbG8", 1),
            small.replacen("\n\n", "\n\naGk=\n", 1),
            String::new(),
        ];
        cases.push(small.clone());
        for c in &cases {
            let whole = dearmor(c.as_bytes());
            assert_eq!(
                Shape::check(c.as_bytes()).unwrap(),
                whole.is_some(),
                "{c:?}"
            );
            let mut out = Vec::new();
            let streamed = StreamDecoder::new(Pieces(c.as_bytes(), 7))
                .read_to_end(&mut out)
                .ok()
                .map(|_| out);
            assert_eq!(streamed, whole, "{c:?}");
        }
    }

    /// A reader that gives at most `.1` bytes at a time.
    struct Pieces<'a>(&'a [u8], usize);

    impl Read for Pieces<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(self.1).min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
}
