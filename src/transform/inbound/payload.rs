//! A decrypted PGP/MIME payload (RFC 3156 §4, a MIME entity) made into the delivered
//! message: our fields stripped from its root too, its signatures (inside the OpenPGP
//! message, or a `multipart/signed` payload), its protected fields, and a new head in
//! front of its body, which stays where the plaintext is (in memory, or in its sealed
//! spill file) unless it must be re-encoded for 7-bit transport.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::io;

use sealpost_keyring::openpgp::Fingerprint;

use crate::blob::{self, Blob};
use crate::mime::decode::Crlf;
use crate::mime::entity;
use crate::mime::headers::{self, Field};
use crate::mime::lines::HEAD_MAX;
use crate::mime::scan;
use crate::mime::seven_bit::Clean;
use crate::wipe::Buf;

use super::assemble::{self, Edits};
use super::context::{Ctx, Opened, Outer};
use super::decrypt::Plaintext;
use super::error::Error;
use super::judge::judge_into;
use super::results::{self, RawField};
use super::verdict::{Encryption, HeaderProtection, Verdict};
use super::verify::Check;
use super::{protected, root, verify};

/// The delivered copy of a decrypted payload; `None` when it cannot be made safe for the
/// next hop (the caller delivers the ciphertext instead).
///
/// Read into memory, and only then: a body that is not 7-bit clean and must be
/// re-encoded ([`assemble::decrypted`]), and a header section of any length (a payload
/// whose header never ends is all header, as in [`headers::split_bytes`]); both bounded by
/// `max_plaintext`.
///
/// # Errors
/// A keyring failure, or the spill files failing (temporary).
pub(super) fn open(
    ctx: &Ctx<'_>,
    outer: &Outer<'_>,
    p: Plaintext<Blob>,
    recipients: Vec<usize>,
) -> Result<Option<Opened>, Error> {
    let key = p.key().clone();
    let mut checks = p.checks().to_vec();
    let mut bytes = p.into_bytes();
    if has_bare_lf(&bytes)? {
        bytes = crlf_copy(&bytes, ctx.settings.spill.as_ref())?;
    }
    let (phead, body_at) = scan::head_of(bytes.reader(), usize::MAX)?;
    let body_at = body_at.unwrap_or(bytes.len());
    // Plain text where a MIME entity belongs (RFC 3156 says the payload is one): all of it
    // is the body, rather than lines read as fields and dropped.
    let (phead, body_at) = if headers::is_header_section(&phead) {
        (phead, body_at)
    } else {
        (Vec::new(), 0)
    };
    let pbody = bytes.slice(body_at..bytes.len());
    let praw = results::strip(results::fields(&phead), &ctx.settings.authserv_id);
    let pfields: Vec<Field> = praw.iter().filter_map(|r| r.field.clone()).collect();
    let mut protected = protected::marked(&pfields).then(|| protected::fields(&pfields));
    let mut gossip = gossip_of(&pfields);
    if let Some((range, signature)) = root::signed_halves(&pfields, &pbody)? {
        let part = pbody.slice(range);
        let policy = ctx.keyring.policy();
        // The payload was made CRLF above, as signed data is.
        checks.extend(verify::detached(
            part.reader(),
            &signature,
            ctx.keyring,
            policy,
            ctx.now,
        )?);
        let sf = crlf_fields(&part)?;
        gossip.extend(gossip_of(&sf));
        if protected.is_none() && protected::marked(&sf) {
            protected = Some(protected::fields(&sf));
        }
    }
    let (v, edits) = verdict(outer, key, &checks, &pfields, protected.as_deref());
    let body = match edits {
        Edits::Applied { .. } => {
            protected::without_legacy_display(&pfields, &pbody)?.unwrap_or(pbody)
        }
        _ => pbody,
    };
    let content = content_fields(&praw);
    let results = results::render(&v, &ctx.settings.authserv_id);
    let message = if is_clean(&body)? {
        body.prepend(assemble::decrypted_head(
            &results, &outer.raw, &edits, &content,
        ))
    } else {
        // A body that must be re-encoded for 7-bit transport is re-encoded in memory; the
        // copy read for it is zeroed once encoded.
        let body = Buf::from(body.into_vec()?);
        match assemble::decrypted(&results, &outer.raw, &edits, &content, &body) {
            Some(m) => m.into(),
            None => return Ok(None),
        }
    };
    Ok(Some(Opened {
        recipients,
        message,
        verdict: v,
        gossip,
    }))
}

/// The unfolded values of a payload header's `Autocrypt-Gossip` fields (Autocrypt
/// Level 1 §5.2 puts them in the header of the encrypted payload's root part).
fn gossip_of(fields: &[Field]) -> Vec<String> {
    fields
        .iter()
        .filter(|f| f.is("Autocrypt-Gossip"))
        .map(|f| f.raw.replace("\r\n", ""))
        .collect()
}

