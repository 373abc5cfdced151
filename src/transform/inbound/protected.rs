//! Header protection on input (RFC 9788 `hp=`, and the older `protected-headers="v1"`):
//! which fields the Cryptographic Payload protects, and how they are written out, applied
//! (only with a [`Valid`] signature, security rule 5) or kept apart.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::io;

use crate::blob::Blob;
use crate::mime::entity::ContentType;
use crate::mime::headers::{self, Field};
use crate::mime::scan;

use super::results;
use super::verify::{InnerFrom, Valid};

/// The prefix of a protected field kept apart from the outer ones.
pub const KEPT_APART_PREFIX: &str = "X-Sealpost-Protected-";

/// Whether a payload root's Content-Type says it carries protected header fields.
pub fn marked(fields: &[Field]) -> bool {
    ContentType::of(fields).is_some_and(|ct| {
        ct.param("hp").is_some_and(|v| {
            let v = v.trim();
            v.eq_ignore_ascii_case("cipher") || v.eq_ignore_ascii_case("clear")
        }) || ct.param_is("protected-headers", "v1")
    })
}

/// The protected fields of a payload root (or, unmarked, the fields kept apart): every field that is not about the MIME
/// entity, not a record of the outer header (`HP-Outer`), not a trace field and not ours.
pub fn fields(payload: &[Field]) -> Vec<Field> {
    payload
        .iter()
        .filter(|f| {
            !headers::is_content_field(f)
                && !f.is("HP-Outer")
                && !headers::is_trace(f)
                && !f.name.to_ascii_lowercase().starts_with(results::OUR_PREFIX)
                && valid_name(&f.name)
        })
        .cloned()
        .collect()
}

/// The protected From, for the binding check.
pub fn inner_from(protected: &[Field]) -> InnerFrom {
    if !protected.iter().any(|f| f.is("From")) {
        return InnerFrom::Absent;
    }
    match headers::from_address(protected) {
        Some(a) => InnerFrom::One(a),
        None => InnerFrom::Bad,
    }
}

/// The protected fields as they replace the outer ones: their lower-cased names (every
/// outer field of these names goes) and their lines. Needs the proof of a valid signature.
pub fn applied(protected: &[Field], _proof: &Valid) -> (Vec<String>, String) {
    let mut names: Vec<String> = protected
        .iter()
        .map(|f| f.name.to_ascii_lowercase())
        .collect();
    names.dedup();
    let lines = protected
        .iter()
        .map(|f| format!("{}:{}\r\n", f.name, sanitize(&f.raw)))
        .collect();
    (names, lines)
}

/// The fields RFC 9788's baseline header confidentiality policy takes out of the outer
/// header (the Subject becomes [`PLACEHOLDER`], Comments and Keywords go): they say what a
/// message is about, not who sent it or to whom.
const INFORMATIONAL: [&str; 3] = ["subject", "comments", "keywords"];

/// The outer Subject of a message whose real Subject is only inside (RFC 9788 §4.1).
pub const PLACEHOLDER: &str = "[...]";

/// Whether the outer Subject is the placeholder: then the protected one is no less
/// authentic than it (neither is), only more useful.
pub fn subject_is_placeholder(outer: &[Field]) -> bool {
    headers::effective(outer, "Subject").is_some_and(|f| f.value().trim() == PLACEHOLDER)
}

/// The protected fields of a decrypted message whose outer Subject is the placeholder
/// and whose signature is not `valid`: the informational ones replace the outer ones,
/// the addressing ones (From, To, Cc, Reply-To, Sender and the rest) are kept apart.
/// `None` when there is no informational field to apply.
pub fn confidential(protected: &[Field]) -> Option<(Vec<String>, String)> {
    let informational = |f: &&Field| INFORMATIONAL.iter().any(|n| f.is(n));
    let applied: Vec<&Field> = protected.iter().filter(informational).collect();
    if applied.is_empty() {
        return None;
    }
    let mut names: Vec<String> = applied
        .iter()
        .map(|f| f.name.to_ascii_lowercase())
        .collect();
    names.sort();
    names.dedup();
    let mut lines: String = applied
        .iter()
        .map(|f| format!("{}:{}\r\n", f.name, sanitize(&f.raw)))
        .collect();
    let rest: Vec<Field> = protected
        .iter()
        .filter(|f| !informational(f))
        .cloned()
        .collect();
    lines.push_str(&kept_apart(&rest));
    Some((names, lines))
}

/// The protected fields kept apart: `X-Sealpost-Protected-<Name>: <value>`.
pub fn kept_apart(protected: &[Field]) -> String {
    protected
        .iter()
        .map(|f| format!("{KEPT_APART_PREFIX}{}:{}\r\n", f.name, sanitize(&f.raw)))
        .collect()
}

/// A field name as RFC 5322 §3.6.8 allows it: printable ASCII without a colon.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 76 && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

