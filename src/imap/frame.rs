//! IMAP's framing (RFC 9051 §2.2 and §4.3), sans-I/O: a command or a response is a line
//! ending in CRLF, and a line that ends in a literal announcement (`{N}`, or `{N+}` and
//! `{N-}` with LITERAL+ / LITERAL-) is followed by N bytes of literal data and then by the
//! rest of the message on another line. Bytes go in as they arrive; fragments come out,
//! each checked against a size limit before anything of it is held.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

/// One piece of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fragment {
    /// A line with its CRLF, and the literal it announces at its end, if any.
    Line {
        bytes: Vec<u8>,
        literal: Option<Literal>,
    },
    /// The data of the literal the line before announced.
    Literal(Vec<u8>),
    /// A line announcing a literal over the limit, from a peer whose literals can be
    /// refused ([`Framer::refusing`]): a synchronising one is not sent until the peer is
    /// told to go on (it never is), a non-synchronising one is skipped unread.
    TooLarge { bytes: Vec<u8>, literal: Literal },
}

/// A literal announced at the end of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Literal {
    pub len: usize,
    /// `{N}`: the sender waits for a continuation request before it sends the data.
    pub sync: bool,
}

/// A peer broke the limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("a line longer than {0} bytes")]
    LineTooLong(usize),
    #[error("a literal of {0} bytes, more than the {1} allowed")]
    LiteralTooLarge(u64, usize),
}

/// Splits a byte stream into [`Fragment`]s.
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    /// Where the bytes not taken yet start in `buf` (taken bytes are dropped in batches,
    /// not moved for every fragment).
    start: usize,
    /// How far a line end was looked for without finding one.
    searched: usize,
    /// The length of the literal that comes next, once its line was taken.
    literal: Option<usize>,
    max_line: usize,
    max_literal: usize,
    /// Literals over the limit come out as [`Fragment::TooLarge`] instead of an error.
    refuse: bool,
    /// Bytes of a refused non-synchronising literal still to skip.
    skip: usize,
}

impl Framer {
    pub fn new(max_line: usize, max_literal: usize) -> Framer {
        Framer {
            buf: Vec::new(),
            start: 0,
            searched: 0,
            literal: None,
            max_line,
            max_literal,
            refuse: false,
            skip: 0,
        }
    }

