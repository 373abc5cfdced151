//! The result headers: every incoming copy of ours removed (security rule 4), then ours
//! written, folded, from fixed words, hex fingerprints and validated addresses only.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use crate::mime::headers::{self, Field};

use super::verdict::Verdict;

/// The name of our readable verdict field.
pub const VERDICT_FIELD: &str = "X-Sealpost-Verdict";
/// Every field whose name starts with this is ours.
pub const OUR_PREFIX: &str = "x-sealpost-";
/// Longest line we write, CRLF excluded (RFC 5322 §2.1.1 "should").
const WIDTH: usize = 78;

/// One header field as received: its exact bytes (continuation lines and line end
/// included) and, when it has a name, the parsed field.
#[derive(Debug, Clone)]
pub struct RawField<'a> {
    pub bytes: &'a [u8],
    pub field: Option<Field>,
}

impl RawField<'_> {
    pub fn is(&self, name: &str) -> bool {
        self.field.as_ref().is_some_and(|f| f.is(name))
    }
}

/// The fields of a header section, byte for byte: a line starting with a space or a tab
/// continues the field before it.
pub fn fields(head: &[u8]) -> Vec<RawField<'_>> {
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut at = 0;
    for line in head.split_inclusive(|&b| b == b'\n') {
        let end = at + line.len();
        match (line.first(), spans.last_mut()) {
            (Some(b' ' | b'\t'), Some(last)) => last.1 = end,
            _ => spans.push((at, end)),
        }
        at = end;
    }
    spans
        .into_iter()
        .filter_map(|(s, e)| head.get(s..e))
        .map(|bytes| RawField {
            bytes,
            field: headers::split(bytes).0.into_iter().next(),
        })
        .collect()
}

/// Whether a received field pretends to be ours: an `Authentication-Results` field with our
/// authserv-id, or any `X-Sealpost-*` field.
pub fn is_ours(f: &Field, authserv_id: &str) -> bool {
    if f.name.to_ascii_lowercase().starts_with(OUR_PREFIX) {
        return true;
    }
    f.is("Authentication-Results")
        && authserv_id_of(&f.value()).is_some_and(|id| id.eq_ignore_ascii_case(authserv_id))
}

/// The fields without any that [`is_ours`].
pub fn strip<'a>(fields: Vec<RawField<'a>>, authserv_id: &str) -> Vec<RawField<'a>> {
    fields
        .into_iter()
        .filter(|r| !r.field.as_ref().is_some_and(|f| is_ours(f, authserv_id)))
        .collect()
}

/// The authserv-id of an unfolded `Authentication-Results` value (RFC 8601 §2.2): the first
/// token before the `;`, comments removed, a quoted string unquoted.
pub fn authserv_id_of(value: &str) -> Option<String> {
    let mut out = String::new();
    let (mut depth, mut quoted, mut escaped) = (0usize, false, false);
    for c in value.chars() {
        if escaped {
            escaped = false;
            if depth == 0 {
                out.push(c);
            }
            continue;
        }
        match c {
            '\\' if quoted || depth > 0 => escaped = true,
            '"' if depth == 0 => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => depth -= 1,
            ';' if !quoted && depth == 0 => break,
            c if c.is_whitespace() && !quoted && depth == 0 => {
                if !out.is_empty() {
                    break;
                }
            }
            _ if depth > 0 => {}
            c => out.push(c),
        }
    }
    (!out.is_empty()).then_some(out)
}

/// An address we may write into a header: one `@`, printable ASCII, none of the
/// characters that would end a token or start a comment.
pub fn safe_address(a: &str) -> bool {
    let Some((local, domain)) = a.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && a.len() <= 254
        && a.bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>[]:;,\\\"".contains(&b))
}

/// Our two fields, folded, CRLF: `Authentication-Results` and `X-Sealpost-Verdict`.
pub fn render(v: &Verdict, authserv_id: &str) -> String {
    let reason = v.reason();
    let from = v.from.as_deref().filter(|a| safe_address(a));
    let mut ar = format!("{authserv_id}; pgp={} reason=\"{reason}\"", v.pgp().word());
    if let Some(a) = from {
        ar.push_str(&format!(" header.from={a}"));
    }
    if let Some(f) = &v.signer {
        ar.push_str(&format!(" policy.signer={}", f.to_hex()));
    }
    ar.push_str(&format!(" policy.encrypted={}", v.encrypted()));
    if let Some(f) = &v.decryption_key {
        ar.push_str(&format!(" policy.decryption-key={}", f.to_hex()));
    }
    let mut vd = format!(
        "signature={}; encryption={}; protected-headers={}",
        v.signature.word(),
        v.encryption.word(),
        v.protected_headers.word()
    );
    if let Some(f) = &v.signer {
        vd.push_str(&format!("; signer={}", f.to_hex()));
    }
    if let Some(a) = v.signer_address.as_deref().filter(|a| safe_address(a)) {
        vd.push_str(&format!("; signer-address={a}"));
    }
    if let Some(f) = &v.decryption_key {
        vd.push_str(&format!("; key={}", f.to_hex()));
    }
    if !reason.is_empty() {
        vd.push_str(&format!("; reason=\"{reason}\""));
    }
    let mut out = fold("Authentication-Results", &ar);
    out.push_str(&fold(VERDICT_FIELD, &vd));
    out
}

