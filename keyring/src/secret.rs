//! Records in the format written before the vault ([`crate::vault`]), read so that they
//! can be moved into it: one format byte and the payload, `0` and the plaintext as is, or
//! `1`, a 24-byte nonce and the plaintext sealed with XChaCha20-Poly1305 under one key for
//! the whole store (argon2id over the passphrase and a salt, or a random key file).

use argon2::Argon2;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sequoia_openpgp::crypto::Password;

use crate::store::{Op, Store, Tree};
use crate::Error;

const PLAIN: u8 = 0;
const SEALED: u8 = 1;
const KDF_KEY: &[u8] = b"kdf";
const VERIFIER: &[u8] = b"sealpost keyring passphrase check v1";

/// The unlocked data key, or none when no passphrase is configured.
#[derive(Clone)]
pub struct Sealer {
    key: Option<[u8; 32]>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("key", &self.key.map(|_| "<hidden>"))
            .finish()
    }
}

impl Sealer {
    /// The key older keyring records were sealed with: derived from `passphrase` and the
    /// salt the keyring kept, checked against its verifier. Without a kept salt (nothing
    /// was ever sealed), or without a passphrase, only plain records can be read.
    ///
    /// # Errors
    /// `Error::BadPassphrase` when the passphrase does not match the one the records were
    /// sealed with.
    pub fn legacy(store: &dyn Store, passphrase: Option<&Password>) -> Result<Sealer, Error> {
        let Some(pass) = passphrase else {
            return Ok(Sealer { key: None });
        };
        match store.get(Tree::Meta, KDF_KEY)? {
            Some(record) => {
                let (salt, verifier) = record
                    .split_at_checked(16)
                    .ok_or_else(|| Error::Store("corrupt passphrase record".into()))?;
                let sealer = Sealer {
                    key: Some(derive(pass, salt)?),
                };
                match sealer.open_record(verifier) {
                    Ok(v) if v == VERIFIER => Ok(sealer),
                    _ => Err(Error::BadPassphrase),
                }
            }
            None => Ok(Sealer { key: None }),
        }
    }

    /// The op that forgets the older records' salt and verifier, once none is left.
    pub fn forget_legacy() -> Op {
        Op::Delete(Tree::Meta, KDF_KEY.to_vec())
    }

    /// A sealer over a key the caller keeps (a random key in a 0600 file, say).
    pub fn from_key(key: [u8; 32]) -> Sealer {
        Sealer { key: Some(key) }
    }

    /// A sealer whose key argon2id derives from `pass` and `salt`.
    ///
    /// # Errors
    /// When the key derivation fails (a salt shorter than 8 bytes).
    pub fn derive(pass: &Password, salt: &[u8]) -> Result<Sealer, Error> {
        Ok(Sealer {
            key: Some(derive(pass, salt)?),
        })
    }

    pub fn has_key(&self) -> bool {
        self.key.is_some()
    }

    /// The record to store for `plaintext`.
    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        let Some(key) = &self.key else {
            let mut out = Vec::with_capacity(plaintext.len() + 1);
            out.push(PLAIN);
            out.extend_from_slice(plaintext);
            return Ok(out);
        };
        let cipher = XChaCha20Poly1305::new(key.into());
        let mut nonce = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(XNonce::from_slice(&nonce), plaintext)
            .map_err(|_| Error::Crypto("cannot seal a secret key".into()))?;
        let mut out = Vec::with_capacity(1 + 24 + sealed.len());
        out.push(SEALED);
        out.extend_from_slice(&nonce);
        out.extend(sealed);
        Ok(out)
    }

    /// The plaintext of a stored record.
    pub fn open_record(&self, record: &[u8]) -> Result<Vec<u8>, Error> {
        match record.split_first() {
            Some((&PLAIN, rest)) => Ok(rest.to_vec()),
            Some((&SEALED, rest)) => {
                let Some(key) = &self.key else {
                    return Err(Error::PassphraseNeeded);
                };
                let (nonce, sealed) = rest
                    .split_at_checked(24)
                    .ok_or_else(|| Error::Store("corrupt secret key record".into()))?;
                XChaCha20Poly1305::new(key.into())
                    .decrypt(XNonce::from_slice(nonce), sealed)
                    .map_err(|_| Error::BadPassphrase)
            }
            _ => Err(Error::Store("corrupt secret key record".into())),
        }
    }
}

fn derive(pass: &Password, salt: &[u8]) -> Result<[u8; 32], Error> {
    let mut key = [0u8; 32];
    pass.map(|p| Argon2::default().hash_password_into(p, salt, &mut key))
        .map_err(|e| Error::Crypto(format!("key derivation failed: {e}")))?;
    Ok(key)
}

/// Stores a salt and verifier for `pass` the way keyrings did before the vault, and
/// returns the sealer of that time: for tests of moving old records into the vault.
#[cfg(test)]
pub(crate) fn create_legacy(store: &dyn Store, pass: &Password) -> Result<Sealer, Error> {
    let salt = [7u8; 16];
    let sealer = Sealer {
        key: Some(derive(pass, &salt)?),
    };
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
    fn sealed_records_need_the_right_passphrase() {
        let store = MemoryStore::new();
        let good = Password::from("right horse");
        let sealer = create_legacy(&store, &good).unwrap();
        let record = sealer.seal(b"secret key bytes").unwrap();
        assert_eq!(record[0], SEALED);
        assert!(!record.windows(6).any(|w| w == b"secret"));
        assert_eq!(sealer.open_record(&record).unwrap(), b"secret key bytes");

        let again = Sealer::legacy(&store, Some(&good)).unwrap();
        assert_eq!(again.open_record(&record).unwrap(), b"secret key bytes");

        let bad = Sealer::legacy(&store, Some(&Password::from("wrong")));
        assert!(matches!(bad, Err(Error::BadPassphrase)));
        let none = Sealer::legacy(&store, None).unwrap();
        assert!(matches!(
            none.open_record(&record),
            Err(Error::PassphraseNeeded)
        ));
    }
}
