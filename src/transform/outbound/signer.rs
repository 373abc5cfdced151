//! Signing with an Ed25519 key imported into OpenSSL once per process, not once per
//! signature.
//!
//! Sequoia's `KeyPair` keeps the secret encrypted in memory and, for every signature,
//! decrypts it (a SHA-256 over its 16 KiB pre-key, then an AEAD) and imports it into a new
//! OpenSSL key. On a 10 KB message that was about a tenth of the whole outbound transform.
//! [`signer`] instead keeps, per signing key, the OpenSSL key made the first time the key
//! signs; every later signature only creates the signing context. The key stays in
//! memory as long as the unlocked TSK does in the keyring's cache. Other algorithms (RSA,
//! ECDSA, Ed448, …) sign through `KeyPair` as before.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::sync::Arc;

use openpgp::crypto::{self, mpi};
use openpgp::packet::key::{PublicParts, SecretParts, UnspecifiedRole};
use openpgp::packet::Key;
use openpgp::types::{Curve, HashAlgorithm, PublicKeyAlgorithm};
use ossl::pkey::{EccData, EvpPkey, EvpPkeyType, PkeyData};
use ossl::signature::{OsslSignature, SigAlg, SigOp};
use ossl::OsslSecret;
use sealpost_keyring::openpgp;

use crate::transform::imported::{context, Cache};

/// A signer for `key`: over the cached OpenSSL key for Ed25519 (v4 EdDSA or v6 Ed25519),
/// a sequoia `KeyPair` otherwise.
///
/// # Errors
/// When the key has no unencrypted secret, or OpenSSL refuses it.
pub fn signer(
    key: &Key<SecretParts, UnspecifiedRole>,
) -> openpgp::Result<Box<dyn crypto::Signer + Send + Sync>> {
    if let Some(kind) = Kind::of(key) {
        let imported = KEYS.get_or_import(key.fingerprint(), || Imported::new(key, kind))?;
        return Ok(Box::new(Cached(imported)));
    }
    Ok(Box::new(key.clone().into_keypair()?))
}

/// The signing keys imported so far.
static KEYS: Cache<Imported> = Cache::new();

/// The two encodings of an Ed25519 key and signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// v4 `EdDSA` on Ed25519: the signature as the MPIs r and s.
    Legacy,
    /// RFC 9580 `Ed25519`: the signature as 64 octets.
    Native,
}

impl Kind {
    fn of(key: &Key<SecretParts, UnspecifiedRole>) -> Option<Kind> {
        match (key.pk_algo(), key.mpis()) {
            #[allow(deprecated)]
            (PublicKeyAlgorithm::EdDSA, mpi::PublicKey::EdDSA { curve, .. })
                if *curve == Curve::Ed25519 =>
            {
                Some(Kind::Legacy)
            }
            (PublicKeyAlgorithm::Ed25519, mpi::PublicKey::Ed25519 { .. }) => Some(Kind::Native),
            _ => None,
        }
    }
}

/// One key, imported.
struct Imported {
    public: Key<PublicParts, UnspecifiedRole>,
    pkey: EvpPkey,
    kind: Kind,
}

impl Imported {
    /// Imports the key and checks, once, that it signs what its public key verifies.
    fn new(key: &Key<SecretParts, UnspecifiedRole>, kind: Kind) -> openpgp::Result<Imported> {
        let public: [u8; 32] = match key.mpis() {
            #[allow(deprecated)]
            mpi::PublicKey::EdDSA { curve, q } => q.decode_point(curve)?.0.try_into()?,
            mpi::PublicKey::Ed25519 { a } => *a,
            _ => return Err(unsupported()),
        };
        let secret = key.clone().into_keypair()?.secret().map(|s| match s {
            #[allow(deprecated)]
            mpi::SecretKeyMaterial::EdDSA { scalar } => {
                Ok(OsslSecret::from_slice(&scalar.value_padded(32)))
            }
            mpi::SecretKeyMaterial::Ed25519 { x } => Ok(OsslSecret::from_slice(x)),
            _ => Err(unsupported()),
        })?;
        let pkey = EvpPkey::import(
            context()?,
            EvpPkeyType::Ed25519,
            PkeyData::Ecc(EccData {
                pubkey: Some(public.to_vec()),
                prikey: Some(secret),
            }),
        )?;
        let imported = Imported {
            public: key.clone().take_secret().0.role_into_unspecified(),
            pkey,
            kind,
        };
        let digest = [0x5a; 64];
        let sig = imported.sign(&digest)?;
        imported
            .public
            .verify(&sig, HashAlgorithm::SHA512, &digest)?;
        Ok(imported)
    }

