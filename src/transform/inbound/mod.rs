//! Inbound: decrypt and verify mail for local users, sans-I/O (bytes, keyring and time in,
//! bytes out), EFAIL-safe, with result fields no sender can forge.
//!
//! [`open`] strips every incoming copy of our result fields ([`results`]), decides what the
//! root entity is ([`root`]; only the root, never a nested part, [`nested`]), decrypts it
//! per envelope recipient with that recipient's own keys ([`decrypt`]; Cv25519 keys
//! through OpenSSL keys imported once, [`x25519`]), checks signatures against the keyring
//! and the single From address ([`verify`], [`binding`]), applies or keeps apart protected
//! header fields ([`protected`]) and builds the delivered message ([`payload`],
//! [`assemble`]) with `Authentication-Results` and `X-Sealpost-Verdict` on top
//! ([`verdict`]).
//!
//! There is one way to open a message, over a [`Blob`]: a message held in memory is a
//! blob without a file, and one that spilled to disk while it was received is read from
//! its sealed file as it is opened. Either way the message and its plaintext are read as
//! they come: the root's parts are byte ranges, OpenPGP data is transfer decoded and
//! dearmored as sequoia reads it ([`root::Data`]), the plaintext goes to a
//! [`crate::blob::Writer`] that spills to a sealed file past `spill_above` and is used
//! only once decryption finished with its integrity checked, and a delivered message is a
//! new head in front of a slice of the received body or of the plaintext, never a copy.
//! Read whole into memory, and only then, each bounded by `max_plaintext`: decrypted
//! inline (armored text-body) plaintext, which is re-encoded as the text body
//! ([`assemble::inline`]), and a decrypted payload body that must be re-encoded for 7-bit
//! transport ([`assemble::decrypted`]).
//!
//! Everything about the message is a [`Verdict`], never an error: a message that cannot be
//! decrypted is delivered unchanged with our fields. [`Error`] is only a temporary local
//! failure (the keyring, a spill file), answered `451 4.3.0`.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

pub mod armor;
pub mod assemble;
pub mod binding;
pub mod decrypt;
pub mod nested;
pub mod payload;
pub mod protected;
pub mod results;
pub mod root;
pub mod verdict;
pub mod verify;
pub mod x25519;

use std::time::SystemTime;

use sealpost_keyring::Keyring;

use crate::blob::{self, Blob};
use crate::mime::decode::Crlf;
use crate::mime::headers::{self, Field};
use crate::mime::lines::HEAD_MAX;
use crate::mime::scan;
use crate::wipe::Buf;

use assemble::Edits;
use decrypt::{Kind, Outcome};
use results::RawField;
use root::{Data, Root};
use verify::{Check, InnerFrom, Judgement};

pub use verdict::{Encryption, HeaderProtection, Pgp, Signature, Verdict};

/// The inbound transform's configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Our authserv-id (RFC 8601): the first token of our `Authentication-Results`.
    pub authserv_id: String,
    /// Most plaintext released from one message (compression bombs).
    pub max_plaintext: usize,
    /// Where the plaintext of a large message goes while it is decrypted (a sealed
    /// temporary file); `None` keeps it in memory.
    pub spill: Option<blob::Spill>,
}

/// One delivered version of the message and the envelope recipients (indexes into
/// `recipients`) that get it.
#[derive(Debug, Clone)]
pub struct Opened {
    pub recipients: Vec<usize>,
    /// Our head in memory; the body shares the received message's or the plaintext's
    /// storage when it goes out unchanged.
    pub message: Blob,
    pub verdict: Verdict,
}

/// A temporary local failure: nothing about the message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("keyring: {0}")]
    Keyring(#[from] sealpost_keyring::Error),
    /// A spilled message or its plaintext could not be read or written.
    #[error("spill file: {0}")]
    Spill(#[from] std::io::Error),
}

/// What every step needs.
struct Ctx<'a> {
    keyring: &'a Keyring,
    settings: &'a Settings,
    now: SystemTime,
}

/// The outer header, our fields stripped.
struct Outer<'a> {
    raw: Vec<RawField<'a>>,
    fields: Vec<Field>,
    /// The single From address, lower-cased.
    from: Option<String>,
}

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

/// The outer header with our forged fields stripped.
fn outer_of<'a>(head: &'a [u8], settings: &Settings) -> Outer<'a> {
    let raw = results::strip(results::fields(head), &settings.authserv_id);
    let fields: Vec<Field> = raw.iter().filter_map(|r| r.field.clone()).collect();
    let from = headers::from_address(&fields);
    Outer { raw, fields, from }
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

/// Judges `checks` into `v` and returns what header protection does to the outer header:
/// protected fields replace the outer ones only with a valid signature.
fn judge_into(
    v: &mut Verdict,
    checks: &[Check],
    outer: &Outer<'_>,
    protected: Option<&[Field]>,
) -> Edits {
    let inner = protected.map_or(InnerFrom::Absent, protected::inner_from);
    let Judgement {
        mut signature,
        signer,
        mut signer_address,
        mut valid,
    } = verify::judge(checks, outer.from.as_deref(), &inner);
    if let (Some(from), Some(_)) = (outer.from.as_deref(), &valid) {
        // What the reader is shown, in the outer header or in the fields that replace it.
        let shown = binding::disguise(&outer.fields, from)
            .or_else(|| protected.and_then(|p| binding::disguise(p, from)));
        if let Some(d) = shown {
            signature = match d {
                binding::Disguise::Sender => Signature::SenderMismatch,
                binding::Disguise::DisplayName => Signature::DisplayNameMismatch,
            };
            (signer_address, valid) = (None, None);
        }
    }
    v.signature = signature;
    v.signer = signer;
    v.signer_address = signer_address;
    let Some(protected) = protected.filter(|p| !p.is_empty()) else {
        return Edits::None;
    };
    match valid {
        Some(proof) => {
            v.protected_headers = HeaderProtection::Applied;
            let (names, lines) = protected::applied(protected, &proof);
            Edits::Applied { names, lines }
        }
        None => {
            v.protected_headers = HeaderProtection::KeptApart;
            Edits::KeptApart(protected::kept_apart(protected))
        }
    }
}

/// The message as received, with our fields (and the header protection edits): a new
/// head in front of the received body.
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

#[cfg(test)]
mod tests;
