//! The sled backend: one tree, atomic batches, flushed before a change is reported done.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{full_key, Entry, Op, Store, Tree};
use crate::Error;

pub struct SledStore {
    db: sled::Db,
    path: PathBuf,
}

impl SledStore {
    /// Opens or creates the database in `dir/keyring`. A data directory this creates is
    /// mode 0700 (an existing one keeps its mode: `serve` warns when it is open to others),
    /// and the database files are made 0600, since they may hold secret keys.
    ///
    /// # Errors
    /// `Error::Locked` when another process has the database open.
    pub fn open(dir: &Path) -> Result<SledStore, Error> {
        sealpost_vault::disk::create_private_dir(dir).map_err(|e| Error::at(dir.display(), e))?;
        let path = dir.join("keyring");
        let config = sled::Config::new().path(&path).mode(sled::Mode::LowSpace);
        let db = sealpost_vault::disk::open_sled(&config).map_err(|e| {
            if sealpost_vault::disk::is_lock_error(&e) {
                Error::Locked {
                    path: path.display().to_string(),
                }
            } else {
                Error::Store(format!("{}: {e}", path.display()))
            }
        })?;
        let store = SledStore { db, path };
        store.restrict_modes()?;
        Ok(store)
    }

    fn restrict_modes(&self) -> Result<(), Error> {
        restrict(&self.path)
    }
}

fn restrict(path: &Path) -> Result<(), Error> {
    let at = |e| Error::at(path.display(), e);
    let meta = std::fs::metadata(path).map_err(at)?;
    let mode = if meta.is_dir() { 0o700 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(at)?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).map_err(at)? {
            restrict(&entry.map_err(at)?.path())?;
        }
    }
    Ok(())
}

impl Store for SledStore {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.db.get(full_key(tree, key))?.map(|v| v.to_vec()))
    }

    fn scan(&self, tree: Tree, prefix: &[u8]) -> Result<Vec<Entry>, Error> {
        self.db
            .scan_prefix(full_key(tree, prefix))
            .map(|r| {
                r.map(|(k, v)| (k.get(1..).unwrap_or_default().to_vec(), v.to_vec()))
                    .map_err(Error::from)
            })
            .collect()
    }

    fn apply(&self, ops: Vec<Op>) -> Result<(), Error> {
        let mut batch = sled::Batch::default();
        for op in ops {
            match op {
                Op::Put(t, k, v) => batch.insert(full_key(t, &k), v),
                Op::Delete(t, k) => batch.remove(full_key(t, &k)),
            }
        }
        // A batch is atomic in sled: a crash leaves all of it or none.
        self.db.apply_batch(batch)?;
        self.flush()
    }

    fn flush(&self) -> Result<(), Error> {
        self.db.flush()?;
        // sled creates new segment and snapshot files as it goes.
        self.restrict_modes()
    }
}
