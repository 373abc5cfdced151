//! The sealpost keyring: OpenPGP certificates and secret keys on disk, looked up by email
//! address, fingerprint or key ID, with their validity under the standard policy.
//!
//! [`Keyring`] is a cheap-to-clone handle (an `Arc` inside). Reads go through a bounded
//! cache of parsed certificates, so that a recipient lookup never parses a certificate from
//! bytes once it is warm. Every change is one atomic, durable batch.
#![forbid(unsafe_code)]

mod cert;
mod error;
mod generate;
mod lookup;
pub mod secret;
pub mod store;
mod validity;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use openpgp::crypto::Password;
use openpgp::packet::Packet;
use openpgp::parse::Parse;
use openpgp::policy::StandardPolicy;
use openpgp::serialize::SerializeInto;
use openpgp::{Cert, Fingerprint, KeyHandle, KeyID};
pub use sequoia_openpgp as openpgp;

pub use error::Error;
pub use generate::{Cipher, GenerateRequest, Profile};
pub use lookup::normalize_email;
pub use validity::{KeyInfo, SubkeyInfo, Validity};

use lookup::Query;
use secret::Sealer;
use store::{Op, Store, Tree};

/// How to open a keyring.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Encrypts secret keys at rest; `None` stores them as they are (files stay 0600).
    pub passphrase: Option<Password>,
    /// How many parsed certificates to keep in memory.
    pub cache_capacity: usize,
}

impl Default for OpenOptions {
    fn default() -> OpenOptions {
        OpenOptions {
            passphrase: None,
            cache_capacity: 10_000,
        }
    }
}

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

/// A cached answer to "can this certificate be encrypted to for this address?", valid
/// from `at` until `until` (the earliest expiry that could change it).
#[derive(Clone)]
struct Usable {
    at: SystemTime,
    until: Option<SystemTime>,
    answer: Result<(), String>,
}

/// A whole lookup answer for one address, valid from `at` until `until`.
#[derive(Clone)]
struct Lookup {
    at: SystemTime,
    until: Option<SystemTime>,
    answer: Result<Vec<Arc<Cert>>, Vec<String>>,
}

/// How long a negative answer is trusted without a change to the keyring: a certificate
/// created with a future date becomes valid with time alone.
const NEGATIVE_TTL: std::time::Duration = std::time::Duration::from_secs(60);

struct Inner {
    store: Box<dyn Store>,
    /// Answers by address; cleared on every change to the keyring.
    lookups: quick_cache::sync::Cache<String, Lookup>,
    sealer: Sealer,
    policy: StandardPolicy<'static>,
    certs: quick_cache::sync::Cache<Fingerprint, Arc<Cert>>,
    usable: quick_cache::sync::Cache<(Fingerprint, String), Usable>,
    /// Unlocked secret keys: few (local users), needed on every message.
    secrets: RwLock<HashMap<Fingerprint, Arc<Cert>>>,
    /// Serialises read-modify-write changes.
    writer: Mutex<()>,
}

/// The keyring handle.
#[derive(Clone)]
pub struct Keyring {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").finish_non_exhaustive()
    }
}

impl Keyring {
    /// Opens (creating if needed) the keyring in `dir`.
    ///
    /// # Errors
    /// `Error::Locked` when another process holds it, `Error::BadPassphrase` when the
    /// passphrase does not unlock it.
    pub fn open(dir: &Path, opts: OpenOptions) -> Result<Keyring, Error> {
        let store = store::sled::SledStore::open(dir)?;
        Keyring::with_store(Box::new(store), opts)
    }

    /// A keyring in memory, for tests and benchmarks.
    pub fn open_memory(opts: OpenOptions) -> Result<Keyring, Error> {
        Keyring::with_store(Box::new(store::memory::MemoryStore::new()), opts)
    }

    /// A keyring over any [`Store`].
    pub fn with_store(store: Box<dyn Store>, opts: OpenOptions) -> Result<Keyring, Error> {
        let sealer = Sealer::open(store.as_ref(), opts.passphrase.as_ref())?;
        let capacity = opts.cache_capacity.max(16);
        Ok(Keyring {
            inner: Arc::new(Inner {
                store,
                lookups: quick_cache::sync::Cache::new(capacity),
                sealer,
                policy: StandardPolicy::new(),
                certs: quick_cache::sync::Cache::new(capacity),
                usable: quick_cache::sync::Cache::new(capacity),
                secrets: RwLock::new(HashMap::new()),
                writer: Mutex::new(()),
            }),
        })
    }

