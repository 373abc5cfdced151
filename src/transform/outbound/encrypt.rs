//! PGP/MIME (RFC 3156 §6.2, the combined form): the whole message signed and encrypted in
//! one OpenPGP message, with RFC 9788 header protection.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::borrow::Cow;
use std::io::Write;
use std::time::SystemTime;

use openpgp::packet::key::{SecretParts, UnspecifiedRole};
use openpgp::packet::Key;
use openpgp::policy::Policy;
use openpgp::serialize::stream::{Encryptor, LiteralWriter, Message, Recipient, Signer};
use openpgp::types::KeyFlags;
use openpgp::{Cert, Fingerprint};
use sealpost_keyring::openpgp;

use super::armor::Armored;
use super::error::Error;
use super::protection;
use crate::mime::headers::{self, Field};

pub use super::protection::OBSCURED_SUBJECT;

/// An encrypted message and who signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The complete outer message, CRLF, 7-bit.
    pub message: Vec<u8>,
    /// The signing key's certificate, when the message is signed. `None` when no signer
    /// was given or when [`signer_fits`] ruled it out.
    pub signed_by: Option<Fingerprint>,
}

/// Encrypts `message` to `recipients` (and signs it with `signer` when it fits them, see
/// [`signer_fits`]). The bytes of [`seal`].
///
/// # Errors
/// As [`seal`].
pub fn encrypt(
    message: &[u8],
    recipients: &[&Cert],
    signer: Option<&Cert>,
    policy: &dyn Policy,
    now: SystemTime,
) -> Result<Vec<u8>, Error> {
    seal(message, recipients, signer, policy, now).map(|s| s.message)
}

/// Encrypts `message` to every encryption-capable, alive, non-revoked subkey of each
/// recipient under `policy` at `now`, signing it with `signer` when it fits them.
///
/// The result keeps the outer trace, addressing and threading fields (Received, From,
/// To, Cc, Date, Message-ID, …) so that it can be delivered and threaded, replaces the
/// Subject with `[...]`, and carries everything else inside the encrypted Cryptographic
/// Payload (`hp="cipher"`), whose header holds the original protected fields, the other
/// non-content fields, and `HP-Outer` records of the outer ones. Bcc never appears. The
/// body is streamed into the encryptor: the message is not copied before encryption.
///
/// # Errors
/// `NoRecipients`; `NoEncryptionKey` when a recipient has no usable encryption key;
/// `NoSigningKey` when `signer` has no usable secret signing key; `Crypto` when the
/// backend fails. There is never a partly protected result.
pub fn seal(
    message: &[u8],
    recipients: &[&Cert],
    signer: Option<&Cert>,
    policy: &dyn Policy,
    now: SystemTime,
) -> Result<Sealed, Error> {
    let autocrypt = |tsk: &Cert, fields: &[Field]| {
        let addr = headers::from_address(fields)?;
        super::autocrypt::header(tsk, &addr, policy, now)
            .map_err(|e| tracing::warn!(error = %e, "no Autocrypt header for the sender"))
            .ok()
    };
    seal_with(
        Cow::Borrowed(message),
        recipients,
        signer,
        autocrypt,
        true,
        policy,
        now,
    )
}

/// [`seal`], with the sender's Autocrypt header from `autocrypt` (given the signer that
/// fits and the header fields). An owned `message` is released as it is encrypted, so that
/// a large message and its encrypted copy are not held whole at the same time.
///
/// # Errors
/// As [`seal`].
pub(crate) fn seal_with(
    message: Cow<'_, [u8]>,
    recipients: &[&Cert],
    signer: Option<&Cert>,
    autocrypt: impl FnOnce(&Cert, &[Field]) -> Option<String>,
    protect_subject: bool,
    policy: &dyn Policy,
    now: SystemTime,
) -> Result<Sealed, Error> {
    if recipients.is_empty() {
        return Err(Error::NoRecipients);
    }
    let (fields, body) = headers::split(&message);
    let body_start = message.len() - body.len();
    let signer = signer.filter(|s| {
        let fits = signer_fits(s, recipients);
        if !fits {
            tracing::warn!(signer = %s.fingerprint(), "a v6 key does not sign for v4 recipients: sent unsigned");
        }
        fits
    });
    let autocrypt = signer.and_then(|tsk| autocrypt(tsk, &fields));
    let boundary = boundary();
    let payload_head = payload_head(&fields, protect_subject);
    let outer = outer_head(&fields, autocrypt.as_deref(), &boundary, protect_subject);
    // The OpenPGP message: the payload, one PKESK per key and a signature, in base64
    // lines of 64 characters and CRLF. Sized up front so that it is never reallocated.
    let packets = payload_head.len() + body.len() + 1024 * (recipients.len() + 2);
    let armored = packets / 48 * 66 + 200;
    let mut out = Vec::with_capacity(outer.len() + armored + boundary.len() + 8);
    out.extend_from_slice(outer.as_bytes());
    let mut armor = Armored::message(&mut out);
    let signed_by = encrypt_stream(
        &mut armor,
        payload_head.as_bytes(),
        message,
        body_start,
        recipients,
        signer,
        policy,
        now,
    )?;
    armor.finish();
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Ok(Sealed {
        message: out,
        signed_by,
    })
}