/// The received message for a recipient whose decrypted payload cannot be made safe for
/// the next hop: the ciphertext, with a verdict that says so.
pub(super) fn unencodable(outer: &Outer<'_>, key: Fingerprint) -> Verdict {
    let mut v = Verdict::new(outer.from.clone());
    v.encryption = Encryption::Unencodable;
    v.decryption_key = Some(key);
    v
}

/// The verdict on a decrypted payload and what it does to the outer header.
fn verdict(
    outer: &Outer<'_>,
    key: Fingerprint,
    checks: &[Check],
    pfields: &[Field],
    protected: Option<&[Field]>,
) -> (Verdict, Edits) {
    let mut v = Verdict::new(outer.from.clone());
    v.encryption = Encryption::Decrypted;
    v.decryption_key = Some(key);
    let mut edits = judge_into(&mut v, checks, outer, protected);
    // Fields the sender never declared protected (many PGP/MIME writers copy Subject or
    // From into the payload without a marker) are never applied as authentic, nor lost.
    let unmarked = protected.is_none().then(|| protected::fields(pfields));
    if let Some(unmarked) = unmarked.as_deref().filter(|u| !u.is_empty()) {
        v.protected_headers = HeaderProtection::KeptApart;
        edits = Edits::KeptApart(protected::kept_apart(unmarked));
    }
    // The outer Subject of an encrypted message is a placeholder: the one inside is shown
    // instead, signed or not, since the placeholder is no more authentic than it. The
    // addressing fields still replace the outer ones only under a valid signature.
    if !matches!(edits, Edits::Applied { .. }) && protected::subject_is_placeholder(&outer.fields) {
        let inside = protected.or(unmarked.as_deref()).unwrap_or_default();
        if let Some((names, lines)) = protected::confidential(inside) {
            v.protected_headers = HeaderProtection::KeptApart;
            edits = Edits::Confidential { names, lines };
        }
    }
    (v, edits)
}

/// The payload root's content fields, which describe the delivered body.
fn content_fields<'a>(praw: &[RawField<'a>]) -> Vec<RawField<'a>> {
    praw.iter()
        .filter(|r| {
            r.field.as_ref().is_some_and(headers::is_content_field) && !r.is("MIME-Version")
        })
        .cloned()
        .collect()
}

/// The header fields of a part, its line ends made CRLF as the signed data is.
pub(super) fn crlf_fields(part: &Blob) -> io::Result<Vec<Field>> {
    let mut head = Vec::new();
    io::Read::read_to_end(
        &mut io::Read::take(Crlf::new(part.reader()), HEAD_MAX as u64),
        &mut head,
    )?;
    let (fields, _) = headers::split(&head);
    Ok(fields)
}

/// [`entity::has_bare_lf`] over a blob, line ends across piece borders included.
fn has_bare_lf(b: &Blob) -> io::Result<bool> {
    let (mut prev, mut bare) = (0u8, false);
    b.for_each_piece(|piece| {
        bare |= match piece.split_first() {
            Some((b'\n', rest)) => prev != b'\r' || entity::has_bare_lf(rest),
            _ => entity::has_bare_lf(piece),
        };
        prev = piece.last().copied().unwrap_or(prev);
        Ok(())
    })?;
    Ok(bare)
}

/// A copy of `b` with bare LFs made CRLF, spilled like the plaintext it is.
fn crlf_copy(b: &Blob, spill: Option<&blob::Spill>) -> io::Result<Blob> {
    let mut w = blob::Writer::new(spill.cloned());
    // Plaintext passes through here: zeroed when dropped.
    let mut out = Buf::from(vec![0u8; 64 << 10]);
    let mut r = Crlf::new(b.reader());
    loop {
        let n = io::Read::read(&mut r, &mut out)?;
        if n == 0 {
            break;
        }
        w.write(out.get(..n).unwrap_or_default())?;
    }
    w.finish()
}

/// [`crate::mime::seven_bit::is_clean`] over a blob.
fn is_clean(b: &Blob) -> io::Result<bool> {
    let mut c = Clean::default();
    b.for_each_piece(|piece| {
        c.feed(piece);
        Ok(())
    })?;
    Ok(c.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_line_feeds_are_found_across_pieces() {
        let mut split = Blob::from(b"a\r".to_vec());
        split.append(Blob::from(b"\nb\r\n".to_vec()));
        assert!(!has_bare_lf(&split).unwrap());
        let mut bare = Blob::from(b"a\r\n".to_vec());
        bare.append(Blob::from(b"\nb".to_vec()));
        assert!(has_bare_lf(&bare).unwrap());
        assert!(has_bare_lf(&Blob::from(b"\n".to_vec())).unwrap());
        let copy = crlf_copy(&bare, None).unwrap();
        assert_eq!(copy.to_vec().unwrap(), b"a\r\n\r\nb");
    }
}
