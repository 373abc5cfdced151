//! The one way a received message is opened, whether it is in memory or in a sealed spill
//! file: its root classified, decrypted per recipient or its signatures checked, and one
//! delivered copy per verdict.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::time::SystemTime;

use sealpost_keyring::Keyring;

use crate::blob::Blob;
use crate::mime::decode::Crlf;
use crate::mime::lines::HEAD_MAX;
use crate::mime::scan;
use crate::wipe::Buf;

use super::assemble::{self, Edits};
use super::context::{outer_of, Ctx, Opened, Outer, Settings};
use super::decrypt::{self, Kind, Outcome};
use super::error::Error;
use super::judge::judge_into;
use super::root::{self, Data, Root};
use super::verdict::{Encryption, Signature, Verdict};
use super::{payload, protected, results, verify};

/// Opens `message` for its envelope `recipients`: one [`Opened`] for all of them when the
/// root is not encrypted, one per recipient when it is.
///
/// # Errors
/// Only a keyring or spill file failure (temporary).
pub fn open(
    message: &Blob,
    recipients: &[&str],
    keyring: &Keyring,
    settings: &Settings,
    now: SystemTime,
) -> Result<Vec<Opened>, Error> {
    let ctx = Ctx {
        keyring,
        settings,
        now,
    };
    let (head, body_at) = scan::head_of(message.reader(), HEAD_MAX)?;
    // A header section with no end within the bound (the DATA reader refuses those) is
    // taken as all header that was read, the rest as body.
    let body_at = body_at.unwrap_or(head.len());
    let body = message.slice(body_at..message.len());
    let outer = outer_of(&head, settings);
    // The OpenPGP parser has been seen to panic on crafted packets. A panic must not
    // turn a message into an endless temporary failure: it is a malformed message,
    // delivered unchanged, and no plaintext was released (what was read of it dies with
    // its buffer or spill file).
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        guarded(&ctx, &outer, &body, message, recipients)
    }));
    opened.unwrap_or_else(|_| {
        tracing::error!("the OpenPGP parser failed on this message: delivered as malformed");
        let mut v = Verdict::new(outer.from.clone());
        v.encryption = Encryption::Malformed;
        let all = (0..recipients.len()).collect();
        Ok(vec![unchanged(&ctx, &outer, &body, v, &Edits::None, all)])
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
    let data = match root::classify(&outer.fields, body, message)? {
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
            let checks = verify::detached(
                Crlf::new(part.reader()),
                &signature,
                keyring,
                keyring.policy(),
                now,
            )?;
            let sf = payload::crlf_fields(&part)?;
            let protected = protected::marked(&sf).then(|| protected::fields(&sf));
            let edits = judge_into(&mut v, &checks, outer, protected.as_deref());
            return Ok(vec![unchanged(ctx, outer, body, v, &edits, all)]);
        }
        Root::Cleartext(data) => {
            match verify::inline(data.reader(), keyring, keyring.policy(), now, max)? {
                Some(checks) => {
                    judge_into(&mut v, &checks, outer, None);
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
            match verify::inline(data.reader(), keyring, keyring.policy(), now, max)? {
                Some(checks) => {
                    judge_into(&mut v, &checks, outer, None);
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
/// The packets are read to tell what the data is ([`decrypt::kind`]) only when
/// decryption gave no plaintext, which saves a second pass over every message that
/// decrypts: sequoia does not decrypt a SED packet (it parses it as unknown, and a message
/// with one is not a valid message), so no plaintext comes from one either way, and the
/// packet pass then tells a SED message or a malformed one apart from a key or integrity
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
            _ => decrypt::decrypt(
                || data.input(),
                rcpt,
                ctx.keyring,
                (ctx.keyring.policy(), ctx.now),
                ctx.settings.max_plaintext,
                ctx.settings.spill.as_ref(),
            )?,
        };
        let outcome = match outcome {
            Outcome::Refused(e) if e != Encryption::TooLarge => {
                let k = *kind.get_or_insert_with(|| decrypt::kind(data.input()));
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
                match payload::open(ctx, outer, p, vec![i])? {
                    Some(opened) => opened,
                    // Plaintext that cannot be made safe for the next hop is not
                    // released: the ciphertext goes instead.
                    None => {
                        let v = payload::unencodable(outer, key);
                        unchanged(ctx, outer, body, v, &Edits::None, vec![i])
                    }
                }
            }
            Outcome::Plaintext(p) => {
                v.encryption = Encryption::Decrypted;
                v.decryption_key = Some(p.key().clone());
                judge_into(&mut v, p.checks(), outer, None);
                let results = results::render(&v, &ctx.settings.authserv_id);
                // Inline plaintext becomes a re-encoded text body: read into memory,
                // bounded by `max_plaintext`, and zeroed once the copy is built.
                let plain = Buf::from(p.into_bytes().into_vec()?);
                Opened {
                    recipients: vec![i],
                    message: assemble::inline(&results, &outer.raw, &plain).into(),
                    verdict: v,
                    gossip: Vec::new(),
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

/// The message as received, with our fields (and the header protection edits): a new
/// head in front of the received body.
pub(super) fn unchanged(
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
        gossip: Vec::new(),
    }
}
