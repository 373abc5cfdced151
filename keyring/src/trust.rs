//! Where each stored certificate came from and how far it is trusted, and the lookup that
//! honours a minimum trust.
//!
//! The levels, most trusted first: `pinned` (imported or accepted by an admin), `wkd` (WKD
//! or DANE: the recipient's own domain vouches for the key), `keyserver`, `autocrypt`
//! (Autocrypt headers, gossip, keys harvested from mail: anyone on the path could have
//! put them there).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openpgp::{Cert, Fingerprint};
use sequoia_openpgp as openpgp;
use serde::{Deserialize, Serialize};

use crate::store::{Op, Tree};
use crate::{Error, Keyring};

/// Where a certificate was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// `keys import`, `keys generate`, or a keyring that predates this record.
    Admin,
    /// The Web Key Directory of the address's domain.
    Wkd,
    /// An OPENPGPKEY record (RFC 7929) under DNSSEC.
    Dane,
    /// A VKS keyserver.
    Keyserver,
    /// The `Autocrypt:` header of a message from the address itself.
    Autocrypt,
    /// An `Autocrypt-Gossip:` header inside an encrypted message from someone else.
    Gossip,
    /// A key attached to a message.
    Harvested,
}

impl Source {
    /// The trust a certificate from this source starts with.
    pub fn trust(self) -> Trust {
        match self {
            Source::Admin => Trust::Pinned,
            Source::Wkd | Source::Dane => Trust::Wkd,
            Source::Keyserver => Trust::Keyserver,
            Source::Autocrypt | Source::Gossip | Source::Harvested => Trust::Autocrypt,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Source::Admin => "admin",
            Source::Wkd => "wkd",
            Source::Dane => "dane",
            Source::Keyserver => "keyserver",
            Source::Autocrypt => "autocrypt",
            Source::Gossip => "autocrypt-gossip",
            Source::Harvested => "harvested",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How far a certificate is trusted; the order is the trust order (least first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trust {
    /// Autocrypt, gossip, harvested: defends against passive attackers only.
    Autocrypt,
    Keyserver,
    /// WKD or DANE.
    Wkd,
    /// Imported or accepted by an admin.
    Pinned,
}

impl Trust {
    pub fn name(self) -> &'static str {
        match self {
            Trust::Autocrypt => "autocrypt",
            Trust::Keyserver => "keyserver",
            Trust::Wkd => "wkd",
            Trust::Pinned => "pinned",
        }
    }
}

impl fmt::Display for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Trust {
    type Err = String;

    /// A level by its name, or by the name of a source of that level (`dane` is `wkd`,
    /// `harvested` is `autocrypt`), as a configuration names it.
    fn from_str(s: &str) -> Result<Trust, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "pinned" => Ok(Trust::Pinned),
            "wkd" | "dane" => Ok(Trust::Wkd),
            "keyserver" => Ok(Trust::Keyserver),
            "autocrypt" | "harvested" | "any" => Ok(Trust::Autocrypt),
            other => Err(format!(
                "{other:?} is not a trust level: use \"pinned\", \"wkd\" (or \"dane\"), \
                 \"keyserver\" or \"autocrypt\" (or \"harvested\", \"any\")"
            )),
        }
    }
}

/// What the keyring knows about one certificate's origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyMeta {
    /// Where the certificate was first found, or the more trusted source that confirmed it.
    pub source: Source,
    pub trust: Trust,
    /// When it was stored (seconds since the epoch); `None` for a certificate stored
    /// before the keyring kept this record.
    pub since: Option<u64>,
    /// When a source last brought it (or an admin last changed its trust).
    pub updated: Option<u64>,
}

impl KeyMeta {
    /// A certificate with no record: every such one was imported by an admin, so that
    /// keyrings from before this record keep working exactly as they did.
    pub fn legacy() -> KeyMeta {
        KeyMeta {
            source: Source::Admin,
            trust: Trust::Pinned,
            since: None,
            updated: None,
        }
    }

