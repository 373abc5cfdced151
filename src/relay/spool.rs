//! The spool: copies the gateway owes a delivery, in sled, sealed at rest (they may hold a
//! client's credentials or decrypted mail), flushed before the client hears 250.
//!
//! A large message (spilled to disk on arrival, or over [`FILE_ABOVE`]) is not copied into
//! its entry: it goes to a sealed file of its own, `spool-data/<entry id>` (0600, in a 0700
//! directory), written piece by piece, synced with its directory before the entry is
//! written, and removed with the entry. The files are sealed ([`crate::blob::sealed`])
//! under a random key that the spool keeps sealed under its own key, so that they are as
//! unreadable without the passphrase or key file as the entries are. A file without an
//! entry (a crash between the two) is removed when the spool is opened.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use sealpost_keyring::openpgp::crypto::Password;
use sealpost_vault::legacy::Sealer;
use sealpost_vault::vault::{self, Owner, Vault};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::blob::{Blob, MasterKey, SealedFile, SealedWriter};
use crate::smtp::envelope::Envelope;
use crate::smtp::transaction::Credentials;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("spool: {0}")]
    Store(String),
    #[error("spool: {0}")]
    Io(#[from] std::io::Error),
    /// A file or directory operation, with the path it was on (a file left owned by
    /// another user is then named).
    #[error("spool: {path}: {source}")]
    At {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the spool at {0} is in use by another process (is `sealpost serve` running?)")]
    Locked(String),
    #[error("spool entry {0} cannot be read: {1}")]
    Corrupt(String, String),
    #[error(transparent)]
    Vault(#[from] sealpost_vault::Error),
}

/// Names `path` in an I/O error.
fn at(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::At {
        path: path.to_path_buf(),
        source,
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Error {
        Error::Store(e.to_string())
    }
}

/// One copy waiting for delivery.
#[derive(Clone, Serialize, Deserialize)]
pub struct Entry {
    /// The spool key: the queue ID and the copy's number.
    pub id: String,
    pub queue_id: String,
    pub envelope: Envelope,
    /// The message, base64, when it sits in the entry; empty when it is in `file`.
    #[serde(default)]
    pub data: String,
    /// The message's sealed file in `spool-data/`, for a large message. Entries written
    /// before there were files have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The client's login (AUTH passthrough), needed for each retry.
    pub credentials: Option<Credentials>,
    #[serde(default)]
    pub route: super::Route,
    /// For an inbound copy, the header of the message as received, which is all a DSN
    /// about it returns ([`super::Copy::returned_header`]); base64. Entries written before
    /// it existed have none, and their DSNs return nothing of the message.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "base64_bytes"
    )]
    pub returned_header: Option<Arc<[u8]>>,
    /// Unix seconds.
    pub created: u64,
    pub attempts: u32,
    pub next_attempt: u64,
    pub last_error: Option<String>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("id", &self.id)
            .field("envelope", &self.envelope)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl Entry {
    /// The message kept in the entry itself (see [`Spool::message`] for any entry).
    pub fn message(&self) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.data)
            .unwrap_or_default()
    }

    pub fn encode(data: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(data)
    }
}

