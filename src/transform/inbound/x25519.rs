//! Decrypting session keys for Cv25519 keys with the secret imported into OpenSSL once per
//! process, not once per message.
//!
//! For every PKESK, sequoia's `KeyPair` decrypts the secret it keeps encrypted in memory (a
//! SHA-256 over its 16 KiB pre-key, then an AEAD) and imports it into a new OpenSSL key,
//! and OpenSSL derives the public key from the scalar on import: one more X25519 scalar
//! multiplication. On a 10 KB message that was about a fifth of the inbound transform.
//! [`decryptor`] keeps, per key, OpenSSL keys imported with their public part; a message
//! then costs one scalar multiplication and sequoia's own key unwrapping
//! ([`ecdh::decrypt_unwrap`], which checks the unwrapped key's integrity). Only v4 ECDH keys
//! on Curve25519 (what gpg and sealpost make) take this path; every other key decrypts
//! through `KeyPair` as before.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::sync::{Arc, Mutex, PoisonError};

use openpgp::crypto::mem::Protected;
use openpgp::crypto::{self, ecdh, mpi, SessionKey};
use openpgp::packet::key::{PublicParts, SecretParts, UnspecifiedRole};
use openpgp::packet::Key;
use openpgp::types::Curve;
use ossl::derive::EcdhDerive;
use ossl::pkey::{EccData, EvpPkey, EvpPkeyType, PkeyData};
use ossl::OsslSecret;
use sealpost_keyring::openpgp;

use crate::transform::imported::{context, Cache};

/// A decryptor for `key`: over cached OpenSSL keys for a v4 Cv25519 ECDH key, a sequoia
/// `KeyPair` otherwise.
///
/// # Errors
/// When the key has no unencrypted secret, or OpenSSL refuses it.
pub fn decryptor(
    key: &Key<SecretParts, UnspecifiedRole>,
) -> openpgp::Result<Box<dyn crypto::Decryptor + Send + Sync>> {
    if !is_cv25519(key) {
        return Ok(Box::new(key.clone().into_keypair()?));
    }
    let imported = KEYS.get_or_import(key.fingerprint(), || Imported::new(key))?;
    Ok(Box::new(Cached(imported)))
}

fn is_cv25519(key: &Key<SecretParts, UnspecifiedRole>) -> bool {
    key.version() == 4
        && matches!(key.mpis(), mpi::PublicKey::ECDH { curve, .. } if *curve == Curve::Cv25519)
}

/// The decryption keys imported so far.
static KEYS: Cache<Imported> = Cache::new();

/// One key: its public part, and OpenSSL keys ready to derive with.
struct Imported {
    public: Key<PublicParts, UnspecifiedRole>,
    point: [u8; 32],
    /// The scalar, as OpenSSL takes it, to import one more key when all are in use.
    secret: Protected,
    /// Deriving takes an OpenSSL key exclusively; one per thread that decrypts at once.
    idle: Mutex<Vec<EvpPkey>>,
}

impl Imported {
    /// Imports the key and checks, once, that it unwraps a session key sequoia wrapped to
    /// its public key.
    fn new(key: &Key<SecretParts, UnspecifiedRole>) -> openpgp::Result<Imported> {
        let point: [u8; 32] = match key.mpis() {
            mpi::PublicKey::ECDH { curve, q, .. } => q.decode_point(curve)?.0.try_into()?,
            _ => return Err(unsupported()),
        };
        let secret = key.clone().into_keypair()?.secret().map(|s| match s {
            mpi::SecretKeyMaterial::ECDH { scalar } => {
                // OpenPGP keeps the scalar big-endian and may strip leading zeros;
                // X25519 takes 32 octets, little-endian.
                let mut r = scalar.value_padded(32);
                r.reverse();
                Ok(r)
            }
            _ => Err(unsupported()),
        })?;
        let imported = Imported {
            public: key.clone().take_secret().0.role_into_unspecified(),
            point,
            secret,
            idle: Mutex::new(Vec::new()),
        };
        let sk = SessionKey::new(32)?;
        let pkesk = openpgp::packet::pkesk::PKESK3::for_recipient(
            openpgp::types::SymmetricAlgorithm::AES256,
            &sk,
            &imported.public,
        )?;
        let mut check = Cached(Arc::new(imported));
        let (_, unwrapped) = openpgp::packet::PKESK::from(pkesk)
            .decrypt(&mut check, None)
            .ok_or_else(|| {
                openpgp::Error::InvalidOperation("OpenSSL key does not decrypt".into())
            })?;
        if unwrapped != sk {
            return Err(
                openpgp::Error::InvalidOperation("OpenSSL key decrypts wrongly".into()).into(),
            );
        }
        Arc::into_inner(check.0).ok_or_else(unsupported)
    }

