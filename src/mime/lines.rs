//! Lines of a large body read as they come, each with its offset, its length and at most
//! its first bytes: a line of any length costs bounded memory.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::io::{self, BufRead, BufReader, Read};

/// Most header bytes read: the DATA reader already refuses a longer header section.
pub const HEAD_MAX: usize = (1 << 20) + (64 << 10);

/// Longest line start kept: a delimiter line (RFC 2046: a boundary of at most 70
/// characters) and a header line (998 octets) fit.
pub const KEEP: usize = 1024;

/// One line: `start..end` in the data, its line end included.
#[derive(Debug)]
pub struct Line<'a> {
    pub start: usize,
    pub end: usize,
    /// The line's first bytes (all of them when [`Line::complete`]).
    pub head: &'a [u8],
}

impl Line<'_> {
    /// Whether `head` is the whole line.
    pub fn complete(&self) -> bool {
        self.head.len() == self.end - self.start
    }

    /// The line without its LF or CRLF, when it is complete.
    pub fn content(&self) -> Option<&[u8]> {
        if !self.complete() {
            return None;
        }
        let c = self.head.strip_suffix(b"\n").unwrap_or(self.head);
        Some(c.strip_suffix(b"\r").unwrap_or(c))
    }
}

/// Splits what a reader gives into lines.
pub struct Lines<R> {
    r: BufReader<R>,
    at: usize,
    head: Vec<u8>,
    /// The last two bytes of the last line.
    last: [u8; 2],
}

impl<R: Read> Lines<R> {
    pub fn new(r: R) -> Lines<R> {
        Lines {
            r: BufReader::with_capacity(64 << 10, r),
            at: 0,
            head: Vec::with_capacity(KEEP),
            last: [0; 2],
        }
    }

    /// The last two bytes of the line [`Lines::next`] returned last.
    pub fn last(&self) -> [u8; 2] {
        self.last
    }

    /// The next line; `long` gets a line longer than [`KEEP`] in pieces, its kept start
    /// first (a short line's bytes are only in [`Line::head`]).
    ///
    /// # Errors
    /// Read errors.
    pub fn next(&mut self, long: &mut dyn FnMut(&[u8])) -> io::Result<Option<Line<'_>>> {
        self.head.clear();
        let start = self.at;
        let mut overflowed = false;
        loop {
            let buf = self.r.fill_buf()?;
            if buf.is_empty() {
                break;
            }
            let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            let piece = buf.get(..take).unwrap_or_default();
            self.last = match piece {
                [.., a, b] => [*a, *b],
                [b] => [self.last[1], *b],
                [] => self.last,
            };
            if overflowed {
                long(piece);
            } else if self.head.len() + piece.len() > KEEP {
                overflowed = true;
                long(&self.head);
                long(piece);
                let room = KEEP - self.head.len();
                self.head
                    .extend_from_slice(piece.get(..room).unwrap_or_default());
            } else {
                self.head.extend_from_slice(piece);
            }
            self.at += take;
            self.r.consume(take);
            if done {
                break;
            }
        }
        if self.at == start {
            return Ok(None);
        }
        Ok(Some(Line {
            start,
            end: self.at,
            head: &self.head,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_have_offsets_and_long_ones_come_in_pieces() {
        let long = "x".repeat(3000);
        let data = format!("a\r\nbb\n{long}\r\nend");
        let mut lines = Lines::new(data.as_bytes());
        let mut pieces = Vec::new();
        let mut got = Vec::new();
        while let Some(l) = lines.next(&mut |p| pieces.extend_from_slice(p)).unwrap() {
            got.push((
                l.start,
                l.end,
                l.complete(),
                l.content().map(<[u8]>::to_vec),
            ));
        }
        assert_eq!(got[0], (0, 3, true, Some(b"a".to_vec())));
        assert_eq!(got[1], (3, 6, true, Some(b"bb".to_vec())));
        assert_eq!((got[2].0, got[2].1, got[2].2), (6, 3008, false));
        assert_eq!(got[3], (3008, 3011, true, Some(b"end".to_vec())));
        assert_eq!(pieces, format!("{long}\r\n").as_bytes());
    }
}
