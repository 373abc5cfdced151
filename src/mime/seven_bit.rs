//! 7-bit content (RFC 2045): the check, the one single-part encoder ([`encode`]:
//! quoted-printable for text, base64 for anything else) that the signed-only copy, the
//! relay's downgrade for a hop without 8BITMIME and the inbound result all use, and the
//! rewrite of a whole message for signing (RFC 3156 §3): every leaf part with 8-bit
//! content or trailing whitespace is re-encoded, the structure and every other byte stay
//! as they were.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use base64::Engine;
use mail_parser::{MimeHeaders, PartType};

use super::headers;
use super::Error;

/// 7-bit text (RFC 2045): printable ASCII and tabs, CRLF line ends, no trailing
/// whitespace, lines within 998 octets.
pub fn is_clean(bytes: &[u8]) -> bool {
    let mut c = Clean::default();
    c.feed(bytes);
    c.finish()
}

/// [`is_clean`] over bytes fed a piece at a time (a decrypted body in a sealed file), in
/// one pass: it runs over whole decrypted messages, and splitting them into lines first
/// cost several times more.
#[derive(Debug, Clone, Copy)]
pub struct Clean {
    clean: bool,
    /// The line so far: its length, its last two bytes.
    len: usize,
    last: u8,
    before_last: u8,
}

impl Default for Clean {
    fn default() -> Clean {
        Clean {
            clean: true,
            len: 0,
            last: 0,
            before_last: 0,
        }
    }
}

impl Clean {
    pub fn feed(&mut self, piece: &[u8]) {
        if self.clean {
            self.clean = piece.iter().all(|&c| self.push(c));
        }
    }

    /// Whether everything fed was 7-bit text.
    pub fn finish(&self) -> bool {
        self.clean && self.line_ok()
    }

    /// Takes one byte; false when the text is not clean.
    fn push(&mut self, c: u8) -> bool {
        if !((0x20..=0x7e).contains(&c) || c == b'\t' || c == b'\r' || c == b'\n') {
            return false;
        }
        if c == b'\n' {
            let ok = self.line_ok();
            (self.len, self.last, self.before_last) = (0, 0, 0);
            return ok;
        }
        if self.last == b'\r' {
            // A CR not before a LF.
            return false;
        }
        self.len += 1;
        self.before_last = self.last;
        self.last = c;
        true
    }

    /// Whether the line so far is a good line (without its LF).
    fn line_ok(&self) -> bool {
        let (len, last) = if self.last == b'\r' {
            (self.len.saturating_sub(1), self.before_last)
        } else {
            (self.len, self.last)
        };
        len <= 998 && (len == 0 || (last != b' ' && last != b'\t'))
    }
}

/// The message with every unclean leaf re-encoded.
///
/// # Errors
/// `Error::NotSevenBit` when a part cannot be re-encoded: 8-bit bytes in a preamble, a
/// header, an attached message, or in a part that claims an encoding already.
pub fn rewrite(message: &[u8]) -> Result<Vec<u8>, Error> {
    let parsed = super::structure::parse(message).ok_or(Error::NotSevenBit)?;
    let mut edits: Vec<(usize, usize, Vec<u8>)> = Vec::new();
    for part in parsed.parts.iter().skip(1) {
        let leaf = matches!(
            part.body,
            PartType::Text(_) | PartType::Html(_) | PartType::Binary(_) | PartType::InlineBinary(_)
        );
        if !leaf {
            continue;
        }
        let (oh, ob, oe) = (
            part.offset_header as usize,
            part.offset_body as usize,
            part.offset_end as usize,
        );
        let (Some(head), Some(body)) = (message.get(oh..ob), message.get(ob..oe)) else {
            return Err(Error::NotSevenBit);
        };
        if is_clean(body) {
            continue;
        }
        let (fields, _) = headers::split(head);
        // The encoding mail-parser decoded the part by, and the classifier judged it by.
        let cte = headers::effective(&fields, "Content-Transfer-Encoding")
            .map(|f| f.value().to_ascii_lowercase());
        if matches!(cte.as_deref(), Some("quoted-printable") | Some("base64")) {
            return Err(Error::NotSevenBit);
        }
        let text = part
            .content_type()
            .is_some_and(|ct| ct.ctype().eq_ignore_ascii_case("text"));
        let (name, mut encoded) = encode(body, text);
        // The encoder ends every body with a line break; one the content did not have
        // goes (a content's own last line break stays): the CRLF before the next
        // delimiter is the delimiter's own.
        if encoded.ends_with(b"\r\n") && (name == BASE64 || !body.ends_with(b"\n")) {
            encoded.truncate(encoded.len() - 2);
        }
        let mut new = String::new();
        // A Content-Type that a later one overrides goes too: the new head means one
        // thing to every reader.
        for f in fields
            .iter()
            .filter(|f| !f.is("Content-Transfer-Encoding") && !headers::overridden(&fields, f))
        {
            new.push_str(&f.wire());
        }
        new.push_str(&format!("Content-Transfer-Encoding: {name}\r\n\r\n"));
        let mut bytes = new.into_bytes();
        bytes.extend(encoded);
        edits.push((oh, oe, bytes));
    }
    edits.sort_by_key(|e| e.0);
    let mut out = Vec::with_capacity(message.len() + message.len() / 3);
    let mut at = 0;
    for (start, end, bytes) in edits {
        if start < at {
            return Err(Error::NotSevenBit);
        }
        out.extend_from_slice(message.get(at..start).ok_or(Error::NotSevenBit)?);
        out.extend(bytes);
        at = end;
    }
    out.extend_from_slice(message.get(at..).unwrap_or_default());
    let (_, body) = headers::split(&out);
    if !is_clean(body) {
        return Err(Error::NotSevenBit);
    }
    Ok(out)
}