    /// A certificate found now from `source`.
    pub fn found(source: Source, when: SystemTime) -> KeyMeta {
        let t = Some(secs(when));
        KeyMeta {
            source,
            trust: source.trust(),
            since: t,
            updated: t,
        }
    }

    /// The trust and where it comes from, as `policy explain` and `keys show` print it:
    /// `wkd (found by wkd, since …)`.
    pub fn describe(&self) -> String {
        let how = match (self.source, self.trust) {
            (Source::Admin, _) => "imported by an admin".to_string(),
            (s, Trust::Pinned) => format!("found by {s}, accepted by an admin"),
            (s, _) => format!("found by {s}"),
        };
        match self.since {
            Some(t) => format!(
                "{} ({how}, since {})",
                self.trust,
                crate::validity::date(from_secs(t))
            ),
            None => format!("{} ({how})", self.trust),
        }
    }

    pub(crate) fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        serde_json::to_vec(self).map_err(|e| Error::Store(e.to_string()))
    }
}

pub(crate) fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub(crate) fn from_secs(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(s)
}

pub(crate) fn meta_op(fpr: &Fingerprint, meta: &KeyMeta) -> Result<Op, Error> {
    Ok(Op::Put(
        Tree::Trust,
        fpr.as_bytes().to_vec(),
        meta.to_bytes()?,
    ))
}

impl Keyring {
    /// Where the certificate `fpr` came from and how far it is trusted. A certificate
    /// without a record (an admin's import) is pinned.
    ///
    /// # Errors
    /// `Error::Store` when the record is unreadable.
    pub fn key_meta(&self, fpr: &Fingerprint) -> Result<KeyMeta, Error> {
        if let Some(m) = self.inner.metas.get(fpr) {
            return Ok(m);
        }
        let meta = match self.inner.store.get(Tree::Trust, fpr.as_bytes())? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::Store(format!("trust record of {fpr} is corrupt: {e}")))?,
            None => KeyMeta::legacy(),
        };
        self.inner.metas.insert(fpr.clone(), meta.clone());
        Ok(meta)
    }

    /// The certificates usable for encryption to `email` at `now` that are trusted at
    /// least `min`, each with its record: the lookup a policy with a minimum trust uses.
    ///
    /// # Errors
    /// `Error::NoUsableKey` with one reason per certificate left out (unusable, or below
    /// `min`), as [`Keyring::lookup_encryption`].
    pub fn lookup_encryption_trusted(
        &self,
        email: &str,
        now: SystemTime,
        min: Trust,
    ) -> Result<Vec<(Arc<Cert>, KeyMeta)>, Error> {
        let certs = self.lookup_encryption(email, now)?;
        let mut out = Vec::with_capacity(certs.len());
        let mut reasons = Vec::new();
        for cert in certs {
            let meta = self.key_meta(&cert.fingerprint())?;
            if meta.trust >= min {
                out.push((cert, meta));
            } else {
                reasons.push(format!(
                    "{}: trust {} (found by {}) is below the policy's minimum, {min}",
                    cert.fingerprint(),
                    meta.trust,
                    meta.source
                ));
            }
        }
        if out.is_empty() {
            return Err(Error::NoUsableKey {
                email: email.to_string(),
                reasons,
            });
        }
        Ok(out)
    }

    /// Of the usable certificates for one address, those of the highest trust: a key
    /// found by discovery is never used beside one an admin pinned, nor an Autocrypt key
    /// beside one the address's domain publishes.
    pub(crate) fn most_trusted(&self, certs: Vec<Arc<Cert>>) -> Result<Vec<Arc<Cert>>, Error> {
        if certs.len() < 2 {
            return Ok(certs);
        }
        let mut rated = Vec::with_capacity(certs.len());
        for c in certs {
            let trust = self.key_meta(&c.fingerprint())?.trust;
            rated.push((trust, c));
        }
        let best = rated.iter().map(|(t, _)| *t).max();
        Ok(rated
            .into_iter()
            .filter(|(t, _)| Some(*t) == best)
            .map(|(_, c)| c)
            .collect())
    }
}
