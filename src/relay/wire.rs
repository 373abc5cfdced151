//! The client side of the SMTP/LMTP wire format, sans-I/O: server replies parsed from
//! buffered bytes (multi-line, enhanced status codes), and message data dot-stuffed.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use crate::smtp::reply::{Enhanced, Reply};

/// The longest reply line accepted, CRLF included. RFC 5321 allows 512 octets; servers
/// write longer texts in practice, so there is room, but not an unbounded allocation.
pub const MAX_LINE: usize = 4096;
/// The most lines one reply may have (an EHLO/LHLO reply lists one extension a line).
pub const MAX_LINES: usize = 100;

/// Why bytes from the server are not a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("a reply line is longer than {MAX_LINE} octets")]
    LineTooLong,
    #[error("a reply has more than {MAX_LINES} lines")]
    TooManyLines,
    #[error("not a reply line: {0:?}")]
    Malformed(String),
}

/// Parses one complete reply from the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed, or the reply and how many bytes it
/// took; the bytes after it (a pipelined next reply, LMTP's next recipient) stay for the
/// next call. The enhanced code of the first line is the reply's, and is removed from the
/// text of every line that carries it; a reply without one gets `class.0.0`, so that a
/// DSN always has a status.
///
/// # Errors
/// A line that does not start with a three-digit code from 200 to 599 followed by a space,
/// a hyphen or the line end; lines of one reply with different codes; a line or a reply
/// over [`MAX_LINE`] / [`MAX_LINES`].
pub fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, Error> {
    let mut at = 0;
    let mut code = None;
    let mut enhanced = None;
    let mut lines = Vec::new();
    loop {
        let rest = buf.get(at..).unwrap_or_default();
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            if rest.len() >= MAX_LINE {
                return Err(Error::LineTooLong);
            }
            return Ok(None);
        };
        if end + 1 > MAX_LINE {
            return Err(Error::LineTooLong);
        }
        let raw = rest.get(..end).unwrap_or_default();
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        at += end + 1;
        let (this_code, last, text) = split_line(line)?;
        if *code.get_or_insert(this_code) != this_code {
            return Err(Error::Malformed(lossy(line)));
        }
        let (e, stripped) = enhanced_code(this_code, &text);
        if lines.is_empty() {
            enhanced = e;
        }
        // Continuation lines repeat the first line's enhanced code (RFC 2034 §4); only
        // that one is taken off.
        lines.push(match (e, enhanced) {
            (Some(a), Some(b)) if a == b => stripped,
            _ => text,
        });
        if last {
            let code = this_code;
            let class = (code / 100) as u8;
            return Ok(Some((
                Reply {
                    code,
                    enhanced: Some(enhanced.unwrap_or(Enhanced(class, 0, 0))),
                    lines,
                },
                at,
            )));
        }
        if lines.len() >= MAX_LINES {
            return Err(Error::TooManyLines);
        }
    }
}

/// `(code, is last line, text after the separator)`.
fn split_line(line: &[u8]) -> Result<(u16, bool, String), Error> {
    let bad = || Error::Malformed(lossy(line));
    let digits = line.get(..3).ok_or_else(bad)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let code = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    if !(200..=599).contains(&code) {
        return Err(bad());
    }
    let (last, text) = match line.get(3) {
        None => (true, &[][..]),
        Some(b' ') => (true, line.get(4..).unwrap_or_default()),
        Some(b'-') => (false, line.get(4..).unwrap_or_default()),
        Some(_) => return Err(bad()),
    };
    Ok((code, last, lossy(text).trim_end().to_string()))
}

