//! The review queue: a discovered certificate that differs from the one an address
//! already has waits here until an admin accepts it (it then replaces the old one for
//! that address, pinned) or rejects it (it is then ignored when offered again).

use std::sync::Arc;
use std::time::SystemTime;

use openpgp::parse::Parse;
use openpgp::serialize::SerializeInto;
use openpgp::{Cert, Fingerprint};
use sequoia_openpgp as openpgp;
use serde::{Deserialize, Serialize};

use crate::lookup::{email_key, email_prefix, fpr_from};
use crate::offer::Offer;
use crate::store::{Op, Tree};
use crate::trust::{from_secs, meta_op, secs, KeyMeta, Source, Trust};
use crate::{lookup, validity, Error, Keyring, Validity};

/// At most this many certificates wait per address; a new one pushes out the one seen
/// least recently, so that a stream of forged Autocrypt headers cannot fill the store.
pub const MAX_QUEUED_PER_ADDRESS: usize = 4;

/// The header of a queue record; a pending record's certificate follows it (binary),
/// after a newline.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
enum Record {
    Pending {
        source: Source,
        first_seen: u64,
        last_seen: u64,
    },
    Rejected {
        at: u64,
    },
}

/// One certificate waiting for an admin.
#[derive(Debug, Clone, Serialize)]
pub struct ReviewEntry {
    pub email: String,
    pub fingerprint: String,
    pub source: Source,
    pub first_seen: String,
    pub last_seen: String,
    pub user_ids: Vec<String>,
    pub validity: Validity,
    /// The certificates the address has now, which mail keeps using until a decision.
    pub current: Vec<String>,
}

/// What accepting a queued certificate changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub email: String,
    pub fingerprint: Fingerprint,
    /// Certificates that lost the address (and kept others).
    pub unbound: Vec<Fingerprint>,
    /// Certificates removed because the address was their only one.
    pub removed: Vec<Fingerprint>,
}

fn encode(record: &Record, cert: Option<&Cert>) -> Result<Vec<u8>, Error> {
    let mut out = serde_json::to_vec(record).map_err(|e| Error::Store(e.to_string()))?;
    if let Some(c) = cert {
        out.push(b'\n');
        out.extend(c.to_vec().map_err(|e| Error::Crypto(e.to_string()))?);
    }
    Ok(out)
}

fn decode(bytes: &[u8]) -> Result<(Record, Option<Cert>), Error> {
    let corrupt = |e: String| Error::Store(format!("review queue record is corrupt: {e}"));
    let (head, body) = match bytes.iter().position(|b| *b == b'\n') {
        Some(i) => (&bytes[..i], bytes.get(i + 1..)),
        None => (bytes, None),
    };
    let record: Record = serde_json::from_slice(head).map_err(|e| corrupt(e.to_string()))?;
    let cert = body
        .map(Cert::from_bytes)
        .transpose()
        .map_err(|e| corrupt(e.to_string()))?;
    Ok((record, cert))
}

/// Splits a queue key (`email 0 fingerprint`).
fn split_key(key: &[u8]) -> Result<(String, Fingerprint), Error> {
    let i = key
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| Error::Store("review queue key is corrupt".into()))?;
    let email = String::from_utf8(key[..i].to_vec())
        .map_err(|_| Error::Store("review queue key is corrupt".into()))?;
    Ok((email, fpr_from(&key[i + 1..])?))
}

impl Keyring {
    pub(crate) fn is_rejected(&self, email: &str, fpr: &Fingerprint) -> Result<bool, Error> {
        match self.inner.store.get(Tree::Review, &email_key(email, fpr))? {
            Some(bytes) => Ok(matches!(decode(&bytes)?.0, Record::Rejected { .. })),
            None => Ok(false),
        }
    }

