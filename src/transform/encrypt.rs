//! PGP/MIME (RFC 3156 §6.2, the combined form): the whole message signed and encrypted in
//! one OpenPGP message, with RFC 9788 header protection.

use std::io::Write;
use std::time::SystemTime;

use openpgp::policy::Policy;
use openpgp::serialize::stream::{Armorer, Encryptor, LiteralWriter, Message, Recipient, Signer};
use openpgp::types::KeyFlags;
use openpgp::Cert;
use sealpost_keyring::openpgp;

use super::headers::{self, Field};
use super::Error;

/// What the outer Subject becomes (RFC 9788 §4.3.2).
pub const OBSCURED_SUBJECT: &str = "[...]";

/// Encrypts `message` to `recipients` (and signs it with `signer` when given).
///
/// The result keeps the outer trace and addressing fields (Received, From, To, Cc, Date,
/// Message-ID, …) so that it can be delivered and threaded, replaces the Subject with
/// `[...]`, and carries everything else inside the encrypted Cryptographic Payload, whose
/// header holds the original protected fields and `HP-Outer` records of the outer ones.
///
/// # Errors
/// When a recipient has no usable encryption key, or the crypto backend fails.
pub fn encrypt(
    message: &[u8],
    recipients: &[&Cert],
    signer: Option<&Cert>,
    policy: &dyn Policy,
    now: SystemTime,
) -> Result<Vec<u8>, Error> {
    let (fields, body) = headers::split(message);
    let payload = cryptographic_payload(&fields, body);
    let armored = seal(&payload, recipients, signer, policy, now)?;
    // Autocrypt: the signer's key travels with every message it signs (outer header,
    // exactly one, for the From address).
    let autocrypt = match (signer, from_address(&fields)) {
        (Some(tsk), Some(addr)) => super::autocrypt::header(tsk, &addr, policy, now).ok(),
        _ => None,
    };
    Ok(outer(&fields, &armored, autocrypt.as_deref()))
}

