//! Opening a message that spilled to disk (larger than `spill_above`) while it is read:
//! neither the message nor its plaintext is ever whole in memory.
//!
//! The outer header comes from the message's first bytes ([`scan::head_of`]); the root is
//! classified by its own delimiter lines only, its parts kept as byte ranges
//! ([`scan::classify`]; a plain root's nested OpenPGP data is found by one walk over the
//! lines, [`nested`]). OpenPGP data is read through a transfer decoder ([`decode`]) and
//! dearmored as it streams (the fast decoder after a check of the plain armor shape,
//! sequoia itself for any other, [`scan::Data::openpgp`]); sequoia decrypts it, and the
//! plaintext goes to a sealed spill file and is used only after
//! decryption finished with its integrity checked ([`decrypt::decrypt_stream`]). A
//! delivered message is a new head in memory in front of a slice of the received body or
//! of the plaintext, never a copy of them.
//!
//! Read whole into memory, and only then: decrypted inline (armored text-body) plaintext,
//! which is re-encoded as the text body ([`assemble::inline`]); a decrypted payload body
//! that is not 7-bit clean and must be re-encoded ([`assemble::decrypted`]); a decrypted
//! payload whose header section does not end within [`lines::HEAD_MAX`]. Each is bounded by
//! `max_plaintext`. Plaintext that did not spill (it is small) takes the in-memory path.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

pub mod decode;
pub mod lines;
pub mod nested;
pub mod scan;

use std::io;

use crate::blob::{self, Blob};
use crate::mime::headers::Field;

use super::assemble::{self, Edits};
use super::decrypt::{self, Kind, Outcome, Plaintext};
use super::results::{self, RawField};
use super::verdict::{Encryption, Signature, Verdict};
use super::{protected, verify};
use super::{Ctx, Error, Opened, Outer};
use crate::mime::entity::ContentType;
use decode::Crlf;
use scan::{Data, Root};

/// Opens a spilled `message` (see [`super::open`]).
///
/// # Errors
/// A keyring failure, or the spill files failing (temporary).
pub(super) fn open(
    message: &Blob,
    recipients: &[&str],
    ctx: &Ctx<'_>,
) -> Result<Vec<Opened>, Error> {
    let (head, body_at) = scan::head_of(message)?;
    // A header section with no end within the bound (the DATA reader refuses those) is
    // taken as all header that was read, the rest as body.
    let body_at = body_at.unwrap_or(head.len());
    let body = message.slice(body_at..message.len());
    let outer = super::outer_of(&head, ctx.settings);
    // The same guard as in memory: a parser panic is a malformed message, and any
    // plaintext read so far dies with its spill file.
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        guarded(ctx, &outer, &body, message, recipients)
    }));
    opened.unwrap_or_else(|_| {
        tracing::error!("the OpenPGP parser failed on this message: delivered as malformed");
        let mut v = Verdict::new(outer.from.clone());
        v.encryption = Encryption::Malformed;
        let all = (0..recipients.len()).collect();
        Ok(vec![unchanged(ctx, &outer, &body, v, &Edits::None, all)])
    })
}

