//! Autocrypt Level 1 per-peer state (spec §2.3): when a peer was last seen, when its last
//! Autocrypt header was, its key and its `prefer-encrypt`, and the same for gossip. The
//! keys themselves go through [`Keyring::offer_discovered`], so that an Autocrypt header
//! never replaces a pinned key or swaps one silently.

use std::time::SystemTime;

use openpgp::Cert;
use sequoia_openpgp as openpgp;
use serde::{Deserialize, Serialize};

use crate::offer::{Ignored, Offer};
use crate::store::{Op, Tree};
use crate::trust::{secs, Source};
use crate::{lookup, Error, Keyring};

/// The `prefer-encrypt` attribute of a peer's last Autocrypt header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PreferEncrypt {
    #[default]
    NoPreference,
    Mutual,
}

/// What the keyring keeps about one Autocrypt peer, as the spec's `peers[addr]`. Times are
/// seconds since the epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PeerState {
    /// The most recent effective date of any message from the peer.
    pub last_seen: u64,
    /// The effective date of the most recent message with an Autocrypt header.
    pub autocrypt_timestamp: Option<u64>,
    /// The fingerprint of the key in that header.
    pub public_key: Option<String>,
    pub prefer_encrypt: PreferEncrypt,
    /// The effective date of the most recent gossip about the peer.
    pub gossip_timestamp: Option<u64>,
    pub gossip_key: Option<String>,
}

/// A parsed `Autocrypt:` header whose `addr` the caller has matched against From.
#[derive(Debug, Clone)]
pub struct Header {
    pub cert: Cert,
    pub prefer_encrypt: PreferEncrypt,
}

impl Keyring {
    /// The Autocrypt state of `email`, if a message from it was ever recorded.
    ///
    /// # Errors
    /// Store errors and a corrupt record.
    pub fn autocrypt_peer(&self, email: &str) -> Result<Option<PeerState>, Error> {
        let Some(email) = lookup::index_form(email) else {
            return Ok(None);
        };
        self.inner
            .store
            .get(Tree::Autocrypt, email.as_bytes())?
            .map(|b| {
                serde_json::from_slice(&b).map_err(|e| {
                    Error::Store(format!("autocrypt state of {email} is corrupt: {e}"))
                })
            })
            .transpose()
    }

    /// Records a message from `email` with effective date `date` (its Date, but not later
    /// than its arrival), with or without an Autocrypt header, following the spec's update
    /// algorithm: an older message than the last header changes nothing; a header's key is
    /// offered as [`Source::Autocrypt`]. Returns what became of the key, if there was one.
    ///
    /// # Errors
    /// Store errors.
    pub fn autocrypt_seen(
        &self,
        email: &str,
        date: SystemTime,
        header: Option<Header>,
    ) -> Result<Option<Offer>, Error> {
        let Some(email) = lookup::index_form(email) else {
            return Ok(header.map(|_| Offer::Ignored(Ignored::NotAnAddress)));
        };
        // The state is read, changed and written under the writer lock, as every other
        // record: two messages from one peer at once must not lose either's update.
        let _guard = self.lock_writer()?;
        let mut state = self.autocrypt_peer(&email)?.unwrap_or_default();
        let date = secs(date);
        if state.autocrypt_timestamp.is_some_and(|t| date < t) {
            return Ok(None);
        }
        state.last_seen = state.last_seen.max(date);
        let offer = match header {
            None => None,
            Some(h) => {
                let fpr = h.cert.fingerprint().to_hex();
                let offer = self.offer_locked(&email, h.cert, Source::Autocrypt, from(date))?;
                if !matches!(offer, Offer::Ignored(_)) {
                    state.autocrypt_timestamp = Some(date);
                    state.public_key = Some(fpr);
                    state.prefer_encrypt = h.prefer_encrypt;
                }
                Some(offer)
            }
        };
        self.put_peer(&email, &state)?;
        Ok(offer)
    }

    /// Records gossip about `email` (an `Autocrypt-Gossip:` header inside an encrypted
    /// message) with the message's effective date; its key is offered as
    /// [`Source::Gossip`].
    ///
    /// # Errors
    /// Store errors.
    pub fn autocrypt_gossip(
        &self,
        email: &str,
        date: SystemTime,
        cert: Cert,
    ) -> Result<Offer, Error> {
        let Some(email) = lookup::index_form(email) else {
            return Ok(Offer::Ignored(Ignored::NotAnAddress));
        };
        let _guard = self.lock_writer()?;
        let mut state = self.autocrypt_peer(&email)?.unwrap_or_default();
        let date = secs(date);
        let fpr = cert.fingerprint().to_hex();
        let offer = self.offer_locked(&email, cert, Source::Gossip, from(date))?;
        if state.gossip_timestamp.is_none_or(|t| t < date) && !matches!(offer, Offer::Ignored(_)) {
            state.gossip_timestamp = Some(date);
            state.gossip_key = Some(fpr);
            self.put_peer(&email, &state)?;
        }
        Ok(offer)
    }

    /// Writes a peer's state; the caller holds the writer lock.
    fn put_peer(&self, email: &str, state: &PeerState) -> Result<(), Error> {
        let bytes = serde_json::to_vec(state).map_err(|e| Error::Store(e.to_string()))?;
        self.inner.store.apply(vec![Op::Put(
            Tree::Autocrypt,
            email.as_bytes().to_vec(),
            bytes,
        )])
    }
}

fn from(s: u64) -> SystemTime {
    crate::trust::from_secs(s)
}
