//! Bounded caches behind recipient lookup: parsed certificates, per-certificate validity
//! and whole answers by address, each invalidated when the keyring changes.

use std::sync::Arc;
use std::time::SystemTime;

use openpgp::{Cert, Fingerprint};
use sequoia_openpgp as openpgp;

use crate::{lookup, validity, Error, Keyring};

/// A cached answer to "can this certificate be encrypted to for this address?", valid
/// from `at` until `until` (the earliest expiry that could change it).
#[derive(Clone)]
pub(crate) struct Usable {
    at: SystemTime,
    until: Option<SystemTime>,
    answer: Result<(), String>,
}

/// A whole lookup answer for one address, valid from `at` until `until`.
#[derive(Clone)]
pub(crate) struct Lookup {
    at: SystemTime,
    until: Option<SystemTime>,
    answer: Result<Vec<Arc<Cert>>, Vec<String>>,
}

/// How long a negative answer is trusted without a change to the keyring: a certificate
/// created with a future date becomes valid with time alone.
const NEGATIVE_TTL: std::time::Duration = std::time::Duration::from_secs(60);

impl Keyring {
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
            Ok(self.most_trusted(usable)?)
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

    pub(crate) fn invalidate(&self, fpr: &Fingerprint) -> Result<(), Error> {
        self.inner.certs.remove(fpr);
        self.inner.metas.remove(fpr);
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