fn guarded(
    ctx: &Ctx<'_>,
    outer: &Outer<'_>,
    body: &Blob,
    message: &Blob,
    recipients: &[&str],
) -> Result<Vec<Opened>, Error> {
    let (keyring, now, max) = (ctx.keyring, ctx.now, ctx.settings.max_plaintext);
    let all: Vec<usize> = (0..recipients.len()).collect();
    let mut v = Verdict::new(outer.from.clone());
    let data = match scan::classify(&outer.fields, body, message)? {
        Root::PgpMime(data) => {
            return match per_recipient(ctx, outer, body, recipients, &data, true)? {
                Copies::Opened(out) => Ok(out),
                Copies::NotEncrypted { .. } => {
                    v.encryption = Encryption::Malformed;
                    Ok(vec![unchanged(ctx, outer, body, v, &Edits::None, all)])
                }
            };
        }
        Root::Armored(data) => data,
        Root::Signed { signed, signature } => {
            let part = body.slice(signed);
            let checks = verify::detached_reader(
                Crlf::new(part.reader()),
                &signature,
                keyring,
                keyring.policy(),
                now,
            )?;
            let sf = crlf_fields(&part)?;
            let protected = protected::marked(&sf).then(|| protected::fields(&sf));
            let edits = super::judge_into(&mut v, &checks, outer, protected.as_deref());
            return Ok(vec![unchanged(ctx, outer, body, v, &edits, all)]);
        }
        Root::Cleartext(data) => {
            match verify::inline_reader(data.reader(), keyring, keyring.policy(), now, max)? {
                Some(checks) => {
                    super::judge_into(&mut v, &checks, outer, None);
                }
                None => v.signature = Signature::Invalid,
            }
            return Ok(vec![unchanged(ctx, outer, body, v, &Edits::None, all)]);
        }
        Root::Malformed { encrypted } => {
            if encrypted {
                v.encryption = Encryption::Malformed;
            } else {
                v.signature = Signature::Invalid;
            }
            return Ok(vec![unchanged(ctx, outer, body, v, &Edits::None, all)]);
        }
        Root::Plain(nested) => {
            if nested.ciphertext {
                v.encryption = Encryption::NestedIgnored;
            }
            if nested.signature {
                v.signature = Signature::Partial;
            }
            return Ok(vec![unchanged(ctx, outer, body, v, &Edits::None, all)]);
        }
    };
    // A whole armored body: encrypted, or signed only.
    match per_recipient(ctx, outer, body, recipients, &data, false)? {
        Copies::Opened(out) => Ok(out),
        Copies::NotEncrypted { signed_only: true } => {
            match verify::inline_reader(data.reader(), keyring, keyring.policy(), now, max)? {
                Some(checks) => {
                    super::judge_into(&mut v, &checks, outer, None);
                }
                None => v.encryption = Encryption::Malformed,
            }
            Ok(vec![unchanged(ctx, outer, body, v, &Edits::None, all)])
        }
        Copies::NotEncrypted { signed_only: false } => {
            v.encryption = Encryption::Malformed;
            Ok(vec![unchanged(ctx, outer, body, v, &Edits::None, all)])
        }
    }
}

/// What [`per_recipient`] made of OpenPGP data.
enum Copies {
    Opened(Vec<Opened>),
    /// Not an encrypted OpenPGP message: a signed-only one, or not OpenPGP at all.
    NotEncrypted {
        signed_only: bool,
    },
}

/// One copy per recipient, each decrypted with that recipient's own keys only, unless the
/// data is not an encrypted OpenPGP message.
///
/// The in-memory path reads the packets once before decrypting, to refuse a SED message
/// (`no-integrity`) without trying. Here that is a second pass over a large message, so
/// it is made only when decryption gave no plaintext and the data was not too large:
/// sequoia does not decrypt a SED packet (it parses it as unknown, and a message with one
/// is not a valid message), so no plaintext comes from one either way, and the packet
/// pass then tells a SED message or a malformed one apart from a key or integrity
/// failure.
fn per_recipient(
    ctx: &Ctx<'_>,
    outer: &Outer<'_>,
    body: &Blob,
    recipients: &[&str],
    data: &Data,
    mime: bool,
) -> Result<Copies, Error> {
    let mut kind: Option<Option<Kind>> = None;
    let mut out = Vec::with_capacity(recipients.len());
    for (i, rcpt) in recipients.iter().enumerate() {
        let mut v = Verdict::new(outer.from.clone());
        let outcome = match kind {
            Some(Some(Kind::NoIntegrity)) => Outcome::Refused(Encryption::NoIntegrity),
            _ => decrypt::decrypt_stream(
                || data.openpgp(),
                rcpt,
                ctx.keyring,
                (ctx.keyring.policy(), ctx.now),
                ctx.settings.max_plaintext,
                ctx.settings.spill.as_ref(),
            )?,
        };
        let outcome = match outcome {
            Outcome::Refused(e) if e != Encryption::TooLarge => {
                let k = *kind.get_or_insert_with(|| decrypt::kind_reader(data.openpgp()));
                match k {
                    Some(Kind::Encrypted) => Outcome::Refused(e),
                    Some(Kind::NoIntegrity) => Outcome::Refused(Encryption::NoIntegrity),
                    Some(Kind::NotEncrypted) => {
                        return Ok(Copies::NotEncrypted { signed_only: true })
                    }
                    None => return Ok(Copies::NotEncrypted { signed_only: false }),
                }
            }
            o => o,
        };
        let opened = match outcome {
            Outcome::Plaintext(p) if mime => {
                let key = p.key().clone();
                match payload(ctx, outer, p, vec![i])? {
                    Some(opened) => opened,
                    None => {
                        // Plaintext that cannot be made safe for the next hop: the
                        // ciphertext goes instead.
                        v.encryption = Encryption::Unencodable;
                        v.decryption_key = Some(key);
                        unchanged(ctx, outer, body, v, &Edits::None, vec![i])
                    }
                }
            }
            Outcome::Plaintext(p) => {
                v.encryption = Encryption::Decrypted;
                v.decryption_key = Some(p.key().clone());
                super::judge_into(&mut v, p.checks(), outer, None);
                let results = results::render(&v, &ctx.settings.authserv_id);
                // Inline plaintext becomes a re-encoded text body: read into memory,
                // bounded by `max_plaintext`.
                let plain = p.into_bytes().into_vec()?;
                Opened {
                    recipients: vec![i],
                    message: assemble::inline(&results, &outer.raw, &plain).into(),
                    verdict: v,
                }
            }
            Outcome::Refused(e) => {
                v.encryption = e;
                unchanged(ctx, outer, body, v, &Edits::None, vec![i])
            }
        };
        out.push(opened);
    }
    Ok(Copies::Opened(out))
}