/// `name: value` folded with CRLF TAB at spaces outside quoted strings, so that no line
/// passes 78 columns unless one word alone does.
pub fn fold(name: &str, value: &str) -> String {
    let mut out = format!("{name}:");
    let mut col = out.len();
    for (i, word) in words(value).into_iter().enumerate() {
        if i > 0 && col + 1 + word.len() > WIDTH {
            out.push_str("\r\n\t");
            col = 1;
        } else {
            out.push(' ');
            col += 1;
        }
        out.push_str(word);
        col += word.len();
    }
    out.push_str("\r\n");
    out
}

/// The value split at spaces outside quoted strings.
fn words(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if let Some(w) = value.get(start..i).filter(|w| !w.is_empty()) {
                    out.push(w);
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    if let Some(w) = value.get(start..).filter(|w| !w.is_empty()) {
        out.push(w);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::inbound::verdict::{Encryption, Signature};
    use sealpost_keyring::openpgp::Fingerprint;

    #[test]
    fn authserv_ids_are_read_past_comments_and_quotes() {
        assert_eq!(
            authserv_id_of("gw.example.org; pgp=pass").unwrap(),
            "gw.example.org"
        );
        assert_eq!(
            authserv_id_of("(forged (nested)) \"GW.example.org\" 1; x").unwrap(),
            "GW.example.org"
        );
        assert_eq!(
            authserv_id_of("gw(c).example.org;").unwrap(),
            "gw.example.org"
        );
        assert_eq!(authserv_id_of("  ; none"), None);
        assert_eq!(
            authserv_id_of("other.example; pgp=pass").unwrap(),
            "other.example"
        );
    }

    #[test]
    fn forged_fields_go_in_every_form_and_others_stay_byte_exact() {
        let head = b"Received: by x\r\nauthentication-results: (c)\r\n GW.Example.Org;\r\n\tpgp=pass\r\nAuthentication-Results: mx.other.org; spf=pass\r\nx-sealpost-verdict: signature=valid;\r\n encryption=decrypted\r\nX-SEALPOST-Protected-Subject: x\r\nSubject: caf\xc3\xa9\r\n";
        let kept = strip(fields(head), "gw.example.org");
        let bytes: Vec<u8> = kept.iter().flat_map(|r| r.bytes.to_vec()).collect();
        assert_eq!(
            bytes,
            b"Received: by x\r\nAuthentication-Results: mx.other.org; spf=pass\r\nSubject: caf\xc3\xa9\r\n"
        );
    }

    #[test]
    fn rendered_fields_are_folded_and_complete() {
        let fpr: Fingerprint = "C1A4B2D3E4F5061728394A5B6C7D8E9F00112233".parse().unwrap();
        let v = Verdict {
            signature: Signature::Valid,
            encryption: Encryption::Decrypted,
            signer: Some(fpr.clone()),
            signer_address: Some("alice@example.org".into()),
            decryption_key: Some(fpr),
            ..Verdict::new(Some("alice@example.org".into()))
        };
        let text = render(&v, "gw.example.org");
        for line in text.split("\r\n") {
            assert!(line.len() <= WIDTH, "{line}");
        }
        let unfolded = text.replace("\r\n\t", " ");
        let mut lines = unfolded.lines();
        assert_eq!(lines.next().unwrap(), "Authentication-Results: gw.example.org; pgp=pass reason=\"decrypted, good signature from the From address\" header.from=alice@example.org policy.signer=C1A4B2D3E4F5061728394A5B6C7D8E9F00112233 policy.encrypted=yes policy.decryption-key=C1A4B2D3E4F5061728394A5B6C7D8E9F00112233");
        assert_eq!(lines.next().unwrap(), "X-Sealpost-Verdict: signature=valid; encryption=decrypted; protected-headers=none; signer=C1A4B2D3E4F5061728394A5B6C7D8E9F00112233; signer-address=alice@example.org; key=C1A4B2D3E4F5061728394A5B6C7D8E9F00112233; reason=\"decrypted, good signature from the From address\"");
        // Unsafe addresses are never written.
        let v = Verdict::new(Some("a(b)@x.org".into()));
        assert!(!render(&v, "gw").contains("header.from"));
    }
}