    pub fn has_passphrase(&self) -> bool {
        self.inner.sealer.has_key()
    }

    /// The policy every validity check uses.
    pub fn policy(&self) -> &StandardPolicy<'static> {
        &self.inner.policy
    }

    /// Imports everything in `data`, all or nothing.
    ///
    /// # Errors
    /// `Error::Parse` for input that is not importable; nothing is changed then.
    pub fn import(&self, data: &[u8]) -> Result<Vec<ImportOutcome>, Error> {
        self.import_all(&[data]).map_err(|(_, e)| e)
    }

    /// Imports several inputs (files) as one change: every input is parsed before anything
    /// is stored, so a bad one leaves the keyring as it was.
    ///
    /// # Errors
    /// The index of the input that failed, and why.
    pub fn import_all(&self, inputs: &[&[u8]]) -> Result<Vec<ImportOutcome>, (usize, Error)> {
        let mut parsed = cert::Parsed::default();
        for (i, data) in inputs.iter().enumerate() {
            let p = cert::parse(data).map_err(|e| (i, e))?;
            parsed.certs.extend(p.certs);
            parsed.signatures.extend(p.signatures);
        }
        // A failure past parsing (a signature for an unknown certificate, a locked secret
        // key) cannot be pinned on one input; it is reported against the first.
        self.import_parsed(parsed).map_err(|e| (0, e))
    }

    fn import_parsed(&self, parsed: cert::Parsed) -> Result<Vec<ImportOutcome>, Error> {
        let _guard = self.lock_writer()?;
        let mut ops = Vec::new();
        let mut outcomes: Vec<ImportOutcome> = Vec::new();
        // The state of each certificate as this import leaves it, so that a keyring holding
        // the same certificate twice merges both copies.
        let mut pending: HashMap<Fingerprint, (Option<Vec<u8>>, Cert)> = HashMap::new();

        for incoming in parsed.certs {
            let fpr = incoming.fingerprint();
            if incoming
                .keys()
                .secret()
                .any(|ka| !ka.key().has_unencrypted_secret())
            {
                return Err(Error::SecretLocked {
                    fingerprint: fpr.to_hex(),
                });
            }
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

        let mut fprs: Vec<&Fingerprint> = pending.keys().collect();
        fprs.sort();
        for fpr in fprs {
            let (old_public, merged) = &pending[fpr];
            let public = merged.to_vec().map_err(|e| Error::Crypto(e.to_string()))?;
            let had_secret = self
                .inner
                .store
                .get(Tree::Secrets, fpr.as_bytes())?
                .is_some();
            let secret = merged.is_tsk();
            let status = match old_public {
                None => ImportStatus::New,
                Some(old) if *old != public || (secret && !had_secret) => ImportStatus::Updated,
                Some(_) => ImportStatus::Unchanged,
            };
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
                    ops.push(Op::Put(
                        Tree::Secrets,
                        fpr.as_bytes().to_vec(),
                        self.inner.sealer.seal(&tsk)?,
                    ));
                }
            }
            outcomes.push(ImportOutcome {
                fingerprint: fpr.clone(),
                user_ids: user_ids(merged),
                status,
                secret: secret || had_secret,
            });
        }
        self.inner.store.apply(ops)?;
        for o in &outcomes {
            if o.status != ImportStatus::Unchanged {
                self.invalidate(&o.fingerprint)?;
            }
        }
        Ok(outcomes)
    }

    /// Every certificate, sorted by primary user ID, then fingerprint.
    pub fn list(&self) -> Result<Vec<KeyInfo>, Error> {
        let now = SystemTime::now();
        let mut out = Vec::new();
        for (key, _) in self.inner.store.scan(Tree::Certs, b"")? {
            let fpr = fpr_from(&key)?;
            if let Some(cert) = self.get(&fpr)? {
                let has_secret = self.has_secret(&fpr)?;
                out.push(validity::info(&cert, has_secret, &self.inner.policy, now));
            }
        }
        out.sort_by(|a, b| {
            (a.user_ids.first(), &a.fingerprint).cmp(&(b.user_ids.first(), &b.fingerprint))
        });
        Ok(out)
    }

    /// One certificate as `keys show` presents it, at the current time.
    pub fn info(&self, cert: &Cert) -> KeyInfo {
        let has_secret = self.has_secret(&cert.fingerprint()).unwrap_or(false);
        validity::info(cert, has_secret, &self.inner.policy, SystemTime::now())
    }

    /// All certificates matching an email address, fingerprint or key ID (of the primary
    /// key or a subkey), whatever their validity.
    ///
    /// # Errors
    /// `Error::Parse` when the query is none of these.
    pub fn find(&self, query: &str) -> Result<Vec<Arc<Cert>>, Error> {
        let q = Query::parse(query).ok_or_else(|| Error::Parse {
            reason: format!(
                "{query:?} is not an email address, a fingerprint (40 or 64 hex digits) \
                 or a key ID (16 hex digits)"
            ),
        })?;
        let fprs = match q {
            Query::Email(email) => self.fingerprints_for_email(&email)?,
            Query::Fingerprint(f) => self.fingerprints_for(&KeyHandle::from(f))?,
            Query::KeyId(id) => self.fingerprints_for(&KeyHandle::from(id))?,
        };
        let mut out = Vec::new();
        for f in fprs {
            if let Some(c) = self.get(&f)? {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// The public certificate with this primary fingerprint.
    pub fn get(&self, fpr: &Fingerprint) -> Result<Option<Arc<Cert>>, Error> {
        if let Some(c) = self.inner.certs.get(fpr) {
            return Ok(Some(c));
        }
        match self.load_public(fpr)? {
            Some(cert) => {
                let cert = Arc::new(cert);
                self.inner.certs.insert(fpr.clone(), cert.clone());
                Ok(Some(cert))
            }
            None => Ok(None),
        }
    }

    /// Certificates usable for encryption to `email` at `now`.
    ///
    /// # Errors
    /// `Error::NoUsableKey` with one reason per candidate when none is usable.
    pub fn lookup_encryption(&self, email: &str, now: SystemTime) -> Result<Vec<Arc<Cert>>, Error> {
        let Some(email) = lookup::index_form(email) else {
            return Err(Error::NoUsableKey {
                email: email.to_string(),
                reasons: vec!["not an email address".into()],
            });
        };
        if let Some(hit) = self
            .inner
            .lookups
            .get(&email)
            .filter(|l| l.at <= now && l.until.is_none_or(|t| now < t))
        {
            return hit
                .answer
                .map_err(|reasons| Error::NoUsableKey { email, reasons });
        }
        let mut usable = Vec::new();
        let mut reasons = Vec::new();
        // The whole answer holds until the earliest expiry among the certificates in it.
        let mut until: Option<SystemTime> = None;
        for fpr in self.fingerprints_for_email(&email)? {
            let Some(cert) = self.get(&fpr)? else {
                continue;
            };
            let key = (fpr, email.clone());
            let cached = self
                .inner
                .usable
                .get(&key)
                .filter(|u| u.at <= now && u.until.is_none_or(|t| now < t));
            let entry = match cached {
                Some(u) => u,
                None => {
                    let entry = match validity::usable_for(&cert, &email, &self.inner.policy, now) {
                        Ok(until) => Usable {
                            at: now,
                            until,
                            answer: Ok(()),
                        },
                        Err(r) => Usable {
                            at: now,
                            until: Some(now + NEGATIVE_TTL),
                            answer: Err(r),
                        },
                    };
                    self.inner.usable.insert(key, entry.clone());
                    entry
                }
            };
            until = earliest(until, entry.until);
            match entry.answer {
                Ok(()) => usable.push(cert),
                Err(r) => reasons.push(r),
            }
        }
        let answer = if usable.is_empty() {
            if reasons.is_empty() {
                reasons.push("no certificate for this address".into());
                until = Some(now + NEGATIVE_TTL);
            }
            Err(reasons)
        } else {
            Ok(usable)
        };
        self.inner.lookups.insert(
            email.clone(),
            Lookup {
                at: now,
                until,
                answer: answer.clone(),
            },
        );
        answer.map_err(|reasons| Error::NoUsableKey { email, reasons })
    }

    /// The unlocked secret key (TSK) holding the key `handle` names, primary or subkey.
    pub fn secret_for(&self, handle: &KeyHandle) -> Result<Option<Arc<Cert>>, Error> {
        for fpr in self.fingerprints_for(handle)? {
            if let Some(tsk) = self.unlocked(&fpr)? {
                return Ok(Some(tsk));
            }
        }
        Ok(None)
    }

    /// A secret key whose valid user ID has this address and that can sign at `now`.
    pub fn signing_cert_for(
        &self,
        email: &str,
        now: SystemTime,
    ) -> Result<Option<Arc<Cert>>, Error> {
        let Some(email) = lookup::index_form(email) else {
            return Ok(None);
        };
        for fpr in self.fingerprints_for_email(&email)? {
            let Some(tsk) = self.unlocked(&fpr)? else {
                continue;
            };
            let uid_ok = tsk.with_policy(&self.inner.policy, now).is_ok_and(|vc| {
                vc.userids()
                    .revoked(false)
                    .any(|ua| lookup::userid_email(ua.userid()).as_deref() == Some(&email))
            });
            if uid_ok && validity::can_sign(&tsk, &self.inner.policy, now) {
                return Ok(Some(tsk));
            }
        }
        Ok(None)
    }

    pub fn has_secret(&self, fpr: &Fingerprint) -> Result<bool, Error> {
        Ok(self
            .inner
            .store
            .get(Tree::Secrets, fpr.as_bytes())?
            .is_some())
    }

    /// The certificate, armored; with `secret`, the secret key too.
    ///
    /// # Errors
    /// `Error::NotFound`, or `Error::NoSecret` when the secret key is asked for but absent.
    pub fn export(&self, fpr: &Fingerprint, secret: bool) -> Result<Vec<u8>, Error> {
        let crypto = |e: openpgp::anyhow::Error| Error::Crypto(e.to_string());
        if secret {
            let tsk = self
                .unlocked(fpr)?
                .ok_or_else(|| Error::NoSecret(fpr.to_hex()))?;
            let armored = tsk.as_tsk().armored().to_vec().map_err(crypto);
            armored
        } else {
            let cert = self
                .get(fpr)?
                .ok_or_else(|| Error::NotFound(fpr.to_hex()))?;
            let armored = cert.armored().to_vec().map_err(crypto);
            armored
        }
    }

    /// Removes a certificate, its secret key and its index entries. `false` if absent.
    pub fn remove(&self, fpr: &Fingerprint) -> Result<bool, Error> {
        let _guard = self.lock_writer()?;
        let Some(cert) = self.load_public(fpr)? else {
            return Ok(false);
        };
        let mut ops = self.index_ops(&cert, false);
        ops.push(Op::Delete(Tree::Certs, fpr.as_bytes().to_vec()));
        ops.push(Op::Delete(Tree::Secrets, fpr.as_bytes().to_vec()));
        self.inner.store.apply(ops)?;
        self.invalidate(fpr)?;
        Ok(true)
    }

    /// Generates a key pair and stores it.
    pub fn generate(&self, req: &GenerateRequest) -> Result<Arc<Cert>, Error> {
        let cert = generate::generate(req)?;
        let tsk = cert
            .as_tsk()
            .to_vec()
            .map_err(|e| Error::Crypto(e.to_string()))?;
        self.import(&tsk)?;
        self.get(&cert.fingerprint())?
            .ok_or_else(|| Error::Store("the generated key was not stored".into()))
    }

    /// The domains of the addresses of certificates with a secret key: the default local
    /// domains of an inbound listener.
    pub fn secret_domains(&self) -> Result<Vec<String>, Error> {
        let mut out = Vec::new();
        for (key, _) in self.inner.store.scan(Tree::Secrets, b"")? {
            let fpr = fpr_from(&key)?;
            if let Some(cert) = self.get(&fpr)? {
                for email in lookup::emails(&cert) {
                    if let Some((_, d)) = email.rsplit_once('@') {
                        out.push(d.to_string());
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    pub fn flush(&self) -> Result<(), Error> {
        self.inner.store.flush()
    }

    fn lock_writer(&self) -> Result<std::sync::MutexGuard<'_, ()>, Error> {
        self.inner
            .writer
            .lock()
            .map_err(|_| Error::Store("keyring writer lock poisoned".into()))
    }

    fn load_public(&self, fpr: &Fingerprint) -> Result<Option<Cert>, Error> {
        match self.inner.store.get(Tree::Certs, fpr.as_bytes())? {
            Some(bytes) => Cert::from_bytes(&bytes)
                .map(Some)
                .map_err(|e| Error::Store(format!("stored certificate {fpr} is corrupt: {e}"))),
            None => Ok(None),
        }
    }

    fn load_secret(&self, fpr: &Fingerprint) -> Result<Option<Cert>, Error> {
        match self.inner.store.get(Tree::Secrets, fpr.as_bytes())? {
            Some(record) => {
                let bytes = self.inner.sealer.open_record(&record)?;
                Cert::from_bytes(&bytes)
                    .map(Some)
                    .map_err(|e| Error::Store(format!("stored secret key {fpr} is corrupt: {e}")))
            }
            None => Ok(None),
        }
    }

    fn unlocked(&self, fpr: &Fingerprint) -> Result<Option<Arc<Cert>>, Error> {
        if let Some(c) = self
            .inner
            .secrets
            .read()
            .map_err(|_| Error::Store("secret cache poisoned".into()))?
            .get(fpr)
        {
            return Ok(Some(c.clone()));
        }
        let Some(tsk) = self.load_secret(fpr)? else {
            return Ok(None);
        };
        let tsk = Arc::new(tsk);
        self.inner
            .secrets
            .write()
            .map_err(|_| Error::Store("secret cache poisoned".into()))?
            .insert(fpr.clone(), tsk.clone());
        Ok(Some(tsk))
    }

    fn fingerprints_for_email(&self, email: &str) -> Result<Vec<Fingerprint>, Error> {
        let prefix = lookup::email_prefix(email);
        Ok(self
            .inner
            .store
            .scan(Tree::Emails, &prefix)?
            .into_iter()
            .filter_map(|(k, _)| k.get(prefix.len()..).and_then(|raw| fpr_from(raw).ok()))
            .collect())
    }

    /// Primary fingerprints of the certificates that contain the key `handle` names.
    fn fingerprints_for(&self, handle: &KeyHandle) -> Result<Vec<Fingerprint>, Error> {
        let id = KeyID::from(handle);
        let mut out = Vec::new();
        for (k, _) in self.inner.store.scan(Tree::KeyIds, id.as_bytes())? {
            let fpr = fpr_from(k.get(id.as_bytes().len()..).unwrap_or_default())?;
            if let KeyHandle::Fingerprint(want) = handle {
                // A key ID is a part of the fingerprint: confirm the full one.
                match self.get(&fpr)? {
                    Some(c) if c.keys().any(|ka| &ka.key().fingerprint() == want) => {}
                    _ => continue,
                }
            }
            out.push(fpr);
        }
        Ok(out)
    }

    fn index_ops(&self, cert: &Cert, put: bool) -> Vec<Op> {
        let fpr = cert.fingerprint();
        let mut keys: Vec<(Tree, Vec<u8>)> = lookup::emails(cert)
            .iter()
            .map(|e| (Tree::Emails, lookup::email_key(e, &fpr)))
            .collect();
        keys.extend(
            lookup::keyids(cert)
                .iter()
                .map(|id| (Tree::KeyIds, lookup::keyid_key(id, &fpr))),
        );
        keys.into_iter()
            .map(|(t, k)| {
                if put {
                    Op::Put(t, k, Vec::new())
                } else {
                    Op::Delete(t, k)
                }
            })
            .collect()
    }

    fn invalidate(&self, fpr: &Fingerprint) -> Result<(), Error> {
        self.inner.certs.remove(fpr);
        // Any address may have gained or lost this certificate.
        self.inner.lookups.clear();
        // Entries are keyed by (fingerprint, email); the emails may have changed, so drop
        // every entry of this certificate.
        self.inner.usable.retain(|(f, _), _| f != fpr);
        self.inner
            .secrets
            .write()
            .map_err(|_| Error::Store("secret cache poisoned".into()))?
            .remove(fpr);
        Ok(())
    }
}

fn earliest(a: Option<SystemTime>, b: Option<SystemTime>) -> Option<SystemTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A stored fingerprint: 20 bytes for v4, 32 for v6.
fn fpr_from(raw: &[u8]) -> Result<Fingerprint, Error> {
    let version = if raw.len() == 32 { 6 } else { 4 };
    Fingerprint::from_bytes(version, raw)
        .map_err(|e| Error::Store(format!("corrupt index entry: {e}")))
}

fn user_ids(cert: &Cert) -> Vec<String> {
    cert.userids()
        .map(|ua| {
            String::from_utf8_lossy(ua.userid().value())
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests;
