//! The sealpost keyring: OpenPGP certificates and secret keys on disk, looked up by email
//! address, fingerprint or key ID, with their validity under the standard policy.
//!
//! [`Keyring`] is a cheap-to-clone handle (an `Arc` inside). Reads go through a bounded
//! cache of parsed certificates, so that a recipient lookup never parses a certificate from
//! bytes once it is warm. Every change is one atomic, durable batch.
#![forbid(unsafe_code)]

pub mod autocrypt;
mod backup;
mod cache;
mod cert;
mod error;
mod generate;
mod import;
mod lifecycle;
mod lookup;
mod misses;
mod offer;
mod review;
pub mod secret;
pub mod store;
mod trust;
mod validity;
mod wkd;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use openpgp::crypto::Password;
use openpgp::parse::Parse;
use openpgp::policy::StandardPolicy;
use openpgp::serialize::SerializeInto;
use openpgp::{Cert, Fingerprint, KeyHandle};
pub use sequoia_openpgp as openpgp;

pub use backup::{BackupCounts, BackupTo, Copied, RestoreWith};
pub use error::Error;
pub use generate::{Cipher, GenerateRequest, Profile};
pub use import::{ImportOutcome, ImportStatus};
pub use lifecycle::{expiry_notices, log_expiring, Expiring, EXPIRY_NOTICE};
pub use lookup::{normalize_email, userid_email};
pub use misses::Miss;
pub use offer::{Ignored, Offer};
pub use review::{Accepted, ReviewEntry, MAX_QUEUED_PER_ADDRESS};
pub use trust::{KeyMeta, Source, Trust};
pub use validity::{KeyInfo, SubkeyInfo, Validity};
pub use wkd::{wkd_name, WkdCerts, WkdExport};

use cache::{Lookup, Usable};
use lookup::{fpr_from, Query};
use sealpost_vault::legacy::Sealer;
use sealpost_vault::Owner;
pub use sealpost_vault::{vault, Vault};
use store::{Op, Store, Tree};

/// How to open a keyring.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Seals the vault that holds the keys of secret keys at rest ([`vault`]); `None`
    /// leaves those keys as they are (files stay 0600).
    pub passphrase: Option<Password>,
    /// The data directory's vault when the caller has it open already (it is shared with
    /// the spool); otherwise the keyring opens `DIR/vault` (or one in memory).
    pub vault: Option<Arc<Vault>>,
    /// How many parsed certificates to keep in memory.
    pub cache_capacity: usize,
}

impl Default for OpenOptions {
    fn default() -> OpenOptions {
        OpenOptions {
            passphrase: None,
            cache_capacity: 10_000,
            vault: None,
        }
    }
}

struct Inner {
    store: Box<dyn Store>,
    /// Answers by address; cleared on every change to the keyring.
    lookups: quick_cache::sync::Cache<String, Lookup>,
    /// Holds the key of each secret-key record.
    vault: Arc<Vault>,
    /// Reads records written before the vault, to move them into it; on a shared store,
    /// the passphrase's key that seals every secret-key record.
    legacy: Sealer,
    /// Whether the store is shared by several gateways.
    shared: bool,
    /// Unlocks password-protected secret keys on import.
    passphrase: Option<Password>,
    policy: StandardPolicy<'static>,
    certs: quick_cache::sync::Cache<Fingerprint, Arc<Cert>>,
    usable: quick_cache::sync::Cache<(Fingerprint, String), Usable>,
    /// Trust records, read on every lookup that weighs trust.
    metas: quick_cache::sync::Cache<Fingerprint, KeyMeta>,
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
    pub fn open(dir: &Path, mut opts: OpenOptions) -> Result<Keyring, Error> {
        let store = store::sled::SledStore::open(dir)?;
        if opts.vault.is_none() {
            opts.vault = Some(Vault::open(&dir.join("vault"), opts.passphrase.as_ref())?);
        }
        Keyring::with_store(Box::new(store), opts)
    }

    /// A keyring in memory, for tests and benchmarks.
    pub fn open_memory(opts: OpenOptions) -> Result<Keyring, Error> {
        Keyring::with_store(Box::new(store::memory::MemoryStore::new()), opts)
    }

