//! Addresses key discovery found no key for: when, why, and when to ask again.
//!
//! Kept in the store rather than in one gateway's memory, so that gateways sharing a
//! keyring do not each ask the same slow or absent server, and so that `policy explain`
//! (another process) can say why a recipient is keyless. A miss is a hint with an expiry,
//! not a fact: it is not part of a backup, and a key found later removes it.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::store::{Op, Tree};
use crate::trust::{from_secs, secs};
use crate::{lookup, Error, Keyring};

/// One address's last fruitless lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Miss {
    /// When the lookup ended (seconds since the Unix epoch).
    pub at: u64,
    /// Until when no new lookup is made for the address.
    pub until: u64,
    /// What each source answered, in words.
    pub reason: String,
}

impl Miss {
    pub fn new(at: SystemTime, until: SystemTime, reason: String) -> Miss {
        Miss {
            at: secs(at),
            until: secs(until),
            reason,
        }
    }

    /// Whether a lookup at `now` would be too soon.
    pub fn holds_at(&self, now: SystemTime) -> bool {
        secs(now) < self.until
    }

    pub fn at_time(&self) -> SystemTime {
        from_secs(self.at)
    }

    pub fn until_time(&self) -> SystemTime {
        from_secs(self.until)
    }
}

impl Keyring {
    /// The last recorded miss for `email`, expired or not.
    ///
    /// # Errors
    /// Store errors and a corrupt record.
    pub fn discovery_miss(&self, email: &str) -> Result<Option<Miss>, Error> {
        let Some(email) = lookup::index_form(email) else {
            return Ok(None);
        };
        self.inner
            .store
            .get(Tree::Misses, email.as_bytes())?
            .map(|b| {
                serde_json::from_slice(&b).map_err(|e| {
                    Error::Store(format!("discovery record of {email} is corrupt: {e}"))
                })
            })
            .transpose()
    }

    /// Records that discovery found nothing usable for `email`.
    ///
    /// # Errors
    /// Store errors.
    pub fn record_discovery_miss(&self, email: &str, miss: &Miss) -> Result<(), Error> {
        let Some(email) = lookup::index_form(email) else {
            return Ok(());
        };
        let bytes = serde_json::to_vec(miss).map_err(|e| Error::Store(e.to_string()))?;
        self.inner
            .store
            .apply(vec![Op::Put(Tree::Misses, email.into_bytes(), bytes)])
    }

    /// Forgets the miss of `email`, if there is one (a key was found).
    ///
    /// # Errors
    /// Store errors.
    pub fn clear_discovery_miss(&self, email: &str) -> Result<(), Error> {
        let Some(email) = lookup::index_form(email) else {
            return Ok(());
        };
        if self
            .inner
            .store
            .get(Tree::Misses, email.as_bytes())?
            .is_none()
        {
            return Ok(());
        }
        self.inner
            .store
            .apply(vec![Op::Delete(Tree::Misses, email.into_bytes())])
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use crate::{Keyring, Miss, OpenOptions};

    #[test]
    fn a_miss_is_kept_by_address_and_expires() {
        let k = Keyring::open_memory(OpenOptions::default()).unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let miss = Miss::new(now, now + Duration::from_secs(60), "wkd: not found".into());
        k.record_discovery_miss("Bob@Example.NET", &miss).unwrap();
        let got = k.discovery_miss("bob@example.net").unwrap().unwrap();
        assert_eq!(got, miss);
        assert!(got.holds_at(now + Duration::from_secs(59)));
        assert!(!got.holds_at(now + Duration::from_secs(60)));
        k.clear_discovery_miss("bob@example.net").unwrap();
        assert_eq!(k.discovery_miss("bob@example.net").unwrap(), None);
    }
}