/// Bytes in an entry as a base64 string, as `data` is: JSON would spell them as an array
/// of numbers, four times larger.
mod base64_bytes {
    use std::sync::Arc;

    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Arc<[u8]>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(bytes) => {
                s.serialize_some(&base64::engine::general_purpose::STANDARD.encode(bytes))
            }
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Arc<[u8]>>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| {
            base64::engine::general_purpose::STANDARD
                .decode(t)
                .map(Arc::from)
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

pub struct Spool {
    db: sled::Db,
    /// Holds each entry's own key (see the module doc).
    vault: Arc<Vault>,
    /// Reads entries written before the vault, to move them into it.
    legacy: Option<Legacy>,
    /// Where large messages go, one sealed file per entry.
    files: PathBuf,
    /// Each entry's creation time, kept up to date with every change, so that the
    /// metrics (how many, how old) never read and unseal the whole spool.
    index: std::sync::Mutex<Index>,
}

/// The spool's entries by ID and by age.
#[derive(Debug, Default)]
struct Index {
    by_id: std::collections::HashMap<String, u64>,
    by_age: std::collections::BTreeSet<(u64, String)>,
}

impl Index {
    fn add(&mut self, id: &str, created: u64) {
        self.remove(id);
        self.by_id.insert(id.to_string(), created);
        self.by_age.insert((created, id.to_string()));
    }

    fn remove(&mut self, id: &str) {
        if let Some(created) = self.by_id.remove(id) {
            self.by_age.remove(&(created, id.to_string()));
        }
    }
}

/// The one key older entries and their files were sealed under.
struct Legacy {
    sealer: Sealer,
    files_key: Option<MasterKey>,
}

/// Messages larger than this (or spilled to disk already) get a file of their own.
pub const FILE_ABOVE: usize = 1024 * 1024;

/// Entries written before the vault: the salt their key was derived with, and the message
/// files' key sealed under it.
const SALT_KEY: &[u8] = b"\0salt";
const FILES_KEY: &[u8] = b"\0files-key";
/// The file an entry moved into the vault has its message in (beside the older file,
/// until that one is removed): the entry ID and this suffix.
const MOVED: &str = ".v";

impl Spool {
    /// Opens the spool in `data_dir/spool`, with the data directory's vault
    /// (`data_dir/vault`, which this opens and locks).
    ///
    /// # Errors
    /// When the database or the vault cannot be opened (in use, a passphrase that does
    /// not fit).
    pub fn open(data_dir: &Path, passphrase: Option<&Password>) -> Result<Spool, Error> {
        sealpost_vault::disk::create_private_dir(data_dir).map_err(at(data_dir))?;
        let vault = Vault::open(&data_dir.join("vault"), passphrase).map_err(|e| match e {
            sealpost_vault::Error::Locked { path } => Error::Locked(path),
            other => Error::Vault(other),
        })?;
        Spool::open_with(data_dir, vault, passphrase)
    }

    /// Opens the spool in `data_dir/spool` with a vault the caller holds (shared with the
    /// keyring). `passphrase` unseals entries written before the vault, which are moved
    /// into it now.
    ///
    /// # Errors
    /// When the database cannot be opened, or older entries cannot be moved.
    pub fn open_with(
        data_dir: &Path,
        vault: Arc<Vault>,
        passphrase: Option<&Password>,
    ) -> Result<Spool, Error> {
        sealpost_vault::disk::create_private_dir(data_dir)?;
        let path = data_dir.join("spool");
        let config = sled::Config::new().path(&path);
        let db = sealpost_vault::disk::open_sled(&config).map_err(|e| {
            if sealpost_vault::disk::is_lock_error(&e) {
                Error::Locked(path.display().to_string())
            } else {
                Error::Store(format!("{}: {e}", path.display()))
            }
        })?;
        let legacy = Legacy::open(&db, data_dir, passphrase)?;
        let files = data_dir.join("spool-data");
        std::fs::create_dir_all(&files).map_err(at(&files))?;
        std::fs::set_permissions(&files, std::fs::Permissions::from_mode(0o700))
            .map_err(at(&files))?;
        let mut spool = Spool {
            db,
            vault,
            legacy,
            files,
            index: std::sync::Mutex::default(),
        };
        spool.move_into_vault(data_dir)?;
        spool.remove_orphans()?;
        let live: Vec<Vec<u8>> = spool
            .records()?
            .into_iter()
            .map(|(_, v)| v.to_vec())
            .collect();
        let cleared = spool.vault.retain(Owner::Spool, &live)?;
        if cleared > 0 {
            tracing::info!(
                cleared,
                "destroyed the keys of spool entries removed before a crash"
            );
        }
        // Once, at open: from here on every change keeps the index.
        for e in spool.all()? {
            spool.indexed(|i| i.add(&e.id, e.created));
        }
        Ok(spool)
    }

    /// How many entries the spool holds, and the creation time (Unix seconds) of the
    /// oldest: from the index, without reading the database.
    pub fn stats(&self) -> (usize, Option<u64>) {
        let index = self
            .index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (index.by_id.len(), index.by_age.first().map(|(t, _)| *t))
    }

    fn indexed(&self, f: impl FnOnce(&mut Index)) {
        let mut index = self
            .index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut index);
    }

    /// Every stored entry's ID and record (not the older format's key records).
    fn records(&self) -> Result<Vec<(sled::IVec, sled::IVec)>, Error> {
        let mut out = Vec::new();
        for item in self.db.iter() {
            let (k, v) = item?;
            if k.as_ref() != SALT_KEY && k.as_ref() != FILES_KEY {
                out.push((k, v));
            }
        }
        Ok(out)
    }

    /// Moves entries written before the vault into it, message files and all, then
    /// forgets the older key. An entry that cannot be unsealed (a passphrase not given)
    /// stays as it is, and so does the older key.
    fn move_into_vault(&mut self, data_dir: &Path) -> Result<(), Error> {
        let Some(legacy) = &self.legacy else {
            return Ok(());
        };
        let mut left = 0usize;
        let mut moved = 0usize;
        for (k, v) in self.records()? {
            if vault::is_record(&v) {
                continue;
            }
            let id = String::from_utf8_lossy(&k).into_owned();
            let Ok(json) = legacy.sealer.open_record(&v) else {
                left += 1;
                continue;
            };
            let json = Zeroizing::new(json);
            let mut entry: Entry = serde_json::from_slice(&json)
                .map_err(|e| Error::Corrupt(id.clone(), e.to_string()))?;
            let old_file = entry.file.take();
            let record = match &old_file {
                None => self.seal_entries(&[&entry])?.remove(0),
                Some(name) => {
                    let key = legacy.files_key.as_ref().ok_or_else(|| {
                        Error::Corrupt(id.clone(), "its message file has no key".into())
                    })?;
                    let path = self.files.join(file_name(name)?);
                    let f = File::open(&path).map_err(at(&path))?;
                    let blob = Blob::from(SealedFile::open(f, key).map_err(at(&path))?);
                    let new_name = format!("{}{MOVED}", file_name(&entry.id)?);
                    entry.file = Some(new_name.clone());
                    let record = self.seal_entries(&[&entry])?.remove(0);
                    self.write_file(&new_name, &blob, &record)?;
                    File::open(&self.files)
                        .and_then(|d| d.sync_all())
                        .map_err(at(&self.files))?;
                    record
                }
            };
            self.db.insert(k, record)?;
            self.db.flush()?;
            if let Some(name) = old_file {
                remove_if_present(&self.files.join(file_name(&name)?))?;
            }
            moved += 1;
        }
        if moved > 0 {
            tracing::info!(
                moved,
                "moved spool entries into the vault, each under a key of its own"
            );
        }
        if left == 0 {
            self.db.remove(SALT_KEY)?;
            self.db.remove(FILES_KEY)?;
            self.db.flush()?;
            shred_file(&data_dir.join("spool.key"))?;
            self.legacy = None;
        } else {
            tracing::warn!(left, "spool entries written before the vault are sealed under a passphrase that was not given; they stay as they are");
        }
        Ok(())
    }

    /// How many entries are still in the format written before the vault (sealed under a
    /// passphrase that was not given when the spool was opened).
    pub fn unmoved(&self) -> Result<usize, Error> {
        Ok(self
            .records()?
            .iter()
            .filter(|(_, v)| !vault::is_record(v))
            .count())
    }

    /// Seals entries, each under a new key of its own in the vault.
    fn seal_entries(&self, entries: &[&Entry]) -> Result<Vec<Vec<u8>>, Error> {
        let jsons = entries
            .iter()
            .map(|e| {
                serde_json::to_vec(e)
                    .map(Zeroizing::new)
                    .map_err(|e| Error::Store(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let plain: Vec<&[u8]> = jsons.iter().map(|j| j.as_slice()).collect();
        Ok(self.vault.seal_many(Owner::Spool, &plain)?)
    }

    /// Stores new entries with their messages, durably, before returning: a large
    /// message is written to its own file and synced (with the directory) before the
    /// entries are; a small one, or `None` (the entry holds its data already), goes in
    /// the entry.
    ///
    /// # Errors
    /// Any storage failure: the caller must then not promise delivery. Files written for
    /// these entries are removed again, and their keys destroyed.
    pub fn put_new(&self, items: Vec<(Entry, Option<Blob>)>) -> Result<(), Error> {
        let mut entries = Vec::with_capacity(items.len());
        let mut blobs = Vec::new();
        for (mut e, data) in items {
            match data {
                Some(blob) if blob.is_spilled() || blob.len() > FILE_ABOVE => {
                    let name = file_name(&e.id)?.to_string();
                    e.data = String::new();
                    e.file = Some(name.clone());
                    blobs.push((entries.len(), name, blob));
                }
                Some(blob) => e.data = Entry::encode(&blob.bytes()?),
                None => {}
            }
            entries.push(e);
        }
        let records = self.seal_entries(&entries.iter().collect::<Vec<_>>())?;
        let mut written = Vec::new();
        let result = (|| {
            for (i, name, blob) in &blobs {
                written.push(name.clone());
                self.write_file(name, blob, &records[*i])?;
            }
            if !written.is_empty() {
                // The files' names must be on disk before an entry points at them.
                File::open(&self.files)
                    .and_then(|d| d.sync_all())
                    .map_err(at(&self.files))?;
            }
            self.store(&entries, &records)
        })();
        if result.is_err() {
            for name in written {
                let _ = std::fs::remove_file(self.files.join(name));
            }
            for r in &records {
                let _ = self.vault.destroy(r);
            }
        }
        result
    }

    fn write_file(&self, name: &str, blob: &Blob, record: &[u8]) -> Result<(), Error> {
        let path = self.files.join(name);
        let file = sealpost_vault::disk::create_private_file(&path).map_err(at(&path))?;
        let key = MasterKey::new(*self.vault.record_key(record)?);
        let mut w = SealedWriter::new(file, &key).map_err(at(&path))?;
        blob.for_each_piece(|p| w.write(p)).map_err(at(&path))?;
        w.finish_durable().map_err(at(&path))?;
        Ok(())
    }

    /// The message of `entry`: from its file (read a chunk at a time when it is sent),
    /// or from the entry itself.
    ///
    /// # Errors
    /// When the file is missing or is not a sealed file, or the entry is gone.
    pub fn message(&self, entry: &Entry) -> Result<Blob, Error> {
        let Some(name) = &entry.file else {
            return Ok(Blob::from(entry.message()));
        };
        let record = self
            .db
            .get(entry.id.as_bytes())?
            .ok_or_else(|| Error::Corrupt(entry.id.clone(), "the entry is gone".into()))?;
        let key = if vault::is_record(&record) {
            MasterKey::new(*self.vault.record_key(&record)?)
        } else {
            self.legacy
                .as_ref()
                .and_then(|l| l.files_key.clone())
                .ok_or_else(|| Error::Corrupt(entry.id.clone(), "no key for its file".into()))?
        };
        let path = self.files.join(file_name(name)?);
        let f = File::open(&path).map_err(at(&path))?;
        Ok(Blob::from(SealedFile::open(f, &key).map_err(at(&path))?))
    }

    /// Removes message files that no entry has (left by a crash between writing the
    /// file and the entry). An entry's file has the entry's ID for a name (with
    /// [`MOVED`] after it for an entry moved into the vault), so this reads no entry:
    /// nothing is removed because entries cannot be unsealed.
    fn remove_orphans(&self) -> Result<(), Error> {
        for item in std::fs::read_dir(&self.files).map_err(at(&self.files))? {
            let item = item?;
            if !item.file_type()?.is_file() {
                continue;
            }
            let name = item.file_name();
            let owned = match name.to_str() {
                Some(n) => self
                    .db
                    .contains_key(n.strip_suffix(MOVED).unwrap_or(n).as_bytes())?,
                None => false,
            };
            if !owned {
                tracing::warn!(file = %item.path().display(), "removing a spooled message file without an entry (left by an interrupted write)");
                std::fs::remove_file(item.path()).map_err(at(&item.path()))?;
            }
        }
        Ok(())
    }

    /// Stores new entries, each under a key of its own, durably, before returning. An
    /// entry that replaces one with the same ID makes the old one's key go.
    ///
    /// # Errors
    /// Any storage failure: the caller must then not promise delivery.
    pub fn put(&self, entries: &[Entry]) -> Result<(), Error> {
        let records = self.seal_entries(&entries.iter().collect::<Vec<_>>())?;
        let result = self.store(entries, &records);
        if result.is_err() {
            for r in &records {
                let _ = self.vault.destroy(r);
            }
        }
        result
    }

    fn store(&self, entries: &[Entry], records: &[Vec<u8>]) -> Result<(), Error> {
        let mut replaced = Vec::new();
        let mut batch = sled::Batch::default();
        for (e, record) in entries.iter().zip(records) {
            if let Some(old) = self.db.get(e.id.as_bytes())? {
                replaced.push(old);
            }
            batch.insert(e.id.as_bytes(), record.as_slice());
        }
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        self.indexed(|i| {
            for e in entries {
                i.add(&e.id, e.created);
            }
        });
        for old in replaced.iter().filter(|r| vault::is_record(r)) {
            self.vault.destroy(old)?;
        }
        Ok(())
    }

    /// Removes an entry once it is delivered or given up, with its file; then its key
    /// goes, so that what sled keeps of it can no longer be opened.
    ///
    /// # Errors
    /// Storage failures.
    pub fn remove(&self, id: &str) -> Result<bool, Error> {
        let old = self.db.remove(id.as_bytes())?;
        self.db.flush()?;
        self.indexed(|i| i.remove(id));
        let Some(old) = old else {
            return Ok(false);
        };
        self.remove_file_of(id, &old)?;
        self.forget(&old)?;
        Ok(true)
    }

    /// Destroys the key of a removed entry's record.
    fn forget(&self, old: &[u8]) -> Result<(), Error> {
        if vault::is_record(old) {
            self.vault.destroy(old)?;
        }
        Ok(())
    }

    /// Removes the message file of the entry `id`, whose sealed record was `old`, once the
    /// entry is gone. The file goes after the entry: a crash in between leaves an orphan,
    /// removed at the next start, never an entry without its message.
    fn remove_file_of(&self, id: &str, old: &[u8]) -> Result<(), Error> {
        let name = match self.unseal(id.as_bytes(), old) {
            Ok(e) => e.file,
            Err(_) => None,
        };
        // Unreadable, or moved into the vault: a file may have the entry's ID for a name,
        // with or without the suffix.
        let mut names = vec![id.to_string(), format!("{id}{MOVED}")];
        names.extend(name);
        for name in names {
            if let Ok(name) = file_name(&name) {
                remove_if_present(&self.files.join(name))?;
            }
        }
        Ok(())
    }

    /// Records the outcome of an attempt at the entry `id`, durably, in one step: the
    /// `reports` (DSNs) are stored, and the entry is replaced by `rest` (what is still
    /// owed) or, when `rest` is `None`, removed with its message file. When the entry is
    /// gone already (`sealpost queue remove` while it was attempted), it stays gone: an
    /// attempt never writes back an entry, nor one whose file was removed. Returns whether
    /// the entry was still there.
    ///
    /// # Errors
    /// Storage failures; then nothing of it is stored.
    pub fn settle(&self, id: &str, rest: Option<&Entry>, reports: &[Entry]) -> Result<bool, Error> {
        let report_times: Vec<(String, u64)> =
            reports.iter().map(|e| (e.id.clone(), e.created)).collect();
        let settled = rest.is_none();
        // `rest` is the same entry, so it keeps its key (its file is sealed under it).
        let rest = match (rest, self.db.get(id.as_bytes())?) {
            (Some(e), Some(current)) if vault::is_record(&current) => {
                let json =
                    Zeroizing::new(serde_json::to_vec(e).map_err(|e| Error::Store(e.to_string()))?);
                match self.vault.reseal(&current, &json) {
                    Ok(r) => Some((e.id.as_bytes().to_vec(), r)),
                    // Its key was destroyed: the entry was removed meanwhile.
                    Err(_) if self.db.get(id.as_bytes())?.is_none() => None,
                    Err(e) => return Err(e.into()),
                }
            }
            (Some(e), Some(_)) => {
                // An older entry, not moved into the vault: it stays in the older format,
                // whose key its file is sealed under.
                let legacy = self.legacy.as_ref().ok_or_else(|| {
                    Error::Corrupt(id.to_string(), "written before the vault".into())
                })?;
                let json =
                    Zeroizing::new(serde_json::to_vec(e).map_err(|e| Error::Store(e.to_string()))?);
                let r = legacy
                    .sealer
                    .seal(&json)
                    .map_err(|e| Error::Store(e.to_string()))?;
                Some((e.id.as_bytes().to_vec(), r))
            }
            _ => None,
        };
        let sealed_reports = self.seal_entries(&reports.iter().collect::<Vec<_>>())?;
        let reports: Vec<(Vec<u8>, Vec<u8>)> = reports
            .iter()
            .map(|e| e.id.as_bytes().to_vec())
            .zip(sealed_reports)
            .collect();
        let outcome = self.db.transaction(|tx| {
            for (k, v) in &reports {
                tx.insert(k.as_slice(), v.as_slice())?;
            }
            let old = tx.get(id.as_bytes())?;
            match (&old, &rest) {
                (None, _) => {}
                (Some(_), Some((k, v))) => {
                    tx.insert(k.as_slice(), v.as_slice())?;
                }
                (Some(_), None) => {
                    tx.remove(id.as_bytes())?;
                }
            }
            Ok::<_, sled::transaction::ConflictableTransactionError<std::convert::Infallible>>(old)
        });
        let old = match outcome {
            Ok(old) => old,
            Err(e) => {
                for (_, r) in &reports {
                    let _ = self.vault.destroy(r);
                }
                return Err(match e {
                    sled::transaction::TransactionError::Storage(e) => Error::from(e),
                    sled::transaction::TransactionError::Abort(never) => match never {},
                });
            }
        };
        self.db.flush()?;
        self.indexed(|i| {
            for (rid, created) in &report_times {
                i.add(rid, *created);
            }
            if settled || old.is_none() {
                i.remove(id);
            }
        });
        let Some(old) = old else {
            return Ok(false);
        };
        if rest.is_none() {
            self.remove_file_of(id, &old)?;
            self.forget(&old)?;
        }
        Ok(true)
    }

    /// Every entry, oldest ID first. Entries that cannot be unsealed are reported, not
    /// dropped.
    pub fn all(&self) -> Result<Vec<Entry>, Error> {
        let mut out = Vec::new();
        for (k, v) in self.records()? {
            match self.unseal(&k, &v) {
                Ok(e) => out.push(e),
                // Removed since it was read, with its key: it is no longer owed.
                Err(_) if self.db.get(&k)?.as_ref() != Some(&v) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    pub fn get(&self, id: &str) -> Result<Option<Entry>, Error> {
        let Some(v) = self.db.get(id.as_bytes())? else {
            return Ok(None);
        };
        match self.unseal(id.as_bytes(), &v) {
            Ok(e) => Ok(Some(e)),
            // Removed or replaced since it was read: read what is there now.
            Err(_) if self.db.get(id.as_bytes())?.as_ref() != Some(&v) => {
                match self.db.get(id.as_bytes())? {
                    Some(now) => Ok(Some(self.unseal(id.as_bytes(), &now)?)),
                    None => Ok(None),
                }
            }
            Err(e) => Err(e),
        }
    }

    fn unseal(&self, key: &[u8], value: &[u8]) -> Result<Entry, Error> {
        let id = String::from_utf8_lossy(key).into_owned();
        let json = if vault::is_record(value) {
            self.vault
                .open_record(value)
                .map_err(|e| Error::Corrupt(id.clone(), e.to_string()))?
        } else {
            let legacy = self.legacy.as_ref().ok_or_else(|| {
                Error::Corrupt(
                    id.clone(),
                    "written before the vault, and its key is gone".into(),
                )
            })?;
            Zeroizing::new(
                legacy
                    .sealer
                    .open_record(value)
                    .map_err(|e| Error::Corrupt(id.clone(), e.to_string()))?,
            )
        };
        serde_json::from_slice(&json).map_err(|e| Error::Corrupt(id, e.to_string()))
    }
}

impl Legacy {
    /// The older key, when anything was sealed under it: a salt in the database (with a
    /// passphrase) or the `spool.key` file.
    fn open(
        db: &sled::Db,
        data_dir: &Path,
        passphrase: Option<&Password>,
    ) -> Result<Option<Legacy>, Error> {
        let key_path = data_dir.join("spool.key");
        let sealer = match (db.get(SALT_KEY)?, passphrase) {
            (Some(salt), Some(p)) => {
                Sealer::derive(p, &salt).map_err(|e| Error::Store(e.to_string()))?
            }
            (Some(_), None) => return Ok(None),
            (None, _) if key_path.exists() => Sealer::from_key(key_file(&key_path)?),
            (None, _) => return Ok(None),
        };
        let files_key = match db.get(FILES_KEY)? {
            Some(record) => {
                let corrupt = |why: String| Error::Corrupt("message files key".into(), why);
                let key = Zeroizing::new(
                    sealer
                        .open_record(&record)
                        .map_err(|e| corrupt(e.to_string()))?,
                );
                let key = <[u8; 32]>::try_from(key.as_slice())
                    .map_err(|_| corrupt("not 32 bytes".into()))?;
                Some(MasterKey::new(key))
            }
            None => None,
        };
        Ok(Some(Legacy { sealer, files_key }))
    }
}

fn remove_if_present(path: &Path) -> Result<(), Error> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(at(path)(e)),
        _ => Ok(()),
    }
}

/// Overwrites a small key file with zeros on disk, then removes it.
fn shred_file(path: &Path) -> Result<(), Error> {
    let file = match OpenOptions::new().write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(at(path)(e)),
    };
    let len = file.metadata().map_err(at(path))?.len();
    let zeros = vec![0u8; usize::try_from(len).unwrap_or(0)];
    (&file).write_all(&zeros).map_err(at(path))?;
    file.sync_all().map_err(at(path))?;
    std::fs::remove_file(path).map_err(at(path))?;
    Ok(())
}

/// An entry ID as a file name: letters, digits, `.`, `_` and `-`, not starting with `.`
/// (the gateway's IDs are such; anything else never becomes a path).
fn file_name(id: &str) -> Result<&str, Error> {
    let ok = !id.is_empty()
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(id)
    } else {
        Err(Error::Corrupt(id.to_string(), "not a file name".into()))
    }
}

/// Reads the key file entries were sealed under before the vault, when there was no
/// passphrase.
fn key_file(path: &Path) -> Result<[u8; 32], Error> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(at(path))?);
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        Error::Corrupt(
            path.display().to_string(),
            "the spool key file is not 32 bytes".into(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::envelope::{Recipient, Sender};

    /// The count and oldest time follow every change, and a reopen finds the same.
    #[test]
    fn the_stats_follow_each_change_without_reading_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let at = |id: &str, created: u64| Entry {
            created,
            ..entry(id)
        };
        {
            let s = Spool::open(dir.path(), None).unwrap();
            assert_eq!(s.stats(), (0, None));
            s.put_new(vec![(at("Q.1", 30), None), (at("Q.2", 10), None)])
                .unwrap();
            s.put(&[at("R.1", 20)]).unwrap();
            assert_eq!(s.stats(), (3, Some(10)));
            // Delivered, with a report made meanwhile.
            assert!(s.settle("Q.2", None, &[at("Q.2.dsn.1", 40)]).unwrap());
            assert_eq!(s.stats(), (3, Some(20)));
            // Still owed: stays, with its own time.
            assert!(s.settle("R.1", Some(&at("R.1", 20)), &[]).unwrap());
            assert_eq!(s.stats(), (3, Some(20)));
            assert!(s.remove("R.1").unwrap());
            assert!(!s.remove("R.1").unwrap());
            assert_eq!(s.stats(), (2, Some(30)));
        }
        let s = Spool::open(dir.path(), None).unwrap();
        assert_eq!(s.stats(), (2, Some(30)));
        assert_eq!(s.all().unwrap().len(), 2);
    }

    fn entry(id: &str) -> Entry {
        Entry {
            id: id.into(),
            queue_id: "Q".into(),
            envelope: Envelope {
                sender: Sender::plain("a@example.org"),
                recipients: vec![Recipient::plain("b@example.net")],
            },
            data: Entry::encode(b"Subject: plaintext secret words\r\n\r\nbody\r\n"),
            file: None,
            credentials: Some(Credentials {
                username: "alice".into(),
                secret: Some("hunter2-password".into()),
            }),
            route: crate::relay::Route::Outbound,
            returned_header: None,
            created: 1,
            attempts: 0,
            next_attempt: 0,
            last_error: None,
        }
    }

    #[test]
    fn sealed_at_rest_survives_reopen_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        for pass in [None, Some(Password::from("spool pass"))] {
            let sub = dir.path().join(if pass.is_some() { "p" } else { "n" });
            {
                let s = Spool::open(&sub, pass.as_ref()).unwrap();
                s.put(&[entry("Q.1"), entry("Q.2")]).unwrap();
            }
            for f in walk(&sub) {
                let bytes = std::fs::read(&f).unwrap();
                for needle in [
                    &b"plaintext secret"[..],
                    b"hunter2-password",
                    b"cGxhaW50ZXh0",
                ] {
                    assert!(
                        !bytes.windows(needle.len()).any(|w| w == needle),
                        "{} leaks",
                        f.display()
                    );
                }
            }
            let s = Spool::open(&sub, pass.as_ref()).unwrap();
            let all = s.all().unwrap();
            assert_eq!(all.len(), 2);
            assert_eq!(
                all[0].message(),
                b"Subject: plaintext secret words\r\n\r\nbody\r\n"
            );
            // An entry with its data inside (as all were before files) reads as ever.
            assert_eq!(
                s.message(&all[0]).unwrap().to_vec().unwrap(),
                all[0].message()
            );
            assert!(s.remove("Q.1").unwrap());
            assert_eq!(s.all().unwrap().len(), 1);
        }
    }

    /// A message of three chunks and a bit with a plaintext marker on every line.
    fn large() -> Vec<u8> {
        let mut m = b"Subject: plaintext secret words\r\n\r\n".to_vec();
        while m.len() < 3 * crate::blob::sealed::CHUNK + 500 {
            m.extend_from_slice(b"more plaintext secret words on this line\r\n");
        }
        m
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_large_message_gets_a_sealed_file_read_back_after_a_reopen_and_removed_with_its_entry() {
        let dir = tempfile::tempdir().unwrap();
        let incoming = tempfile::tempdir().unwrap();
        let message = large();
        for pass in [None, Some(Password::from("spool pass"))] {
            let sub = dir.path().join(if pass.is_some() { "p" } else { "n" });
            {
                let s = Spool::open(&sub, pass.as_ref()).unwrap();
                let big = crate::relay::testutil::spilled(&message, incoming.path());
                // Over the size, though in memory: a file too.
                let also_big = Blob::from(vec![b'x'; FILE_ABOVE + 1]);
                let small = Blob::from(&b"Subject: small\r\n\r\nx\r\n"[..]);
                s.put_new(vec![
                    (entry("Q.1"), Some(big)),
                    (entry("Q.2"), Some(small)),
                    (entry("Q.3"), Some(also_big)),
                ])
                .unwrap();
            }
            let files = sub.join("spool-data");
            assert_eq!(mode(&files), 0o700);
            assert_eq!(mode(&files.join("Q.1")), 0o600);
            assert!(files.join("Q.3").exists());
            assert!(
                !files.join("Q.2").exists(),
                "a small message stays in its entry"
            );
            for f in walk(&sub) {
                let bytes = std::fs::read(&f).unwrap();
                assert!(
                    !bytes.windows(16).any(|w| w == b"plaintext secret"),
                    "{} leaks",
                    f.display()
                );
            }

            // As after a restart.
            let s = Spool::open(&sub, pass.as_ref()).unwrap();
            let all = s.all().unwrap();
            assert_eq!(all.len(), 3);
            assert_eq!(all[0].file.as_deref(), Some("Q.1"));
            assert!(all[0].data.is_empty());
            let back = s.message(&all[0]).unwrap();
            assert!(back.is_spilled());
            assert!(back.to_vec().unwrap() == message, "byte for byte");
            assert_eq!(
                s.message(&all[1]).unwrap().to_vec().unwrap(),
                b"Subject: small\r\n\r\nx\r\n"
            );
            assert_eq!(s.message(&all[2]).unwrap().len(), FILE_ABOVE + 1);

            // An update (a retry) keeps the file.
            let mut e = all[0].clone();
            e.attempts += 1;
            s.put(&[e]).unwrap();
            assert!(files.join("Q.1").exists());
            assert!(s.remove("Q.1").unwrap());
            assert!(!files.join("Q.1").exists(), "the file goes with its entry");
            assert!(s.remove("Q.3").unwrap());
            assert_eq!(std::fs::read_dir(&files).unwrap().count(), 0);
        }
    }

    #[test]
    fn a_file_without_an_entry_is_removed_at_open_and_nothing_with_a_wrong_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let incoming = tempfile::tempdir().unwrap();
        let pass = Password::from("spool pass");
        let files = dir.path().join("spool-data");
        {
            let s = Spool::open(dir.path(), Some(&pass)).unwrap();
            let big = crate::relay::testutil::spilled(&large(), incoming.path());
            s.put_new(vec![(entry("Q.1"), Some(big))]).unwrap();
        }
        // A crash between a file and its entry leaves this.
        std::fs::write(files.join("R.0"), b"half a file").unwrap();
        assert!(Spool::open(dir.path(), Some(&Password::from("wrong"))).is_err());
        assert!(files.join("R.0").exists() && files.join("Q.1").exists());
        let s = Spool::open(dir.path(), Some(&pass)).unwrap();
        assert!(!files.join("R.0").exists(), "the orphan is gone");
        let all = s.all().unwrap();
        assert!(s.message(&all[0]).unwrap().to_vec().unwrap() == large());
    }

    #[test]
    fn settle_stores_reports_and_never_writes_back_a_removed_entry() {
        let dir = tempfile::tempdir().unwrap();
        let incoming = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), None).unwrap();
        let files = dir.path().join("spool-data");
        let big = || Some(crate::relay::testutil::spilled(&large(), incoming.path()));
        s.put_new(vec![(entry("Q.1"), big()), (entry("Q.2"), big())])
            .unwrap();

        // Still owed: replaced, its file kept, the report stored with it.
        let mut rest = s.get("Q.1").unwrap().unwrap();
        rest.attempts = 7;
        assert!(s.settle("Q.1", Some(&rest), &[entry("Q.1.dsn.1")]).unwrap());
        assert_eq!(s.get("Q.1").unwrap().unwrap().attempts, 7);
        assert!(s.get("Q.1.dsn.1").unwrap().is_some());
        assert!(files.join("Q.1").exists());
        // Done: removed with its file.
        assert!(s.settle("Q.1", None, &[]).unwrap());
        assert!(s.get("Q.1").unwrap().is_none());
        assert!(!files.join("Q.1").exists());

        // Removed meanwhile (`queue remove`): it stays removed, file and all; a report
        // about the attempt that was made still goes.
        let stale = s.get("Q.2").unwrap().unwrap();
        assert!(s.remove("Q.2").unwrap());
        assert!(!s
            .settle("Q.2", Some(&stale), &[entry("Q.2.dsn.1")])
            .unwrap());
        assert!(s.get("Q.2").unwrap().is_none());
        assert!(s.get("Q.2.dsn.1").unwrap().is_some());
        assert!(!s.settle("Q.2", None, &[]).unwrap());
    }

