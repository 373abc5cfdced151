//! Signatures: checked against certificates from the keyring only, then judged against the
//! message's single From address (security rule 3). Only [`judge`] makes a [`Valid`].
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::io::Read;
use std::time::SystemTime;

use openpgp::cert::amalgamation::ValidAmalgamation;
use openpgp::parse::stream::{
    DetachedVerifier, DetachedVerifierBuilder, MessageLayer, MessageStructure, VerificationError,
    VerificationHelper, VerifierBuilder,
};
use openpgp::parse::Parse;
use openpgp::policy::Policy;
use openpgp::{Cert, Fingerprint, KeyHandle};
use sealpost_keyring::{openpgp, Keyring};

use super::error::Error;
use super::verdict::Signature;

/// What one signature turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// It verifies, and the key was valid for signing when it was made. `addresses` are the
    /// lower-cased addresses of the certificate's non-revoked valid user IDs then.
    Good {
        cert: Fingerprint,
        addresses: Vec<String>,
    },
    /// It does not verify, or the key was not valid for signing (`cert` when known).
    Bad { cert: Option<Fingerprint> },
    /// The keyring holds no certificate for its issuer.
    Missing,
}

/// What the helpers found while sequoia drove them. Kept outside the helper, so that it
/// survives a failed parse.
#[derive(Debug, Default)]
pub struct Found {
    pub checks: Vec<Check>,
    /// A keyring failure: temporary, the whole transaction is retried.
    pub failure: Option<sealpost_keyring::Error>,
}

/// A [`VerificationHelper`] that takes certificates from the keyring only.
pub struct Certs<'a> {
    pub keyring: &'a Keyring,
    pub found: &'a mut Found,
}

impl VerificationHelper for Certs<'_> {
    fn get_certs(&mut self, ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        let mut out: Vec<Cert> = Vec::new();
        for id in ids {
            match self.keyring.find(&id.to_hex()) {
                Ok(certs) => {
                    for c in certs {
                        if !out.iter().any(|o| o.fingerprint() == c.fingerprint()) {
                            out.push((*c).clone());
                        }
                    }
                }
                Err(sealpost_keyring::Error::Parse { .. }) => {}
                Err(e) => {
                    self.found.failure = Some(e);
                    return Err(openpgp::anyhow::anyhow!("keyring failure"));
                }
            }
        }
        Ok(out)
    }

    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        for layer in structure {
            if let MessageLayer::SignatureGroup { results } = layer {
                for r in results {
                    self.found.checks.push(check_of(r));
                }
            }
        }
        // Verdicts are ours to make: a bad signature is reported, not an error.
        Ok(())
    }
}

fn check_of(r: openpgp::parse::stream::VerificationResult<'_>) -> Check {
    match r {
        Ok(good) => {
            let vc = good.ka.valid_cert();
            let mut addresses: Vec<String> = vc
                .userids()
                .revoked(false)
                .filter_map(|ua| address_of(ua.userid()))
                .collect();
            addresses.dedup();
            Check::Good {
                cert: good.ka.cert().fingerprint(),
                addresses,
            }
        }
        Err(VerificationError::MissingKey { .. }) => Check::Missing,
        Err(VerificationError::UnboundKey { cert, .. }) => Check::Bad {
            cert: Some(cert.fingerprint()),
        },
        Err(VerificationError::BadKey { ka, .. })
        | Err(VerificationError::BadSignature { ka, .. }) => Check::Bad {
            cert: Some(ka.cert().fingerprint()),
        },
        Err(_) => Check::Bad { cert: None },
    }
}

/// The address of a user ID as the keyring compares them: lower-cased.
pub fn address_of(uid: &openpgp::packet::UserID) -> Option<String> {
    sealpost_keyring::userid_email(uid)
}

/// Checks a detached signature (`multipart/signed`) over the signed data read as it
/// comes.
///
/// # Errors
/// Only a keyring failure.
pub fn detached<R: Read + Send + Sync>(
    signed: R,
    signature: &[u8],
    keyring: &Keyring,
    policy: &dyn Policy,
    now: SystemTime,
) -> Result<Vec<Check>, Error> {
    detached_with(signature, keyring, policy, now, |v| v.verify_reader(signed))
}

/// A detached signature checked by `verify` over the signed data, however it is held.
fn detached_with(
    signature: &[u8],
    keyring: &Keyring,
    policy: &dyn Policy,
    now: SystemTime,
    verify: impl FnOnce(&mut DetachedVerifier<'_, Certs<'_>>) -> openpgp::Result<()>,
) -> Result<Vec<Check>, Error> {
    let mut found = Found::default();
    let result = DetachedVerifierBuilder::from_bytes(signature).and_then(|b| {
        let mut v = b.with_policy(
            policy,
            now,
            Certs {
                keyring,
                found: &mut found,
            },
        )?;
        verify(&mut v)
    });
    finish(found, result.is_ok())
}

/// Checks a signed-only armored message or a cleartext-signed message read as it comes,
/// at most `max` bytes of signed data. `None` when it is not a well-formed one.
///
/// # Errors
/// Only a keyring failure.
pub fn inline<R: Read + Send + Sync>(
    data: R,
    keyring: &Keyring,
    policy: &dyn Policy,
    now: SystemTime,
    max: usize,
) -> Result<Option<Vec<Check>>, Error> {
    // Sequoia holds back 25 MB by default before handing data out; here nothing is
    // handed to anyone (it goes to a sink), so a small hold-back keeps memory bounded.
    inline_from(
        VerifierBuilder::from_reader(data).map(|b| b.buffer_size(READER_HOLD_BACK)),
        keyring,
        policy,
        now,
        max,
    )
}

