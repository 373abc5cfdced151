//! Whether a certificate can be used now, and why not: expired, revoked, no encryption
//! subkey, or rejected by the policy.

use std::fmt;
use std::time::SystemTime;

use openpgp::cert::prelude::*;
use openpgp::policy::Policy;
use openpgp::types::RevocationStatus;
use openpgp::Cert;
use sequoia_openpgp as openpgp;
use serde::Serialize;

use crate::lookup;

/// A certificate's state for encryption at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Validity {
    Usable { expires: Option<String> },
    Expired { on: String },
    Revoked { reason: String },
    NoEncryptionSubkey,
    Invalid { reason: String },
}

impl fmt::Display for Validity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Validity::Usable { expires: None } => write!(f, "usable"),
            Validity::Usable { expires: Some(t) } => write!(f, "usable (expires {t})"),
            Validity::Expired { on } => write!(f, "expired on {on}"),
            Validity::Revoked { reason } => write!(f, "revoked: {reason}"),
            Validity::NoEncryptionSubkey => write!(f, "no encryption subkey that can be used now"),
            Validity::Invalid { reason } => write!(f, "invalid: {reason}"),
        }
    }
}

/// A date as the CLI shows it.
pub fn date(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string()
}

pub fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The certificate's state for encryption at `now`.
pub fn validity(cert: &Cert, policy: &dyn Policy, now: SystemTime) -> Validity {
    let vc = match cert.with_policy(policy, now) {
        Ok(vc) => vc,
        Err(e) => {
            return Validity::Invalid {
                reason: e.to_string(),
            }
        }
    };
    if let RevocationStatus::Revoked(sigs) = vc.revocation_status() {
        return Validity::Revoked {
            reason: revocation_reason(&sigs),
        };
    }
    if vc.alive().is_err() {
        let on = vc
            .primary_key()
            .key_expiration_time()
            .map_or_else(|| "an unknown date".to_string(), date);
        return Validity::Expired { on };
    }
    let mut expires: Option<SystemTime> = None;
    let mut any = false;
    for ka in encryption_keys(&vc) {
        any = true;
        if let Some(t) = ka.key_expiration_time() {
            expires = Some(expires.map_or(t, |e: SystemTime| e.max(t)));
        } else {
            expires = None;
            break;
        }
    }
    if !any {
        return Validity::NoEncryptionSubkey;
    }
    let primary_exp = vc.primary_key().key_expiration_time();
    let expires = match (expires, primary_exp) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Validity::Usable {
        expires: expires.map(date),
    }
}

/// The alive, unrevoked, supported encryption-capable keys of a valid certificate.
pub fn encryption_keys<'a>(
    vc: &'a ValidCert<'a>,
) -> impl Iterator<Item = ValidErasedKeyAmalgamation<'a, openpgp::packet::key::PublicParts>> + 'a {
    vc.keys().supported().alive().revoked(false).key_flags(
        openpgp::types::KeyFlags::empty()
            .set_transport_encryption()
            .set_storage_encryption(),
    )
}

fn revocation_reason(sigs: &[&openpgp::packet::Signature]) -> String {
    for sig in sigs {
        if let Some((code, text)) = sig.reason_for_revocation() {
            let text = String::from_utf8_lossy(text);
            let text: String = text.chars().filter(|c| !c.is_control()).collect();
            return if text.trim().is_empty() {
                format!("{code}")
            } else {
                format!("{code}: {}", text.trim())
            };
        }
    }
    "no reason given".to_string()
}

/// Whether `cert` can be encrypted to for `email` now: a valid user ID with that address,
/// and a usable encryption key. `Err` says why not.
///
/// On success, returns until when the answer holds (the earliest expiry that could change
/// it), so that callers may cache it.
pub fn usable_for(
    cert: &Cert,
    email: &str,
    policy: &dyn Policy,
    now: SystemTime,
) -> Result<Option<SystemTime>, String> {
    let fpr = cert.fingerprint();
    let v = validity(cert, policy, now);
    if !matches!(v, Validity::Usable { .. }) {
        return Err(format!("{fpr}: {v}"));
    }
    let vc = cert
        .with_policy(policy, now)
        .map_err(|e| format!("{fpr}: {e}"))?;
    let uid_ok = vc
        .userids()
        .revoked(false)
        .any(|ua| lookup::userid_email(ua.userid()).as_deref() == Some(email));
    if !uid_ok {
        return Err(format!(
            "{fpr}: the user ID for {email} is revoked or not valid"
        ));
    }
    let mut until: Option<SystemTime> = vc.primary_key().key_expiration_time();
    for ka in encryption_keys(&vc) {
        if let Some(t) = ka.key_expiration_time() {
            until = Some(until.map_or(t, |u| u.min(t)));
        }
    }
    Ok(until)
}