    /// Queues `cert` for `email` (the caller holds the writer lock), merging it with a
    /// copy queued before.
    pub(crate) fn enqueue(
        &self,
        email: &str,
        cert: Cert,
        source: Source,
        when: SystemTime,
        current: Vec<Fingerprint>,
    ) -> Result<Offer, Error> {
        let fpr = cert.fingerprint();
        let key = email_key(email, &fpr);
        let now = secs(when);
        let mut ops = Vec::new();
        let existing = self.inner.store.get(Tree::Review, &key)?;
        // The admin was told when the key was first queued; seeing it again (every
        // refresh, every message with the same header) is news only at debug level.
        let first_time = existing.is_none();
        let (record, cert) = match existing {
            Some(bytes) => match decode(&bytes)? {
                (
                    Record::Pending {
                        source: old_source,
                        first_seen,
                        ..
                    },
                    Some(old),
                ) => {
                    let merged = old.merge_public(cert).map_err(|e| Error::Parse {
                        reason: format!("cannot merge {fpr}: {e}"),
                    })?;
                    let source = if source.trust() > old_source.trust() {
                        source
                    } else {
                        old_source
                    };
                    (
                        Record::Pending {
                            source,
                            first_seen,
                            last_seen: now,
                        },
                        merged,
                    )
                }
                _ => return Err(Error::Store("review queue record is corrupt".into())),
            },
            None => {
                // Make room: the pending copy seen least recently goes.
                let mut pending: Vec<(u64, Vec<u8>)> = Vec::new();
                for (k, v) in self.inner.store.scan(Tree::Review, &email_prefix(email))? {
                    if let Record::Pending { last_seen, .. } = decode(&v)?.0 {
                        pending.push((last_seen, k));
                    }
                }
                pending.sort();
                let excess = (pending.len() + 1).saturating_sub(MAX_QUEUED_PER_ADDRESS);
                for (_, k) in pending.into_iter().take(excess) {
                    ops.push(Op::Delete(Tree::Review, k));
                }
                (
                    Record::Pending {
                        source,
                        first_seen: now,
                        last_seen: now,
                    },
                    cert,
                )
            }
        };
        ops.push(Op::Put(Tree::Review, key, encode(&record, Some(&cert))?));
        self.inner.store.apply(ops)?;
        if first_time {
            tracing::warn!(
                %fpr,
                %email,
                %source,
                "a discovered key differs from the address's current key: queued for review (sealpost keys review list)"
            );
        } else {
            tracing::debug!(%fpr, %email, %source, "a key waiting for review was seen again");
        }
        Ok(Offer::Queued {
            fingerprint: fpr,
            current,
        })
    }

    /// Every certificate waiting for an admin, by address.
    ///
    /// # Errors
    /// Store errors and corrupt records.
    pub fn review_list(&self) -> Result<Vec<ReviewEntry>, Error> {
        let now = SystemTime::now();
        let mut out = Vec::new();
        for (key, value) in self.inner.store.scan(Tree::Review, b"")? {
            let (email, fpr) = split_key(&key)?;
            let (
                Record::Pending {
                    source,
                    first_seen,
                    last_seen,
                },
                Some(cert),
            ) = decode(&value)?
            else {
                continue;
            };
            let current = self
                .fingerprints_for_email(&email)?
                .into_iter()
                .filter(|f| *f != fpr)
                .map(|f| f.to_hex())
                .collect();
            out.push(ReviewEntry {
                email,
                fingerprint: fpr.to_hex(),
                source,
                first_seen: validity::date(from_secs(first_seen)),
                last_seen: validity::date(from_secs(last_seen)),
                user_ids: crate::import::user_ids(&cert),
                validity: validity::validity(&cert, &self.inner.policy, now),
                current,
            });
        }
        Ok(out)
    }

    /// The certificates waiting for an admin's decision for `email` (rejected ones left
    /// out): mail to the address may be held until the queue is empty.
    ///
    /// # Errors
    /// Store errors and corrupt records.
    pub fn review_pending(&self, email: &str) -> Result<Vec<Fingerprint>, Error> {
        let Some(email) = lookup::index_form(email) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for (key, value) in self
            .inner
            .store
            .scan(Tree::Review, &lookup::email_prefix(&email))?
        {
            let (_, fpr) = split_key(&key)?;
            if let (Record::Pending { .. }, _) = decode(&value)? {
                out.push(fpr);
            }
        }
        Ok(out)
    }

    /// The addresses a fingerprint waits for (to accept or reject it by fingerprint).
    ///
    /// # Errors
    /// Store errors.
    pub fn review_addresses(&self, fpr: &Fingerprint) -> Result<Vec<String>, Error> {
        let mut out = Vec::new();
        for (key, value) in self.inner.store.scan(Tree::Review, b"")? {
            let (email, f) = split_key(&key)?;
            if f == *fpr && matches!(decode(&value)?.0, Record::Pending { .. }) {
                out.push(email);
            }
        }
        Ok(out)
    }

