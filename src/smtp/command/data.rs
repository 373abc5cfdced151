//! The DATA phase: a byte-exact reader that ends only on CRLF.CRLF, undoes dot-stuffing,
//! refuses bare CR and LF (SMTP smuggling), and streams each line to the message writer
//! as it arrives.
//!
//! Only `<CR><LF>.<CR><LF>` ends the data: the `.CRLF` line must follow a line that
//! ended in CRLF (the start of the data counts as one). After `\n.\r\n` or `\r.\r\n` the
//! data goes on, so that nothing a client hides behind a look-alike runs as a command.
//!
//! Text lines longer than RFC 5321's 1000 octets are accepted: real clients send them,
//! and refusing would lose mail that the next hop may well take. A line is never held
//! whole: its bytes go to the writer (which spills to disk past the spill size) as they
//! arrive; only the first three bytes of a line wait until they tell whether the line is
//! the final dot, a stuffed dot or the blank line after the header.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use crate::blob::{self, Blob, Spill};
use crate::smtp::reply::{Enhanced, Reply};

/// Messages larger than this get [`LARGE_RESERVE`] bytes of buffer at once.
const LARGE_FROM: usize = 1024 * 1024;

/// glibc's largest dynamic mmap threshold: a block this large is always mapped
/// separately, whatever the allocator learned from earlier frees.
const LARGE_RESERVE: usize = 32 * 1024 * 1024;

/// The longest line start that decides anything: `.CRLF`.
const HEAD: usize = 3;

/// Reads one message body as it arrives, in pieces of any size.
pub struct DataReader {
    /// The message so far, unstuffed, CRLF line ends: in memory, or past the spill size
    /// in a sealed temporary file.
    message: blob::Writer,
    /// Set when the spill file cannot be written: the message is answered 451.
    io_error: Option<std::io::Error>,
    /// The first bytes of the current line, while `at_line_start`.
    head: [u8; HEAD],
    head_len: usize,
    /// No byte of the current line has been passed on yet.
    at_line_start: bool,
    /// The previous line ended in CRLF (or there was none): only then does `.CRLF` end
    /// the data.
    after_crlf: bool,
    /// The last byte passed on was a CR: the next one must be the LF.
    pending_cr: bool,
    max_size: usize,
    max_header: usize,
    /// Bytes of the message counted, including those discarded after the limit.
    size: usize,
    in_header: bool,
    header_size: usize,
    bare_line_end: bool,
    too_big: bool,
    header_too_big: bool,
}

impl std::fmt::Debug for DataReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataReader")
            .field("size", &self.size)
            .field("kept", &self.message.len())
            .field("in_header", &self.in_header)
            .finish_non_exhaustive()
    }
}

/// How a finished message ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Refused(Reply),
}

impl DataReader {
    /// A reader that keeps everything in memory.
    pub fn new(max_size: usize, max_header: usize) -> DataReader {
        DataReader::spilling(max_size, max_header, None)
    }

    /// A reader that moves a message larger than `spill.above` to disk as it arrives.
    pub fn spilling(max_size: usize, max_header: usize, spill: Option<Spill>) -> DataReader {
        DataReader {
            message: blob::Writer::new(spill),
            io_error: None,
            head: [0; HEAD],
            head_len: 0,
            at_line_start: true,
            after_crlf: true,
            pending_cr: false,
            max_size,
            max_header,
            size: 0,
            in_header: true,
            header_size: 0,
            bare_line_end: false,
            too_big: false,
            header_too_big: false,
        }
    }

    /// Consumes bytes from `input` up to and including the final `.CRLF`. Returns the
    /// number of bytes consumed, and whether the message ended.
    pub fn ingest(&mut self, input: &[u8]) -> (usize, bool) {
        let mut rest = input;
        while !rest.is_empty() {
            if self.at_line_start {
                let Some((&b, after)) = rest.split_first() else {
                    break;
                };
                rest = after;
                if self.line_start(b) {
                    return (input.len() - rest.len(), true);
                }
                continue;
            }
            // memchr: every line of every message passes here.
            let (part, after) = match memchr::memchr(b'\n', rest) {
                Some(lf) => rest.split_at(lf + 1),
                None => (rest, &[][..]),
            };
            rest = after;
            self.pass_on(part);
        }
        (input.len(), false)
    }

