//! Signed-only messages: RFC 3156 `multipart/signed`, with RFC 9788 header protection
//! (`hp="clear"`). The signed part is 7-bit with no trailing whitespace, signed in its
//! canonical CRLF form, exactly as it appears between the boundaries.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::io::Write;
use std::time::SystemTime;

use openpgp::parse::Parse;
use openpgp::policy::Policy;
use openpgp::serialize::stream::{Armorer, Message, Signer};
use openpgp::Cert;
use sealpost_keyring::openpgp;

use super::encrypt::{boundary, signing_key};
use super::error::Error;
use super::protection;
use crate::mime::headers::{self, Field};
use crate::mime::seven_bit;

/// Signs `message` with `signer`: `multipart/signed; micalg=pgp-<hash used>`, the first
/// part the Cryptographic Payload (`hp="clear"`), the outer header the original one
/// (content fields and Bcc removed) plus the sender's Autocrypt header.
///
/// # Errors
/// `NotSevenBit` when 8-bit content sits where it cannot be re-encoded (a preamble, an
/// attached message, a part already claiming base64 or quoted-printable);
/// `NoSigningKey`; `Crypto`.
pub fn sign(
    message: &[u8],
    signer: &Cert,
    policy: &dyn Policy,
    now: SystemTime,
) -> Result<Vec<u8>, Error> {
    let autocrypt = |fields: &[Field]| {
        let addr = headers::from_address(fields)?;
        super::autocrypt::header(signer, &addr, policy, now)
            .map_err(|e| tracing::warn!(error = %e, "no Autocrypt header for the sender"))
            .ok()
    };
    sign_with(message, signer, autocrypt, policy, now)
}

