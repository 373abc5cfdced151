//! Importing key material: parse everything first, merge with what is stored, then write
//! one atomic batch, so that bad input changes nothing.

use std::collections::HashMap;
use std::time::SystemTime;

use openpgp::crypto::Password;
use openpgp::packet::Packet;
use openpgp::parse::Parse;
use openpgp::serialize::SerializeInto;
use openpgp::{Cert, Fingerprint};
use sequoia_openpgp as openpgp;

use crate::store::{Op, Tree};
use crate::trust::{meta_op, secs, KeyMeta, Source, Trust};
use crate::{cert, Error, Keyring};

/// What importing did to one certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportStatus {
    New,
    Updated,
    Unchanged,
}

#[derive(Debug, Clone)]
pub struct ImportOutcome {
    pub fingerprint: Fingerprint,
    pub user_ids: Vec<String>,
    pub status: ImportStatus,
    /// The keyring holds secret key material for this certificate after the import.
    pub secret: bool,
}

/// A certificate's stored public form before the import (if any) and its merged state.
type Pending = (Option<Vec<u8>>, Cert);

impl Keyring {
    /// Imports everything in `data`, all or nothing.
    ///
    /// # Errors
    /// `Error::Parse` for input that is not importable; nothing is changed then.
    pub fn import(&self, data: &[u8]) -> Result<Vec<ImportOutcome>, Error> {
        self.import_all(&[data]).map_err(|(_, e)| e)
    }

    /// [`Keyring::import_all`] with passphrases for password-protected secret keys (as
    /// gpg exports them): each is tried, then the keyring's own; an unlocked key is then
    /// sealed like every other secret key here.
    ///
    /// # Errors
    /// As `import_all`; `Error::SecretLocked` when no passphrase unlocks a key.
    pub fn import_all_with(
        &self,
        inputs: &[&[u8]],
        passphrases: &[Password],
    ) -> Result<Vec<ImportOutcome>, (usize, Error)> {
        let parsed = parse_inputs(inputs)?;
        let opts = ImportOptions {
            passphrases,
            ..ImportOptions::default()
        };
        self.import_parsed(parsed, opts).map_err(|e| (0, e))
    }

    /// Imports several inputs (files) as one change: every input is parsed before anything
    /// is stored, so a bad one leaves the keyring as it was.
    ///
    /// # Errors
    /// The index of the input that failed, and why.
    pub fn import_all(&self, inputs: &[&[u8]]) -> Result<Vec<ImportOutcome>, (usize, Error)> {
        let parsed = parse_inputs(inputs)?;
        // A failure past parsing (a signature for an unknown certificate, a locked secret
        // key) cannot be pinned on one input; it is reported against the first.
        self.import_parsed(parsed, ImportOptions::default())
            .map_err(|e| (0, e))
    }

