//! A linear scan of a message's MIME tree, bounded: nesting depth, part count and header
//! line length, without decoding or copying any body.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use mail_parser::{MessageParser, MimeHeaders};

use super::Error;

/// Longest header line, CRLF excluded (RFC 5322 §2.1.1).
pub const MAX_LINE: usize = 998;
/// Deepest nesting of multiparts and attached messages.
pub const MAX_DEPTH: usize = 50;
/// Most MIME parts in one message.
pub const MAX_PARTS: usize = 10_000;

/// What the scan found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Multiparts and attached messages around the innermost part (0 for a single part).
    pub depth: usize,
    /// Body parts of all multiparts.
    pub parts: usize,
}

/// An open container: a multipart (its delimiter `--boundary`) or an attached message.
enum Frame {
    Multipart(Vec<u8>),
    Message,
}

enum Mode {
    /// Inside a header section that starts at this offset.
    Header(usize),
    Body,
}

/// mail-parser's full parse. It panics on some crafted MIME trees (0.11.9: "Invalid part
/// ID, could not find multipart."); such a message is one it cannot parse, `None`, as for
/// the OpenPGP parser's panics.
pub fn parse(message: &[u8]) -> Option<mail_parser::Message<'_>> {
    std::panic::catch_unwind(|| MessageParser::default().parse(message))
        .ok()
        .flatten()
}

/// Walks the message once, line by line.
///
/// # Errors
/// `HeaderLineTooLong`, `TooDeep` or `TooManyParts`: the caller refuses the message.
pub fn scan(message: &[u8]) -> Result<Shape, Error> {
    let mut stack: Vec<Frame> = Vec::new();
    let mut shape = Shape { depth: 0, parts: 0 };
    let mut mode = Mode::Header(0);
    let mut at = 0;
    while at < message.len() {
        // In a body outside every multipart (a single-part message's, or the epilogue of
        // the outermost multipart) no line can open or close anything: the rest of the
        // message does not change its shape, so it is not read.
        if matches!(mode, Mode::Body) && stack.is_empty() {
            break;
        }
        let end = message
            .get(at..)
            .and_then(|rest| memchr::memchr(b'\n', rest))
            .map_or(message.len(), |i| at + i + 1);
        let line = message.get(at..end).unwrap_or_default();
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if content.starts_with(b"--") {
            if let Some((i, closing)) = delimiter(&stack, content) {
                stack.truncate(i + 1);
                if closing {
                    stack.truncate(i);
                    mode = Mode::Body;
                } else {
                    shape.parts += 1;
                    if shape.parts > MAX_PARTS {
                        return Err(Error::TooManyParts(MAX_PARTS));
                    }
                    mode = Mode::Header(end);
                }
                at = end;
                continue;
            }
        }
        if let Mode::Header(start) = mode {
            if content.len() > MAX_LINE {
                return Err(Error::HeaderLineTooLong(MAX_LINE));
            }
            if content.is_empty() {
                mode = entity(message.get(start..end).unwrap_or_default(), end, &mut stack);
                shape.depth = shape.depth.max(stack.len());
                if stack.len() > MAX_DEPTH {
                    return Err(Error::TooDeep(MAX_DEPTH));
                }
            }
        }
        at = end;
    }
    Ok(shape)
}

/// Which open multipart a `--…` line delimits, and whether it closes it. Inner
/// multiparts are checked first; a match further out closes everything inside it.
fn delimiter(stack: &[Frame], line: &[u8]) -> Option<(usize, bool)> {
    let line = line.trim_ascii_end();
    stack.iter().enumerate().rev().find_map(|(i, f)| match f {
        Frame::Multipart(d) => {
            let rest = line.strip_prefix(d.as_slice())?;
            match rest {
                b"" => Some((i, false)),
                b"--" => Some((i, true)),
                _ => None,
            }
        }
        Frame::Message => None,
    })
}