/// A decrypted PGP/MIME payload, as [`super::payload`] builds it: a new head in front of
/// the plaintext's body, which stays in its spill file.
fn payload(
    ctx: &Ctx<'_>,
    outer: &Outer<'_>,
    p: Plaintext<Blob>,
    recipients: Vec<usize>,
) -> Result<Option<Opened>, Error> {
    let key = p.key().clone();
    let mut checks = p.checks().to_vec();
    let mut bytes = p.into_bytes();
    if !bytes.is_spilled() {
        let bytes = bytes.into_vec()?;
        return super::payload_bytes(ctx, outer, key, checks, bytes, recipients);
    }
    if has_bare_lf(&bytes)? {
        bytes = crlf_copy(&bytes, ctx.settings.spill.as_ref())?;
    }
    let (phead, body_at) = scan::head_of(&bytes)?;
    // As in memory: plain text where a MIME entity belongs is all body.
    let (phead, body_at) = if crate::mime::headers::is_header_section(&phead) {
        (phead, body_at)
    } else {
        (Vec::new(), Some(0))
    };
    let Some(body_at) = body_at else {
        // No end of the payload's header section within the bound: in memory.
        let bytes = bytes.into_vec()?;
        return super::payload_bytes(ctx, outer, key, checks, bytes, recipients);
    };
    let pbody = bytes.slice(body_at..bytes.len());
    let praw = results::strip(results::fields(&phead), &ctx.settings.authserv_id);
    let pfields: Vec<Field> = praw.iter().filter_map(|r| r.field.clone()).collect();
    let mut protected = protected::marked(&pfields).then(|| protected::fields(&pfields));
    if let Some((range, signature)) = scan::signed_halves(&pfields, &pbody)? {
        let part = pbody.slice(range);
        let policy = ctx.keyring.policy();
        checks.extend(verify::detached_reader(
            part.reader(),
            &signature,
            ctx.keyring,
            policy,
            ctx.now,
        )?);
        let sf = crlf_fields(&part)?;
        if protected.is_none() && protected::marked(&sf) {
            protected = Some(protected::fields(&sf));
        }
    }
    let (v, edits) = super::payload_verdict(outer, key, &checks, &pfields, protected.as_deref());
    let body = match edits {
        Edits::Applied { .. } => without_legacy_display(&pfields, &pbody)?.unwrap_or(pbody),
        _ => pbody,
    };
    let content: Vec<RawField<'_>> = super::content_fields(&praw);
    let results = results::render(&v, &ctx.settings.authserv_id);
    let message = match is_clean(&body)?
        .then(|| assemble::decrypted_head(&results, &outer.raw, &edits, &content, b""))
        .flatten()
    {
        Some(head) => body.prepend(head),
        // A body that must be re-encoded for 7-bit transport is re-encoded in memory.
        None => {
            let body = body.into_vec()?;
            match assemble::decrypted(&results, &outer.raw, &edits, &content, &body) {
                Some(m) => m.into(),
                None => return Ok(None),
            }
        }
    };
    Ok(Some(Opened {
        recipients,
        message,
        verdict: v,
    }))
}

