//! A local user's key over its life: generated with an expiry and a revocation
//! certificate kept aside, extended before it expires, and reported while it is about to.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use openpgp::packet::{Packet, Signature};
use openpgp::parse::Parse;
use openpgp::serialize::{Serialize, SerializeInto};
use openpgp::types::ReasonForRevocation;
use openpgp::{Cert, Fingerprint};
use sequoia_openpgp as openpgp;

use crate::import::ImportOptions;
use crate::store::{Op, Tree};
use crate::{cert, generate, lookup, validity, Error, GenerateRequest, Keyring};

/// How long before its expiry a local user's key is reported every day.
pub const EXPIRY_NOTICE: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// A local user's key that expires soon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiring {
    pub fingerprint: Fingerprint,
    pub emails: Vec<String>,
    /// When it can no longer be encrypted to (or signed with).
    pub expires: SystemTime,
}

fn crypto(e: openpgp::anyhow::Error) -> Error {
    Error::Crypto(e.to_string())
}

impl Keyring {
    /// Generates a key pair and stores it, with its revocation certificate.
    ///
    /// # Errors
    /// `Error::SecretExists` when the address has a secret key already and `req.force`
    /// is not set; `Error::Parse` for a bad address or name.
    pub fn generate(&self, req: &GenerateRequest) -> Result<Arc<Cert>, Error> {
        if !req.force {
            let email = lookup::index_form(&req.email).ok_or_else(|| Error::Parse {
                reason: format!("{:?} is not an email address", req.email),
            })?;
            for fpr in self.fingerprints_for_email(&email)? {
                if self.has_secret(&fpr)? {
                    return Err(Error::SecretExists {
                        email,
                        fingerprint: fpr.to_hex(),
                    });
                }
            }
        }
        let (cert, revocation) = generate::generate(req)?;
        let fpr = cert.fingerprint();
        let rev = Packet::from(revocation).to_vec().map_err(crypto)?;
        let opts = ImportOptions {
            extra: vec![Op::Put(Tree::Revocations, fpr.as_bytes().to_vec(), rev)],
            ..ImportOptions::default()
        };
        self.import_parsed(
            cert::Parsed {
                certs: vec![cert],
                signatures: Vec::new(),
            },
            opts,
        )?;
        self.get(&fpr)?
            .ok_or_else(|| Error::Store("the generated key was not stored".into()))
    }

    /// The revocation certificate of `fpr`, armored as gpg writes one (importing it
    /// revokes the key for good): the one stored when the key was generated, or, for a
    /// key generated elsewhere, one made now with its secret key.
    ///
    /// # Errors
    /// `Error::NoSecret` when there is neither.
    pub fn revocation(&self, fpr: &Fingerprint) -> Result<Vec<u8>, Error> {
        let sig = match self.inner.store.get(Tree::Revocations, fpr.as_bytes())? {
            Some(bytes) => match Packet::from_bytes(&bytes).map_err(crypto)? {
                Packet::Signature(s) => s,
                _ => return Err(Error::Store(format!("revocation of {fpr} is corrupt"))),
            },
            None => {
                let tsk = self
                    .unlocked(fpr)?
                    .ok_or_else(|| Error::NoSecret(fpr.to_hex()))?;
                let mut signer = primary_signer(&tsk)?;
                openpgp::cert::CertRevocationBuilder::new()
                    .set_reason_for_revocation(ReasonForRevocation::Unspecified, b"")
                    .map_err(crypto)?
                    .build(&mut signer, &tsk, None)
                    .map_err(crypto)?
            }
        };
        armor_signature(fpr, &sig)
    }

    /// Sets the expiry of the key `fpr` (the primary key and every subkey that is not
    /// revoked) to `expires`, `None` for never, and stores the new binding signatures.
    ///
    /// # Errors
    /// `Error::NoSecret` without the secret key; `Error::Crypto` when a signature cannot
    /// be made (an expiry before the key's creation, say).
    pub fn extend(
        &self,
        fpr: &Fingerprint,
        expires: Option<SystemTime>,
        now: SystemTime,
    ) -> Result<Arc<Cert>, Error> {
        let tsk = self
            .unlocked(fpr)?
            .ok_or_else(|| Error::NoSecret(fpr.to_hex()))?;
        let vc = tsk.with_policy(&self.inner.policy, now).map_err(crypto)?;
        // Signatures have one-second times, and of two made in the same second neither is
        // the newer: wait for the next second so that the new expiry is the one in force.
        if let Some(last) = vc
            .primary_key()
            .binding_signature()
            .signature_creation_time()
        {
            let wait = (last + Duration::from_secs(1))
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            std::thread::sleep(wait.min(Duration::from_secs(1)));
        }
        let mut primary = primary_signer(&tsk)?;
        let mut sigs: Vec<Signature> = vc
            .primary_key()
            .set_expiration_time(&mut primary, expires)
            .map_err(crypto)?;
        for ka in vc.keys().subkeys().revoked(false) {
            // A signing subkey's binding carries its own back signature.
            let mut own = if ka.for_signing() {
                Some(
                    ka.key()
                        .clone()
                        .parts_into_secret()
                        .and_then(|k| k.into_keypair())
                        .map_err(crypto)?,
                )
            } else {
                None
            };
            let own = own.as_mut().map(|k| k as &mut dyn openpgp::crypto::Signer);
            sigs.extend(
                ka.set_expiration_time(&mut primary, own, expires)
                    .map_err(crypto)?,
            );
        }
        let (renewed, _) = Cert::clone(&tsk)
            .insert_packets(sigs.into_iter().map(Packet::from))
            .map_err(crypto)?;
        self.import_parsed(
            cert::Parsed {
                certs: vec![renewed],
                signatures: Vec::new(),
            },
            ImportOptions::default(),
        )?;
        tracing::info!(%fpr, expires = ?expires.map(validity::date), "key expiry changed");
        self.get(fpr)?
            .ok_or_else(|| Error::Store("the renewed key was not stored".into()))
    }

