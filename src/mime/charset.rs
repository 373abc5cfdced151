//! Charset checks: whether a text part's bytes are in the charset it declares.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use mail_parser::MimeHeaders;

use super::structure;
use super::Error;

/// Refuses a text part that declares UTF-8 or US-ASCII but whose bytes are not: signing
/// would re-encode bytes that mean nothing in the charset they claim.
///
/// # Errors
/// `InvalidCharset`, with the charset the part declares.
pub fn check(message: &[u8]) -> Result<(), Error> {
    // All-ASCII bytes are valid in both; only 8-bit messages need the full parse.
    if message.is_ascii() {
        return Ok(());
    }
    let Some(parsed) = structure::parse(message) else {
        return Ok(());
    };
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
        let encoded = part.content_transfer_encoding().is_some_and(|c| {
            c.eq_ignore_ascii_case("base64") || c.eq_ignore_ascii_case("quoted-printable")
        });
        if encoded {
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
            return Err(Error::InvalidCharset(charset));
        }
    }
    Ok(())
}
