//! What the pipeline needs to know about a message before transforming it: its single
//! From address, who is named in To and Cc (everyone else is Bcc), and whether it is
//! already protected.

use mail_parser::{MessageParser, MimeHeaders};

use crate::smtp::reply::{Enhanced, Reply};
use crate::transform::headers;

/// A message as the pipeline sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// Already encrypted or signed (PGP/MIME, S/MIME, or one armored block): passed on
    /// byte for byte, never encrypted twice nor signed again.
    pub protected: bool,
    /// The address of the single From header, lower-cased; `None` when there is not
    /// exactly one.
    pub from: Option<String>,
    /// Lower-cased addresses in To and Cc.
    pub named: Vec<String>,
    /// Why the message cannot be protected as it is, if it cannot.
    pub malformed: Option<String>,
}

/// More multipart entities than this and a message is not transformed.
pub const MAX_MULTIPARTS: usize = 50;

/// Reads the header section only: a large body is never parsed here.
pub fn parse(message: &[u8]) -> Parsed {
    let (fields, body) = headers::split(message);
    let head_len = message.len() - body.len();
    let head = message.get(..head_len).unwrap_or(message);
    let parsed = MessageParser::default().parse_headers(head);
    let mut named = Vec::new();
    let mut from = None;
    let mut protected = false;
    if let Some(m) = &parsed {
        for list in [m.to(), m.cc()].into_iter().flatten() {
            for a in list.iter() {
                if let Some(addr) = a.address() {
                    named.push(addr.to_ascii_lowercase());
                }
            }
        }
        let from_fields = fields.iter().filter(|f| f.is("From")).count();
        if from_fields == 1 {
            if let Some(list) = m.from() {
                let addrs: Vec<&str> = list.iter().filter_map(|a| a.address()).collect();
                if let [one] = addrs[..] {
                    from = Some(one.to_ascii_lowercase());
                }
            }
        }
        if let Some(ct) = m.content_type() {
            let sub = ct.subtype().unwrap_or("").to_ascii_lowercase();
            let ty = ct.ctype().to_ascii_lowercase();
            protected = (ty == "multipart" && (sub == "encrypted" || sub == "signed"))
                || (ty == "application" && (sub == "pkcs7-mime" || sub == "x-pkcs7-mime"));
        }
    }
    if !protected {
        protected = one_armored_block(body);
    }
    Parsed {
        protected,
        from,
        named,
        malformed: malformed(message, head),
    }
}

/// The problems that make a message unfit to be transformed: the gateway then refuses
/// it, or passes it on unchanged when every recipient may receive plaintext.
fn malformed(message: &[u8], head: &[u8]) -> Option<String> {
    if message.contains(&0) {
        return Some("the message contains NUL bytes".into());
    }
    if head.split(|&b| b == b'\n').any(|l| l.len() > 1000) {
        return Some("a header line exceeds 998 octets (RFC 5322)".into());
    }
    let multiparts = count_ci(message, b"content-type: multipart/")
        + count_ci(message, b"content-type:multipart/");
    if multiparts > MAX_MULTIPARTS {
        return Some(format!("more than {MAX_MULTIPARTS} nested MIME multiparts"));
    }
    invalid_charset(message)
}

fn count_ci(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .filter(|w| w.eq_ignore_ascii_case(needle))
        .count()
}

