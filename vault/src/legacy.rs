//! Records in the format written before the vault ([`crate::vault`]), read so that they
//! can be moved into it: one format byte and the payload, `0` and the plaintext as is, or
//! `1`, a 24-byte nonce and the plaintext sealed with XChaCha20-Poly1305 under one key for
//! a whole store (argon2id over the passphrase and a salt, or a random key file).

use argon2::Argon2;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sequoia_openpgp::crypto::Password;
use zeroize::Zeroizing;

use crate::Error;

const PLAIN: u8 = 0;
const SEALED: u8 = 1;

/// The one key of an older store, or none (only plain records can then be read).
#[derive(Clone)]
pub struct Sealer {
    key: Option<Zeroizing<[u8; 32]>>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("key", &self.key.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

impl Sealer {
    /// A sealer that reads plain records only.
    pub fn none() -> Sealer {
        Sealer { key: None }
    }

    /// A sealer over a key the caller keeps (a random key in a 0600 file, say).
    pub fn from_key(key: [u8; 32]) -> Sealer {
        Sealer {
            key: Some(Zeroizing::new(key)),
        }
    }

    /// A sealer whose key argon2id derives from `pass` and `salt`.
    ///
    /// # Errors
    /// When the key derivation fails (a salt shorter than 8 bytes).
    pub fn derive(pass: &Password, salt: &[u8]) -> Result<Sealer, Error> {
        let mut key = Zeroizing::new([0u8; 32]);
        pass.map(|p| Argon2::default().hash_password_into(p, salt, key.as_mut()))
            .map_err(|e| Error::Crypto(format!("key derivation failed: {e}")))?;
        Ok(Sealer { key: Some(key) })
    }

    pub fn has_key(&self) -> bool {
        self.key.is_some()
    }

    /// The record to store for `plaintext` (for an older entry that must keep its format
    /// until it is moved).
    ///
    /// # Errors
    /// When sealing fails.
    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        let Some(key) = &self.key else {
            let mut out = Vec::with_capacity(plaintext.len() + 1);
            out.push(PLAIN);
            out.extend_from_slice(plaintext);
            return Ok(out);
        };
        let cipher = XChaCha20Poly1305::new(key.as_ref().into());
        let mut nonce = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(XNonce::from_slice(&nonce), plaintext)
            .map_err(|_| Error::Crypto("cannot seal a record".into()))?;
        let mut out = Vec::with_capacity(1 + 24 + sealed.len());
        out.push(SEALED);
        out.extend_from_slice(&nonce);
        out.extend(sealed);
        Ok(out)
    }

    /// The plaintext of a stored record.
    ///
    /// # Errors
    /// `PassphraseNeeded` for a sealed record without a key, `BadPassphrase` when the key
    /// does not open it, `Corrupt` when it is no record of this format.
    pub fn open_record(&self, record: &[u8]) -> Result<Vec<u8>, Error> {
        match record.split_first() {
            Some((&PLAIN, rest)) => Ok(rest.to_vec()),
            Some((&SEALED, rest)) => {
                let Some(key) = &self.key else {
                    return Err(Error::PassphraseNeeded);
                };
                let (nonce, sealed) = rest
                    .split_at_checked(24)
                    .ok_or_else(|| Error::Corrupt("a record is cut short".into()))?;
                XChaCha20Poly1305::new(key.as_ref().into())
                    .decrypt(XNonce::from_slice(nonce), sealed)
                    .map_err(|_| Error::BadPassphrase)
            }
            _ => Err(Error::Corrupt("not a record of the older format".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_records_need_the_right_key() {
        let good = Sealer::derive(&Password::from("right horse"), &[7u8; 16]).unwrap();
        let record = good.seal(b"secret key bytes").unwrap();
        assert_eq!(record[0], SEALED);
        assert!(!record.windows(6).any(|w| w == b"secret"));
        assert_eq!(good.open_record(&record).unwrap(), b"secret key bytes");
        let bad = Sealer::derive(&Password::from("wrong"), &[7u8; 16]).unwrap();
        assert!(matches!(
            bad.open_record(&record),
            Err(Error::BadPassphrase)
        ));
        assert!(matches!(
            Sealer::none().open_record(&record),
            Err(Error::PassphraseNeeded)
        ));
        let plain = Sealer::none().seal(b"as is").unwrap();
        assert_eq!(Sealer::none().open_record(&plain).unwrap(), b"as is");
        assert!(Sealer::none().open_record(&[9, 1, 2]).is_err());
    }
}