/// A raw value that can only ever be one field: a CR or LF that is not part of a fold is
/// a space, every continuation line starts with whitespace, blank continuation lines go.
pub fn sanitize(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for (i, line) in raw.split("\r\n").enumerate() {
        let line: String = line
            .chars()
            .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
            .collect();
        if i == 0 {
            out.push_str(&line);
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        out.push_str("\r\n");
        if !line.starts_with([' ', '\t']) {
            out.push(' ');
        }
        out.push_str(&line);
    }
    out
}

/// A payload body without its legacy display part (RFC 9788 §4.5.3 `hp-legacy-display`,
/// or the `text/rfc822-headers` part of `protected-headers="v1"`): the remaining parts are
/// slices of it (no copy), joined by new delimiter lines. `None` when there is no such
/// part.
///
/// # Errors
/// When a spilled body cannot be read.
pub fn without_legacy_display(payload: &[Field], body: &Blob) -> io::Result<Option<Blob>> {
    let Some(ct) = ContentType::of(payload).filter(|c| c.kind == "multipart") else {
        return Ok(None);
    };
    let Some(boundary) = ct.param("boundary") else {
        return Ok(None);
    };
    let Some(parts) = scan::parts(body.reader(), boundary)? else {
        return Ok(None);
    };
    let Some((first, rest)) = parts.split_first() else {
        return Ok(None);
    };
    let (ff, _) = super::root::entity(&body.slice(first.clone()))?;
    let Some(fct) = ContentType::of(&ff) else {
        return Ok(None);
    };
    let legacy = (fct.kind == "text" && fct.param_is("hp-legacy-display", "1"))
        || (fct.is("text", "rfc822-headers") && ct.param_is("protected-headers", "v1"));
    if !legacy || rest.is_empty() {
        return Ok(None);
    }
    let mut out = Blob::default();
    for part in rest {
        out.append(Blob::from(format!("--{boundary}\r\n").into_bytes()));
        out.append(body.slice(part.clone()));
        out.append(Blob::from(b"\r\n".to_vec()));
    }
    out.append(Blob::from(format!("--{boundary}--\r\n").into_bytes()));
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_cannot_inject_fields() {
        assert_eq!(sanitize(" a\nBcc: x\r\n b"), " a Bcc: x\r\n b");
        assert_eq!(sanitize(" a\r\nInjected: x"), " a\r\n Injected: x");
        assert_eq!(sanitize(" a\r\n \r\n\tb\r"), " a\r\n\tb ");
    }

    #[test]
    fn protected_fields_exclude_content_outer_records_and_ours() {
        let (f, _) = headers::split(b"Content-Type: text/plain; hp=\"cipher\"\r\nSubject: real\r\nHP-Outer: Subject: [...]\r\nX-Sealpost-Verdict: forged\r\nReceived: x\r\nFrom: a@x.org\r\nBad Name: y\r\n\r\n");
        assert!(marked(&f));
        let p = fields(&f);
        let names: Vec<&str> = p.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["Subject", "From"]);
        assert_eq!(inner_from(&p), InnerFrom::One("a@x.org".into()));
        assert_eq!(
            kept_apart(&p),
            "X-Sealpost-Protected-Subject: real\r\nX-Sealpost-Protected-From: a@x.org\r\n"
        );
        let (g, _) = headers::split(
            b"Content-Type: multipart/mixed; protected-headers=\"v1\"; boundary=b\r\n\r\n",
        );
        assert!(marked(&g));
        let (h, _) = headers::split(b"Content-Type: text/plain; hp=other\r\n\r\n");
        assert!(!marked(&h));
    }

    #[test]
    fn only_informational_fields_apply_without_a_valid_signature() {
        let (outer, _) = headers::split(b"From: a@x.org\r\nSubject:  [...] \r\n\r\n");
        assert!(subject_is_placeholder(&outer));
        let (real, _) = headers::split(b"From: a@x.org\r\nSubject: [...] and more\r\n\r\n");
        assert!(!subject_is_placeholder(&real));
        let (p, _) = headers::split(
            b"Subject: Lunch\r\nFrom: boss@x.org\r\nKeywords: food\r\nTo: b@y.org\r\n\r\n",
        );
        let (names, lines) = confidential(&p).unwrap();
        assert_eq!(names, ["keywords", "subject"]);
        assert_eq!(
            lines,
            "Subject: Lunch\r\nKeywords: food\r\nX-Sealpost-Protected-From: boss@x.org\r\nX-Sealpost-Protected-To: b@y.org\r\n"
        );
        let (addressing, _) = headers::split(b"From: boss@x.org\r\n\r\n");
        assert_eq!(confidential(&addressing), None);
    }

    #[test]
    fn legacy_display_parts_are_removed() {
        let (f, _) =
            headers::split(b"Content-Type: multipart/mixed; boundary=b; hp=\"cipher\"\r\n\r\n");
        let body = b"--b\r\nContent-Type: text/plain; hp-legacy-display=\"1\"\r\n\r\nSubject: x\r\n--b\r\nContent-Type: text/plain\r\n\r\nbody\r\n--b--\r\n";
        let out = without_legacy_display(&f, &Blob::from(&body[..])).unwrap();
        assert_eq!(
            out.unwrap().to_vec().unwrap(),
            b"--b\r\nContent-Type: text/plain\r\n\r\nbody\r\n--b--\r\n"
        );
        let plain = b"--b\r\nContent-Type: text/plain\r\n\r\nbody\r\n--b--\r\n";
        let out = without_legacy_display(&f, &Blob::from(&plain[..])).unwrap();
        assert!(out.is_none());
    }
}