/// The inner entity: the original content fields with `hp="cipher"`, the protected fields,
/// `HP-Outer` records, and the original body.
fn cryptographic_payload(fields: &[Field], body: &[u8]) -> Vec<u8> {
    let mut head = String::new();
    let mut content_type = None;
    for f in fields.iter().filter(|f| headers::is_content_field(f)) {
        if f.is("Content-Type") {
            content_type = Some(f.value());
        } else if !f.is("MIME-Version") {
            head.push_str(&f.wire());
        }
    }
    let ct = content_type.unwrap_or_else(|| "text/plain; charset=us-ascii".to_string());
    head.insert_str(0, &format!("Content-Type: {ct}; hp=\"cipher\"\r\n"));
    for name in headers::PROTECTED {
        for f in fields.iter().filter(|f| f.is(name)) {
            head.push_str(&f.wire());
        }
    }
    // Every other field (X-Mailer, User-Agent, Keywords, …) travels inside only.
    for f in fields
        .iter()
        .filter(|f| !kept_outside(f) && !headers::is_content_field(f))
    {
        if !headers::PROTECTED.iter().any(|p| f.is(p)) && !f.is("Bcc") && !f.is("Autocrypt") {
            head.push_str(&f.wire());
        }
    }
    for name in headers::PROTECTED {
        for f in fields.iter().filter(|f| f.is(name) && kept_outside(f)) {
            let outer = if f.is("Subject") {
                OBSCURED_SUBJECT.to_string()
            } else {
                f.value()
            };
            head.push_str(&format!("HP-Outer: {}: {outer}\r\n", f.name));
        }
    }
    let mut out = head.into_bytes();
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// One-pass sign+encrypt, armored.
fn seal(
    payload: &[u8],
    recipients: &[&Cert],
    signer: Option<&Cert>,
    policy: &dyn Policy,
    now: SystemTime,
) -> Result<Vec<u8>, Error> {
    let crypto = |e: openpgp::anyhow::Error| Error::Crypto(e.to_string());
    let mut keys: Vec<Recipient> = Vec::new();
    for cert in recipients {
        let before = keys.len();
        let vc = cert.with_policy(policy, now).map_err(crypto)?;
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
    let mut sink = Vec::with_capacity(payload.len() * 4 / 3 + 1024);
    {
        let message = Message::new(&mut sink);
        let message = Armorer::new(message).build().map_err(crypto)?;
        let message = Encryptor::for_recipients(message, keys)
            .build()
            .map_err(crypto)?;
        let message = match signer {
            Some(tsk) => {
                let keypair = signing_keypair(tsk, policy, now)?;
                let mut s = Signer::new(message, keypair).map_err(crypto)?;
                for cert in recipients {
                    s = s.add_intended_recipient(cert);
                }
                s.build().map_err(crypto)?
            }
            None => message,
        };
        let mut literal = LiteralWriter::new(message).build().map_err(crypto)?;
        literal
            .write_all(payload)
            .map_err(|e| Error::Crypto(e.to_string()))?;
        literal.finalize().map_err(crypto)?;
    }
    Ok(sink)
}

/// The signing key of a TSK, usable now.
pub fn signing_keypair(
    tsk: &Cert,
    policy: &dyn Policy,
    now: SystemTime,
) -> Result<openpgp::crypto::KeyPair, Error> {
    let crypto = |e: openpgp::anyhow::Error| Error::Crypto(e.to_string());
    let ka = tsk
        .keys()
        .with_policy(policy, now)
        .supported()
        .alive()
        .revoked(false)
        .for_signing()
        .secret()
        .next()
        .ok_or_else(|| Error::NoSigningKey(tsk.fingerprint().to_hex()))?;
    ka.key().clone().into_keypair().map_err(crypto)
}

/// The outer message: trace and addressing fields, the obscured Subject, and the
/// multipart/encrypted body.
fn outer(fields: &[Field], armored: &[u8], autocrypt: Option<&str>) -> Vec<u8> {
    let boundary = boundary();
    let mut out = String::new();
    for f in fields {
        // Only what delivery, trace and threading need stays outside.
        if !kept_outside(f) {
            continue;
        }
        if f.is("Subject") {
            out.push_str(&format!("Subject: {OBSCURED_SUBJECT}\r\n"));
        } else {
            out.push_str(&f.wire());
        }
    }
    if !fields.iter().any(|f| f.is("Subject")) {
        out.push_str(&format!("Subject: {OBSCURED_SUBJECT}\r\n"));
    }
    if let Some(h) = autocrypt {
        out.push_str(h);
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
    let mut bytes = out.into_bytes();
    // The armor writer uses LF; the wire needs CRLF. Empty lines are kept: armor needs
    // the one after its header lines.
    let text = armored.strip_suffix(b"\n").unwrap_or(armored);
    for line in text.split(|&b| b == b'\n') {
        bytes.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    bytes
}

/// The fields an encrypted message keeps in its outer header: trace, addressing and
/// threading. The Subject is kept, obscured.
fn kept_outside(f: &Field) -> bool {
    const OUTSIDE: &[&str] = &[
        "Received",
        "Return-Path",
        "From",
        "Sender",
        "To",
        "Cc",
        "Reply-To",
        "Date",
        "Message-ID",
        "References",
        "In-Reply-To",
        "Subject",
    ];
    OUTSIDE.iter().any(|n| f.is(n)) || f.name.to_ascii_lowercase().starts_with("resent-")
}

/// The address of the single From field, if there is exactly one.
pub(crate) fn from_address(fields: &[Field]) -> Option<String> {
    let mut from = fields.iter().filter(|f| f.is("From"));
    let (Some(f), None) = (from.next(), from.next()) else {
        return None;
    };
    sealpost_keyring::normalize_email(&f.value()).map(|a| a.to_ascii_lowercase())
}

fn boundary() -> String {
    format!(
        "sealpost-{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}