/// An enhanced code at the start of `text` whose class matches the reply's (RFC 2034 §4),
/// and the text after it.
fn enhanced_code(code: u16, text: &str) -> (Option<Enhanced>, String) {
    let (first, rest) = text.split_once(' ').unwrap_or((text, ""));
    let nums: Vec<&str> = first.split('.').collect();
    let parsed = match nums.as_slice() {
        [c, s, d] => match (c.parse::<u8>(), s.parse::<u16>(), d.parse::<u16>()) {
            (Ok(c), Ok(s), Ok(d)) if u16::from(c) == code / 100 && s < 1000 && d < 1000 => {
                Some(Enhanced(c, s, d))
            }
            _ => None,
        },
        _ => None,
    };
    match parsed {
        Some(e) => (Some(e), rest.trim_start().to_string()),
        None => (None, text.to_string()),
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Line ends made CRLF as pieces of data pass (wherever the pieces split the lines): a
/// bare LF and a bare CR each become CRLF.
///
/// Every next hop then reads the same lines: one that takes a bare CR or LF for a line end
/// and one that does not agree on where each line, and so the data, ends, and a `.` after
/// a bare line end is dot-stuffed like any other (SMTP smuggling through content that
/// sealpost did not receive over SMTP, such as a decrypted payload). Data that is already
/// CRLF passes through without a copy.
#[derive(Debug, Clone, Copy, Default)]
pub struct LineEnds {
    /// The last piece ended in a CR, already written; an LF is owed unless the next
    /// piece starts with one.
    cr: bool,
}

impl LineEnds {
    /// `piece` with its line ends made CRLF, given what came before it.
    pub fn push<'a>(&mut self, piece: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        let pending = std::mem::take(&mut self.cr);
        if !pending && crlf_only(piece) {
            self.cr = piece.last() == Some(&b'\r');
            return std::borrow::Cow::Borrowed(piece);
        }
        let mut out = Vec::with_capacity(piece.len() + 16);
        let mut cr = pending;
        for &b in piece {
            if b == b'\n' {
                if !cr {
                    out.push(b'\r');
                }
                out.push(b'\n');
                cr = false;
                continue;
            }
            if cr {
                out.push(b'\n');
            }
            out.push(b);
            cr = b == b'\r';
        }
        self.cr = cr;
        std::borrow::Cow::Owned(out)
    }

    /// What ends the data: the LF owed to a last CR.
    pub fn finish(&mut self) -> Option<&'static [u8]> {
        std::mem::take(&mut self.cr).then_some(&b"\n"[..])
    }
}

/// Whether every LF in `piece` follows a CR and every CR is followed by an LF (or ends
/// the piece). Only the line ends are looked at (found with memchr): this runs over every
/// copy that goes upstream.
fn crlf_only(piece: &[u8]) -> bool {
    memchr::memchr2_iter(b'\r', b'\n', piece).all(|i| match piece.get(i) {
        Some(b'\n') => i > 0 && piece.get(i - 1) == Some(&b'\r'),
        _ => matches!(piece.get(i + 1), None | Some(b'\n')),
    })
}

/// Pieces of data for a writer that dot-stuffs only after CRLF (lettre's encoder): each
/// piece with its line ends made CRLF by [`LineEnds`], and the LF owed at the end.
pub struct CrlfPieces<I> {
    inner: I,
    ends: LineEnds,
    done: bool,
}

impl<I> CrlfPieces<I> {
    pub fn new(inner: I) -> CrlfPieces<I> {
        CrlfPieces {
            inner,
            ends: LineEnds::default(),
            done: false,
        }
    }
}

impl<'a, I: Iterator<Item = std::borrow::Cow<'a, [u8]>>> Iterator for CrlfPieces<I> {
    type Item = std::borrow::Cow<'a, [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        use std::borrow::Cow;
        if self.done {
            return None;
        }
        match self.inner.next() {
            Some(Cow::Borrowed(b)) => Some(self.ends.push(b)),
            Some(Cow::Owned(v)) => Some(Cow::Owned(self.ends.push(&v).into_owned())),
            None => {
                self.done = true;
                self.ends.finish().map(Cow::Borrowed)
            }
        }
    }
}

/// Message data for DATA, encoded as it is fed in pieces (wherever they split the
/// lines): every line ends in CRLF ([`LineEnds`]: a bare LF or CR becomes CRLF, a last
/// line without one gets one), a line starting with `.` gets another (RFC 5321 §4.5.2),
/// and [`DotStuffer::finish`] adds the terminating `.` line.
#[derive(Debug, Clone, Copy)]
pub struct DotStuffer {
    ends: LineEnds,
    line_start: bool,
}

