//! The spool: copies the gateway owes a delivery, in sled, sealed at rest (they may hold a
//! client's credentials or decrypted mail), flushed before the client hears 250.

use std::io::Write;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine;
use sealpost_keyring::openpgp::crypto::Password;
use sealpost_keyring::secret::Sealer;
use serde::{Deserialize, Serialize};

use crate::smtp::envelope::Envelope;
use crate::smtp::transaction::Credentials;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("spool: {0}")]
    Store(String),
    #[error("spool: {0}")]
    Io(#[from] std::io::Error),
    #[error("the spool at {0} is in use by another process (is `sealpost serve` running?)")]
    Locked(String),
    #[error("spool entry {0} cannot be read: {1}")]
    Corrupt(String, String),
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
    /// The message, base64.
    pub data: String,
    /// The client's login (AUTH passthrough), needed for each retry.
    pub credentials: Option<Credentials>,
    #[serde(default)]
    pub route: super::Route,
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
    pub fn message(&self) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.data)
            .unwrap_or_default()
    }

    pub fn encode(data: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(data)
    }
}

pub struct Spool {
    db: sled::Db,
    sealer: Sealer,
}

const SALT_KEY: &[u8] = b"\0salt";

impl Spool {
    /// Opens the spool in `data_dir/spool`. Entries are sealed with a key derived from the
    /// keyring passphrase, or else with a random key kept in `data_dir/spool.key` (0600).
    ///
    /// # Errors
    /// When the database or the key file cannot be opened.
    pub fn open(data_dir: &Path, passphrase: Option<&Password>) -> Result<Spool, Error> {
        std::fs::create_dir_all(data_dir)?;
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))?;
        let path = data_dir.join("spool");
        let config = sled::Config::new().path(&path);
        let db = sealpost_keyring::store::sled::open_db(&config).map_err(|e| {
            if sealpost_keyring::store::sled::is_lock_error(&e) {
                Error::Locked(path.display().to_string())
            } else {
                Error::Store(e.to_string())
            }
        })?;
        let sealer = match passphrase {
            Some(p) => {
                let salt = match db.get(SALT_KEY)? {
                    Some(s) => s.to_vec(),
                    None => {
                        let s: [u8; 16] = rand::random();
                        db.insert(SALT_KEY, &s)?;
                        db.flush()?;
                        s.to_vec()
                    }
                };
                Sealer::derive(p, &salt).map_err(|e| Error::Store(e.to_string()))?
            }
            None => Sealer::from_key(key_file(&data_dir.join("spool.key"))?),
        };
        Ok(Spool { db, sealer })
    }

    /// Stores entries, durably, before returning.
    ///
    /// # Errors
    /// Any storage failure: the caller must then not promise delivery.
    pub fn put(&self, entries: &[Entry]) -> Result<(), Error> {
        let mut batch = sled::Batch::default();
        for e in entries {
            let json = serde_json::to_vec(e).map_err(|e| Error::Store(e.to_string()))?;
            let sealed = self
                .sealer
                .seal(&json)
                .map_err(|e| Error::Store(e.to_string()))?;
            batch.insert(e.id.as_bytes(), sealed);
        }
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    /// Removes an entry once it is delivered or given up.
    ///
    /// # Errors
    /// Storage failures.
    pub fn remove(&self, id: &str) -> Result<bool, Error> {
        let existed = self.db.remove(id.as_bytes())?.is_some();
        self.db.flush()?;
        Ok(existed)
    }

    /// Every entry, oldest ID first. Entries that cannot be unsealed are reported, not
    /// dropped.
    pub fn all(&self) -> Result<Vec<Entry>, Error> {
        let mut out = Vec::new();
        for item in self.db.iter() {
            let (k, v) = item?;
            if k.as_ref() == SALT_KEY {
                continue;
            }
            out.push(self.unseal(&k, &v)?);
        }
        Ok(out)
    }

    pub fn get(&self, id: &str) -> Result<Option<Entry>, Error> {
        match self.db.get(id.as_bytes())? {
            Some(v) => Ok(Some(self.unseal(id.as_bytes(), &v)?)),
            None => Ok(None),
        }
    }

    fn unseal(&self, key: &[u8], value: &[u8]) -> Result<Entry, Error> {
        let id = String::from_utf8_lossy(key).into_owned();
        let json = self
            .sealer
            .open_record(value)
            .map_err(|e| Error::Corrupt(id.clone(), e.to_string()))?;
        serde_json::from_slice(&json).map_err(|e| Error::Corrupt(id, e.to_string()))
    }
}

/// Reads the spool key, or makes one: 32 random bytes, written 0600 before any byte lands.
fn key_file(path: &Path) -> Result<[u8; 32], Error> {
    if let Ok(bytes) = std::fs::read(path) {
        if let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice()) {
            return Ok(key);
        }
        return Err(Error::Corrupt(
            path.display().to_string(),
            "the spool key file is not 32 bytes".into(),
        ));
    }
    let key: [u8; 32] = rand::random();
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        f.write_all(&key)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::envelope::{Recipient, Sender};

    fn entry(id: &str) -> Entry {
        Entry {
            id: id.into(),
            queue_id: "Q".into(),
            envelope: Envelope {
                sender: Sender::plain("a@example.org"),
                recipients: vec![Recipient::plain("b@example.net")],
            },
            data: Entry::encode(b"Subject: plaintext secret words\r\n\r\nbody\r\n"),
            credentials: Some(Credentials {
                username: "alice".into(),
                secret: Some("hunter2-password".into()),
            }),
            route: crate::relay::Route::Outbound,
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
            assert!(s.remove("Q.1").unwrap());
            assert_eq!(s.all().unwrap().len(), 1);
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
