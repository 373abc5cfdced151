//! The recipient lookup that honours the policy's minimum trust: what the gateway encrypts
//! to and what `policy explain` shows are the same answer.

use std::sync::Arc;
use std::time::SystemTime;

use sealpost_keyring::openpgp::Cert;
use sealpost_keyring::{KeyMeta, Keyring};

use super::Effective;

/// The certificates `address` may be encrypted to under `eff` at `now`, each with where
/// it came from: usable, and trusted at least `eff.min_trust`.
///
/// # Errors
/// `NoUsableKey` with a reason per certificate left out (the keyring's reasons, or a
/// trust below the minimum); store errors, which callers must not take for "no key".
pub fn keys_with_trust(
    keyring: &Keyring,
    address: &str,
    eff: &Effective,
    now: SystemTime,
) -> Result<Vec<(Arc<Cert>, KeyMeta)>, sealpost_keyring::Error> {
    keyring.lookup_encryption_trusted(address, now, eff.min_trust.0)
}

/// [`keys_with_trust`] without the records: a drop-in for
/// [`Keyring::lookup_encryption`] where the policy's minimum trust must hold.
///
/// # Errors
/// As [`keys_with_trust`].
pub fn keys_for(
    keyring: &Keyring,
    address: &str,
    eff: &Effective,
    now: SystemTime,
) -> Result<Vec<Arc<Cert>>, sealpost_keyring::Error> {
    keys_with_trust(keyring, address, eff, now).map(|v| v.into_iter().map(|(c, _)| c).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Layer, Mode, Policy, Rule};
    use sealpost_keyring::openpgp::cert::CertBuilder;
    use sealpost_keyring::{OpenOptions, Source, Trust};

    #[test]
    fn require_refuses_a_key_only_autocrypt_vouches_for() {
        let k = Keyring::open_memory(OpenOptions::default()).unwrap();
        let (c, _) = CertBuilder::general_purpose(Some("<bob@example.net>"))
            .generate()
            .unwrap();
        let now = SystemTime::now();
        k.offer_discovered("bob@example.net", c.clone(), Source::Autocrypt, now)
            .unwrap();
        let mut p = Policy::default();
        let eff = p.for_recipient("bob@example.net");
        assert_eq!(
            keys_for(&k, "bob@example.net", &eff, now).unwrap()[0].fingerprint(),
            c.fingerprint()
        );
        p.global = Rule {
            mode: Some(Mode::Require),
            ..Rule::default()
        };
        let eff = p.for_recipient("bob@example.net");
        assert_eq!(eff.min_trust, (Trust::Wkd, Layer::Default));
        let err = keys_for(&k, "bob@example.net", &eff, now)
            .unwrap_err()
            .to_string();
        assert!(err.contains("below the policy's minimum, wkd"), "{err}");
    }
}
