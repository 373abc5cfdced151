//! The DATA phase: a byte-exact reader that ends only on CRLF.CRLF, undoes dot-stuffing,
//! refuses bare CR and LF (SMTP smuggling), and never buffers beyond the size limit.
//!
//! Text lines longer than RFC 5321's 1000 octets are accepted: real clients send them,
//! and refusing would lose mail that the next hop may well take. Only the message size
//! limit bounds a line, and a line over it is counted, not kept.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use crate::blob::{self, Blob, Spill};
use crate::smtp::reply::{Enhanced, Reply};

/// Messages larger than this get [`LARGE_RESERVE`] bytes of buffer at once.
const LARGE_FROM: usize = 1024 * 1024;

/// glibc's largest dynamic mmap threshold: a block this large is always mapped
/// separately, whatever the allocator learned from earlier frees.
const LARGE_RESERVE: usize = 32 * 1024 * 1024;

/// Reads one message body as it arrives, in pieces of any size.
pub struct DataReader {
    /// The message so far, unstuffed, CRLF line ends: in memory, or past the spill size
    /// in a sealed temporary file.
    message: blob::Writer,
    /// Set when the spill file cannot be written: the message is answered 451.
    io_error: Option<std::io::Error>,
    /// Bytes of the current line not yet complete.
    line: Vec<u8>,
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
            line: Vec::with_capacity(256),
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
        let mut consumed = 0;
        let mut rest = input;
        while !rest.is_empty() {
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let (line, after) = rest.split_at(i + 1);
                    self.push_line_part(line);
                    consumed += line.len();
                    rest = after;
                    if self.finish_line() {
                        return (consumed, true);
                    }
                }
                None => {
                    self.push_line_part(rest);
                    consumed += rest.len();
                    rest = &[];
                }
            }
        }
        (consumed, false)
    }

    fn push_line_part(&mut self, part: &[u8]) {
        // A line longer than any limit is still read to its end, but not kept whole.
        if self.line.len() < self.max_size.saturating_add(3) {
            self.line.extend_from_slice(part);
        } else {
            self.too_big = true;
            self.size = self.size.saturating_add(part.len());
            // Keep only what the line-end check needs: the first byte and the last two.
            self.line.truncate(1);
            let (_, tail) = part.split_at(part.len().saturating_sub(2));
            self.line.extend_from_slice(tail);
        }
    }

    /// Handles a complete line (ending in LF). `true` at the final dot.
    fn finish_line(&mut self) -> bool {
        let line = std::mem::take(&mut self.line);
        let crlf = line.ends_with(b"\r\n");
        let body = line
            .strip_suffix(b"\r\n")
            .or_else(|| line.strip_suffix(b"\n"))
            .unwrap_or(&line);
        if !crlf || body.contains(&b'\r') {
            // Only CRLF.CRLF ends the data; "\n.\n" and friends are content, and refused.
            self.bare_line_end = true;
        }
        if crlf && &line[..] == b".\r\n" {
            return true;
        }
        let content = line.strip_prefix(b".").unwrap_or(&line);
        if self.in_header {
            self.header_size += content.len();
            if content == b"\r\n" || content == b"\n" {
                self.in_header = false;
            } else if self.header_size > self.max_header {
                self.header_too_big = true;
            }
        }
        self.size = self.size.saturating_add(content.len());
        if self.size > self.max_size {
            self.too_big = true;
        }
        if !self.too_big && !self.header_too_big && !self.bare_line_end && self.io_error.is_none() {
            self.reserve_large(content.len());
            if let Err(e) = self.message.write(content) {
                tracing::error!(error = %e, "cannot spill a large message to disk");
                self.io_error = Some(e);
            }
        }
        self.line = line;
        self.line.clear();
        false
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
            memory.reserve_exact(target.saturating_sub(memory.len()));
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
    fn bare_lf_and_cr_are_refused_and_do_not_end_data() {
        let input = b"a\n.\nb\r\nc\rd\r\n.\r\n";
        let (r, used) = read_split(input, 3);
        assert_eq!(used, input.len());
        assert!(matches!(r.verdict(), Verdict::Refused(rep) if rep.code == 554));
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
        let mut r = DataReader::new(10_000, 500);
        let (_, done) = r.ingest(&input);
        assert!(done);
        assert!(matches!(r.verdict(), Verdict::Refused(rep) if rep.text().contains("header")));
    }
}