    /// Takes one byte at the start of a line. `true` at the final dot.
    fn line_start(&mut self, b: u8) -> bool {
        if let Some(slot) = self.head.get_mut(self.head_len) {
            *slot = b;
            self.head_len += 1;
        }
        if b != b'\n' && self.head_len < HEAD {
            return false;
        }
        let head = self.head;
        let head = head.get(..self.head_len).unwrap_or_default();
        self.head_len = 0;
        if head == b".\r\n" && self.after_crlf {
            return true;
        }
        self.at_line_start = false;
        let content = head.strip_prefix(b".").unwrap_or(head);
        if content == b"\r\n" || content == b"\n" {
            self.in_header = false;
        }
        self.pass_on(content);
        false
    }

    /// Takes the next bytes of a line (unstuffed), ending at most with its LF: checks the
    /// line ends, counts, and writes them to the message while it can still be accepted.
    fn pass_on(&mut self, part: &[u8]) {
        let Some((&last, _)) = part.split_last() else {
            return;
        };
        let ends = last == b'\n';
        let text = if ends {
            part.split_last().map_or(&[][..], |(_, t)| t)
        } else {
            part
        };
        // A CR is allowed only right before the LF: as the last byte of the text of a
        // line that ends here, or held over from the previous part when this one is
        // just the LF.
        let cr_ok = match memchr::memchr(b'\r', text) {
            None => true,
            Some(i) => i + 1 == text.len(),
        };
        if !cr_ok || (self.pending_cr && !text.is_empty()) {
            self.bare_line_end = true;
        }
        let cr_last = text.last().map_or(self.pending_cr, |&b| b == b'\r');
        if ends {
            if !cr_last {
                self.bare_line_end = true;
            }
            self.after_crlf = cr_last;
            self.at_line_start = true;
            self.pending_cr = false;
        } else {
            self.pending_cr = cr_last;
        }

        if self.in_header {
            self.header_size = self.header_size.saturating_add(part.len());
            if self.header_size > self.max_header {
                self.header_too_big = true;
            }
        }
        self.size = self.size.saturating_add(part.len());
        if self.size > self.max_size {
            self.too_big = true;
        }
        if !self.too_big && !self.header_too_big && !self.bare_line_end && self.io_error.is_none() {
            self.reserve_large(part.len());
            if let Err(e) = self.message.write(part) {
                tracing::error!(error = %e, "cannot spill a large message to disk");
                self.io_error = Some(e);
            }
        }
    }

    /// Without a spill directory, once a message passes [`LARGE_FROM`], its buffer grows in one step to
    /// [`LARGE_RESERVE`] (or the size limit, if smaller). The allocator maps a block that
    /// large on its own and gives it back whole when it is freed; untouched, the
    /// reservation costs address space, not memory. Growing by doubling instead leaves each
    /// smaller copy (up to 16 MiB) behind as free memory the process keeps: after a load
    /// run, a 20 MB message then peaked 5 MB higher.
    fn reserve_large(&mut self, more: usize) {
        if self.message.can_spill() {
            return;
        }
        let memory = self.message.memory_mut();
        let needed = memory.len().saturating_add(more);
        if needed > LARGE_FROM && memory.capacity() < LARGE_RESERVE {
            let target = LARGE_RESERVE.min(self.max_size).max(needed);
            // The first megabyte is moved, and zeroed where it was.
            crate::wipe::reserve_exact(memory, target.saturating_sub(memory.len()));
        }
    }

    /// Bytes kept so far.
    pub fn len(&self) -> usize {
        self.message.len()
    }

    pub fn is_empty(&self) -> bool {
        self.message.is_empty()
    }

    /// The message, once [`DataReader::verdict`] accepted it.
    ///
    /// # Errors
    /// When the spill file cannot be finished.
    pub fn finish(self) -> std::io::Result<Blob> {
        self.message.finish()
    }

    /// Whether the finished message can be accepted.
    pub fn verdict(&self) -> Verdict {
        if self.io_error.is_some() {
            Verdict::Refused(Reply::new(
                451,
                Enhanced(4, 3, 0),
                "Temporary local problem: the message cannot be stored; try again later",
            ))
        } else if self.too_big {
            Verdict::Refused(super::mail::too_big(self.max_size))
        } else if self.bare_line_end {
            Verdict::Refused(Reply::new(
                554,
                Enhanced(5, 6, 0),
                "Message refused: bare CR or LF found; lines must end with CRLF",
            ))
        } else if self.header_too_big {
            Verdict::Refused(Reply::new(
                552,
                Enhanced(5, 3, 4),
                format!(
                    "Message header exceeds the limit of {} bytes",
                    self.max_header
                ),
            ))
        } else {
            Verdict::Ok
        }
    }