/// [`sign`], with the sender's Autocrypt header from `autocrypt` (given the header fields).
///
/// # Errors
/// As [`sign`].
pub(crate) fn sign_with(
    message: &[u8],
    signer: &Cert,
    autocrypt: impl FnOnce(&[Field]) -> Option<String>,
    policy: &dyn Policy,
    now: SystemTime,
) -> Result<Vec<u8>, Error> {
    let (fields, body) = headers::split(message);
    let is_multipart = headers::effective(&fields, "Content-Type")
        .is_some_and(|f| f.value().to_ascii_lowercase().starts_with("multipart/"));
    if is_multipart && !seven_bit::is_clean(body) {
        let rewritten = crate::mime::seven_bit::rewrite(message)?;
        return sign_with(&rewritten, signer, autocrypt, policy, now);
    }
    let entity = signed_entity(&fields, body)?;
    let (signature, micalg) = detached(&entity, signer, policy, now)?;
    let autocrypt = autocrypt(&fields);
    let boundary = boundary();
    let mut out = String::new();
    for f in &fields {
        // The client's own Autocrypt header stays when sealpost announces no key.
        let replaced = f.is("Autocrypt") && autocrypt.is_some();
        if headers::is_content_field(f) || f.is("Bcc") || replaced {
            continue;
        }
        out.push_str(&f.wire());
    }
    if let Some(h) = autocrypt {
        out.push_str(&h);
    }
    out.push_str("MIME-Version: 1.0\r\n");
    out.push_str(&format!(
        "Content-Type: multipart/signed; micalg={micalg};\r\n\tprotocol=\"application/pgp-signature\"; boundary=\"{boundary}\"\r\n\r\n"
    ));
    out.push_str("This is an OpenPGP/MIME signed message (RFC 4880 and 3156).\r\n");
    out.push_str(&format!("--{boundary}\r\n"));
    let mut bytes = out.into_bytes();
    bytes.reserve(entity.len() + signature.len() + signature.len() / 32 + 512);
    bytes.extend_from_slice(&entity);
    bytes.extend_from_slice(format!("\r\n--{boundary}\r\n").as_bytes());
    bytes.extend_from_slice(
        b"Content-Type: application/pgp-signature; name=\"signature.asc\"\r\nContent-Description: OpenPGP digital signature\r\nContent-Disposition: attachment; filename=\"signature.asc\"\r\n\r\n",
    );
    let sig = signature.strip_suffix(b"\n").unwrap_or(&signature);
    for line in sig.split(|&b| b == b'\n') {
        bytes.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Ok(bytes)
}

/// The part that is signed: the original Content-Type with `hp="clear"`, the other
/// content fields, the protected fields (RFC 9788: no `HP-Outer` for `hp="clear"`, the
/// outer fields stay as they were), and the body, made 7-bit. Header lines lose trailing
/// whitespace, which transport may strip. Of a repeated Content-Type or
/// Content-Transfer-Encoding, the one the classifier read decides and is the only one
/// kept ([`headers::effective`]).
fn signed_entity(fields: &[Field], body: &[u8]) -> Result<Vec<u8>, Error> {
    let ct_field = headers::effective(fields, "Content-Type");
    let ct = ct_field
        .map(Field::value)
        .unwrap_or_default()
        .to_ascii_lowercase();
    let cte = headers::effective(fields, "Content-Transfer-Encoding")
        .map(|f| f.value().to_ascii_lowercase());
    let (body, new_cte): (Vec<u8>, Option<&str>) = if seven_bit::is_clean(body) {
        (body.to_vec(), None)
    } else if ct.starts_with("multipart/") || ct.starts_with("message/") {
        return Err(Error::NotSevenBit);
    } else {
        match cte.as_deref() {
            None | Some("7bit") | Some("8bit") | Some("binary") => {
                let (name, mut encoded) =
                    seven_bit::encode(body, ct.is_empty() || ct.starts_with("text/"));
                // Base64 ends without a line break here: the one before the closing
                // delimiter is the delimiter's own.
                if name == seven_bit::BASE64 {
                    encoded.truncate(encoded.len().saturating_sub(2));
                }
                (encoded, Some(name))
            }
            _ => return Err(Error::NotSevenBit),
        }
    };
    let mut head = protection::content_type_with_hp(ct_field, "clear");
    for f in fields.iter().filter(|f| headers::is_content_field(f)) {
        if f.is("Content-Type") || f.is("MIME-Version") {
            continue;
        }
        if (f.is("Content-Transfer-Encoding") && new_cte.is_some())
            || headers::overridden(fields, f)
        {
            continue;
        }
        head.push_str(&f.wire());
    }
    if let Some(c) = new_cte {
        head.push_str(&format!("Content-Transfer-Encoding: {c}\r\n"));
    }
    head.push_str(&protection::protected(fields));
    let mut out = Vec::with_capacity(head.len() + body.len() + 2);
    for line in head.split_inclusive("\r\n") {
        let content = line.strip_suffix("\r\n").unwrap_or(line);
        out.extend_from_slice(content.trim_end_matches([' ', '\t']).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    // The body keeps its last line break: the CRLF before the next delimiter is the
    // delimiter's own.
    out.extend_from_slice(&body);
    Ok(out)
}

/// An armored detached signature, and the `micalg` of the hash it used.
fn detached(
    entity: &[u8],
    signer: &Cert,
    policy: &dyn Policy,
    now: SystemTime,
) -> Result<(Vec<u8>, String), Error> {
    let crypto = |e: openpgp::anyhow::Error| Error::Crypto(e.to_string());
    let key = signing_key(signer, policy, now)?;
    let mut sink = Vec::new();
    {
        let message = Message::new(&mut sink);
        let message = Armorer::new(message)
            .kind(openpgp::armor::Kind::Signature)
            .build()
            .map_err(crypto)?;
        let mut s = Signer::new(message, key)
            .map_err(crypto)?
            .creation_time(now)
            .detached()
            .build()
            .map_err(crypto)?;
        s.write_all(entity)
            .map_err(|e| Error::Crypto(e.to_string()))?;
        s.finalize().map_err(crypto)?;
    }
    let pile = openpgp::PacketPile::from_bytes(&sink).map_err(crypto)?;
    let hash = pile
        .children()
        .find_map(|p| match p {
            openpgp::Packet::Signature(s) => Some(s.hash_algo()),
            _ => None,
        })
        .ok_or_else(|| Error::Crypto("no signature was made".into()))?;
    let micalg = format!(
        "pgp-{}",
        hash.to_string().to_ascii_lowercase().replace('-', "")
    );
    Ok((sink, micalg))
}