    #[test]
    fn the_received_header_is_kept_and_old_entries_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), None).unwrap();
        let mut e = entry("Q.1");
        e.returned_header = Some(Arc::from(&b"Subject: as received\r\n\r\n"[..]));
        s.put(&[e]).unwrap();
        let back = s.get("Q.1").unwrap().unwrap();
        assert_eq!(
            back.returned_header.as_deref(),
            Some(&b"Subject: as received\r\n\r\n"[..])
        );
        // Base64, not an array of numbers.
        let json = serde_json::to_string(&back).unwrap();
        assert!(
            json.contains("\"returned_header\":\"U3ViamVjdDog"),
            "{json}"
        );
        // An entry written before the field existed.
        let old = r#"{"id":"Q.9","queue_id":"Q","envelope":{"sender":{"address":"a@example.org","eight_bit":false,"smtputf8":false,"ret":null,"envid":null,"size":null},"recipients":[{"address":"b@example.net","notify":[],"orcpt":null}]},"data":"","credentials":null,"created":1,"attempts":0,"next_attempt":0,"last_error":null}"#;
        let old: Entry = serde_json::from_str(old).unwrap();
        assert!(old.returned_header.is_none());
        assert_eq!(old.route, crate::relay::Route::Outbound);
    }

    #[test]
    fn only_plain_ids_become_file_names() {
        for bad in ["", ".", "..", "../x", "a/b", ".hidden", "a\0b", "é"] {
            assert!(file_name(bad).is_err(), "{bad:?}");
        }
        for good in ["7KQ2M9XBD4FZ.0", "Q.dsn.1700000000", "a_b-c"] {
            assert_eq!(file_name(good).unwrap(), good);
        }
    }

    fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }
}
