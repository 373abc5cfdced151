//! The cache's second tier: opened messages kept on disk, so that a restart or a memory
//! tier too small for a mailbox does not mean downloading and decrypting everything again.
//!
//! Each message is one sealed file (`blob::sealed`: AES-256-GCM in chunks) under a key
//! that lives in the vault as a record of its own ([`Owner::ImapCache`]); destroying that
//! record (`Disk::shred`, or the vault dropping it) makes every file unreadable at once,
//! whatever is left on the disk. A file's name is a digest of its key, so names reveal
//! neither logins nor mailboxes, and the key is sealed inside the file too and checked on
//! every read, so a file can never be served for another login or message. The tier is
//! bounded in bytes, the least recently used files going first.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sealpost_vault::vault::{Owner, Vault};
use sha2::{Digest, Sha256};

use super::cache::{Entry, Key};
use crate::blob::sealed::{MasterKey, SealedFile, SealedWriter};
use crate::wipe::Buf;

/// The file that holds the vault record of the tier's key.
const KEY_FILE: &str = "key";
/// Marks a file's plaintext: a kind byte follows.
const MAGIC: &[u8] = b"sealpost imap cache 1\n";
const PLAIN: u8 = b'p';
const OPENED: u8 = b'o';

/// Why the tier cannot be opened; the proxy then runs with the memory tier only.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("the vault: {0}")]
    Vault(#[from] sealpost_vault::Error),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The on-disk tier.
pub struct Disk {
    dir: PathBuf,
    vault: Arc<Vault>,
    record: Vec<u8>,
    key: MasterKey,
    max: u64,
    index: Mutex<Index>,
}

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disk")
            .field("dir", &self.dir)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Index {
    /// File name → its size and the stamp of its last use.
    files: HashMap<String, (u64, u64)>,
    order: BTreeMap<u64, String>,
    bytes: u64,
    next: u64,
}

impl Index {
    fn touch(&mut self, name: &str, size: u64) {
        self.next += 1;
        let now = self.next;
        if let Some((old_size, stamp)) = self.files.insert(name.to_string(), (size, now)) {
            self.order.remove(&stamp);
            self.bytes = self.bytes.saturating_sub(old_size);
        }
        self.order.insert(now, name.to_string());
        self.bytes += size;
    }

    fn forget(&mut self, name: &str) {
        if let Some((size, stamp)) = self.files.remove(name) {
            self.order.remove(&stamp);
            self.bytes = self.bytes.saturating_sub(size);
        }
    }
}

impl Disk {
    /// Opens (or makes) the tier in `dir`, at most `max` bytes, its key in `vault`. Files
    /// whose key was destroyed are removed.
    ///
    /// # Errors
    /// A directory or key file that cannot be made or read, and vault errors.
    pub fn open(dir: &Path, vault: Arc<Vault>, max: u64) -> Result<Disk, Error> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_at(dir))?;
        let key_path = dir.join(KEY_FILE);
        let existing = match std::fs::read(&key_path) {
            Ok(r) => vault.record_key(&r).ok().map(|k| (r, k)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_at(&key_path)(e)),
        };
        let (record, key) = match existing {
            Some((r, k)) => (r, MasterKey::new(*k)),
            None => {
                // No key, or one the vault no longer has: what is on disk is unreadable.
                remove_entries(dir);
                let record = vault.seal(Owner::ImapCache, b"imap cache key")?;
                let key = MasterKey::new(*vault.record_key(&record)?);
                let tmp = dir.join("key.new");
                write_private(&tmp, &record).map_err(io_at(&tmp))?;
                std::fs::rename(&tmp, &key_path).map_err(io_at(&key_path))?;
                vault.sync()?;
                (record, key)
            }
        };
        // Keys of earlier tiers (a key file lost or replaced) are destroyed.
        vault.retain(Owner::ImapCache, std::slice::from_ref(&record))?;
        let mut found: Vec<(std::time::SystemTime, String, u64)> = Vec::new();
        for e in std::fs::read_dir(dir).map_err(io_at(dir))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !is_entry_name(&name) {
                continue;
            }
            if let Ok(m) = e.metadata() {
                let when = m.modified().unwrap_or(std::time::UNIX_EPOCH);
                found.push((when, name, m.len()));
            }
        }
        found.sort();
        let mut index = Index::default();
        for (_, name, size) in found {
            index.touch(&name, size);
        }
        let disk = Disk {
            dir: dir.to_path_buf(),
            vault,
            record,
            key,
            max,
            index: Mutex::new(index),
        };
        disk.evict();
        Ok(disk)
    }

    /// The entry for `key`, if this tier has it.
    pub fn get(&self, key: &Key) -> Option<Entry> {
        let name = file_name(key);
        let size = {
            let index = self.index.lock().ok()?;
            index.files.get(&name)?.0
        };
        let path = self.dir.join(&name);
        match self.read(&path, key) {
            Ok(Some(entry)) => {
                if let Ok(mut index) = self.index.lock() {
                    index.touch(&name, size);
                }
                Some(entry)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "an IMAP cache file cannot be read: removed");
                let _ = std::fs::remove_file(&path);
                if let Ok(mut index) = self.index.lock() {
                    index.forget(&name);
                }
                None
            }
        }
    }

    fn read(&self, path: &Path, key: &Key) -> io::Result<Option<Entry>> {
        let sealed = SealedFile::open(File::open(path)?, &self.key)?;
        let mut plain = Buf::with_capacity(sealed.len() as usize);
        for i in 0..sealed.chunks() {
            let chunk = Buf::from(sealed.chunk(i)?);
            plain.extend(&chunk);
        }
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "not an IMAP cache entry");
        let rest = plain.strip_prefix(MAGIC).ok_or_else(bad)?;
        let (&kind, rest) = rest.split_first().ok_or_else(bad)?;
        let id = identity(key);
        let (len, rest) = rest.split_at_checked(4).ok_or_else(bad)?;
        let len = u32::from_be_bytes(len.try_into().map_err(|_| bad())?) as usize;
        let (stored_id, body) = rest.split_at_checked(len).ok_or_else(bad)?;
        if stored_id != id.as_slice() {
            // Another key under the same digest: never served.
            return Ok(None);
        }
        match kind {
            PLAIN => Ok(Some(Entry::Plain)),
            OPENED => Ok(Some(Entry::Opened(Buf::from(body.to_vec())))),
            _ => Err(bad()),
        }
    }

    /// Keeps `entry` for `key`, dropping the least recently used files past the bound; an
    /// entry larger than a quarter of the bound is not kept.
    pub fn put(&self, key: &Key, entry: &Entry) {
        let body: &[u8] = match entry {
            Entry::Plain => &[],
            Entry::Opened(b) => b,
        };
        if (body.len() as u64) > self.max / 4 {
            return;
        }
        let name = file_name(key);
        let path = self.dir.join(&name);
        match self.write(&path, key, entry, body) {
            Ok(size) => {
                if let Ok(mut index) = self.index.lock() {
                    index.touch(&name, size);
                }
                self.evict();
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot write to the IMAP cache");
            }
        }
    }

    fn write(&self, path: &Path, key: &Key, entry: &Entry, body: &[u8]) -> io::Result<u64> {
        let tmp = path.with_extension("new");
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        let mut w = SealedWriter::new(file, &self.key)?;
        let id = identity(key);
        let kind = match entry {
            Entry::Plain => PLAIN,
            Entry::Opened(_) => OPENED,
        };
        w.write(MAGIC)?;
        w.write(&[kind])?;
        w.write(&(id.len() as u32).to_be_bytes())?;
        w.write(&id)?;
        w.write(body)?;
        w.finish()?;
        std::fs::rename(&tmp, path)?;
        Ok(std::fs::metadata(path)?.len())
    }

    fn evict(&self) {
        let Ok(mut index) = self.index.lock() else {
            return;
        };
        while index.bytes > self.max {
            let Some((_, oldest)) = index.order.pop_first() else {
                break;
            };
            if let Some((size, _)) = index.files.remove(&oldest) {
                index.bytes = index.bytes.saturating_sub(size);
            }
            let _ = std::fs::remove_file(self.dir.join(&oldest));
        }
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.index.lock().map_or(0, |i| i.bytes)
    }

    /// Destroys the tier's key, which makes every file unreadable, then removes the files.
    ///
    /// # Errors
    /// Vault errors.
    pub fn shred(&self) -> Result<(), Error> {
        self.vault.destroy(&self.record)?;
        self.vault.sync()?;
        remove_entries(&self.dir);
        let _ = std::fs::remove_file(self.dir.join(KEY_FILE));
        if let Ok(mut index) = self.index.lock() {
            *index = Index::default();
        }
        Ok(())
    }
}

