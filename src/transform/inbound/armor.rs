//! A fast path for ASCII-armored `PGP MESSAGE` blocks (RFC 9580 §6.2): sequoia's armor
//! reader filters the base64 byte by byte, which costs more than decrypting. Only the
//! plain, well-formed shape is taken here; anything else is left to sequoia unchanged, so
//! what is accepted and what is refused stays sequoia's decision.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use base64::Engine;

const BEGIN: &[u8] = b"-----BEGIN PGP MESSAGE-----";
const END: &[u8] = b"-----END PGP MESSAGE-----";
/// Base64 text decoded at a time (a multiple of 4), so that no whole-message copy of the
/// text or of the binary data is made.
const CHUNK: usize = 64 * 1024;

/// An armored `PGP MESSAGE` whose shape and base64 text were checked: decoding it cannot
/// fail, so it can be decoded while it is read, as often as needed.
#[derive(Debug, Clone, Copy)]
pub struct Armored<'a> {
    /// The base64 lines, from the first to the last (checksum and end line excluded).
    text: &'a [u8],
}

/// `data` when it is exactly one armored `PGP MESSAGE` (with optional armor headers and
/// checksum, whitespace around it) whose base64 text decodes; `None` otherwise, and then
/// the caller hands `data` to sequoia as it is. The checksum is not checked: RFC 9580
/// §6.1 says to ignore it, as sequoia does.
pub fn parse(data: &[u8]) -> Option<Armored<'_>> {
    let t = data.trim_ascii();
    let mut rest = t;
    let mut lines = Lines { width: 0 };
    if lines.next(&mut rest)? != BEGIN {
        return None;
    }
    // Armor headers, up to the empty line.
    loop {
        let line = lines.next(&mut rest)?;
        if line.is_empty() {
            break;
        }
        let (key, _) = split_header(line)?;
        if key.is_empty() || !key.iter().all(|b| b.is_ascii_graphic()) {
            return None;
        }
    }
    let start = t.len() - rest.len();
    let mut end = start;
    let mut checksum = false;
    // Padding ends the base64 text: a line after it is not the plain shape.
    let mut padded = false;
    let mut total = 0usize;
    let mut last_quad = [0u8; 4];
    loop {
        let line = lines.next(&mut rest)?;
        if line == END {
            break;
        }
        if line.len() == 5 && line.starts_with(b"=") && !checksum {
            checksum = true;
            continue;
        }
        if checksum || padded {
            // Only the end line may follow the checksum, only the checksum the padding.
            return None;
        }
        let alphabet = line.iter().fold(true, |ok, &b| {
            ok & (b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
        });
        if !alphabet {
            return None;
        }
        if let Some(at) = line.iter().position(|&b| b == b'=') {
            // At most two `=`, and only at the end.
            let pad = line.get(at..).unwrap_or_default();
            if pad.len() > 2 || pad.iter().any(|&b| b != b'=') {
                return None;
            }
            padded = true;
        }
        for &b in line.get(line.len().saturating_sub(4)..).unwrap_or_default() {
            last_quad.rotate_left(1);
            if let Some(slot) = last_quad.last_mut() {
                *slot = b;
            }
        }
        total += line.len();
        end = t.len() - rest.len();
    }
    // Nothing after the end line (the data was trimmed), whole quads, a valid last one.
    if !rest.is_empty() || total == 0 || total % 4 != 0 {
        return None;
    }
    let mut scratch = Vec::with_capacity(3);
    decode_into(&last_quad, &mut scratch)?;
    Some(Armored {
        text: t.get(start..end)?,
    })
}

/// The binary data of an armored message (see [`parse`]), all at once; the delivery path
/// decodes while sequoia reads instead.
#[cfg(test)]
pub fn dearmor(data: &[u8]) -> Option<Vec<u8>> {
    let armored = parse(data)?;
    let mut out = Vec::with_capacity(armored.text.len() / 4 * 3 + 3);
    std::io::Read::read_to_end(&mut armored.reader(), &mut out).ok()?;
    Some(out)
}

impl<'a> Armored<'a> {
    /// About how many bytes of binary data it holds.
    pub fn len_hint(&self) -> usize {
        self.text.len() / 4 * 3
    }

    /// A reader of the binary data, decoding a chunk at a time.
    pub fn reader(&self) -> Decoder<'a> {
        Decoder {
            rest: self.text,
            lines: Lines { width: 0 },
            text: Vec::with_capacity(CHUNK + 128),
            out: Vec::with_capacity(CHUNK / 4 * 3 + 96),
            at: 0,
        }
    }
}

/// Reads the binary data of an [`Armored`] message.
#[derive(Debug)]
pub struct Decoder<'a> {
    rest: &'a [u8],
    lines: Lines,
    /// Base64 text not decoded yet (less than a quad between refills).
    text: Vec<u8>,
    /// Decoded data, handed out from `at`.
    out: Vec<u8>,
    at: usize,
}

impl Decoder<'_> {
    /// Decodes the next chunk into `out`; false at the end.
    fn refill(&mut self) -> std::io::Result<bool> {
        while self.text.len() < CHUNK {
            match self.lines.next(&mut self.rest) {
                Some(line) => self.text.extend_from_slice(line),
                None => break,
            }
        }
        let whole = if self.rest.is_empty() {
            self.text.len()
        } else {
            self.text.len() / 4 * 4
        };
        self.out.clear();
        self.at = 0;
        decode_into(self.text.get(..whole).unwrap_or_default(), &mut self.out).ok_or_else(
            || std::io::Error::new(std::io::ErrorKind::InvalidData, "base64 (checked before)"),
        )?;
        self.text.drain(..whole);
        Ok(!self.out.is_empty())
    }
}

impl std::io::Read for Decoder<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at >= self.out.len() {
            if !self.refill()? {
                return Ok(0);
            }
        }
        let available = self.out.get(self.at..).unwrap_or_default();
        let n = available.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), available.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.at += n;
        Ok(n)
    }
}

/// Splits lines, fast when they all have the width of the one before (armor lines do).
#[derive(Debug)]
struct Lines {
    /// Where the last line's line feed was.
    width: usize,
}

impl Lines {
    /// The next line of `rest`, without its line end and trailing whitespace; `rest` moves
    /// past it. `None` at the end.
    fn next<'a>(&mut self, rest: &mut &'a [u8]) -> Option<&'a [u8]> {
        if rest.is_empty() {
            return None;
        }
        let same = rest.get(self.width) == Some(&b'\n')
            && !rest.get(..self.width).unwrap_or_default().contains(&b'\n');
        let end = if same {
            self.width
        } else {
            match rest.iter().position(|&b| b == b'\n') {
                Some(at) => at,
                None => rest.len(),
            }
        };
        self.width = end;
        let line = rest.get(..end)?;
        *rest = rest.get(end + 1..).unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        Some(line.trim_ascii_end())
    }
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
    }
}
