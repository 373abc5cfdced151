//! Certificates found by discovery (WKD, DANE, keyservers, Autocrypt), offered to the
//! keyring: stored, merged, queued for an admin, or ignored, so that no source can swap a
//! key silently.
//!
//! The rules:
//! - only the user IDs with the wanted address are kept, and never secret key material;
//! - an update of a stored certificate (same primary fingerprint) merges, so that
//!   revocations and new subkeys arrive, and raises its trust if the source is better;
//!   but a new address on a certificate trusted more than the source is queued, so that
//!   the address does not borrow the trust given for the others;
//! - a different certificate for an address that already has one goes to the review
//!   queue, unless every certificate there is discovered and none can be used any more;
//! - a pinned certificate is never replaced, and a local user's key or address (one
//!   with a secret key here) is never touched.

use std::time::SystemTime;

use openpgp::serialize::SerializeInto;
use openpgp::{Cert, Fingerprint};
use sequoia_openpgp as openpgp;

use crate::store::{Op, Tree};
use crate::trust::{meta_op, secs, KeyMeta, Source, Trust};
use crate::{lookup, validity, Error, Keyring};

/// What the keyring did with an offered certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// Stored: a new certificate (`new`), or an update merged into the stored one.
    Stored {
        fingerprint: Fingerprint,
        new: bool,
    },
    /// Already stored, and the offer brought nothing new.
    Unchanged(Fingerprint),
    /// A different certificate than the one(s) the address has: queued for an admin
    /// (`keys review`); `current` are the certificates mail keeps using until then.
    Queued {
        fingerprint: Fingerprint,
        current: Vec<Fingerprint>,
    },
    Ignored(Ignored),
}

/// Why an offered certificate was not stored; each is logged by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignored {
    /// The wanted address is not an email address.
    NotAnAddress,
    /// No user ID of the certificate names the wanted address.
    NoUserIdForAddress,
    /// The certificate cannot be encrypted to for the address (expired, revoked, no
    /// encryption subkey, a bad binding): storing it would help no one.
    Unusable(String),
    /// The certificate, or the address, is a local user's: the keyring holds the secret
    /// key (a forged Autocrypt-Gossip header about a local user ends here).
    LocalKey,
    /// An admin rejected this certificate for this address.
    Rejected,
}

impl std::fmt::Display for Ignored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ignored::NotAnAddress => write!(f, "not an email address"),
            Ignored::NoUserIdForAddress => write!(f, "no user ID of the key has the address"),
            Ignored::Unusable(r) => write!(f, "the key cannot be used: {r}"),
            Ignored::LocalKey => write!(f, "a local user's key is managed here, not discovered"),
            Ignored::Rejected => write!(f, "an admin rejected this key for this address"),
        }
    }
}

/// The certificate with only the user IDs that name `email` (no user attributes), and no
/// secret key material.
pub(crate) fn keep_address(cert: Cert, email: &str) -> Cert {
    cert.strip_secret_key_material()
        .retain_userids(|ua| lookup::userid_email(ua.userid()).as_deref() == Some(email))
        .retain_user_attributes(|_| false)
}

impl Keyring {
    /// Offers a certificate that `source` returned for `email` at `when` (see the module
    /// documentation for the rules).
    ///
    /// # Errors
    /// `Error::Parse` when `source` is [`Source::Admin`] (an admin imports); store errors.
    pub fn offer_discovered(
        &self,
        email: &str,
        cert: Cert,
        source: Source,
        when: SystemTime,
    ) -> Result<Offer, Error> {
        let Some(email) = lookup::index_form(email) else {
            return Ok(Offer::Ignored(Ignored::NotAnAddress));
        };
        let _guard = self.lock_writer()?;
        self.offer_locked(&email, cert, source, when)
    }