/// What a file's plaintext names: the login, mailbox, UIDVALIDITY and UID, unambiguously.
fn identity(key: &Key) -> Vec<u8> {
    let mut id = Vec::new();
    for part in [key.login.as_bytes(), key.mailbox.as_bytes()] {
        id.extend_from_slice(&(part.len() as u32).to_be_bytes());
        id.extend_from_slice(part);
    }
    id.extend_from_slice(&key.uidvalidity.to_be_bytes());
    id.extend_from_slice(&key.uid.to_be_bytes());
    id
}

fn file_name(key: &Key) -> String {
    let digest = Sha256::digest(identity(key));
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn is_entry_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

fn remove_entries(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if is_entry_name(&name) || name.ends_with(".new") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::cache::tests::key;

    fn opened(e: Option<Entry>) -> Vec<u8> {
        match e {
            Some(Entry::Opened(b)) => b.to_vec(),
            other => panic!("not an opened entry: {other:?}"),
        }
    }

    #[test]
    fn entries_survive_a_reopen_sealed_and_per_login() {
        let dir = tempfile::tempdir().unwrap();
        let vault_dir = tempfile::tempdir().unwrap();
        let vault = Vault::open(&vault_dir.path().join("vault"), None).unwrap();
        let secret = b"Subject: the plan\r\n\r\nMEET AT NOON".to_vec();
        {
            let d = Disk::open(dir.path(), Arc::clone(&vault), 1 << 20).unwrap();
            d.put(&key("bob", 1), &Entry::Opened(Buf::from(secret.clone())));
            d.put(&key("bob", 2), &Entry::Plain);
        }
        let d = Disk::open(dir.path(), Arc::clone(&vault), 1 << 20).unwrap();
        assert_eq!(opened(d.get(&key("bob", 1))), secret);
        assert!(matches!(d.get(&key("bob", 2)), Some(Entry::Plain)));
        assert!(d.get(&key("mallory", 1)).is_none(), "never another login's");
        for e in std::fs::read_dir(dir.path()).unwrap().flatten() {
            let bytes = std::fs::read(e.path()).unwrap();
            assert!(
                !bytes.windows(12).any(|w| w == b"MEET AT NOON"),
                "{:?} holds the plaintext",
                e.path()
            );
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(!name.contains("bob") && !name.contains("INBOX"), "{name}");
        }
        // A file renamed to another message's name is not served for it.
        let from = dir.path().join(file_name(&key("bob", 1)));
        let to = dir.path().join(file_name(&key("bob", 3)));
        std::fs::copy(&from, &to).unwrap();
        let d = Disk::open(dir.path(), Arc::clone(&vault), 1 << 20).unwrap();
        assert!(d.get(&key("bob", 3)).is_none());

        // Shredding destroys the key: even a copy of the files made before is unreadable.
        let copy = tempfile::tempdir().unwrap();
        std::fs::copy(&from, copy.path().join("entry")).unwrap();
        let record = std::fs::read(dir.path().join(KEY_FILE)).unwrap();
        d.shred().unwrap();
        assert!(vault.record_key(&record).is_err());
        assert!(d.get(&key("bob", 1)).is_none());
        let d = Disk::open(dir.path(), Arc::clone(&vault), 1 << 20).unwrap();
        assert!(d.get(&key("bob", 1)).is_none());
        let stolen = File::open(copy.path().join("entry")).unwrap();
        let sealed = SealedFile::open(stolen, &d.key).unwrap();
        assert!(
            sealed.chunk(0).is_err(),
            "the new key does not open the old file"
        );
    }

    #[test]
    fn bounded_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let vault_dir = tempfile::tempdir().unwrap();
        let vault = Vault::open(&vault_dir.path().join("vault"), None).unwrap();
        let d = Disk::open(dir.path(), vault, 16 * 1024).unwrap();
        for uid in 1..=6 {
            d.put(
                &key("bob", uid),
                &Entry::Opened(Buf::from(vec![b'x'; 3000])),
            );
            if uid == 2 {
                assert!(d.get(&key("bob", 1)).is_some());
            }
        }
        assert!(d.bytes() <= 16 * 1024, "{}", d.bytes());
        assert!(
            d.get(&key("bob", 2)).is_none(),
            "the least recently used went first"
        );
        assert!(d.get(&key("bob", 6)).is_some());
        d.put(&key("bob", 7), &Entry::Opened(Buf::from(vec![b'y'; 5000])));
        assert!(
            d.get(&key("bob", 7)).is_none(),
            "over a quarter of the bound"
        );
    }
}