    /// Accepts a queued certificate for `email`: it is stored pinned, and the address's
    /// other certificates lose the address (a certificate left with no user ID goes).
    ///
    /// # Errors
    /// `Error::NotFound` when nothing is queued under that address and fingerprint;
    /// `Error::Parse` when the address belongs to a local user (a secret key here).
    pub fn review_accept(&self, email: &str, fpr: &Fingerprint) -> Result<Accepted, Error> {
        let email = lookup::index_form(email).ok_or_else(|| Error::Parse {
            reason: format!("{email:?} is not an email address"),
        })?;
        let _guard = self.lock_writer()?;
        let key = email_key(&email, fpr);
        let queued = self.inner.store.get(Tree::Review, &key)?;
        let (source, cert) = match queued.as_deref().map(decode).transpose()? {
            Some((Record::Pending { source, .. }, Some(cert))) => (source, cert),
            _ => {
                return Err(Error::NotFound(format!(
                    "{fpr} in the review queue for {email}"
                )))
            }
        };
        let holders: Vec<Fingerprint> = self
            .fingerprints_for_email(&email)?
            .into_iter()
            .filter(|f| f != fpr)
            .collect();
        for h in &holders {
            if self.has_secret(h)? {
                return Err(Error::Parse {
                    reason: format!(
                        "{email} is a local user's address (the keyring holds the secret key {h}); \
                         remove that key first if it is really to be replaced"
                    ),
                });
            }
        }
        let crypto = |e: openpgp::anyhow::Error| Error::Crypto(e.to_string());
        let mut ops = Vec::new();
        let mut unbound = Vec::new();
        let mut removed = Vec::new();
        for h in &holders {
            let Some(old) = self.load_public(h)? else {
                continue;
            };
            let kept = old
                .clone()
                .retain_userids(|ua| lookup::userid_email(ua.userid()).as_deref() != Some(&email));
            ops.extend(self.index_ops(&old, false));
            if kept.userids().next().is_none() {
                ops.push(Op::Delete(Tree::Certs, h.as_bytes().to_vec()));
                ops.push(Op::Delete(Tree::Trust, h.as_bytes().to_vec()));
                removed.push(h.clone());
            } else {
                ops.extend(self.index_ops(&kept, true));
                ops.push(Op::Put(
                    Tree::Certs,
                    h.as_bytes().to_vec(),
                    kept.to_vec().map_err(crypto)?,
                ));
                unbound.push(h.clone());
            }
        }
        let (merged, since, source) = match self.load_public(fpr)? {
            Some(old) => {
                ops.extend(self.index_ops(&old, false));
                let meta = self.key_meta(fpr)?;
                // A certificate an admin pinned before keeps its story.
                let source = if meta.trust == Trust::Pinned {
                    meta.source
                } else {
                    source
                };
                (
                    old.merge_public(cert).map_err(|e| Error::Parse {
                        reason: format!("cannot merge {fpr}: {e}"),
                    })?,
                    meta.since,
                    source,
                )
            }
            None => (cert, None, source),
        };
        let now = Some(secs(SystemTime::now()));
        ops.extend(self.index_ops(&merged, true));
        ops.push(Op::Put(
            Tree::Certs,
            fpr.as_bytes().to_vec(),
            merged.to_vec().map_err(crypto)?,
        ));
        ops.push(meta_op(
            fpr,
            &KeyMeta {
                source,
                trust: Trust::Pinned,
                since: since.or(now),
                updated: now,
            },
        )?);
        ops.push(Op::Delete(Tree::Review, key));
        self.inner.store.apply(ops)?;
        for f in holders.iter().chain(std::iter::once(fpr)) {
            self.invalidate(f)?;
        }
        tracing::info!(%fpr, %email, "an admin accepted a queued key");
        Ok(Accepted {
            email,
            fingerprint: fpr.clone(),
            unbound,
            removed,
        })
    }

    /// Rejects a queued certificate for `email`: it is dropped, and ignored when a source
    /// offers it again for that address. `false` when nothing was queued.
    ///
    /// # Errors
    /// Store errors.
    pub fn review_reject(&self, email: &str, fpr: &Fingerprint) -> Result<bool, Error> {
        let email = lookup::index_form(email).ok_or_else(|| Error::Parse {
            reason: format!("{email:?} is not an email address"),
        })?;
        let _guard = self.lock_writer()?;
        let key = email_key(&email, fpr);
        match self.inner.store.get(Tree::Review, &key)? {
            Some(bytes) if matches!(decode(&bytes)?.0, Record::Pending { .. }) => {}
            _ => return Ok(false),
        }
        let record = Record::Rejected {
            at: secs(SystemTime::now()),
        };
        self.inner
            .store
            .apply(vec![Op::Put(Tree::Review, key, encode(&record, None)?)])?;
        tracing::info!(%fpr, %email, "an admin rejected a queued key");
        Ok(true)
    }

    /// The queued certificate, for `keys review` to show or export.
    ///
    /// # Errors
    /// Store errors.
    pub fn review_cert(&self, email: &str, fpr: &Fingerprint) -> Result<Option<Arc<Cert>>, Error> {
        let Some(email) = lookup::index_form(email) else {
            return Ok(None);
        };
        match self
            .inner
            .store
            .get(Tree::Review, &email_key(&email, fpr))?
        {
            Some(bytes) => Ok(decode(&bytes)?.1.map(Arc::new)),
            None => Ok(None),
        }
    }
}