    fn import(&self) -> openpgp::Result<EvpPkey> {
        Ok(EvpPkey::import(
            context()?,
            EvpPkeyType::X25519,
            PkeyData::Ecc(EccData {
                pubkey: Some(self.point.to_vec()),
                prikey: Some(OsslSecret::from_slice(&self.secret)),
            }),
        )?)
    }

    /// The X25519 shared secret with the ephemeral public key `point`.
    fn shared(&self, point: &[u8]) -> openpgp::Result<Protected> {
        let mut ephemeral = EvpPkey::import(
            context()?,
            EvpPkeyType::X25519,
            PkeyData::Ecc(EccData {
                pubkey: Some(point.to_vec()),
                prikey: None,
            }),
        )?;
        let taken = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut secret = match taken {
            Some(k) => k,
            None => self.import()?,
        };
        let mut shared: Protected = vec![0; 32].into();
        let derived = EcdhDerive::new(context()?, &mut secret)
            .and_then(|mut d| d.derive(&mut ephemeral, &mut shared));
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(secret);
        if derived? != shared.len() {
            return Err(openpgp::Error::InvalidOperation("short X25519 secret".into()).into());
        }
        Ok(shared)
    }
}

fn unsupported() -> openpgp::anyhow::Error {
    openpgp::Error::InvalidOperation("not a Cv25519 ECDH key".into()).into()
}

/// A [`crypto::Decryptor`] over a cached key.
struct Cached(Arc<Imported>);

impl crypto::Decryptor for Cached {
    fn public(&self) -> &Key<PublicParts, UnspecifiedRole> {
        &self.0.public
    }

    fn decrypt(
        &mut self,
        ciphertext: &mpi::Ciphertext,
        plaintext_len: Option<usize>,
    ) -> openpgp::Result<SessionKey> {
        let mpi::Ciphertext::ECDH { e, .. } = ciphertext else {
            return Err(unsupported());
        };
        let (point, _) = e.decode_point(&Curve::Cv25519)?;
        let shared = self.0.shared(point)?;
        ecdh::decrypt_unwrap(&self.0.public, &shared, ciphertext, plaintext_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::outbound::tests::{key, secret_key};
    use openpgp::packet::{pkesk::PKESK3, PKESK};
    use openpgp::types::SymmetricAlgorithm;

    /// The cached key unwraps what `KeyPair` unwraps, and refuses what it refuses.
    #[test]
    fn same_session_key_as_keypair() {
        let k = secret_key(&key("x@example.org"), false);
        assert!(is_cv25519(&k));
        for algo in [SymmetricAlgorithm::AES128, SymmetricAlgorithm::AES256] {
            let sk = SessionKey::new(algo.key_size().unwrap()).unwrap();
            let pkesk = PKESK::from(PKESK3::for_recipient(algo, &sk, &k).unwrap());
            let mut cached = decryptor(&k).unwrap();
            let mut pair = k.clone().into_keypair().unwrap();
            let ours = pkesk.decrypt(&mut cached, None).unwrap();
            let theirs = pkesk.decrypt(&mut pair, None).unwrap();
            assert_eq!(ours, theirs);
            assert_eq!(ours.1, sk);
        }
        // Wrapped to another key: both refuse.
        let other = secret_key(&key("y@example.org"), false);
        let sk = SessionKey::new(16).unwrap();
        let pkesk =
            PKESK::from(PKESK3::for_recipient(SymmetricAlgorithm::AES128, &sk, &other).unwrap());
        assert!(pkesk.decrypt(&mut decryptor(&k).unwrap(), None).is_none());
        assert!(pkesk
            .decrypt(&mut k.clone().into_keypair().unwrap(), None)
            .is_none());
    }

    #[test]
    fn the_key_is_imported_once_and_reused_across_threads() {
        let k = secret_key(&key("z@example.org"), false);
        let _first = decryptor(&k).unwrap();
        let found = KEYS.get(&k.fingerprint()).unwrap();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let sk = SessionKey::new(16).unwrap();
                    let pkesk = PKESK::from(
                        PKESK3::for_recipient(SymmetricAlgorithm::AES128, &sk, &k).unwrap(),
                    );
                    let mut d = decryptor(&k).unwrap();
                    assert_eq!(pkesk.decrypt(&mut d, None).unwrap().1, sk);
                });
            }
        });
        assert!(Arc::ptr_eq(&found, &KEYS.get(&k.fingerprint()).unwrap()));
        assert!(found.idle.lock().unwrap().len() <= 4);
    }
}