    pub fn start_reply() -> Reply {
        Reply::bare(354, "End data with <CR><LF>.<CR><LF>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_split(input: &[u8], at: usize) -> (DataReader, usize) {
        let mut r = DataReader::new(1000, 500);
        let (a, done) = r.ingest(&input[..at]);
        if done {
            return (r, a);
        }
        let (b, done) = r.ingest(&input[at..]);
        assert!(done, "message did not end");
        (r, a + b)
    }

    /// Feeds `input` in pieces of `step` bytes; returns the reader and the bytes it
    /// consumed, or `None` if the data did not end.
    fn read_in_steps(input: &[u8], step: usize, max: usize) -> Option<(DataReader, usize)> {
        let mut r = DataReader::new(max, 500);
        let mut used = 0;
        for piece in input.chunks(step) {
            let (n, done) = r.ingest(piece);
            used += n;
            if done {
                return Some((r, used));
            }
            assert_eq!(n, piece.len(), "a piece is consumed whole until the end");
        }
        None
    }

    #[test]
    fn unstuffs_and_ends_on_crlf_dot_crlf_at_every_split() {
        let input = b"Subject: x\r\n\r\n..leading dot\r\nbody\r\n.\r\nNEXT";
        for at in 0..input.len() - 4 {
            let (r, used) = read_split(input, at);
            assert_eq!(used, input.len() - 4, "split at {at}");
            assert_eq!(r.verdict(), Verdict::Ok);
            let m = r.finish().unwrap().to_vec().unwrap();
            assert_eq!(m, b"Subject: x\r\n\r\n.leading dot\r\nbody\r\n");
        }
    }

    #[test]
    fn an_empty_message_ends_at_once() {
        let (r, used) = read_split(b".\r\nQUIT\r\n", 1);
        assert_eq!(used, 3);
        assert_eq!(r.verdict(), Verdict::Ok);
        assert!(r.is_empty());
    }

    #[test]
    fn bare_lf_and_cr_are_refused_and_do_not_end_data() {
        let input = b"a\n.\nb\r\nc\rd\r\n.\r\n";
        let (r, used) = read_split(input, 3);
        assert_eq!(used, input.len());
        assert!(matches!(r.verdict(), Verdict::Refused(rep) if rep.code == 554));
    }

    /// The published end-of-data look-alikes, each followed by a smuggled transaction:
    /// none ends the data, at any split; the data ends at the real CRLF.CRLF, and the
    /// smuggled commands are message content.
    #[test]
    fn only_crlf_dot_crlf_ends_data_whatever_the_look_alike() {
        let variants: &[(&[u8], bool)] = &[
            (b"\n.\n", true),
            (b"\n.\r\n", true),
            (b"\r.\r\n", true),
            (b"\r\n.\r", true),
            (b"\r\n.\n", true),
            (b"\r\n.\r\r\n", true),
            (b"\n\n.\r\n", true),
            (b"\r\r\n.\r\r\n", true),
            (b"\r\n\x00.\r", true),
            (b"\r\n\x00.\n", true),
            (b"\r\n\x00.\r\n", false),
            (b"\r\n.\x00\r\n", false),
            (b"\r\n.", false),
        ];
        let smuggled: &[u8] = b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<v@y.test>\r\nDATA\r\nevil\r\n";
        for &(variant, bare) in variants {
            let mut input = b"Subject: s\r\n\r\nbody".to_vec();
            input.extend_from_slice(variant);
            input.extend_from_slice(smuggled);
            let end = input.len() + 3;
            input.extend_from_slice(b".\r\nQUIT\r\n");
            for at in 0..input.len() {
                let (r, used) = read_split(&input, at);
                assert_eq!(used, end, "{variant:?} split at {at}");
                match r.verdict() {
                    Verdict::Refused(rep) => {
                        assert!(bare, "{variant:?}: {rep:?}");
                        assert_eq!((rep.code, rep.enhanced), (554, Some(Enhanced(5, 6, 0))));
                    }
                    Verdict::Ok => {
                        assert!(!bare, "{variant:?} accepted");
                        let m = r.finish().unwrap().to_vec().unwrap();
                        assert!(m.ends_with(smuggled), "{variant:?}: {m:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn too_big_is_read_to_the_end_and_refused() {
        let mut input = b"Subject: big\r\n\r\n".to_vec();
        for _ in 0..100 {
            input.extend_from_slice(b"0123456789012345678901234567890123456789\r\n");
        }
        input.extend_from_slice(b".\r\n");
        let mut r = DataReader::new(1000, 500);
        let (used, done) = r.ingest(&input);
        assert!(done);
        assert_eq!(used, input.len());
        assert!(r.len() <= 1000);
        assert!(matches!(r.verdict(), Verdict::Refused(rep) if rep.code == 552));
    }

    /// A line with no LF for megabytes is passed on as it arrives: nothing but the
    /// writer's own buffer (bounded by the spill size) holds it.
    #[test]
    fn a_long_line_is_streamed_to_the_writer_not_held() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Spill::new(dir.path(), 64 * 1024);
        let mut r = DataReader::spilling(8 * LARGE_FROM, 500, Some(spill));
        assert!(!r.ingest(b"Subject: long\r\n\r\n").1);
        let piece = vec![b'x'; 4096];
        let mut sent = 0;
        while sent < 6 * LARGE_FROM {
            let (used, done) = r.ingest(&piece);
            assert_eq!((used, done), (piece.len(), false));
            sent += piece.len();
            // Everything so far is in the writer, not in a line buffer, and the writer
            // keeps at most its spill size in memory (in a vector that may have doubled).
            assert_eq!(r.len(), "Subject: long\r\n\r\n".len() + sent);
            assert!(r.message.memory_mut().capacity() <= 2 * 64 * 1024);
        }
        assert!(r.ingest(b"\r\n.\r\n").1);
        assert_eq!(r.verdict(), Verdict::Ok);
        let m = r.finish().unwrap();
        assert!(m.is_spilled());
        assert_eq!(m.len(), "Subject: long\r\n\r\n".len() + sent + 2);

        // Past the size limit a line is counted, not kept; the data still ends.
        let mut r = DataReader::new(100_000, 500);
        r.ingest(b"Subject: long\r\n\r\n");
        for _ in 0..100 {
            r.ingest(&piece);
        }
        assert!(r.len() < 100_000);
        assert!(r.ingest(b"\r\n.\r\n").1);
        assert!(matches!(r.verdict(), Verdict::Refused(rep) if rep.code == 552));
    }

    #[test]
    fn a_large_message_is_reserved_once_and_kept_byte_for_byte() {
        let mut input = b"Subject: big\r\n\r\n".to_vec();
        while input.len() < 3 * LARGE_FROM {
            input.extend_from_slice(b"0123456789012345678901234567890123456789\r\n");
        }
        let expected = input.clone();
        input.extend_from_slice(b".\r\n");
        for max in [4 * LARGE_FROM, 64 * LARGE_FROM] {
            let mut r = DataReader::new(max, 500);
            let (_, done) = r.ingest(&input);
            assert!(done);
            assert_eq!(r.verdict(), Verdict::Ok);
            assert_eq!(r.message.memory_mut().capacity(), LARGE_RESERVE.min(max));
            assert_eq!(r.finish().unwrap().to_vec().unwrap(), expected);
        }
        // A small message keeps a small buffer.
        let (mut r, _) = read_split(b"Subject: x\r\n\r\nbody\r\n.\r\n", 5);
        assert!(r.message.memory_mut().capacity() < LARGE_FROM);
    }

    #[test]
    fn a_message_past_the_spill_size_goes_to_disk_and_comes_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut input = b"Subject: big\r\n\r\n".to_vec();
        while input.len() < 3 * LARGE_FROM {
            input.extend_from_slice(b"..0123456789012345678901234567890123456789\r\n");
        }
        let expected: Vec<u8> = String::from_utf8(input.clone())
            .unwrap()
            .replace("\r\n..", "\r\n.")
            .into_bytes();
        input.extend_from_slice(b".\r\n");
        let spill = Spill::new(dir.path(), LARGE_FROM);
        let mut r = DataReader::spilling(4 * LARGE_FROM, 500, Some(spill));
        for piece in input.chunks(1000) {
            r.ingest(piece);
        }
        assert_eq!(r.verdict(), Verdict::Ok);
        // Never more than the spill size in memory.
        assert!(r.message.memory_mut().capacity() <= LARGE_FROM);
        let blob = r.finish().unwrap();
        assert!(blob.is_spilled());
        assert_eq!(blob.to_vec().unwrap(), expected);
    }

    #[test]
    fn a_spill_directory_that_cannot_be_written_is_a_temporary_failure() {
        let mut input = b"Subject: big\r\n\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'a', 5000));
        input.extend_from_slice(b"\r\n.\r\n");
        let spill = Spill::new("/nonexistent/sealpost-spill", 1000);
        let mut r = DataReader::spilling(100_000, 500, Some(spill));
        let (_, done) = r.ingest(&input);
        assert!(done);
        assert!(matches!(r.verdict(), Verdict::Refused(rep) if rep.code == 451));
    }

    #[test]
    fn huge_header_is_refused() {
        let mut input = b"X-Big: ".to_vec();
        input.extend(std::iter::repeat_n(b'a', 600));
        input.extend_from_slice(b"\r\n\r\nbody\r\n.\r\n");
        for step in [1, 7, input.len()] {
            let (r, _) = read_in_steps(&input, step, 10_000).expect("the data ends");
            assert!(
                matches!(r.verdict(), Verdict::Refused(rep) if rep.text().contains("header")),
                "step {step}"
            );
        }
        // The same bytes in the body are fine.
        let mut input = b"Subject: x\r\n\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'a', 600));
        input.extend_from_slice(b"\r\n.\r\n");
        let (r, _) = read_in_steps(&input, 5, 10_000).expect("the data ends");
        assert_eq!(r.verdict(), Verdict::Ok);
    }

    /// What the reader must do, written line by line as the RFC states it: the data
    /// ends at a `.CRLF` line that follows a CRLF line end (or starts the data); a line
    /// ending otherwise, or holding another CR, is a bare line end; a leading dot is
    /// removed. Returns the bytes consumed, the verdict's code and the message kept.
    fn by_lines(input: &[u8], max_size: usize, max_header: usize) -> Option<(usize, u16, Vec<u8>)> {
        let (mut pos, mut after_crlf, mut in_header) = (0, true, true);
        let (mut size, mut header_size) = (0, 0);
        let (mut bare, mut big, mut header_big) = (false, false, false);
        let mut kept = Vec::new();
        while let Some(lf) = input[pos..].iter().position(|&b| b == b'\n') {
            let line = &input[pos..pos + lf + 1];
            pos += lf + 1;
            let crlf = line.ends_with(b"\r\n");
            if crlf && line == b".\r\n" && after_crlf {
                let code = if big {
                    552
                } else if bare {
                    554
                } else if header_big {
                    552
                } else {
                    250
                };
                return Some((pos, code, kept));
            }
            let text = &line[..line.len() - if crlf { 2 } else { 1 }];
            if !crlf || text.contains(&b'\r') {
                bare = true;
            }
            let content = line.strip_prefix(b".").unwrap_or(line);
            if in_header {
                if content == b"\r\n" || content == b"\n" {
                    in_header = false;
                } else {
                    header_size += content.len();
                    header_big |= header_size > max_header;
                }
            }
            size += content.len();
            big |= size > max_size;
            if !big && !bare && !header_big {
                kept.extend_from_slice(content);
            }
            after_crlf = crlf;
        }
        None
    }

    /// Random inputs over the bytes that matter, fed in random pieces, agree with the
    /// line-by-line statement of the rules.
    #[test]
    fn agrees_with_the_rules_stated_line_by_line_on_random_input() {
        let alphabet = b".\r\n\r\na\0.";
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut ended = 0;
        for _ in 0..20_000 {
            let len = (next() % 40) as usize;
            let mut input: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            input.extend_from_slice(b"\r\n.\r\n");
            let (max_size, max_header) = (10 + (next() % 40) as usize, 5 + (next() % 20) as usize);
            let want = by_lines(&input, max_size, max_header);
            let mut r = DataReader::new(max_size, max_header);
            let mut used = 0;
            let mut got = None;
            let mut rest = &input[..];
            while !rest.is_empty() {
                let n = 1 + (next() % 6) as usize;
                let (piece, after) = rest.split_at(n.min(rest.len()));
                rest = after;
                let (u, done) = r.ingest(piece);
                used += u;
                if done {
                    got = Some(used);
                    break;
                }
            }
            let Some((want_used, want_code, want_kept)) = want else {
                assert_eq!(got, None, "{input:?}");
                continue;
            };
            ended += 1;
            assert_eq!(got, Some(want_used), "{input:?}");
            let code = match r.verdict() {
                Verdict::Ok => 250,
                Verdict::Refused(rep) => rep.code,
            };
            assert_eq!(code, want_code, "{input:?}");
            if code == 250 {
                assert_eq!(
                    r.finish().unwrap().to_vec().unwrap(),
                    want_kept,
                    "{input:?}"
                );
            }
        }
        assert!(ended > 10_000, "most inputs end: {ended}");
    }
}