/// After a header section: a multipart opens a frame and its preamble follows; an
/// attached message opens a frame and its own header section follows.
fn entity(head: &[u8], body_start: usize, stack: &mut Vec<Frame>) -> Mode {
    // The MIME fields alone decide; the others are skipped, not parsed.
    let Some(parsed) = MessageParser::new()
        .with_mime_headers()
        .default_header_ignore()
        .parse_headers(head)
    else {
        return Mode::Body;
    };
    let Some(ct) = parsed.content_type() else {
        return Mode::Body;
    };
    let encoded = parsed.content_transfer_encoding().is_some_and(|c| {
        c.eq_ignore_ascii_case("base64") || c.eq_ignore_ascii_case("quoted-printable")
    });
    if ct.ctype().eq_ignore_ascii_case("multipart") {
        if let Some(b) = ct.attribute("boundary").filter(|b| !b.is_empty()) {
            let mut d = b"--".to_vec();
            d.extend_from_slice(b.as_bytes());
            stack.push(Frame::Multipart(d));
        }
        Mode::Body
    } else if ct.ctype().eq_ignore_ascii_case("message")
        && ct
            .subtype()
            .is_some_and(|s| s.eq_ignore_ascii_case("rfc822") || s.eq_ignore_ascii_case("global"))
        && !encoded
    {
        stack.push(Frame::Message);
        Mode::Header(body_start)
    } else {
        Mode::Body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        let mut m =
            String::from("From: a@x.org\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n");
        for i in 0..depth.saturating_sub(1) {
            m.push_str(&format!(
                "--b{i}\r\nContent-Type: multipart/mixed;\r\n boundary=\"b{}\"\r\n\r\n",
                i + 1
            ));
        }
        m.push_str(&format!(
            "--b{}\r\nContent-Type: text/plain\r\n\r\nleaf\r\n",
            depth - 1
        ));
        for i in (0..depth).rev() {
            m.push_str(&format!("--b{i}--\r\n"));
        }
        m
    }

    #[test]
    fn depth_and_parts_are_counted() {
        assert_eq!(
            scan(b"From: a@x.org\r\n\r\nbody\r\n").unwrap(),
            Shape { depth: 0, parts: 0 }
        );
        assert_eq!(
            scan(nested(3).as_bytes()).unwrap(),
            Shape { depth: 3, parts: 3 }
        );
        assert_eq!(scan(nested(MAX_DEPTH).as_bytes()).unwrap().depth, MAX_DEPTH);
        assert!(matches!(
            scan(nested(200).as_bytes()),
            Err(Error::TooDeep(_))
        ));
    }

    #[test]
    fn siblings_close_and_attached_messages_nest() {
        let m = "Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: multipart/alternative; boundary=i\r\n\r\n--i\r\n\r\na\r\n--o\r\nContent-Type: message/rfc822\r\n\r\nFrom: b@x\r\nContent-Type: multipart/mixed; boundary=n\r\n\r\n--n\r\n\r\nx\r\n--n--\r\n--o--\r\nepilogue\r\n--i\r\n";
        // `--i` after `--o` opened a sibling is no delimiter any more.
        assert_eq!(scan(m.as_bytes()).unwrap(), Shape { depth: 3, parts: 4 });
    }

    #[test]
    fn long_header_lines_are_refused_in_parts_too() {
        let long = "x".repeat(MAX_LINE + 1);
        let top = format!("X-Long: {long}\r\n\r\nb\r\n");
        assert!(matches!(
            scan(top.as_bytes()),
            Err(Error::HeaderLineTooLong(_))
        ));
        let part = format!("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nX-Long: {long}\r\n\r\nb\r\n--b--\r\n");
        assert!(matches!(
            scan(part.as_bytes()),
            Err(Error::HeaderLineTooLong(_))
        ));
        let body = format!("From: a@b\r\n\r\n{long}\r\n");
        assert!(
            scan(body.as_bytes()).is_ok(),
            "body lines are not header lines"
        );
    }
}