/// `Content-Transfer-Encoding` names of the two encodings.
pub const QUOTED_PRINTABLE: &str = "quoted-printable";
pub const BASE64: &str = "base64";

/// The one single-part encoder: a leaf body in a 7-bit encoding, quoted-printable when
/// `text`, base64 otherwise, ending with a line break; and the encoding's name. The
/// decoded bytes are the same. A caller that holds plaintext wraps the result in a
/// buffer zeroed on drop: it is allocated once, at its full size.
pub fn encode(body: &[u8], text: bool) -> (&'static str, Vec<u8>) {
    if text {
        (QUOTED_PRINTABLE, quoted_printable(body))
    } else {
        let mut b = base64_lines_with(body, 2);
        b.extend_from_slice(b"\r\n");
        (BASE64, b)
    }
}

/// Base64 in lines of 76 characters, CRLF between them, no line break at the end.
pub fn base64_lines(data: &[u8]) -> Vec<u8> {
    base64_lines_with(data, 0)
}

/// [`base64_lines`] with room for `extra` more bytes, so that adding them does not
/// reallocate (and leave a copy behind).
fn base64_lines_with(data: &[u8], extra: usize) -> Vec<u8> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = Vec::with_capacity(encoded.len() + encoded.len() / 38 + extra);
    for (i, chunk) in encoded.as_bytes().chunks(76).enumerate() {
        if i > 0 {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(chunk);
    }
    out
}