/// Whether the certificate has a key that can sign now.
pub fn can_sign(cert: &Cert, policy: &dyn Policy, now: SystemTime) -> bool {
    cert.with_policy(policy, now).is_ok_and(|vc| {
        vc.revocation_status() == RevocationStatus::NotAsFarAsWeKnow
            && vc.alive().is_ok()
            && vc
                .keys()
                .supported()
                .alive()
                .revoked(false)
                .for_signing()
                .next()
                .is_some()
    })
}

/// One subkey, for `keys show`.
#[derive(Debug, Clone, Serialize)]
pub struct SubkeyInfo {
    pub fingerprint: String,
    pub algorithm: String,
    pub usage: Vec<String>,
    pub expires: Option<String>,
}

impl fmt::Display for SubkeyInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} [{}]",
            self.fingerprint,
            self.algorithm,
            self.usage.join(", ")
        )?;
        if let Some(e) = &self.expires {
            write!(f, " expires {e}")?;
        }
        Ok(())
    }
}

/// A certificate as `keys list` and `keys show` present it.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub fingerprint: String,
    pub user_ids: Vec<String>,
    pub has_secret: bool,
    pub version: u8,
    pub algorithm: String,
    pub created: String,
    pub validity: Validity,
    pub subkeys: Vec<SubkeyInfo>,
    /// Where the certificate came from and how far it is trusted (filled in by the
    /// keyring, which keeps that record).
    pub trust: Option<crate::KeyMeta>,
}

pub fn info(cert: &Cert, has_secret: bool, policy: &dyn Policy, now: SystemTime) -> KeyInfo {
    let primary = cert.primary_key().key();
    let vc = cert.with_policy(policy, now).ok();
    let subkeys = cert
        .keys()
        .subkeys()
        .map(|ka| {
            let key = ka.key();
            let (usage, expires) = match vc.as_ref().and_then(|vc| {
                vc.keys()
                    .subkeys()
                    .find(|k| k.key().fingerprint() == key.fingerprint())
            }) {
                Some(vka) => {
                    let mut u = Vec::new();
                    if vka.for_signing() {
                        u.push("sign".to_string());
                    }
                    if vka.for_transport_encryption() {
                        u.push("encrypt-transport".to_string());
                    }
                    if vka.for_storage_encryption() {
                        u.push("encrypt-storage".to_string());
                    }
                    if vka.for_authentication() {
                        u.push("authenticate".to_string());
                    }
                    (u, vka.key_expiration_time().map(rfc3339))
                }
                None => (vec!["not valid".to_string()], None),
            };
            SubkeyInfo {
                fingerprint: key.fingerprint().to_hex(),
                algorithm: algorithm(key),
                usage,
                expires,
            }
        })
        .collect();
    let user_ids = cert
        .userids()
        .map(|ua| {
            String::from_utf8_lossy(ua.userid().value())
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect()
        })
        .collect();
    KeyInfo {
        fingerprint: cert.fingerprint().to_hex(),
        user_ids,
        has_secret,
        version: primary.version(),
        algorithm: algorithm(primary),
        created: rfc3339(primary.creation_time()),
        validity: validity(cert, policy, now),
        subkeys,
        trust: None,
    }
}

fn algorithm<P: openpgp::packet::key::KeyParts, R: openpgp::packet::key::KeyRole>(
    key: &openpgp::packet::Key<P, R>,
) -> String {
    use openpgp::crypto::mpi::PublicKey;
    match key.mpis() {
        PublicKey::RSA { .. } => format!("RSA {}", key.mpis().bits().unwrap_or(0)),
        PublicKey::EdDSA { curve, .. }
        | PublicKey::ECDH { curve, .. }
        | PublicKey::ECDSA { curve, .. } => format!("{} {curve}", key.pk_algo()),
        _ => key.pk_algo().to_string(),
    }
}