    /// A framer for a client, whose commands may be refused: a literal over the limit is
    /// a [`Fragment::TooLarge`] and the stream goes on, so that the command can be
    /// answered with `NO` (RFC 9051 §7.5) instead of ending the session.
    pub fn refusing(max_line: usize, max_literal: usize) -> Framer {
        Framer {
            refuse: true,
            ..Framer::new(max_line, max_literal)
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.searched = self.searched.saturating_sub(self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The literal announced last is not to come: the peer was refused the go-ahead for a
    /// synchronising literal, so what it sends next is a new line.
    pub fn cancel_literal(&mut self) {
        self.literal = None;
    }

    /// Whether bytes wait that make no whole fragment yet.
    pub fn is_empty(&self) -> bool {
        self.start >= self.buf.len()
    }

    /// The bytes not taken yet.
    fn rest(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or_default()
    }

    /// Takes the next `n` bytes.
    fn take(&mut self, n: usize) -> Vec<u8> {
        let out = self.rest().get(..n).unwrap_or_default().to_vec();
        self.start += n;
        self.searched = self.start;
        out
    }

    /// The next whole fragment, `None` until enough bytes arrived.
    ///
    /// # Errors
    /// A line or a literal over the limits; the stream cannot be read on from there.
    pub fn fragment(&mut self) -> Result<Option<Fragment>, Error> {
        if self.skip > 0 {
            let n = self.skip.min(self.rest().len());
            self.start += n;
            self.searched = self.start;
            self.skip -= n;
            if self.skip > 0 {
                return Ok(None);
            }
        }
        if let Some(len) = self.literal {
            if self.rest().len() < len {
                return Ok(None);
            }
            self.literal = None;
            return Ok(Some(Fragment::Literal(self.take(len))));
        }
        // A line end may straddle the last search's end.
        let from = self.searched.saturating_sub(1).max(self.start);
        let found = self
            .buf
            .get(from..)
            .and_then(|b| memchr::memmem::find(b, b"\r\n"))
            .map(|i| from + i - self.start);
        let Some(end) = found else {
            self.searched = self.buf.len();
            if self.rest().len() > self.max_line {
                return Err(Error::LineTooLong(self.max_line));
            }
            return Ok(None);
        };
        if end + 2 > self.max_line {
            return Err(Error::LineTooLong(self.max_line));
        }
        let bytes = self.take(end + 2);
        let literal = announced(&bytes);
        if let Some(l) = literal {
            if l.len > self.max_literal && self.refuse {
                if !l.sync {
                    self.skip = l.len;
                }
                return Ok(Some(Fragment::TooLarge { bytes, literal: l }));
            }
            if l.len > self.max_literal {
                let len = u64::try_from(l.len).unwrap_or(u64::MAX);
                return Err(Error::LiteralTooLarge(len, self.max_literal));
            }
            self.literal = Some(l.len);
        }
        Ok(Some(Fragment::Line { bytes, literal }))
    }
}

/// The literal a line announces at its end: `{N}`, `{N+}` or `{N-}` right before its CRLF
/// (`~{N}` for a literal8 too).
pub fn announced(line: &[u8]) -> Option<Literal> {
    let body = line.strip_suffix(b"\r\n")?.strip_suffix(b"}")?;
    let open = body.iter().rposition(|&b| b == b'{')?;
    let inner = body.get(open + 1..)?;
    let (digits, sync) = match inner.last() {
        Some(b'+') | Some(b'-') => (inner.get(..inner.len() - 1)?, false),
        _ => (inner, true),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // A number too large for any count is a literal over every limit, never a line
    // without one (that would read the literal's data as commands).
    let len = std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse::<u64>().ok())
        .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
    Some(Literal {
        len,
        sync: sync && !inner.ends_with(b"-"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_literals_come_out_whole_whatever_the_pieces() {
        let stream = b"* 1 FETCH (BODY[] {5}\r\nhello UID 7)\r\nA1 OK done\r\n";
        for piece in 1..stream.len() {
            let mut f = Framer::new(1024, 1024);
            let mut got = Vec::new();
            for chunk in stream.chunks(piece) {
                f.push(chunk);
                while let Some(frag) = f.fragment().unwrap() {
                    got.push(frag);
                }
            }
            assert_eq!(
                got,
                [
                    Fragment::Line {
                        bytes: b"* 1 FETCH (BODY[] {5}\r\n".to_vec(),
                        literal: Some(Literal { len: 5, sync: true })
                    },
                    Fragment::Literal(b"hello".to_vec()),
                    Fragment::Line {
                        bytes: b" UID 7)\r\n".to_vec(),
                        literal: None
                    },
                    Fragment::Line {
                        bytes: b"A1 OK done\r\n".to_vec(),
                        literal: None
                    },
                ],
                "pieces of {piece}"
            );
        }
    }

    #[test]
    fn announcements_and_limits() {
        assert_eq!(
            announced(b"A LOGIN {3+}\r\n"),
            Some(Literal {
                len: 3,
                sync: false
            })
        );
        assert_eq!(announced(b"A LOGIN {x}\r\n"), None);
        assert_eq!(announced(b"A LOGIN {}\r\n"), None);
        assert_eq!(announced(b"A NOOP\r\n"), None);
        let mut f = Framer::new(16, 4);
        f.push(b"* 1 FETCH {5}\r\n");
        assert_eq!(f.fragment(), Err(Error::LiteralTooLarge(5, 4)));
        let mut f = Framer::new(8, 4);
        f.push(b"0123456789");
        assert_eq!(f.fragment(), Err(Error::LineTooLong(8)));
        let mut f = Framer::new(64, 4);
        f.push(b"* 1 FETCH {99999999999999999999}\r\n");
        assert!(matches!(f.fragment(), Err(Error::LiteralTooLarge(..))));
    }

    #[test]
    fn a_client_s_literal_over_the_limit_is_refused_and_the_stream_goes_on() {
        // Synchronising: the client sends nothing more of that command.
        let mut f = Framer::refusing(64, 4);
        f.push(b"a APPEND INBOX {5}\r\nb NOOP\r\n");
        assert_eq!(
            f.fragment(),
            Ok(Some(Fragment::TooLarge {
                bytes: b"a APPEND INBOX {5}\r\n".to_vec(),
                literal: Literal { len: 5, sync: true }
            }))
        );
        assert!(
            matches!(f.fragment(), Ok(Some(Fragment::Line { bytes, .. })) if bytes == b"b NOOP\r\n")
        );
        // Non-synchronising: its data is skipped, in whatever pieces it comes.
        let stream = b"a APPEND INBOX {6+}\r\nhello!\r\nb NOOP\r\n";
        for piece in 1..stream.len() {
            let mut f = Framer::refusing(64, 4);
            let mut got = Vec::new();
            for chunk in stream.chunks(piece) {
                f.push(chunk);
                while let Some(frag) = f.fragment().unwrap() {
                    got.push(frag);
                }
            }
            assert_eq!(got.len(), 3, "pieces of {piece}: {got:?}");
            assert!(matches!(&got[0], Fragment::TooLarge { literal, .. } if !literal.sync));
            assert_eq!(
                got[1],
                Fragment::Line {
                    bytes: b"\r\n".to_vec(),
                    literal: None
                }
            );
            assert_eq!(
                got[2],
                Fragment::Line {
                    bytes: b"b NOOP\r\n".to_vec(),
                    literal: None
                }
            );
        }
    }
}
