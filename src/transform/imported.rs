//! Secret keys imported into OpenSSL once per process, not once per message: the library
//! context they live in, and a bounded cache of them by fingerprint. [`super::outbound::signer`]
//! keeps Ed25519 signing keys here, [`super::inbound::x25519`] Cv25519 decryption keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use ossl::OsslContext;
use sealpost_keyring::openpgp::{self, Fingerprint};

/// Keys kept at most; past it a cache starts over (a gateway has a handful of keys; this
/// only bounds a pathological keyring).
const MAX_KEYS: usize = 1024;

/// The OpenSSL library context of the imported keys, made once.
///
/// # Errors
/// When OpenSSL cannot make one.
pub fn context() -> openpgp::Result<&'static OsslContext> {
    static CONTEXT: OnceLock<Option<OsslContext>> = OnceLock::new();
    CONTEXT
        .get_or_init(|| OsslContext::new_lib_ctx_checked().ok())
        .as_ref()
        .ok_or_else(|| openpgp::Error::InvalidOperation("no OpenSSL library context".into()).into())
}

/// Imported keys by fingerprint.
pub struct Cache<T>(OnceLock<Mutex<HashMap<Fingerprint, Arc<T>>>>);

impl<T> Default for Cache<T> {
    fn default() -> Cache<T> {
        Cache::new()
    }
}

impl<T> Cache<T> {
    pub const fn new() -> Cache<T> {
        Cache(OnceLock::new())
    }

    fn map(&self) -> MutexGuard<'_, HashMap<Fingerprint, Arc<T>>> {
        self.0
            .get_or_init(Default::default)
            .lock()
            // The map holds no invariant a panic could break.
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The key imported for `fpr`, imported now by `import` if it is not yet.
    ///
    /// # Errors
    /// Whatever `import` returns.
    pub fn get_or_import(
        &self,
        fpr: Fingerprint,
        import: impl FnOnce() -> openpgp::Result<T>,
    ) -> openpgp::Result<Arc<T>> {
        if let Some(found) = self.map().get(&fpr) {
            return Ok(Arc::clone(found));
        }
        // Imported without the lock held: two threads may both import a new key, and
        // the last one stays; both are the same key.
        let imported = Arc::new(import()?);
        let mut keys = self.map();
        if keys.len() >= MAX_KEYS {
            keys.clear();
        }
        keys.insert(fpr, Arc::clone(&imported));
        Ok(imported)
    }

    /// The key imported for `fpr`, if any.
    pub fn get(&self, fpr: &Fingerprint) -> Option<Arc<T>> {
        self.map().get(fpr).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_once_and_starts_over_past_the_bound() {
        let cache: Cache<u32> = Cache::new();
        let fpr = |i: u32| {
            let mut b = [0u8; 20];
            b[..4].copy_from_slice(&i.to_be_bytes());
            Fingerprint::from_bytes(4, &b).unwrap()
        };
        let first = cache.get_or_import(fpr(0), || Ok(7)).unwrap();
        let again = cache
            .get_or_import(fpr(0), || panic!("imported twice"))
            .unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert!(cache
            .get_or_import(fpr(1), || Err(openpgp::Error::InvalidOperation(
                "no".into()
            )
            .into()))
            .is_err());
        assert!(cache.get(&fpr(1)).is_none());
        for i in 1..=MAX_KEYS as u32 {
            cache.get_or_import(fpr(i), || Ok(i)).unwrap();
        }
        assert!(cache.get(&fpr(0)).is_none(), "started over");
        assert_eq!(cache.map().len(), 1);
    }
}