/// What sequoia holds back while verifying data read as it comes.
const READER_HOLD_BACK: usize = 64 << 10;

fn inline_from(
    builder: openpgp::Result<VerifierBuilder<'_>>,
    keyring: &Keyring,
    policy: &dyn Policy,
    now: SystemTime,
    max: usize,
) -> Result<Option<Vec<Check>>, Error> {
    let mut found = Found::default();
    let ok = builder
        .and_then(|b| {
            b.with_policy(
                policy,
                now,
                Certs {
                    keyring,
                    found: &mut found,
                },
            )
        })
        .is_ok_and(|mut v| {
            let mut sink = std::io::sink();
            let read = std::io::copy(&mut (&mut v).take(max as u64 + 1), &mut sink);
            read.is_ok_and(|n| n <= max as u64) && v.message_processed()
        });
    if let Some(e) = found.failure {
        return Err(Error::Keyring(e));
    }
    Ok(ok.then_some(found.checks))
}

fn finish(found: Found, ok: bool) -> Result<Vec<Check>, Error> {
    if let Some(e) = found.failure {
        return Err(Error::Keyring(e));
    }
    if !ok && found.checks.is_empty() {
        // Unreadable signature data is a bad signature, not an unsigned message.
        return Ok(vec![Check::Bad { cert: None }]);
    }
    Ok(found.checks)
}

/// Proof that a signature is valid in the sense of rule 3: only [`judge`] makes one, and
/// only applying protected headers asks for it.
#[derive(Debug)]
pub struct Valid(());

/// The From side of the binding: the payload's protected From, when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InnerFrom {
    Absent,
    One(String),
    /// A protected From with no address or several.
    Bad,
}

/// The judged signatures of one message.
#[derive(Debug)]
pub struct Judgement {
    pub signature: Signature,
    pub signer: Option<Fingerprint>,
    pub signer_address: Option<String>,
    pub valid: Option<Valid>,
}

/// Judges `checks` (signatures over the whole root) against the single outer From address
/// `from` and the protected From: valid if one good signature's certificate has a user
/// ID with that address.
pub fn judge(checks: &[Check], from: Option<&str>, inner: &InnerFrom) -> Judgement {
    let mut j = Judgement {
        signature: Signature::None,
        signer: None,
        signer_address: None,
        valid: None,
    };
    let goods: Vec<(&Fingerprint, &Vec<String>)> = checks
        .iter()
        .filter_map(|c| match c {
            Check::Good { cert, addresses } => Some((cert, addresses)),
            _ => None,
        })
        .collect();
    if let Some((first, _)) = goods.first() {
        j.signer = Some((*first).clone());
        let from = match (from, inner) {
            (None, _) | (_, InnerFrom::Bad) => {
                j.signature = Signature::MultipleFrom;
                return j;
            }
            (Some(f), InnerFrom::One(i)) if !i.eq_ignore_ascii_case(f) => {
                j.signature = Signature::FromMismatch;
                return j;
            }
            (Some(f), _) => f.to_ascii_lowercase(),
        };
        match goods.iter().find(|(_, a)| a.contains(&from)) {
            Some((cert, _)) => {
                j.signature = Signature::Valid;
                j.signer = Some((*cert).clone());
                j.signer_address = Some(from);
                j.valid = Some(Valid(()));
            }
            None => j.signature = Signature::FromMismatch,
        }
        return j;
    }
    if let Some(cert) = checks.iter().find_map(|c| match c {
        Check::Bad { cert } => Some(cert),
        _ => None,
    }) {
        j.signature = Signature::Invalid;
        j.signer = cert.clone();
    } else if checks.contains(&Check::Missing) {
        j.signature = Signature::UnknownSigner;
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_good_signature_from_the_from_address_is_enough() {
        let a: Fingerprint = "C1A4B2D3E4F5061728394A5B6C7D8E9F00112233".parse().unwrap();
        let b: Fingerprint = "D1A4B2D3E4F5061728394A5B6C7D8E9F00112233".parse().unwrap();
        let good = |f: &Fingerprint, addr: &str| Check::Good {
            cert: f.clone(),
            addresses: vec![addr.into()],
        };
        let checks = [
            Check::Missing,
            good(&b, "mallory@x.org"),
            good(&a, "alice@x.org"),
        ];
        let j = judge(&checks, Some("Alice@X.org"), &InnerFrom::Absent);
        assert_eq!(j.signature, Signature::Valid);
        assert_eq!(j.signer, Some(a.clone()));
        assert!(j.valid.is_some());
        let j = judge(&checks[..2], Some("alice@x.org"), &InnerFrom::Absent);
        assert_eq!(
            (j.signature, j.signer),
            (Signature::FromMismatch, Some(b.clone()))
        );
        let j = judge(&checks, None, &InnerFrom::Absent);
        assert_eq!(j.signature, Signature::MultipleFrom);
        let inner = InnerFrom::One("eve@x.org".into());
        assert_eq!(
            judge(&checks, Some("alice@x.org"), &inner).signature,
            Signature::FromMismatch
        );
        assert_eq!(
            judge(&[Check::Missing], Some("a@x.org"), &InnerFrom::Absent).signature,
            Signature::UnknownSigner
        );
        let bad = [Check::Missing, Check::Bad { cert: Some(a) }];
        assert_eq!(
            judge(&bad, Some("a@x.org"), &InnerFrom::Absent).signature,
            Signature::Invalid
        );
        assert_eq!(
            judge(&[], Some("a@x.org"), &InnerFrom::Absent).signature,
            Signature::None
        );
    }
}
