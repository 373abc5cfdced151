//! An in-memory store, for tests and benchmarks.

use std::collections::BTreeMap;
use std::sync::RwLock;

use super::{full_key, Entry, Op, Store, Tree};
use crate::Error;

#[derive(Debug, Default)]
pub struct MemoryStore {
    map: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

fn poisoned() -> Error {
    Error::Store("memory store lock poisoned".into())
}

impl Store for MemoryStore {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let map = self.map.read().map_err(|_| poisoned())?;
        Ok(map.get(&full_key(tree, key)).cloned())
    }

    fn scan(&self, tree: Tree, prefix: &[u8]) -> Result<Vec<Entry>, Error> {
        let map = self.map.read().map_err(|_| poisoned())?;
        let start = full_key(tree, prefix);
        Ok(map
            .range(start.clone()..)
            .take_while(|(k, _)| k.starts_with(&start))
            .map(|(k, v)| (k[1..].to_vec(), v.clone()))
            .collect())
    }

    fn apply(&self, ops: Vec<Op>) -> Result<(), Error> {
        let mut map = self.map.write().map_err(|_| poisoned())?;
        for op in ops {
            match op {
                Op::Put(t, k, v) => {
                    map.insert(full_key(t, &k), v);
                }
                Op::Delete(t, k) => {
                    map.remove(&full_key(t, &k));
                }
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), Error> {
        Ok(())
    }
}