    /// A keyring in the PostgreSQL database at `url`, shared with other gateways (see
    /// [`store::postgres`]). Secret keys are sealed under the passphrase itself there, so
    /// the database never holds a usable secret key and every gateway with the passphrase
    /// can use them; the first gateway to bring a passphrase sets it, and one with another
    /// passphrase is refused.
    ///
    /// # Errors
    /// `Error::Unavailable` when the database cannot be reached; `Error::Store` for a
    /// malformed URL or a database that is not sealpost's; `Error::BadPassphrase`.
    pub fn open_url(url: &str, opts: OpenOptions) -> Result<Keyring, Error> {
        let store = store::postgres::PostgresStore::open(url)?;
        Keyring::with_store(Box::new(store), opts)
    }

    /// A keyring over any [`Store`]. On a store of its own, secret-key records written
    /// before the vault are moved into it, and vault slots of the keyring that no record
    /// names (left by a crash during a removal) are cleared.
    pub fn with_store(store: Box<dyn Store>, opts: OpenOptions) -> Result<Keyring, Error> {
        let vault = match opts.vault.clone() {
            Some(v) => v,
            None => Vault::in_memory(opts.passphrase.as_ref())?,
        };
        let shared = store.shared();
        let legacy = if shared {
            secret::shared_sealer(store.as_ref(), opts.passphrase.as_ref())?
        } else {
            let legacy = secret::legacy_sealer(store.as_ref(), opts.passphrase.as_ref())?;
            move_into_vault(store.as_ref(), &vault, &legacy)?;
            let live: Vec<Vec<u8>> = store
                .scan(Tree::Secrets, b"")?
                .into_iter()
                .map(|(_, v)| v)
                .collect();
            vault.retain(Owner::Keyring, &live)?;
            legacy
        };
        let capacity = opts.cache_capacity.max(16);
        let keyring = Keyring {
            inner: Arc::new(Inner {
                store,
                lookups: quick_cache::sync::Cache::new(capacity),
                vault,
                legacy,
                shared,
                passphrase: opts.passphrase,
                policy: StandardPolicy::new(),
                certs: quick_cache::sync::Cache::new(capacity),
                usable: quick_cache::sync::Cache::new(capacity),
                metas: quick_cache::sync::Cache::new(capacity),
                secrets: RwLock::new(HashMap::new()),
                writer: Mutex::new(()),
            }),
        };
        // Another gateway's change, or a reconnect that may have missed some: every cached
        // answer may be stale.
        let weak = Arc::downgrade(&keyring.inner);
        keyring.inner.store.on_change(Box::new(move || {
            if let Some(inner) = weak.upgrade() {
                inner.forget_all();
            }
        }));
        Ok(keyring)
    }

    pub fn has_passphrase(&self) -> bool {
        if self.inner.shared {
            self.inner.legacy.has_key()
        } else {
            self.inner.vault.has_passphrase()
        }
    }

