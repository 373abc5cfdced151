//! Inbound: decrypt and verify mail for local users, sans-I/O (bytes, keyring and time in,
//! bytes out), EFAIL-safe, with result fields no sender can forge.
//!
//! [`open`] strips every incoming copy of our result fields ([`results`]), decides what the
//! root entity is ([`root`]; only the root, never a nested part), decrypts it per envelope
//! recipient with that recipient's own keys ([`decrypt`]; Cv25519 keys through OpenSSL
//! keys imported once, [`x25519`]), checks signatures against the
//! keyring and the single From address ([`verify`], [`binding`]), applies or keeps apart protected
//! header fields ([`protected`]) and builds the delivered message ([`assemble`]) with
//! `Authentication-Results` and `X-Sealpost-Verdict` on top ([`verdict`]).
//!
//! A message that spilled to disk while it was received takes the same steps while it is
//! read from its sealed file ([`spilled`]): neither it nor its plaintext is held whole.
//!
//! Everything about the message is a [`Verdict`], never an error: a message that cannot be
//! decrypted is delivered unchanged with our fields. [`Error`] is only a temporary local
//! failure (the keyring, a spill file), answered `451 4.3.0`.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

pub mod armor;
pub mod assemble;
pub mod binding;
pub mod decrypt;
pub mod pending;
pub mod protected;
pub mod results;
pub mod root;
pub mod spilled;
pub mod verdict;
pub mod verify;
pub mod x25519;

use std::time::SystemTime;

use sealpost_keyring::Keyring;

use crate::blob::{self, Blob};
use crate::mime::entity;
use crate::mime::headers::{self, Field};
use crate::wipe::Buf;

use assemble::Edits;
use decrypt::{Input, Kind, Outcome, Plaintext};
use results::RawField;
use root::Root;
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

/// The outer message, our fields stripped.
struct Outer<'a> {
    raw: Vec<RawField<'a>>,
    fields: Vec<Field>,
    body: &'a [u8],
    /// The single From address, lower-cased.
    from: Option<String>,
}

/// Opens `message` for its envelope `recipients`: one [`Opened`] for all of them when the
/// root is not encrypted, one per recipient when it is. A message whole in memory is
/// opened in memory; one that spilled to disk is opened while it is read ([`spilled`]).
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
    match message.as_slice() {
        Some(bytes) => open_bytes(bytes, recipients, keyring, settings, now),
        None => spilled::open(
            message,
            recipients,
            &Ctx {
                keyring,
                settings,
                now,
            },
        ),
    }
}

fn open_bytes(
    message: &[u8],
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
    // The OpenPGP parser has been seen to panic on crafted packets. A panic must not
    // turn a message into an endless temporary failure: it is a malformed message,
    // delivered unchanged, and no plaintext was released (the buffer dies with it).
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        open_guarded(&ctx, message, recipients)
    }));
    opened.unwrap_or_else(|_| {
        tracing::error!("the OpenPGP parser failed on this message: delivered as malformed");
        let outer = outer_of(message, settings);
        let mut v = Verdict::new(outer.from.clone());
        v.encryption = Encryption::Malformed;
        let all = (0..recipients.len()).collect();
        Ok(vec![unchanged(&ctx, &outer, v, &Edits::None, all)])
    })
}

/// The outer header with our forged fields stripped, and the body.
fn outer_of<'a>(message: &'a [u8], settings: &Settings) -> Outer<'a> {
    let (head, body) = headers::split_bytes(message);
    let raw = results::strip(results::fields(head), &settings.authserv_id);
    let fields: Vec<Field> = raw.iter().filter_map(|r| r.field.clone()).collect();
    let from = headers::from_address(&fields);
    Outer {
        raw,
        fields,
        body,
        from,
    }
}