    pub(crate) fn import_parsed(
        &self,
        parsed: cert::Parsed,
        opts: ImportOptions<'_>,
    ) -> Result<Vec<ImportOutcome>, Error> {
        let _guard = self.lock_writer()?;
        let mut ops = opts.extra;
        let now = SystemTime::now();
        // New secret-key records, and the ones they replace (whose keys go afterwards).
        let mut sealed: Vec<Vec<u8>> = Vec::new();
        let mut replaced: Vec<Vec<u8>> = Vec::new();
        let mut outcomes: Vec<ImportOutcome> = Vec::new();
        // The state of each certificate as this import leaves it, so that a keyring holding
        // the same certificate twice merges both copies.
        let mut pending: HashMap<Fingerprint, Pending> = HashMap::new();

        for incoming in parsed.certs {
            let fpr = incoming.fingerprint();
            let mut passphrases: Vec<&Password> = opts.passphrases.iter().collect();
            passphrases.extend(self.inner.passphrase.as_ref());
            let incoming = unlock(incoming, &passphrases)?;
            let (old_public, base) = match pending.remove(&fpr) {
                Some(p) => p,
                None => {
                    let old_public = self.inner.store.get(Tree::Certs, fpr.as_bytes())?;
                    let base = match self.load_secret(&fpr)? {
                        Some(tsk) => Some(tsk),
                        None => old_public
                            .as_deref()
                            .map(Cert::from_bytes)
                            .transpose()
                            .map_err(|e| Error::Store(e.to_string()))?,
                    };
                    (old_public, base.unwrap_or_else(|| incoming.clone()))
                }
            };
            let merged = base
                .merge_public_and_secret(incoming)
                .map_err(|e| Error::Parse {
                    reason: format!("cannot merge {fpr}: {e}"),
                })?;
            pending.insert(fpr, (old_public, merged));
        }

        for sig in parsed.signatures {
            let target = sig
                .get_issuers()
                .iter()
                .find_map(|h| self.fingerprints_for(h).ok()?.into_iter().next())
                .ok_or_else(|| Error::Parse {
                    reason: "the signature is for a certificate that is not in the keyring; \
                             import the certificate first"
                        .into(),
                })?;
            let (old_public, base) = match pending.remove(&target) {
                Some(p) => p,
                None => {
                    let old_public = self.inner.store.get(Tree::Certs, target.as_bytes())?;
                    let base = match self.load_secret(&target)? {
                        Some(tsk) => tsk,
                        None => self
                            .load_public(&target)?
                            .ok_or_else(|| Error::NotFound(target.to_hex()))?,
                    };
                    (old_public, base)
                }
            };
            let (merged, _) = base
                .insert_packets(std::iter::once(Packet::from(sig)))
                .map_err(|e| Error::Parse {
                    reason: format!("cannot apply the signature to {target}: {e}"),
                })?;
            pending.insert(target, (old_public, merged));
        }

        let mut pending: Vec<(Fingerprint, Pending)> = pending.into_iter().collect();
        pending.sort_by(|a, b| a.0.cmp(&b.0));
        for (fpr, (old_public, merged)) in &pending {
            let public = merged.to_vec().map_err(|e| Error::Crypto(e.to_string()))?;
            let had_secret = self
                .inner
                .store
                .get(Tree::Secrets, fpr.as_bytes())?
                .is_some();
            let secret = merged.is_tsk();
            let mut status = match old_public {
                None => ImportStatus::New,
                Some(old) if *old != public || (secret && !had_secret) => ImportStatus::Updated,
                Some(_) => ImportStatus::Unchanged,
            };
            // An admin's import pins: a discovered certificate the admin imports is
            // trusted as if imported first.
            if !opts.keep_trust {
                let meta = match self.inner.store.get(Tree::Trust, fpr.as_bytes())? {
                    Some(_) => Some(self.key_meta(fpr)?),
                    None => None,
                };
                match meta {
                    None if status == ImportStatus::New => {
                        ops.push(meta_op(fpr, &KeyMeta::found(Source::Admin, now))?);
                    }
                    Some(m) if m.trust != Trust::Pinned => {
                        let pinned = KeyMeta {
                            source: Source::Admin,
                            trust: Trust::Pinned,
                            since: m.since,
                            updated: Some(secs(now)),
                        };
                        ops.push(meta_op(fpr, &pinned)?);
                        if status == ImportStatus::Unchanged {
                            status = ImportStatus::Updated;
                        }
                    }
                    _ => {}
                }
            }
            if status != ImportStatus::Unchanged {
                if let Some(old) = old_public {
                    let old = Cert::from_bytes(old).map_err(|e| Error::Store(e.to_string()))?;
                    ops.extend(self.index_ops(&old, false));
                }
                ops.extend(self.index_ops(merged, true));
                ops.push(Op::Put(Tree::Certs, fpr.as_bytes().to_vec(), public));
                if secret {
                    let tsk = merged
                        .as_tsk()
                        .to_vec()
                        .map_err(|e| Error::Crypto(e.to_string()))?;
                    let tsk = zeroize::Zeroizing::new(tsk);
                    let record = self.seal_secret(&tsk)?;
                    if let Some(old) = self.inner.store.get(Tree::Secrets, fpr.as_bytes())? {
                        replaced.push(old);
                    }
                    sealed.push(record.clone());
                    ops.push(Op::Put(Tree::Secrets, fpr.as_bytes().to_vec(), record));
                }
            }
            outcomes.push(ImportOutcome {
                fingerprint: fpr.clone(),
                user_ids: user_ids(merged),
                status,
                secret: secret || had_secret,
            });
        }
        if let Err(e) = self.inner.store.apply(ops) {
            for record in &sealed {
                let _ = self.inner.vault.destroy(record);
            }
            return Err(e);
        }
        // The replaced records linger in the store's files; their keys must not.
        let mut destroyed = false;
        for record in replaced
            .iter()
            .filter(|r| sealpost_vault::vault::is_record(r))
        {
            self.inner.vault.destroy(record)?;
            destroyed = true;
        }
        if destroyed {
            self.inner.vault.sync()?;
        }
        for o in &outcomes {
            if o.status != ImportStatus::Unchanged {
                self.invalidate(&o.fingerprint)?;
            }
        }
        Ok(outcomes)
    }
}