impl Default for DotStuffer {
    fn default() -> DotStuffer {
        DotStuffer {
            ends: LineEnds::default(),
            line_start: true,
        }
    }
}

impl DotStuffer {
    pub fn new() -> DotStuffer {
        DotStuffer::default()
    }

    /// Appends the encoding of `piece` to `out`.
    pub fn push(&mut self, piece: &[u8], out: &mut Vec<u8>) {
        let clean = self.ends.push(piece);
        let mut rest: &[u8] = &clean;
        while let Some(&first) = rest.first() {
            if self.line_start && first == b'.' {
                out.push(b'.');
            }
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let (line, after) = rest.split_at(i + 1);
                    out.extend_from_slice(line);
                    self.line_start = true;
                    rest = after;
                }
                None => {
                    out.extend_from_slice(rest);
                    self.line_start = false;
                    rest = &[];
                }
            }
        }
    }

    /// Ends the last line if it is open, and appends the terminating `.` line.
    pub fn finish(mut self, out: &mut Vec<u8>) {
        if let Some(lf) = self.ends.finish() {
            out.extend_from_slice(lf);
            self.line_start = true;
        }
        if !self.line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_only_finds_every_bare_line_end() {
        for ok in [
            &b""[..],
            b"a\r\nb",
            b"a\r\n\r\n",
            b"a\r",
            b"\r\n",
            b"no line end",
        ] {
            assert!(crlf_only(ok), "{ok:?}");
        }
        for bare in [
            &b"a\nb"[..],
            b"\n",
            b"a\rb",
            b"\r\r\n",
            b"a\r\nb\n",
            b"x\n\r\n",
        ] {
            assert!(!crlf_only(bare), "{bare:?}");
        }
    }

    fn one(input: &str) -> Reply {
        let (r, used) = parse(input.as_bytes()).unwrap().unwrap();
        assert_eq!(used, input.len(), "{input:?}");
        r
    }

    #[test]
    fn one_line_with_and_without_enhanced_code() {
        let r = one("250 2.1.5 Ok\r\n");
        assert_eq!(r.code, 250);
        assert_eq!(r.enhanced, Some(Enhanced(2, 1, 5)));
        assert_eq!(r.lines, ["Ok"]);
        let r = one("452 mailbox full\r\n");
        assert_eq!(r.enhanced, Some(Enhanced(4, 0, 0)));
        assert_eq!(r.lines, ["mailbox full"]);
        let r = one("250\r\n");
        assert_eq!(r.lines, [""]);
        // A class that does not match the reply's is text, not an enhanced code.
        let r = one("550 2.0.0 odd\r\n");
        assert_eq!(r.enhanced, Some(Enhanced(5, 0, 0)));
        assert_eq!(r.lines, ["2.0.0 odd"]);
    }

    #[test]
    fn multi_line_reply_and_what_follows_it() {
        let input = "250-mail.example\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n550 5.1.1 next\r\n";
        let (r, used) = parse(input.as_bytes()).unwrap().unwrap();
        assert_eq!(r.lines, ["mail.example", "8BITMIME", "SMTPUTF8"]);
        let (next, _) = parse(&input.as_bytes()[used..]).unwrap().unwrap();
        assert_eq!(next.to_wire(), b"550 5.1.1 next\r\n");
        let r = one("451-4.3.0 first\r\n451 4.3.0 second\r\n");
        assert_eq!(r.to_wire(), b"451-4.3.0 first\r\n451 4.3.0 second\r\n");
        // A bare LF ends a line too: reading is lenient, writing is not.
        assert_eq!(one("250 ok\n").lines, ["ok"]);
    }

    #[test]
    fn needs_more_at_every_split() {
        let input = b"250-first\r\n250 2.0.0 done\r\n";
        for cut in 0..input.len() {
            assert_eq!(parse(&input[..cut]), Ok(None), "cut at {cut}");
        }
        assert!(parse(input).unwrap().is_some());
    }

    #[test]
    fn malformed_and_oversized_replies_are_errors() {
        for bad in [
            "hello\r\n",
            "25\r\n",
            "099 too low\r\n",
            "600 too high\r\n",
            "250x ok\r\n",
            "250-a\r\n251 b\r\n",
        ] {
            assert!(
                matches!(parse(bad.as_bytes()), Err(Error::Malformed(_))),
                "{bad:?}"
            );
        }
        let long = format!("250 {}", "x".repeat(MAX_LINE));
        assert_eq!(parse(long.as_bytes()), Err(Error::LineTooLong));
        let long = format!("250 {}\r\n", "x".repeat(MAX_LINE));
        assert_eq!(parse(long.as_bytes()), Err(Error::LineTooLong));
        let many = "250-x\r\n".repeat(MAX_LINES + 1);
        assert_eq!(parse(many.as_bytes()), Err(Error::TooManyLines));
    }

    /// `data` fed in pieces cut at `cuts`, encoded.
    fn stuffed(data: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut s = DotStuffer::new();
        let mut at = 0;
        for &c in cuts.iter().chain([&data.len()]) {
            s.push(&data[at..c], &mut out);
            at = c;
        }
        s.finish(&mut out);
        out
    }

    #[test]
    fn dot_stuffing_and_line_ends() {
        let all = |data: &[u8]| stuffed(data, &[]);
        assert_eq!(
            all(b"a\r\n.b\r\n..c\nd"),
            b"a\r\n..b\r\n...c\r\nd\r\n.\r\n".to_vec()
        );
        assert_eq!(all(b""), b".\r\n".to_vec());
        assert_eq!(all(b".\r\n"), b"..\r\n.\r\n".to_vec());
        assert_eq!(all(b"x\n\r"), b"x\r\n\r\n.\r\n".to_vec());
        // A bare CR ends its line too, and the dot after it is stuffed: a next hop that
        // takes a bare CR for a line end must not see the end of the data here.
        assert_eq!(all(b"x\ry\r"), b"x\r\ny\r\n.\r\n".to_vec());
        assert_eq!(all(b"\r\r\n.\r"), b"\r\n\r\n..\r\n.\r\n".to_vec());
        assert_eq!(
            all(b"a\r.\r\nMAIL FROM:<x@y>\n.\nRCPT"),
            b"a\r\n..\r\nMAIL FROM:<x@y>\r\n..\r\nRCPT\r\n.\r\n".to_vec()
        );
    }

    /// `data` through [`CrlfPieces`] in pieces cut at `cuts`, joined.
    fn normalised(data: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut pieces = Vec::new();
        let mut at = 0;
        for &c in cuts.iter().chain([&data.len()]) {
            pieces.push(std::borrow::Cow::Borrowed(&data[at..c]));
            at = c;
        }
        CrlfPieces::new(pieces.into_iter())
            .flat_map(|p| p.into_owned())
            .collect()
    }

    #[test]
    fn line_ends_become_crlf_at_every_split_and_crlf_data_is_not_copied() {
        let data = b"a\r\n.b\n.c\r.d\r\r\n\n\r";
        let want = b"a\r\n.b\r\n.c\r\n.d\r\n\r\n\r\n\r\n".to_vec();
        assert_eq!(normalised(data, &[]), want);
        for i in 0..=data.len() {
            assert_eq!(normalised(data, &[i]), want, "cut at {i}");
        }
        let mut ends = LineEnds::default();
        assert!(matches!(
            ends.push(b"a\r\nb\r"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert!(matches!(ends.push(b"\nc"), std::borrow::Cow::Owned(_)));
        assert_eq!(ends.finish(), None);
    }

    #[test]
    fn every_split_gives_the_same_bytes() {
        let data = b"a\r\n.b\r\n..c\nd\r.e\r\r\n.\n\n.\r\nlast.\r";
        let whole = stuffed(data, &[]);
        for i in 0..=data.len() {
            assert_eq!(stuffed(data, &[i]), whole, "cut at {i}");
            for j in i..=data.len() {
                assert_eq!(stuffed(data, &[i, j]), whole, "cut at {i}, {j}");
            }
        }
        // Byte by byte.
        let cuts: Vec<usize> = (1..data.len()).collect();
        assert_eq!(stuffed(data, &cuts), whole);
    }
}