/// The received message with our fields: a new head in front of the received body.
fn unchanged(
    ctx: &Ctx<'_>,
    outer: &Outer<'_>,
    body: &Blob,
    v: Verdict,
    edits: &Edits,
    recipients: Vec<usize>,
) -> Opened {
    let results = results::render(&v, &ctx.settings.authserv_id);
    let head = assemble::unchanged(&results, &outer.raw, edits, b"");
    Opened {
        recipients,
        message: body.clone().prepend(head),
        verdict: v,
    }
}

/// The header fields of a part, its line ends made CRLF as the signed data is.
fn crlf_fields(part: &Blob) -> io::Result<Vec<Field>> {
    let mut head = Vec::new();
    io::Read::read_to_end(
        &mut io::Read::take(Crlf::new(part.reader()), lines::HEAD_MAX as u64),
        &mut head,
    )?;
    let (fields, _) = crate::mime::headers::split(&head);
    Ok(fields)
}

/// [`super::protected::without_legacy_display`] over a spilled body: the remaining parts
/// are slices of it, joined by new delimiter lines.
fn without_legacy_display(payload: &[Field], body: &Blob) -> io::Result<Option<Blob>> {
    let Some(ct) = ContentType::of(payload).filter(|c| c.kind == "multipart") else {
        return Ok(None);
    };
    let Some(boundary) = ct.param("boundary") else {
        return Ok(None);
    };
    let Some(parts) = scan::parts(body, boundary)? else {
        return Ok(None);
    };
    let Some((first, rest)) = parts.split_first() else {
        return Ok(None);
    };
    let (ff, _) = scan::entity(&body.slice(first.clone()))?;
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

/// [`crate::mime::entity::has_bare_lf`] over a blob.
fn has_bare_lf(b: &Blob) -> io::Result<bool> {
    let (mut prev, mut bare) = (0u8, false);
    b.for_each_piece(|piece| {
        for &c in piece {
            bare |= c == b'\n' && prev != b'\r';
            prev = c;
        }
        Ok(())
    })?;
    Ok(bare)
}

/// A copy of `b` with bare LFs made CRLF, spilled like the plaintext it is.
fn crlf_copy(b: &Blob, spill: Option<&blob::Spill>) -> io::Result<Blob> {
    let mut w = blob::Writer::new(spill.cloned());
    let (mut prev, mut out) = (0u8, Vec::with_capacity(70 << 10));
    b.for_each_piece(|piece| {
        out.clear();
        for &c in piece {
            if c == b'\n' && prev != b'\r' {
                out.push(b'\r');
            }
            out.push(c);
            prev = c;
        }
        w.write(&out)
    })?;
    w.finish()
}

/// [`assemble`]'s 7-bit test over a blob: printable ASCII, tabs and CRLF line ends only,
/// lines of at most 998 octets without trailing space or tab.
fn is_clean(b: &Blob) -> io::Result<bool> {
    let mut line = LineState::default();
    let mut clean = true;
    b.for_each_piece(|piece| {
        if clean {
            clean = piece.iter().all(|&c| line.push(c));
        }
        Ok(())
    })?;
    Ok(clean && line.end())
}

/// The line being checked by [`is_clean`].
#[derive(Default)]
struct LineState {
    len: usize,
    last: u8,
    before_last: u8,
}

impl LineState {
    /// Takes one byte; false when the body is not clean.
    fn push(&mut self, c: u8) -> bool {
        if !((0x20..=0x7e).contains(&c) || c == b'\t' || c == b'\r' || c == b'\n') {
            return false;
        }
        if c == b'\n' {
            let ok = self.end();
            *self = LineState::default();
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
    fn end(&self) -> bool {
        let (len, last) = if self.last == b'\r' {
            (self.len - 1, self.before_last)
        } else {
            (self.len, self.last)
        };
        len <= 998 && (len == 0 || (last != b' ' && last != b'\t'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_clean_agrees_with_the_in_memory_test() {
        for c in &assemble::clean_cases() {
            let c = c.as_slice();
            let want = crate::mime::seven_bit::is_clean(c);
            assert_eq!(is_clean(&Blob::from(c.to_vec())).unwrap(), want, "{c:?}");
        }
    }
}