/// RFC 2045 quoted-printable, lines kept under 76 characters, CRLF line ends.
pub fn quoted_printable(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 8);
    let text = body.strip_suffix(b"\r\n").unwrap_or(body);
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        if i > 0 {
            out.extend_from_slice(b"\r\n");
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut width = 0;
        for (j, &b) in line.iter().enumerate() {
            let last = j + 1 == line.len();
            let literal =
                (b == b' ' || b == b'\t') && !last || (33..=126).contains(&b) && b != b'=';
            let piece: Vec<u8> = if literal {
                vec![b]
            } else {
                format!("={b:02X}").into_bytes()
            };
            if width + piece.len() > 75 {
                out.extend_from_slice(b"=\r\n");
                width = 0;
            }
            width += piece.len();
            out.extend_from_slice(&piece);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A message that is one part: its body re-encoded, its header kept byte for byte except
/// for the Content-Transfer-Encoding field.
pub fn single_part(
    message: &[u8],
    fields: &[headers::Field],
    content_type: &str,
    body: &[u8],
) -> Option<Vec<u8>> {
    if content_type.starts_with("message/") {
        return None;
    }
    let cte = headers::effective(fields, "Content-Transfer-Encoding")
        .map(|f| f.value().to_ascii_lowercase());
    if !matches!(
        cte.as_deref(),
        None | Some("7bit") | Some("8bit") | Some("binary")
    ) {
        // It claims an encoding that cannot carry these bytes: it is broken, not 8-bit.
        return None;
    }
    let text = content_type.is_empty() || content_type.starts_with("text/");
    let (name, encoded) = encode(body, text);
    let (head, _) = headers::split_bytes(message);
    let mut out = Vec::with_capacity(head.len() + encoded.len() + 64);
    let mut skipping = false;
    for line in head.split_inclusive(|&b| b == b'\n') {
        let continuation = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !continuation {
            skipping = is_field(line, "Content-Transfer-Encoding");
        }
        if !skipping {
            out.extend_from_slice(line);
        }
    }
    if !fields.iter().any(|f| f.is("MIME-Version")) {
        out.extend_from_slice(b"MIME-Version: 1.0\r\n");
    }
    out.extend_from_slice(format!("Content-Transfer-Encoding: {name}\r\n\r\n").as_bytes());
    out.extend_from_slice(&encoded);
    Some(out)
}

/// Whether a header line starts the field `name`.
fn is_field(line: &[u8], name: &str) -> bool {
    line.iter()
        .position(|&b| b == b':')
        .and_then(|i| line.get(..i))
        .is_some_and(|n| n.trim_ascii_end().eq_ignore_ascii_case(name.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_text_is_the_same_fed_whole_or_in_pieces() {
        let long_ok = vec![b'x'; 998];
        let long_bad = vec![b'x'; 999];
        let cases: [(&[u8], bool); 16] = [
            (b"", true),
            (b"a", true),
            (b"a\r\nb\r\n", true),
            (b"a\nb", true),
            (b"a \r\n", false),
            (b"a\t\r\n", false),
            (b"a\t", false),
            (b"a\rb\r\n", false),
            (b"\r", true),
            (b"\r\r\n", false),
            (b"a\x7f", false),
            (b"a\x00", false),
            (b"\xc3\xbc", false),
            (b"\ta b\r\n\r\n", true),
            (&long_ok, true),
            (&long_bad, false),
        ];
        for (text, want) in cases {
            assert_eq!(is_clean(text), want, "{text:?}");
            for cut in 0..=text.len() {
                let (a, b) = text.split_at(cut);
                let mut c = Clean::default();
                c.feed(a);
                c.feed(b);
                assert_eq!(c.finish(), want, "{text:?} cut at {cut}");
            }
        }
    }
    use mail_parser::MessageParser;

    #[test]
    fn leaves_are_re_encoded_and_the_rest_kept() {
        let m = "From: a@b\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\npre\r\n--x\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße \r\nline2\r\n--x\r\nContent-Type: application/octet-stream\r\n\r\n\u{0}\u{1}bin\r\n--x\r\nContent-Type: text/plain\r\n\r\nalready clean\r\n--x--\r\n";
        let out = rewrite(m.as_bytes()).unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(is_clean(headers::split(&out).1));
        assert!(text.contains("Content-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe=20\r\nline2\r\n--x\r\n"), "{text}");
        assert!(
            text.contains("Content-Transfer-Encoding: base64\r\n\r\nAAFiaW4=\r\n--x\r\n"),
            "{text}"
        );
        assert!(text.contains("Content-Type: text/plain\r\n\r\nalready clean\r\n--x--\r\n"));
        // The decoded content is what it was.
        let reparsed = MessageParser::default().parse(&out).unwrap();
        assert_eq!(reparsed.body_text(0).unwrap(), "Grüße \r\nline2");
    }

    #[test]
    fn a_part_keeps_its_last_line_break() {
        let m = "Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Grüße</p>\r\n\r\n--x\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nné\r\n--x--\r\n";
        let out = rewrite(m.as_bytes()).unwrap();
        let parsed = MessageParser::default().parse(&out).unwrap();
        assert_eq!(parsed.parts[1].text_contents(), Some("<p>Grüße</p>\r\n"));
        assert_eq!(parsed.parts[2].text_contents(), Some("né"));
    }

    /// A part's repeated Content-Type and Content-Transfer-Encoding count by the last of
    /// each, as mail-parser (and the classifier) reads them.
    #[test]
    fn a_repeated_content_field_in_a_part_counts_by_the_last() {
        // Last: quoted-printable, which cannot hold 8-bit bytes; the first said 8bit.
        let claims_qp = "From: a@b\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nGrüße=20\r\n--x--\r\n";
        assert!(matches!(
            rewrite(claims_qp.as_bytes()),
            Err(Error::NotSevenBit)
        ));
        // Last: text; the first said binary. Re-encoded as text, under that one type.
        let text = "From: a@b\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: 7bit\r\nContent-Transfer-Encoding: 8bit\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nGrüße\r\n--x--\r\n";
        let out = rewrite(text.as_bytes()).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("--x\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe\r\n--x--\r\n"), "{s}");
        assert_eq!(s.matches("Content-Type:").count(), 2, "{s}");
    }

    #[test]
    fn eight_bit_outside_a_leaf_cannot_be_fixed() {
        let m = "From: a@b\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\npréambule\r\n--x\r\nContent-Type: text/plain\r\n\r\nok\r\n--x--\r\n";
        assert!(matches!(rewrite(m.as_bytes()), Err(Error::NotSevenBit)));
    }

    #[test]
    fn quoted_printable_is_seven_bit_without_trailing_space() {
        let qp = quoted_printable("Grüße \r\nline=two\t\r\n".as_bytes());
        let text = String::from_utf8(qp).unwrap();
        assert_eq!(text, "Gr=C3=BC=C3=9Fe=20\r\nline=3Dtwo=09\r\n");
        assert!(is_clean(text.as_bytes()));
        let long = quoted_printable(&[b'a'; 200]);
        assert!(long.split(|&b| b == b'\n').all(|l| l.len() <= 77));
    }
}