    /// [`Keyring::offer_discovered`] for an address in index form, by a caller that holds
    /// the writer lock (and may change more under it, as the Autocrypt state).
    pub(crate) fn offer_locked(
        &self,
        email: &str,
        cert: Cert,
        source: Source,
        when: SystemTime,
    ) -> Result<Offer, Error> {
        if source == Source::Admin {
            return Err(Error::Parse {
                reason: "a key an admin adds is imported (`keys import`), not offered".into(),
            });
        }
        let email = email.to_string();
        let cert = keep_address(cert, &email);
        if cert.userids().next().is_none() {
            return Ok(Offer::Ignored(Ignored::NoUserIdForAddress));
        }
        let fpr = cert.fingerprint();
        if self.is_rejected(&email, &fpr)? {
            return Ok(Offer::Ignored(Ignored::Rejected));
        }
        if self.has_secret(&fpr)? {
            return Ok(Offer::Ignored(Ignored::LocalKey));
        }
        let holders: Vec<Fingerprint> = self
            .fingerprints_for_email(&email)?
            .into_iter()
            .filter(|f| *f != fpr)
            .collect();
        for h in &holders {
            if self.has_secret(h)? {
                return Ok(Offer::Ignored(Ignored::LocalKey));
            }
        }
        match self.load_public(&fpr)? {
            Some(old) => {
                if !lookup::emails(&old).contains(&email) {
                    // Binding this address to it would give the address a second key, or
                    // lend the address the trust an admin gave the certificate for others.
                    let more_trusted = self.key_meta(&fpr)?.trust > source.trust();
                    if !holders.is_empty() || more_trusted {
                        return self.enqueue(&email, cert, source, when, holders);
                    }
                }
                self.merge_discovered(old, cert, source, when)
            }
            None => {
                if let Err(reason) = validity::usable_for(&cert, &email, &self.inner.policy, when) {
                    return Ok(Offer::Ignored(Ignored::Unusable(reason)));
                }
                if self.holders_stand(&email, &holders, when)? {
                    return self.enqueue(&email, cert, source, when, holders);
                }
                let mut ops = self.index_ops(&cert, true);
                ops.push(Op::Put(
                    Tree::Certs,
                    fpr.as_bytes().to_vec(),
                    cert.to_vec().map_err(|e| Error::Crypto(e.to_string()))?,
                ));
                ops.push(meta_op(&fpr, &KeyMeta::found(source, when))?);
                self.inner.store.apply(ops)?;
                self.invalidate(&fpr)?;
                tracing::info!(%fpr, %email, %source, "stored a discovered key");
                Ok(Offer::Stored {
                    fingerprint: fpr,
                    new: true,
                })
            }
        }
    }

    /// Whether the address's current certificates keep a new one out: any pinned, or any
    /// still usable. Discovered ones that are all expired or revoked make way.
    fn holders_stand(
        &self,
        email: &str,
        holders: &[Fingerprint],
        when: SystemTime,
    ) -> Result<bool, Error> {
        for h in holders {
            if self.key_meta(h)?.trust == Trust::Pinned {
                return Ok(true);
            }
            if let Some(c) = self.get(h)? {
                if validity::usable_for(&c, email, &self.inner.policy, when).is_ok() {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Merges an update of a stored certificate; a better source raises its trust.
    fn merge_discovered(
        &self,
        old: Cert,
        update: Cert,
        source: Source,
        when: SystemTime,
    ) -> Result<Offer, Error> {
        let fpr = old.fingerprint();
        let crypto = |e: openpgp::anyhow::Error| Error::Crypto(e.to_string());
        let before = old.to_vec().map_err(crypto)?;
        let merged = old.clone().merge_public(update).map_err(|e| Error::Parse {
            reason: format!("cannot merge {fpr}: {e}"),
        })?;
        let after = merged.to_vec().map_err(crypto)?;
        let mut meta = self.key_meta(&fpr)?;
        let raised = source.trust() > meta.trust;
        if before == after && !raised {
            return Ok(Offer::Unchanged(fpr));
        }
        if raised {
            meta.source = source;
            meta.trust = source.trust();
        }
        meta.updated = Some(secs(when));
        let mut ops = self.index_ops(&old, false);
        ops.extend(self.index_ops(&merged, true));
        ops.push(Op::Put(Tree::Certs, fpr.as_bytes().to_vec(), after));
        ops.push(meta_op(&fpr, &meta)?);
        self.inner.store.apply(ops)?;
        self.invalidate(&fpr)?;
        tracing::info!(%fpr, %source, trust = %meta.trust, "merged a discovered update");
        Ok(Offer::Stored {
            fingerprint: fpr,
            new: false,
        })
    }
}