/// A v6 signature makes a message unreadable for v4-only software (gpg 2.2, RNP, PGPy)
/// even when it can decrypt it, so a v6 key signs only when every recipient has a v6 key.
pub fn signer_fits(signer: &Cert, recipients: &[&Cert]) -> bool {
    signer.primary_key().key().version() != 6
        || recipients
            .iter()
            .all(|c| c.primary_key().key().version() == 6)
}

/// The header of the Cryptographic Payload: the original Content-Type with `hp="cipher"`,
/// the other content fields, the protected fields, every other field, and `HP-Outer`
/// records; then the empty line. The original body follows it unchanged. Of a repeated
/// Content-Type or Content-Transfer-Encoding, only the one the classifier read is kept
/// ([`headers::effective`]).
fn payload_head(fields: &[Field], protect_subject: bool) -> String {
    let mut head =
        protection::content_type_with_hp(headers::effective(fields, "Content-Type"), "cipher");
    for f in fields.iter().filter(|f| headers::is_content_field(f)) {
        if !f.is("Content-Type") && !f.is("MIME-Version") && !headers::overridden(fields, f) {
            head.push_str(&f.wire());
        }
    }
    head.push_str(&protection::protected(fields));
    for f in fields.iter().filter(|f| {
        !protection::kept_outside(f)
            && !headers::is_content_field(f)
            && !protection::PROTECTED.iter().any(|p| f.is(p))
            && !f.is("Bcc")
    }) {
        head.push_str(&f.wire());
    }
    head.push_str(&protection::hp_outer(fields, protect_subject));
    head.push_str("\r\n");
    head
}

/// The outer header and the body up to the armored message: trace and addressing fields,
/// the obscured Subject, the Autocrypt header, and the two PGP/MIME parts' heads.
fn outer_head(
    fields: &[Field],
    autocrypt: Option<&str>,
    boundary: &str,
    protect_subject: bool,
) -> String {
    let mut out = String::new();
    for f in fields.iter().filter(|f| protection::kept_outside(f)) {
        out.push_str(&format!(
            "{}:{}\r\n",
            f.name,
            protection::outer_raw(f, protect_subject)
        ));
    }
    if !fields.iter().any(|f| f.is("Subject")) {
        out.push_str(&format!("Subject: {OBSCURED_SUBJECT}\r\n"));
    }
    match autocrypt {
        Some(h) => out.push_str(h),
        // The client's own Autocrypt header stays when sealpost announces no key.
        None => {
            for f in fields.iter().filter(|f| f.is("Autocrypt")) {
                out.push_str(&f.wire());
            }
        }
    }
    out.push_str("MIME-Version: 1.0\r\n");
    out.push_str(&format!(
        "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\";\r\n\tboundary=\"{boundary}\"\r\n\r\n"
    ));
    out.push_str("This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156).\r\n");
    out.push_str(&format!("--{boundary}\r\n"));
    out.push_str("Content-Type: application/pgp-encrypted\r\nContent-Description: PGP/MIME version identification\r\n\r\nVersion: 1\r\n\r\n");
    out.push_str(&format!("--{boundary}\r\n"));
    out.push_str("Content-Type: application/octet-stream; name=\"encrypted.asc\"\r\nContent-Description: OpenPGP encrypted message\r\nContent-Disposition: inline; filename=\"encrypted.asc\"\r\n\r\n");
    out
}

/// Bytes handed to the OpenPGP writers at a time. Sequoia's partial-body writers hold up to
/// 4 MiB and pass a write of that size straight through, while its cipher sizes a scratch
/// buffer to each write: 4 MiB pieces keep both at 4 MiB (64 KiB pieces made the
/// partial-body writers copy and hold 4 MiB each; one write of the whole body made the
/// scratch as large as the message). A 20 MB message peaked at 67 MB with 64 KiB pieces,
/// 58 MB with these.
const CHUNK: usize = 4 * 1024 * 1024;

/// How much of an owned message is encrypted before that part is released.
const RELEASE: usize = 4 * 1024 * 1024;