    /// The local users' keys (those with a secret key here) usable at `now` that expire
    /// within `within` of it, soonest first.
    ///
    /// # Errors
    /// Store errors.
    pub fn expiring_local_keys(
        &self,
        within: Duration,
        now: SystemTime,
    ) -> Result<Vec<Expiring>, Error> {
        let later = now.checked_add(within).unwrap_or(now);
        let mut out = Vec::new();
        for (key, _) in self.inner.store.scan(Tree::Secrets, b"")? {
            let fpr = lookup::fpr_from(&key)?;
            let Some(cert) = self.get(&fpr)? else {
                continue;
            };
            let Some(expires) = expiry(&cert, &self.inner.policy, now) else {
                continue;
            };
            if expires <= later {
                out.push(Expiring {
                    emails: lookup::emails(&cert),
                    fingerprint: fpr,
                    expires,
                });
            }
        }
        out.sort_by_key(|e| e.expires);
        Ok(out)
    }
}

/// When a usable certificate stops being usable by expiry alone; `None` when it is not
/// usable now or never expires.
fn expiry(
    cert: &Cert,
    policy: &dyn openpgp::policy::Policy,
    now: SystemTime,
) -> Option<SystemTime> {
    if !matches!(
        validity::validity(cert, policy, now),
        validity::Validity::Usable { .. }
    ) {
        return None;
    }
    let vc = cert.with_policy(policy, now).ok()?;
    let mut enc: Option<SystemTime> = None;
    for ka in validity::encryption_keys(&vc) {
        // The key that lives longest keeps the certificate usable.
        enc = Some(match (enc, ka.key_expiration_time()) {
            (_, None) => return vc.primary_key().key_expiration_time(),
            (None, Some(t)) => t,
            (Some(e), Some(t)) => e.max(t),
        });
    }
    match (enc, vc.primary_key().key_expiration_time()) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Logs every local user's key within [`EXPIRY_NOTICE`] of its expiry (one warning each,
/// with the command that renews it) and returns how many there are, for a gauge. Meant to
/// run once a day.
///
/// # Errors
/// Store errors.
pub fn log_expiring(keyring: &Keyring, now: SystemTime) -> Result<usize, Error> {
    let expiring = keyring.expiring_local_keys(EXPIRY_NOTICE, now)?;
    for e in &expiring {
        let days = e
            .expires
            .duration_since(now)
            .map_or(0, |d| d.as_secs() / 86400);
        tracing::warn!(
            fingerprint = %e.fingerprint,
            addresses = %e.emails.join(", "),
            expires = %validity::date(e.expires),
            days,
            "a local user's key expires soon; renew it with `sealpost keys extend {} --expires 2y` \
             and publish the updated certificate",
            e.fingerprint
        );
    }
    Ok(expiring.len())
}

/// Runs [`log_expiring`] now and then once a day, off the async threads, for as long as
/// the task runs, and hands each count to `on_count` (a gauge). A failed check is logged
/// and tried again the next day.
pub async fn expiry_notices(keyring: Keyring, mut on_count: impl FnMut(usize) + Send) {
    let mut daily = tokio::time::interval(Duration::from_secs(24 * 60 * 60));
    daily.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        daily.tick().await;
        let k = keyring.clone();
        match tokio::task::spawn_blocking(move || log_expiring(&k, SystemTime::now())).await {
            Ok(Ok(n)) => on_count(n),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot check the local users' keys for expiry")
            }
            Err(e) => tracing::warn!(error = %e, "the expiry check did not finish"),
        }
    }
}

fn primary_signer(tsk: &Cert) -> Result<openpgp::crypto::KeyPair, Error> {
    tsk.primary_key()
        .key()
        .clone()
        .parts_into_secret()
        .and_then(|k| k.into_keypair())
        .map_err(crypto)
}

fn armor_signature(fpr: &Fingerprint, sig: &Signature) -> Result<Vec<u8>, Error> {
    let comment = format!("Revocation certificate for {fpr}");
    let mut out = Vec::new();
    let mut w = openpgp::armor::Writer::with_headers(
        &mut out,
        openpgp::armor::Kind::PublicKey,
        [("Comment", comment.as_str())],
    )
    .map_err(|e| Error::Crypto(e.to_string()))?;
    Packet::from(sig.clone())
        .serialize(&mut w)
        .map_err(crypto)?;
    w.finalize()?;
    Ok(out)
}
