//! Opened messages kept for the next fetch, so that a client that lists a mailbox, then
//! opens a message, then its parts, has each decrypted once. Keyed by the login that
//! fetched it (never shared between logins), the mailbox, its UIDVALIDITY and the UID,
//! and bounded in bytes, the least recently used going first. Two tiers: memory, where
//! each message is zeroed when it leaves, and optionally disk ([`super::disk`]), sealed
//! under a key in the vault, which a miss in memory falls back to.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::wipe::Buf;

/// Which message, for whom.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub login: String,
    pub mailbox: String,
    pub uidvalidity: u32,
    pub uid: u32,
}

/// What a message turned out to be.
#[derive(Debug)]
pub enum Entry {
    /// Nothing to open: the stored message is served as it is.
    Plain,
    /// The opened message.
    Opened(Buf),
}

impl Entry {
    fn size(&self) -> usize {
        match self {
            Entry::Plain => 64,
            Entry::Opened(b) => b.len() + 64,
        }
    }
}

/// The cache, shared by every connection of a proxy.
#[derive(Debug)]
pub struct Cache {
    inner: Mutex<Inner>,
    max: usize,
    disk: Option<super::disk::Disk>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Each entry with the stamp of its last use.
    map: HashMap<Key, (Arc<Entry>, u64)>,
    /// Keys by the stamp of their last use, least recent first.
    order: BTreeMap<u64, Key>,
    next: u64,
    bytes: usize,
}

impl Inner {
    fn stamp(&mut self) -> u64 {
        self.next += 1;
        self.next
    }
}

impl Cache {
    pub fn new(max: usize) -> Cache {
        Cache {
            inner: Mutex::new(Inner::default()),
            max,
            disk: None,
        }
    }

    /// A cache whose memory tier falls back to `disk`.
    pub fn with_disk(max: usize, disk: super::disk::Disk) -> Cache {
        Cache {
            disk: Some(disk),
            ..Cache::new(max)
        }
    }

    pub fn get(&self, key: &Key) -> Option<Arc<Entry>> {
        if let Some(found) = self.get_memory(key) {
            return Some(found);
        }
        let entry = self.disk.as_ref()?.get(key)?;
        self.put_memory(key.clone(), entry);
        self.get_memory(key)
    }

    fn get_memory(&self, key: &Key) -> Option<Arc<Entry>> {
        let mut inner = self.inner.lock().ok()?;
        let now = inner.stamp();
        let (found, old) = {
            let (entry, stamp) = inner.map.get_mut(key)?;
            let old = std::mem::replace(stamp, now);
            (Arc::clone(entry), old)
        };
        inner.order.remove(&old);
        inner.order.insert(now, key.clone());
        Some(found)
    }

    /// Keeps `entry`, dropping the least recently used ones past the bound; an entry larger
    /// than a quarter of the bound is not kept.
    pub fn put(&self, key: Key, entry: Entry) {
        if let Some(disk) = &self.disk {
            disk.put(&key, &entry);
        }
        self.put_memory(key, entry);
    }

    fn put_memory(&self, key: Key, entry: Entry) {
        let size = entry.size();
        if size > self.max / 4 {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let now = inner.stamp();
        if let Some((old, stamp)) = inner.map.insert(key.clone(), (Arc::new(entry), now)) {
            inner.bytes = inner.bytes.saturating_sub(old.size());
            inner.order.remove(&stamp);
        }
        inner.bytes += size;
        inner.order.insert(now, key);
        while inner.bytes > self.max {
            let Some((_, oldest)) = inner.order.pop_first() else {
                break;
            };
            if let Some((e, _)) = inner.map.remove(&oldest) {
                inner.bytes = inner.bytes.saturating_sub(e.size());
            }
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.inner.lock().map_or(0, |i| i.bytes)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A cache key for `login`'s INBOX message `uid`.
    pub(in crate::imap) fn key(login: &str, uid: u32) -> Key {
        Key {
            login: login.into(),
            mailbox: "INBOX".into(),
            uidvalidity: 7,
            uid,
        }
    }

    #[test]
    fn bounded_per_login_least_recent_first() {
        let c = Cache::new(1500);
        c.put(key("bob", 1), Entry::Opened(Buf::from(vec![1u8; 300])));
        c.put(key("bob", 2), Entry::Opened(Buf::from(vec![2u8; 300])));
        c.put(key("bob", 3), Entry::Plain);
        assert!(c.get(&key("bob", 1)).is_some());
        assert!(c.get(&key("mallory", 1)).is_none(), "never another login's");
        c.put(key("bob", 4), Entry::Opened(Buf::from(vec![4u8; 300])));
        c.put(key("bob", 5), Entry::Opened(Buf::from(vec![5u8; 300])));
        // 2 was the least recently used.
        assert!(c.get(&key("bob", 2)).is_none());
        assert!(c.get(&key("bob", 1)).is_some());
        assert!(c.bytes() <= 1500);
        c.put(key("bob", 6), Entry::Opened(Buf::from(vec![6u8; 600])));
        assert!(c.get(&key("bob", 6)).is_none(), "too large to keep");
    }
}