/// Removes the password protection of imported secret keys with the keyring passphrase:
/// the keyring seals secrets as a whole, and a key that needs its own password on every
/// message could not be used unattended.
///
/// # Errors
/// `Error::SecretLocked` when a key is protected and the keyring passphrase (if any) does
/// not unlock it.
fn unlock(cert: Cert, passphrases: &[&Password]) -> Result<Cert, Error> {
    let fingerprint = cert.fingerprint();
    let locked = || Error::SecretLocked {
        fingerprint: fingerprint.to_hex(),
    };
    let mut unlocked: Vec<Packet> = Vec::new();
    for ka in cert.keys().secret() {
        if ka.key().has_unencrypted_secret() {
            continue;
        }
        let key = passphrases
            .iter()
            .find_map(|pass| ka.key().clone().decrypt_secret(pass).ok())
            .ok_or_else(locked)?;
        unlocked.push(if ka.key().fingerprint() == fingerprint {
            Packet::from(key.role_into_primary())
        } else {
            Packet::from(key.role_into_subordinate())
        });
    }
    if unlocked.is_empty() {
        return Ok(cert);
    }
    let crypto = |e: openpgp::anyhow::Error| Error::Crypto(e.to_string());
    let (cert, _) = cert.insert_packets(unlocked).map_err(crypto)?;
    if cert
        .keys()
        .secret()
        .any(|ka| !ka.key().has_unencrypted_secret())
    {
        return Err(locked());
    }
    Ok(cert)
}

/// How an import treats what it stores.
#[derive(Default)]
pub(crate) struct ImportOptions<'a> {
    /// Passphrases that may unlock password-protected secret keys, tried before the
    /// keyring's own.
    pub passphrases: &'a [Password],
    /// Leaves the trust records alone (a restore brings its own); otherwise what is
    /// imported is pinned, as an admin's import.
    pub keep_trust: bool,
    /// More changes for the same atomic batch.
    pub extra: Vec<Op>,
}

fn parse_inputs(inputs: &[&[u8]]) -> Result<cert::Parsed, (usize, Error)> {
    let mut parsed = cert::Parsed::default();
    for (i, data) in inputs.iter().enumerate() {
        let p = cert::parse(data).map_err(|e| (i, e))?;
        parsed.certs.extend(p.certs);
        parsed.signatures.extend(p.signatures);
    }
    Ok(parsed)
}

pub(crate) fn user_ids(cert: &Cert) -> Vec<String> {
    cert.userids()
        .map(|ua| {
            String::from_utf8_lossy(ua.userid().value())
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect()
        })
        .collect()
}