    /// Whether the store is shared with other gateways (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        self.inner.shared
    }

    /// Asks the store for one small record: `Error::Unavailable` when it cannot be
    /// reached now. Free on a store of its own, one round trip on a shared one.
    /// On a shared store, this process's passphrase must still be the keyring's: another
    /// process may have changed it, after which this one can use no secret key.
    pub fn reachable(&self) -> Result<(), Error> {
        if self.inner.shared {
            secret::check_current(self.inner.store.as_ref(), &self.inner.legacy)?;
        }
        Ok(())
    }

    /// The vault holding the keys of the secret-key records.
    pub fn vault(&self) -> &Arc<Vault> {
        &self.inner.vault
    }

    /// The policy every validity check uses.
    pub fn policy(&self) -> &StandardPolicy<'static> {
        &self.inner.policy
    }

    /// Every certificate, sorted by primary user ID, then fingerprint.
    pub fn list(&self) -> Result<Vec<KeyInfo>, Error> {
        let now = SystemTime::now();
        let mut out = Vec::new();
        for (key, _) in self.inner.store.scan(Tree::Certs, b"")? {
            let fpr = fpr_from(&key)?;
            if let Some(cert) = self.get(&fpr)? {
                let has_secret = self.has_secret(&fpr)?;
                let mut info = validity::info(&cert, has_secret, &self.inner.policy, now);
                info.trust = Some(self.key_meta(&fpr)?);
                out.push(info);
            }
        }
        out.sort_by(|a, b| {
            (a.user_ids.first(), &a.fingerprint).cmp(&(b.user_ids.first(), &b.fingerprint))
        });
        Ok(out)
    }

    /// How many certificates can be encrypted to now but no longer `within` from now
    /// (expiring keys, for monitoring).
    pub fn expiring_within(&self, within: std::time::Duration) -> Result<usize, Error> {
        let now = SystemTime::now();
        let later = now.checked_add(within).unwrap_or(now);
        let mut n = 0;
        for (key, _) in self.inner.store.scan(Tree::Certs, b"")? {
            let fpr = fpr_from(&key)?;
            if let Some(cert) = self.get(&fpr)? {
                let usable = |t| {
                    matches!(
                        validity::validity(&cert, &self.inner.policy, t),
                        validity::Validity::Usable { .. }
                    )
                };
                if usable(now) && !usable(later) {
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// One certificate as `keys show` presents it, at the current time.
    pub fn info(&self, cert: &Cert) -> KeyInfo {
        let has_secret = self.has_secret(&cert.fingerprint()).unwrap_or(false);
        let mut info = validity::info(cert, has_secret, &self.inner.policy, SystemTime::now());
        info.trust = self.key_meta(&cert.fingerprint()).ok();
        info
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
                // Sequoia verifies binding signatures lazily and keeps the result in the
                // certificate; a clone carries it. Verified once here, on the cached copy,
                // they are not verified again for every message that clones it.
                let _ = cert.keys().with_policy(&self.inner.policy, None).count();
                let cert = Arc::new(cert);
                self.inner.certs.insert(fpr.clone(), cert.clone());
                Ok(Some(cert))
            }
            None => Ok(None),
        }
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

    /// The secret key of `fpr`, armored, with each key's secret material encrypted under
    /// `password` (sequoia's S2K and cipher defaults), so that the export can travel and
    /// rest without the keyring's protection.
    ///
    /// # Errors
    /// `NoSecret` when the keyring holds no secret key for `fpr`; `Crypto` when a key
    /// cannot be encrypted or serialized.
    pub fn export_protected(
        &self,
        fpr: &Fingerprint,
        password: &Password,
    ) -> Result<Vec<u8>, Error> {
        use openpgp::Packet;
        let crypto = |e: openpgp::anyhow::Error| Error::Crypto(e.to_string());
        let tsk = self
            .unlocked(fpr)?
            .ok_or_else(|| Error::NoSecret(fpr.to_hex()))?;
        // `Cert::into_packets` drops secret material; the TSK view keeps it.
        let packets = Cert::clone(&tsk)
            .into_tsk()
            .into_packets()
            .map(|p| match p {
                Packet::SecretKey(k) => k.encrypt_secret(password).map(Packet::SecretKey),
                Packet::SecretSubkey(k) => k.encrypt_secret(password).map(Packet::SecretSubkey),
                other => Ok(other),
            })
            .collect::<openpgp::Result<Vec<_>>>()
            .map_err(crypto)?;
        let protected = Cert::from_packets(packets.into_iter()).map_err(crypto)?;
        let armored = protected.as_tsk().armored().to_vec().map_err(crypto);
        armored
    }

    /// Removes a certificate, its secret key and its index entries. `false` if absent.
    pub fn remove(&self, fpr: &Fingerprint) -> Result<bool, Error> {
        let _guard = self.lock_writer()?;
        let Some(cert) = self.load_public(fpr)? else {
            return Ok(false);
        };
        let secret = self.inner.store.get(Tree::Secrets, fpr.as_bytes())?;
        let mut ops = self.index_ops(&cert, false);
        ops.push(Op::Delete(Tree::Certs, fpr.as_bytes().to_vec()));
        ops.push(Op::Delete(Tree::Secrets, fpr.as_bytes().to_vec()));
        ops.push(Op::Delete(Tree::Trust, fpr.as_bytes().to_vec()));
        ops.push(Op::Delete(Tree::Revocations, fpr.as_bytes().to_vec()));
        self.inner.store.apply(ops)?;
        // The store may keep the removed record in its files: destroying its key is what
        // makes it unreadable there.
        if let Some(record) = secret.filter(|r| vault::is_record(r)) {
            self.inner.vault.destroy(&record)?;
            self.inner.vault.sync()?;
        }
        self.invalidate(fpr)?;
        Ok(true)
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

    /// Serialises read-modify-write changes: this process's writers with the mutex, and
    /// every gateway's with the store's own lock when the store is shared.
    fn lock_writer(&self) -> Result<WriteGuard<'_>, Error> {
        let local = self
            .inner
            .writer
            .lock()
            .map_err(|_| Error::Store("keyring writer lock poisoned".into()))?;
        self.inner.store.begin_write()?;
        Ok(WriteGuard {
            _local: local,
            store: self.inner.store.as_ref(),
        })
    }

    /// Seals a secret key (TSK) for the store: under a vault key of its own, or on a
    /// shared store under the passphrase, which it then needs.
    pub(crate) fn seal_secret(&self, tsk: &[u8]) -> Result<Vec<u8>, Error> {
        if !self.inner.shared {
            return Ok(self.inner.vault.seal(Owner::Keyring, tsk)?);
        }
        if !self.inner.legacy.has_key() {
            return Err(Error::SharedNeedsPassphrase);
        }
        // Called under the writers' lock: a passphrase changed since this process started
        // must not get a record sealed under the old one.
        secret::check_current(self.inner.store.as_ref(), &self.inner.legacy)?;
        Ok(self.inner.legacy.seal(tsk)?)
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
                let bytes = if vault::is_record(&record) {
                    self.inner.vault.open_record(&record)?
                } else {
                    match self.inner.legacy.open_record(&record) {
                        Ok(bytes) => zeroize::Zeroizing::new(bytes),
                        // Shared: the passphrase may have changed under this process.
                        Err(e) => {
                            if self.inner.shared {
                                secret::check_current(
                                    self.inner.store.as_ref(),
                                    &self.inner.legacy,
                                )?;
                            }
                            return Err(e.into());
                        }
                    }
                };
                Cert::from_bytes(bytes.as_slice())
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
}

/// Ends a write: the store's lock goes before the process's.
struct WriteGuard<'a> {
    _local: std::sync::MutexGuard<'a, ()>,
    store: &'a dyn Store,
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        self.store.end_write();
    }
}

impl Inner {
    /// Drops every cached answer and unlocked key.
    fn forget_all(&self) {
        self.lookups.clear();
        self.certs.clear();
        self.usable.clear();
        self.metas.clear();
        if let Ok(mut s) = self.secrets.write() {
            s.clear();
        }
    }
}

/// Moves secret-key records written before the vault into it (each under a key of its
/// own), and forgets their salt once none is left. A record sealed under a passphrase that
/// was not given stays as it is, readable once it is.
fn move_into_vault(store: &dyn Store, vault: &Vault, legacy: &Sealer) -> Result<(), Error> {
    let mut ops = Vec::new();
    let mut left = 0usize;
    for (fpr, record) in store.scan(Tree::Secrets, b"")? {
        if vault::is_record(&record) {
            continue;
        }
        match legacy.open_record(&record).map_err(Error::from) {
            Ok(plain) => {
                let plain = zeroize::Zeroizing::new(plain);
                ops.push(Op::Put(
                    Tree::Secrets,
                    fpr,
                    vault.seal(Owner::Keyring, &plain)?,
                ));
            }
            Err(Error::PassphraseNeeded) => left += 1,
            Err(e) => return Err(e),
        }
    }
    if ops.is_empty() {
        return Ok(());
    }
    let moved = ops.len();
    if left == 0 && legacy.has_key() {
        ops.push(secret::forget_legacy());
    }
    store.apply(ops)?;
    tracing::info!(
        moved,
        "moved secret keys into the vault, each under a key of its own"
    );
    Ok(())
}

#[cfg(test)]
mod tests;