/// A text part that declares UTF-8 or US-ASCII but whose bytes are not.
fn invalid_charset(message: &[u8]) -> Option<String> {
    // All-ASCII bytes are valid in both; only 8-bit messages need the full parse.
    if message.is_ascii() {
        return None;
    }
    let parsed = MessageParser::default().parse(message)?;
    for part in &parsed.parts {
        let Some(ct) = part.content_type() else {
            continue;
        };
        if !ct.ctype().eq_ignore_ascii_case("text") {
            continue;
        }
        let charset = ct
            .attribute("charset")
            .unwrap_or("us-ascii")
            .to_ascii_lowercase();
        let cte = part
            .content_transfer_encoding()
            .unwrap_or("7bit")
            .to_ascii_lowercase();
        if cte == "base64" || cte == "quoted-printable" {
            continue;
        }
        let raw = message
            .get(part.offset_body as usize..part.offset_end as usize)
            .unwrap_or_default();
        let bad = match charset.as_str() {
            "utf-8" | "utf8" => std::str::from_utf8(raw).is_err(),
            "us-ascii" | "ascii" => !raw.is_ascii(),
            _ => false,
        };
        if bad {
            return Some(format!(
                "a text part declared {charset} holds bytes that are not {charset}"
            ));
        }
    }
    None
}

/// A body that is exactly one armored OpenPGP message or cleartext-signed message.
fn one_armored_block(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    let t = text.trim();
    (t.starts_with("-----BEGIN PGP MESSAGE-----") && t.ends_with("-----END PGP MESSAGE-----"))
        || (t.starts_with("-----BEGIN PGP SIGNED MESSAGE-----")
            && t.ends_with("-----END PGP SIGNATURE-----"))
}

/// The refusal for a message that cannot be protected: no From, or several.
pub fn bad_from() -> Reply {
    Reply::new(
        554,
        Enhanced(5, 6, 0),
        "The message needs exactly one From address to be signed or encrypted",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_from_and_protection() {
        let p = parse(b"From: A <a@X.org>\r\nTo: b@y.org, \"C\" <C@z.org>\r\nCc: d@w.org\r\nSubject: s\r\n\r\nbody\r\n");
        assert_eq!(p.from.as_deref(), Some("a@x.org"));
        assert_eq!(p.named, ["b@y.org", "c@z.org", "d@w.org"]);
        assert!(!p.protected);
        assert_eq!(
            parse(b"From: a@x.org\r\nFrom: b@x.org\r\n\r\nx\r\n").from,
            None
        );
        assert_eq!(parse(b"From: a@x.org, b@x.org\r\n\r\nx\r\n").from, None);
        assert_eq!(parse(b"To: a@x.org\r\n\r\nx\r\n").from, None);
        assert!(parse(b"From: a@x.org\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\r\n\r\n--b--\r\n").protected);
        assert!(
            parse(b"From: a@x.org\r\nContent-Type: application/pkcs7-mime\r\n\r\nMIIB\r\n")
                .protected
        );
        assert!(parse(b"From: a@x.org\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nhQ\r\n-----END PGP MESSAGE-----\r\n").protected);
        assert!(!parse(b"From: a@x.org\r\n\r\nsee:\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nhQ\r\n-----END PGP MESSAGE-----\r\n").protected);
    }

    #[test]
    fn malformed_messages_are_named() {
        let ok = parse(
            "From: a@x.org\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nGrüße\r\n".as_bytes(),
        );
        assert_eq!(ok.malformed, None);
        let nul = parse(b"From: a@x.org\r\n\r\na\x00b\r\n");
        assert!(nul.malformed.unwrap().contains("NUL"));
        let long = format!(
            "From: a@x.org\r\nX-Long: {}\r\n\r\nb\r\n",
            "a".repeat(100 * 1024)
        );
        assert!(parse(long.as_bytes()).malformed.unwrap().contains("998"));
        let bad_utf8 =
            parse(b"From: a@x.org\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\xff\xfe\r\n");
        assert!(bad_utf8.malformed.unwrap().contains("utf-8"));
        let mut deep =
            String::from("From: a@x.org\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n");
        for i in 0..60 {
            deep.push_str(&format!(
                "--b{i}\r\nContent-Type: multipart/mixed; boundary=b{}\r\n\r\n",
                i + 1
            ));
        }
        assert!(parse(deep.as_bytes())
            .malformed
            .unwrap()
            .contains("multiparts"));
    }
}
