//! Secret-key records written before the vault: the keyring kept one salt and a verifier
//! for its passphrase in its `Meta` tree, and sealed every record under the one key they
//! give ([`sealpost_vault::legacy`]). They are read only to move them into the vault.
//!
//! A keyring several gateways share (PostgreSQL) still seals this way, under the
//! passphrase every gateway has; its passphrase is changed here, in one transaction, and
//! a process whose key no longer opens the verifier finds out here too.

use sealpost_vault::legacy::Sealer;
use sequoia_openpgp::crypto::Password;

use crate::store::{Op, Store, Tree};
use crate::{Error, Keyring};

const KDF_KEY: &[u8] = b"kdf";
const VERIFIER: &[u8] = b"sealpost keyring passphrase check v1";

/// The key older records were sealed with: derived from `passphrase` and the salt the
/// keyring kept, checked against its verifier. Without a kept salt (nothing was ever
/// sealed), or without a passphrase, only plain records can be read.
///
/// # Errors
/// `Error::BadPassphrase` when the passphrase does not match the one the records were
/// sealed with.
pub fn legacy_sealer(store: &dyn Store, passphrase: Option<&Password>) -> Result<Sealer, Error> {
    let (Some(pass), Some(record)) = (passphrase, store.get(Tree::Meta, KDF_KEY)?) else {
        return Ok(Sealer::none());
    };
    let (salt, verifier) = record
        .split_at_checked(16)
        .ok_or_else(|| Error::Store("corrupt passphrase record".into()))?;
    let sealer = Sealer::derive(pass, salt)?;
    match sealer.open_record(verifier) {
        Ok(v) if v == VERIFIER => Ok(sealer),
        _ => Err(Error::BadPassphrase),
    }
}

/// The key that seals secret keys in a store several gateways share: derived from
/// `passphrase` and the store's salt, checked against its verifier; the first gateway to
/// bring a passphrase stores both. Without a passphrase, secret keys can be neither
/// stored nor used.
///
/// # Errors
/// `Error::BadPassphrase` when the store was sealed with another passphrase.
pub fn shared_sealer(store: &dyn Store, passphrase: Option<&Password>) -> Result<Sealer, Error> {
    let Some(pass) = passphrase else {
        return Ok(Sealer::none());
    };
    if store.get(Tree::Meta, KDF_KEY)?.is_some() {
        return legacy_sealer(store, passphrase);
    }
    let mut salt = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut salt);
    let sealer = Sealer::derive(pass, &salt)?;
    let mut record = salt.to_vec();
    record.extend(sealer.seal(VERIFIER)?);
    store.begin_write()?;
    // Another gateway may have set it meanwhile: the first one's stands.
    let result = match store.get(Tree::Meta, KDF_KEY) {
        Ok(Some(_)) => Ok(false),
        Ok(None) => store
            .apply(vec![Op::Put(Tree::Meta, KDF_KEY.to_vec(), record)])
            .map(|()| true),
        Err(e) => Err(e),
    };
    store.end_write();
    if result? {
        Ok(sealer)
    } else {
        legacy_sealer(store, passphrase)
    }
}

/// What a process is told whose passphrase no longer opens the shared keyring's verifier.
const STALE: &str = "the keyring passphrase in the database was changed after this process \
     started (sealpost keyring passphrase change): its secret keys cannot be used until it is \
     restarted with SEALPOST_PASSPHRASE_FILE naming the new passphrase";
/// What a process without a passphrase is told on a shared keyring that has one.
const MISSING: &str = "the keyring in the database has a passphrase and this process was \
     started without one: its secret keys cannot be used until it is restarted with \
     SEALPOST_PASSPHRASE_FILE";

/// Whether `sealer` is still the key of the shared store's secret keys: another process
/// may have changed the passphrase (or set one) since this one derived it. Both answers
/// are `Error::Unavailable`, so that a gateway asks its clients to try again later (and
/// its readiness fails) rather than sending mail unsigned or leaving it undecrypted.
pub(crate) fn check_current(store: &dyn Store, sealer: &Sealer) -> Result<(), Error> {
    let record = store.get(Tree::Meta, KDF_KEY)?;
    let current = match (&record, sealer.has_key()) {
        (None, false) => true,
        (Some(_), false) => return Err(Error::Unavailable(MISSING.into())),
        // Our key, but no verifier: not the keyring this process opened.
        (None, true) => false,
        (Some(record), true) => record
            .split_at_checked(16)
            .is_some_and(|(_, v)| sealer.open_record(v).is_ok_and(|v| v == VERIFIER)),
    };
    if current {
        Ok(())
    } else {
        Err(Error::Unavailable(STALE.into()))
    }
}

