//! The `Autocrypt:` header (Autocrypt Level 1) for the sender of a message sealpost signs.

use std::time::SystemTime;

use base64::Engine;
use openpgp::policy::Policy;
use openpgp::serialize::SerializeInto;
use openpgp::Cert;
use sealpost_keyring::openpgp;

use super::Error;

/// `Autocrypt: addr=…; keydata=…`, folded, with the minimal key Autocrypt asks for: the
/// primary key, the user ID with `addr`, and the valid signing and encryption subkeys.
///
/// # Errors
/// When `cert` has no valid user ID for `addr` or cannot be serialized.
pub fn header(
    cert: &Cert,
    addr: &str,
    policy: &dyn Policy,
    now: SystemTime,
) -> Result<String, Error> {
    let addr = addr.to_ascii_lowercase();
    let vc = cert
        .with_policy(policy, now)
        .map_err(|e| Error::Crypto(e.to_string()))?;
    let keep: Vec<openpgp::Fingerprint> = vc
        .keys()
        .subkeys()
        .alive()
        .revoked(false)
        .filter(|ka| {
            ka.for_signing() || ka.for_transport_encryption() || ka.for_storage_encryption()
        })
        .map(|ka| ka.key().fingerprint())
        .collect();
    let minimal = cert
        .clone()
        .strip_secret_key_material()
        .retain_userids(|ua| {
            ua.userid()
                .email()
                .ok()
                .flatten()
                .is_some_and(|e| e.eq_ignore_ascii_case(&addr))
        })
        .retain_subkeys(|ka| keep.contains(&ka.key().fingerprint()));
    if minimal.userids().next().is_none() {
        return Err(Error::NoSigningKey(format!(
            "{} (no user ID for {addr})",
            cert.fingerprint()
        )));
    }
    let bytes = minimal.to_vec().map_err(|e| Error::Crypto(e.to_string()))?;
    let keydata = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = format!("Autocrypt: addr={addr}; keydata=");
    // Fold: continuation lines start with a space and stay within 78 columns.
    let mut line_len = out.len();
    for chunk in keydata.as_bytes().chunks(72) {
        if line_len + chunk.len() > 78 {
            out.push_str("\r\n ");
            line_len = 1;
        }
        out.push_str(&String::from_utf8_lossy(chunk));
        line_len += chunk.len();
    }
    out.push_str("\r\n");
    Ok(out)
}