fn open_guarded(ctx: &Ctx<'_>, message: &[u8], recipients: &[&str]) -> Result<Vec<Opened>, Error> {
    let (keyring, settings, now) = (ctx.keyring, ctx.settings, ctx.now);
    let outer = outer_of(message, settings);
    let body = outer.body;
    let all: Vec<usize> = (0..recipients.len()).collect();
    let root = root::classify(&outer.fields, body, message);
    let mut v = Verdict::new(outer.from.clone());
    let data = match root {
        Root::PgpMime(data) => {
            let input = Input::of(&data);
            match decrypt::kind(&input) {
                Some(k @ (Kind::Encrypted | Kind::NoIntegrity)) => {
                    return per_recipient(ctx, &outer, recipients, &input, k, true)
                }
                _ => {
                    v.encryption = Encryption::Malformed;
                    return Ok(vec![unchanged(ctx, &outer, v, &Edits::None, all)]);
                }
            }
        }
        Root::Armored(data) => data,
        Root::Signed { signed, signature } => {
            let checks = verify::detached(&signed, &signature, keyring, keyring.policy(), now)?;
            let (sf, _) = headers::split(&signed);
            let protected = protected::marked(&sf).then(|| protected::fields(&sf));
            let edits = judge_into(&mut v, &checks, &outer, protected.as_deref());
            return Ok(vec![unchanged(ctx, &outer, v, &edits, all)]);
        }
        Root::Cleartext(data) => {
            let max = settings.max_plaintext;
            match verify::inline(&data, keyring, keyring.policy(), now, max)? {
                Some(checks) => {
                    judge_into(&mut v, &checks, &outer, None);
                }
                None => v.signature = Signature::Invalid,
            }
            return Ok(vec![unchanged(ctx, &outer, v, &Edits::None, all)]);
        }
        Root::Malformed { encrypted } => {
            if encrypted {
                v.encryption = Encryption::Malformed;
            } else {
                v.signature = Signature::Invalid;
            }
            return Ok(vec![unchanged(ctx, &outer, v, &Edits::None, all)]);
        }
        Root::Plain(nested) => {
            if nested.ciphertext {
                v.encryption = Encryption::NestedIgnored;
            }
            if nested.signature {
                v.signature = Signature::Partial;
            }
            return Ok(vec![unchanged(ctx, &outer, v, &Edits::None, all)]);
        }
    };
    // A whole armored body: encrypted, or signed only.
    let input = Input::of(&data);
    match decrypt::kind(&input) {
        Some(k @ (Kind::Encrypted | Kind::NoIntegrity)) => {
            per_recipient(ctx, &outer, recipients, &input, k, false)
        }
        Some(Kind::NotEncrypted) => {
            let max = settings.max_plaintext;
            match verify::inline(&data, keyring, keyring.policy(), now, max)? {
                Some(checks) => {
                    judge_into(&mut v, &checks, &outer, None);
                }
                None => v.encryption = Encryption::Malformed,
            }
            Ok(vec![unchanged(ctx, &outer, v, &Edits::None, all)])
        }
        None => {
            v.encryption = Encryption::Malformed;
            Ok(vec![unchanged(ctx, &outer, v, &Edits::None, all)])
        }
    }
}

/// One copy per recipient, each decrypted with that recipient's own keys only.
fn per_recipient(
    ctx: &Ctx<'_>,
    outer: &Outer<'_>,
    recipients: &[&str],
    data: &Input<'_>,
    kind: Kind,
    mime: bool,
) -> Result<Vec<Opened>, Error> {
    let no_integrity = kind == Kind::NoIntegrity;
    let mut out = Vec::with_capacity(recipients.len());
    for (i, rcpt) in recipients.iter().enumerate() {
        let mut v = Verdict::new(outer.from.clone());
        let outcome = if no_integrity {
            Outcome::Refused(Encryption::NoIntegrity)
        } else {
            decrypt::decrypt(
                data,
                rcpt,
                ctx.keyring,
                ctx.keyring.policy(),
                ctx.now,
                ctx.settings.max_plaintext,
            )?
        };
        let opened = match outcome {
            Outcome::Plaintext(p) if mime => {
                let key = p.key().clone();
                match payload(ctx, outer, p, vec![i])? {
                    Some(opened) => opened,
                    None => unencodable(ctx, outer, key, vec![i]),
                }
            }
            Outcome::Plaintext(p) => {
                v.encryption = Encryption::Decrypted;
                v.decryption_key = Some(p.key().clone());
                judge_into(&mut v, p.checks(), outer, None);
                let results = results::render(&v, &ctx.settings.authserv_id);
                // Zeroed once the delivered copy is built from it.
                let plain = Buf::from(p.into_bytes());
                Opened {
                    recipients: vec![i],
                    message: assemble::inline(&results, &outer.raw, &plain).into(),
                    verdict: v,
                }
            }
            Outcome::Refused(e) => {
                v.encryption = e;
                unchanged(ctx, outer, v, &Edits::None, vec![i])
            }
        };
        out.push(opened);
    }
    Ok(out)
}

/// A decrypted PGP/MIME payload: our fields stripped from its root too, its signatures
/// (inside the OpenPGP message, or a `multipart/signed` payload), its protected fields.
/// The delivered message is built in the plaintext's own buffer when its body goes out as
/// it is (a large attachment is not copied again).
fn payload(
    ctx: &Ctx<'_>,
    outer: &Outer<'_>,
    p: Plaintext,
    recipients: Vec<usize>,
) -> Result<Option<Opened>, Error> {
    let key = p.key().clone();
    let checks = p.checks().to_vec();
    payload_bytes(ctx, outer, key, checks, p.into_bytes(), recipients)
}