    fn sign(&self, digest: &[u8]) -> openpgp::Result<mpi::Signature> {
        let mut op =
            OsslSignature::new(context()?, SigOp::Sign, SigAlg::Ed25519, &self.pkey, None)?;
        let mut sig = [0u8; 64];
        let len = op.sign(digest, Some(&mut sig))?;
        if len != sig.len() {
            return Err(openpgp::Error::InvalidOperation(format!(
                "OpenSSL made a {len}-octet Ed25519 signature"
            ))
            .into());
        }
        Ok(match self.kind {
            Kind::Legacy => mpi::Signature::EdDSA {
                r: mpi::MPI::new(sig.get(..32).unwrap_or_default()),
                s: mpi::MPI::new(sig.get(32..).unwrap_or_default()),
            },
            Kind::Native => mpi::Signature::Ed25519 { s: Box::new(sig) },
        })
    }
}

fn unsupported() -> openpgp::anyhow::Error {
    openpgp::Error::InvalidOperation("not an Ed25519 key".into()).into()
}

/// A [`crypto::Signer`] over a cached key.
struct Cached(Arc<Imported>);

impl crypto::Signer for Cached {
    fn public(&self) -> &Key<PublicParts, UnspecifiedRole> {
        &self.0.public
    }

    fn sign(
        &mut self,
        _hash_algo: HashAlgorithm,
        digest: &[u8],
    ) -> openpgp::Result<mpi::Signature> {
        self.0.sign(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::outbound::tests::{key, secret_key, v6_key};
    use openpgp::cert::{CertBuilder, CipherSuite};

    /// Ed25519 is deterministic: the cached key must give the very signature `KeyPair`
    /// gives, in the same encoding, for v4 and v6 keys, and it must verify.
    #[test]
    fn same_signature_as_keypair_for_v4_and_v6() {
        for cert in [key("a@example.org"), v6_key("b@example.org")] {
            let k = secret_key(&cert, true);
            assert!(Kind::of(&k).is_some());
            let digest = [7u8; 64];
            let mut cached = signer(&k).unwrap();
            let mut pair = k.clone().into_keypair().unwrap();
            let ours = cached.sign(HashAlgorithm::SHA512, &digest).unwrap();
            let theirs = crypto::Signer::sign(&mut pair, HashAlgorithm::SHA512, &digest).unwrap();
            assert_eq!(ours, theirs);
            k.verify(&ours, HashAlgorithm::SHA512, &digest).unwrap();
            assert_eq!(cached.public(), pair.public());
        }
    }

    #[test]
    fn the_key_is_imported_once() {
        let k = secret_key(&key("c@example.org"), true);
        let _first = signer(&k).unwrap();
        let found = KEYS.get(&k.fingerprint()).unwrap();
        let _second = signer(&k).unwrap();
        assert!(Arc::ptr_eq(&found, &KEYS.get(&k.fingerprint()).unwrap()));
    }

    #[test]
    fn other_algorithms_sign_through_keypair() {
        let (cert, _) = CertBuilder::general_purpose(Some("r@example.org"))
            .set_cipher_suite(CipherSuite::RSA2k)
            .generate()
            .unwrap();
        let k = secret_key(&cert, true);
        assert!(Kind::of(&k).is_none());
        let digest = [9u8; 32];
        let sig = signer(&k)
            .unwrap()
            .sign(HashAlgorithm::SHA256, &digest)
            .unwrap();
        k.verify(&sig, HashAlgorithm::SHA256, &digest).unwrap();
        assert!(KEYS.get(&k.fingerprint()).is_none());
    }
}