/// One-pass sign+encrypt of `head` and then `message` from `body_start` into `sink`:
/// Encryptor → Signer (naming every recipient) → LiteralWriter. The Encryptor uses SEIPDv2
/// only when every recipient key advertises it. Returns the signer's fingerprint.
#[allow(clippy::too_many_arguments)]
fn encrypt_stream<W: Write + Send + Sync>(
    sink: W,
    head: &[u8],
    message: Cow<'_, [u8]>,
    body_start: usize,
    recipients: &[&Cert],
    signer: Option<&Cert>,
    policy: &dyn Policy,
    now: SystemTime,
) -> Result<Option<Fingerprint>, Error> {
    let crypto = |e: openpgp::anyhow::Error| Error::Crypto(e.to_string());
    let io = |e: std::io::Error| Error::Crypto(e.to_string());
    let mut keys: Vec<Recipient> = Vec::new();
    for cert in recipients {
        let before = keys.len();
        let vc = cert
            .with_policy(policy, now)
            .map_err(|_| Error::NoEncryptionKey(cert.fingerprint().to_hex()))?;
        for ka in vc.keys().supported().alive().revoked(false).key_flags(
            KeyFlags::empty()
                .set_transport_encryption()
                .set_storage_encryption(),
        ) {
            keys.push(ka.into());
        }
        if keys.len() == before {
            return Err(Error::NoEncryptionKey(cert.fingerprint().to_hex()));
        }
    }
    let message_writer = Message::new(sink);
    let message_writer = Encryptor::for_recipients(message_writer, keys)
        .build()
        .map_err(crypto)?;
    let (message_writer, signed_by) = match signer {
        Some(tsk) => {
            let key = signing_key(tsk, policy, now)?;
            let mut s = Signer::new(message_writer, key)
                .map_err(crypto)?
                .creation_time(now);
            for cert in recipients {
                s = s.add_intended_recipient(cert);
            }
            (s.build().map_err(crypto)?, Some(tsk.fingerprint()))
        }
        None => (message_writer, None),
    };
    let mut literal = LiteralWriter::new(message_writer).build().map_err(crypto)?;
    literal.write_all(head).map_err(io)?;
    match message {
        Cow::Borrowed(m) => {
            for chunk in m.get(body_start..).unwrap_or_default().chunks(CHUNK) {
                literal.write_all(chunk).map_err(io)?;
            }
        }
        Cow::Owned(mut m) => {
            let mut at = body_start;
            while at < m.len() {
                let end = (at + CHUNK).min(m.len());
                literal
                    .write_all(m.get(at..end).unwrap_or_default())
                    .map_err(io)?;
                at = end;
                if at >= RELEASE && at < m.len() {
                    // The encrypted part is not needed any more: give its memory back
                    // while the armored copy grows.
                    m.drain(..at);
                    m.shrink_to_fit();
                    at = 0;
                }
            }
        }
    }
    literal.finalize().map_err(crypto)?;
    Ok(signed_by)
}

/// The signing key of a TSK, usable now.
///
/// # Errors
/// `NoSigningKey` when no alive, non-revoked signing subkey with unencrypted secret key
/// material exists under `policy` at `now`.
pub fn signing_keypair(
    tsk: &Cert,
    policy: &dyn Policy,
    now: SystemTime,
) -> Result<openpgp::crypto::KeyPair, Error> {
    signing_secret(tsk, policy, now)?
        .into_keypair()
        .map_err(|e| Error::Crypto(e.to_string()))
}

/// The signer for the signing key of a TSK, usable now: for Ed25519 over the OpenSSL key
/// imported the first time this key signed ([`super::signer`]).
///
/// # Errors
/// As [`signing_keypair`].
pub fn signing_key(
    tsk: &Cert,
    policy: &dyn Policy,
    now: SystemTime,
) -> Result<Box<dyn openpgp::crypto::Signer + Send + Sync>, Error> {
    let key = signing_secret(tsk, policy, now)?;
    super::signer::signer(&key).map_err(|e| Error::Crypto(e.to_string()))
}

fn signing_secret(
    tsk: &Cert,
    policy: &dyn Policy,
    now: SystemTime,
) -> Result<Key<SecretParts, UnspecifiedRole>, Error> {
    tsk.keys()
        .with_policy(policy, now)
        .supported()
        .alive()
        .revoked(false)
        .for_signing()
        .secret()
        .find(|ka| ka.key().has_unencrypted_secret())
        .map(|ka| ka.key().clone().role_into_unspecified())
        .ok_or_else(|| Error::NoSigningKey(tsk.fingerprint().to_hex()))
}

/// A MIME boundary that cannot occur in the armored body (no `-` run, random).
pub(crate) fn boundary() -> String {
    format!(
        "sealpost-{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}
