//! Entity and boundary scanning over bytes read as they come: where a header section
//! ends, and where the parts of a multipart body lie. A body of any size costs bounded
//! memory (a header section at most), and the caller cuts the parts out of its own
//! storage by the ranges returned.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::io::{self, Read};
use std::ops::Range;

use super::lines::Lines;

/// A header section read from the start of `r`, at most `limit` bytes of it, and where
/// the body starts: `None` when no empty line ends the section within `limit` (or before
/// the data ends). The section keeps its last CRLF, as [`super::headers::split_bytes`]
/// cuts it.
///
/// # Errors
/// Read errors.
pub fn head_of(mut r: impl Read, limit: usize) -> io::Result<(Vec<u8>, Option<usize>)> {
    let mut head = Vec::new();
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
        if n == 0 || head.len() >= limit {
            return Ok((head, None));
        }
    }
}

/// The body parts of a multipart body read from `r`, as byte ranges: only delimiter lines
/// of this boundary count (RFC 2046 §5.1.1: `--boundary`, or `--boundary--` for the last,
/// followed by nothing but white space), and the line break before a delimiter is the
/// delimiter's. `None` when the boundary is empty or the closing delimiter never comes.
///
/// # Errors
/// Read errors.
pub fn parts(r: impl Read, boundary: &str) -> io::Result<Option<Vec<Range<usize>>>> {
    if boundary.is_empty() {
        return Ok(None);
    }
    let delimiter = format!("--{boundary}");
    let mut out = Vec::new();
    let mut open: Option<usize> = None;
    let mut lines = Lines::new(r);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_section_ends_at_the_first_empty_line() {
        let m = b"A: 1\r\nB: 2\r\n\r\nbody\r\n\r\nmore";
        assert_eq!(
            head_of(&m[..], usize::MAX).unwrap(),
            (b"A: 1\r\nB: 2\r\n".to_vec(), Some(14))
        );
        assert_eq!(
            head_of(&b"\r\nbody"[..], 10).unwrap(),
            (Vec::new(), Some(2))
        );
        let (head, at) = head_of(&b"A: 1\r\nB: 2"[..], usize::MAX).unwrap();
        assert_eq!((head.as_slice(), at), (&b"A: 1\r\nB: 2"[..], None));
    }

    #[test]
    fn parts_are_cut_by_whole_delimiter_lines_only() {
        let body = b"pre\r\n--b\r\none\r\n--bx\r\n--b \r\ntwo\r\n--b--\r\nepilogue";
        let got = parts(&body[..], "b").unwrap().unwrap();
        let cut: Vec<&[u8]> = got.iter().map(|r| &body[r.clone()]).collect();
        assert_eq!(cut, [&b"one\r\n--bx"[..], &b"two"[..]]);
        assert_eq!(parts(&b"--b\r\nopen"[..], "b").unwrap(), None);
        assert_eq!(parts(&body[..], "").unwrap(), None);
        let body = b"preamble\r\n--b\r\nA: 1\r\n\r\none\r\n--b \r\n\r\ntwo\r\n\r\n--b--\r\nepilogue\r\n--b\r\n";
        let got = parts(&body[..], "b").unwrap().unwrap();
        let cut: Vec<&[u8]> = got.iter().map(|r| &body[r.clone()]).collect();
        assert_eq!(cut, [&b"A: 1\r\n\r\none"[..], &b"\r\ntwo\r\n"[..]]);
        assert_eq!(
            parts(&b"--bb\r\nx\r\n--b--"[..], "b")
                .unwrap()
                .unwrap()
                .len(),
            0
        );
    }
}