impl Keyring {
    /// Whether the shared keyring holds a passphrase verifier (a passphrase was set).
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn shared_passphrase_stored(&self) -> Result<bool, Error> {
        Ok(self.inner.store.get(Tree::Meta, KDF_KEY)?.is_some())
    }

    /// Seals every secret key of a shared keyring under `new` (with a new salt) and
    /// replaces the verifier, all in one transaction under the writers' lock: a reader
    /// sees every record under the old passphrase or every record under the new one, and
    /// no import can slip a record sealed under the old one in between. The keyring must
    /// have been opened with the passphrase it has now, or without one if it has none.
    /// Returns how many secret keys were sealed again.
    ///
    /// Other processes still holding the old passphrase then fail every use of a secret
    /// key with `Error::Unavailable` ([`check_current`]) until they are restarted with
    /// the new one; this process must not be used further either.
    ///
    /// # Errors
    /// `Error::Store` on a keyring that is not shared, or one whose passphrase this
    /// process does not have; `Error::Unavailable` when the passphrase was changed
    /// meanwhile or the database cannot be reached; nothing is changed then.
    pub fn change_shared_passphrase(&self, new: &Password) -> Result<usize, Error> {
        if !self.inner.shared {
            return Err(Error::Store(
                "only a keyring shared in PostgreSQL keeps its passphrase in the database".into(),
            ));
        }
        let _guard = self.lock_writer()?;
        let old = &self.inner.legacy;
        if !old.has_key() && self.shared_passphrase_stored()? {
            return Err(Error::Store(
                "the keyring in the database has a passphrase already".into(),
            ));
        }
        check_current(self.inner.store.as_ref(), old)?;
        let mut salt = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut salt);
        let sealer = Sealer::derive(new, &salt)?;
        let mut ops = Vec::new();
        for (fpr, record) in self.inner.store.scan(Tree::Secrets, b"")? {
            if sealpost_vault::vault::is_record(&record) {
                return Err(Error::Store(
                    "a secret key in the database is sealed under one machine's vault; \
                     nothing was changed"
                        .into(),
                ));
            }
            let plain = zeroize::Zeroizing::new(old.open_record(&record)?);
            ops.push(Op::Put(Tree::Secrets, fpr, sealer.seal(&plain)?));
        }
        let sealed = ops.len();
        let mut verifier = salt.to_vec();
        verifier.extend(sealer.seal(VERIFIER)?);
        ops.push(Op::Put(Tree::Meta, KDF_KEY.to_vec(), verifier));
        self.inner.store.apply(ops)?;
        Ok(sealed)
    }
}

/// The op that forgets the older records' salt and verifier, once none is left.
pub fn forget_legacy() -> Op {
    Op::Delete(Tree::Meta, KDF_KEY.to_vec())
}

/// Stores a salt and verifier for `pass` the way keyrings did before the vault, and
/// returns the sealer of that time: for tests of moving old records into the vault.
#[cfg(test)]
pub(crate) fn create_legacy(store: &dyn Store, pass: &Password) -> Result<Sealer, Error> {
    let salt = [7u8; 16];
    let sealer = Sealer::derive(pass, &salt)?;
    let mut record = salt.to_vec();
    record.extend(sealer.seal(VERIFIER)?);
    store.apply(vec![Op::Put(Tree::Meta, KDF_KEY.to_vec(), record)])?;
    Ok(sealer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[test]
    fn the_older_salt_checks_the_passphrase() {
        let store = MemoryStore::new();
        let good = Password::from("right horse");
        assert!(!legacy_sealer(&store, Some(&good)).unwrap().has_key());
        let sealer = create_legacy(&store, &good).unwrap();
        let record = sealer.seal(b"secret key bytes").unwrap();
        let again = legacy_sealer(&store, Some(&good)).unwrap();
        assert_eq!(again.open_record(&record).unwrap(), b"secret key bytes");
        assert!(matches!(
            legacy_sealer(&store, Some(&Password::from("wrong"))),
            Err(Error::BadPassphrase)
        ));
        assert!(!legacy_sealer(&store, None).unwrap().has_key());
    }
}
