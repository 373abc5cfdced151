//! Secret-key records written before the vault: the keyring kept one salt and a verifier
//! for its passphrase in its `Meta` tree, and sealed every record under the one key they
//! give ([`sealpost_vault::legacy`]). They are read only to move them into the vault.

use sealpost_vault::legacy::Sealer;
use sequoia_openpgp::crypto::Password;

use crate::store::{Op, Store, Tree};
use crate::Error;

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
