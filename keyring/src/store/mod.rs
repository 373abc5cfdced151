//! Storage behind the keyring: a small ordered key-value interface, so that another backend
//! can replace sled without touching callers.

pub mod memory;
pub mod postgres;
pub mod sled;

use crate::Error;

/// The keyspaces. Each is a one-byte prefix in a single ordered map, so that one atomic
/// batch can touch all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Tree {
    /// fingerprint → public certificate (binary).
    Certs = b'c',
    /// fingerprint → secret key record (see `secret.rs`).
    Secrets = b's',
    /// lower-case email, 0, fingerprint → empty.
    Emails = b'e',
    /// key ID (8 bytes) of the primary or a subkey, fingerprint → empty.
    KeyIds = b'k',
    /// Keyring-wide settings (the passphrase verifier).
    Meta = b'm',
    /// fingerprint → where the certificate came from and how far it is trusted
    /// (`trust.rs`); absent for a certificate an admin imported before this was kept.
    Trust = b't',
    /// lower-case email, 0, fingerprint → a discovered certificate waiting for an admin, or
    /// one an admin rejected (`review.rs`).
    Review = b'r',
    /// lower-case email → the Autocrypt state of that peer (`autocrypt.rs`).
    Autocrypt = b'a',
    /// fingerprint → the revocation certificate made with a generated key.
    Revocations = b'v',
    /// lower-case email → when discovery last found no key for it, why, and when to ask
    /// again (`misses.rs`).
    Misses = b'l',
}

/// A key (without its tree prefix) and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// One change in an atomic batch.
#[derive(Debug, Clone)]
pub enum Op {
    Put(Tree, Vec<u8>, Vec<u8>),
    Delete(Tree, Vec<u8>),
}

/// An ordered key-value store with atomic, durable batches.
pub trait Store: Send + Sync {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, Error>;
    /// Every entry whose key starts with `prefix`, in key order.
    fn scan(&self, tree: Tree, prefix: &[u8]) -> Result<Vec<Entry>, Error>;
    /// Applies every op or none, and returns only once the batch is durable.
    fn apply(&self, ops: Vec<Op>) -> Result<(), Error>;
    /// Makes everything durable (on stores that buffer).
    fn flush(&self) -> Result<(), Error>;
    /// Starts a read-modify-write that no other process's writer may interleave with (a
    /// store shared by several gateways); [`Store::end_write`] ends it. Within a process
    /// the keyring serialises its writers itself.
    fn begin_write(&self) -> Result<(), Error> {
        Ok(())
    }
    fn end_write(&self) {}
    /// Calls `f` whenever another process may have changed the store (and after a lost
    /// connection, when changes may have been missed), so that caches are dropped.
    fn on_change(&self, _f: Box<dyn Fn() + Send + Sync>) {}
    /// Whether several gateways share the store: secret keys are then sealed under the
    /// passphrase itself, which every gateway has, rather than under one machine's vault.
    fn shared(&self) -> bool {
        false
    }
}

pub(crate) fn full_key(tree: Tree, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(tree as u8);
    k.extend_from_slice(key);
    k
}