/// [`payload`] of plaintext already taken out of its [`Plaintext`]. The plaintext is
/// zeroed when it is not the delivered copy itself (and that copy, once delivered).
fn payload_bytes(
    ctx: &Ctx<'_>,
    outer: &Outer<'_>,
    key: sealpost_keyring::openpgp::Fingerprint,
    mut checks: Vec<Check>,
    bytes: Vec<u8>,
    recipients: Vec<usize>,
) -> Result<Option<Opened>, Error> {
    let mut bytes = Buf::from(bytes);
    if entity::has_bare_lf(&bytes) {
        bytes = Buf::from(entity::crlf(&bytes));
    }
    let (built, verdict) = {
        let (phead, pbody) = headers::split_bytes(&bytes);
        // Plain text where a MIME entity belongs (RFC 3156 says the payload is one): all
        // of it is the body, rather than lines read as fields and dropped.
        let (phead, pbody) = if headers::is_header_section(phead) {
            (phead, pbody)
        } else {
            (&b""[..], &bytes[..])
        };
        let praw = results::strip(results::fields(phead), &ctx.settings.authserv_id);
        let pfields: Vec<Field> = praw.iter().filter_map(|r| r.field.clone()).collect();
        let mut protected = protected::marked(&pfields).then(|| protected::fields(&pfields));
        if let Some((signed, signature)) = root::signed_halves(&pfields, pbody) {
            let policy = ctx.keyring.policy();
            checks.extend(verify::detached(
                &signed,
                &signature,
                ctx.keyring,
                policy,
                ctx.now,
            )?);
            let (sf, _) = headers::split(&signed);
            if protected.is_none() && protected::marked(&sf) {
                protected = Some(protected::fields(&sf));
            }
        }
        let (v, edits) = payload_verdict(outer, key, &checks, &pfields, protected.as_deref());
        let legacy_free = match edits {
            Edits::Applied { .. } => protected::without_legacy_display(&pfields, pbody),
            _ => None,
        };
        let content = content_fields(&praw);
        let results = results::render(&v, &ctx.settings.authserv_id);
        let built = match legacy_free {
            Some(body) => {
                assemble::decrypted(&results, &outer.raw, &edits, &content, &body).map(Built::Whole)
            }
            None => match assemble::decrypted_head(&results, &outer.raw, &edits, &content, pbody) {
                Some(head) => Some(Built::Head {
                    head,
                    body_at: bytes.len().saturating_sub(pbody.len()),
                }),
                None => assemble::decrypted(&results, &outer.raw, &edits, &content, pbody)
                    .map(Built::Whole),
            },
        };
        (built, v)
    };
    // Plaintext that cannot be made safe for the next hop is not released.
    let Some(built) = built else {
        return Ok(None);
    };
    let message = match built {
        Built::Whole(message) => message,
        Built::Head { head, body_at } => assemble::replace_head(bytes.into_inner(), body_at, head),
    };
    Ok(Some(Opened {
        recipients,
        message: message.into(),
        verdict,
    }))
}

/// The received message for a recipient whose decrypted payload cannot be made safe for
/// the next hop: the ciphertext, with a verdict that says so.
fn unencodable(
    ctx: &Ctx<'_>,
    outer: &Outer<'_>,
    key: sealpost_keyring::openpgp::Fingerprint,
    recipients: Vec<usize>,
) -> Opened {
    let mut v = Verdict::new(outer.from.clone());
    v.encryption = Encryption::Unencodable;
    v.decryption_key = Some(key);
    unchanged(ctx, outer, v, &Edits::None, recipients)
}

/// The verdict on a decrypted payload and what it does to the outer header.
fn payload_verdict(
    outer: &Outer<'_>,
    key: sealpost_keyring::openpgp::Fingerprint,
    checks: &[Check],
    pfields: &[Field],
    protected: Option<&[Field]>,
) -> (Verdict, Edits) {
    let mut v = Verdict::new(outer.from.clone());
    v.encryption = Encryption::Decrypted;
    v.decryption_key = Some(key);
    let mut edits = judge_into(&mut v, checks, outer, protected);
    if protected.is_none() {
        // Fields the sender never declared protected (many PGP/MIME writers copy
        // Subject or From into the payload without a marker) are never applied, nor lost.
        let unmarked = protected::fields(pfields);
        if !unmarked.is_empty() {
            v.protected_headers = HeaderProtection::KeptApart;
            edits = Edits::KeptApart(protected::kept_apart(&unmarked));
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

/// The delivered message, or its head to put in front of the payload body.
enum Built {
    Whole(Vec<u8>),
    Head { head: Vec<u8>, body_at: usize },
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

/// The message as received, with our fields (and the header protection edits).
fn unchanged(
    ctx: &Ctx<'_>,
    outer: &Outer<'_>,
    v: Verdict,
    edits: &Edits,
    recipients: Vec<usize>,
) -> Opened {
    let results = results::render(&v, &ctx.settings.authserv_id);
    Opened {
        recipients,
        message: assemble::unchanged(&results, &outer.raw, edits, outer.body).into(),
        verdict: v,
    }
}

#[cfg(test)]
mod tests;
