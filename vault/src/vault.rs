//! The vault: one small file of record keys, so that a deleted record is really gone.
//!
//! sled never erases: a removed or replaced value stays in its log files until the space is
//! reused, which may be never. So a secret that sled stores is sealed under a key of its own
//! (a *record key*), kept in a slot of this file instead. Removing the record overwrites the
//! slot with zeros in place, and what sled keeps is ciphertext whose key no longer exists
//! (crypto-shredding). The keyring's secret keys and the spool's entries and message files
//! are sealed this way; each slot says which of them owns it.
//!
//! The keyring passphrase protects the slots, not the records: with a passphrase, each
//! slot's key is sealed under a key argon2id derives from it; without one, the slots hold
//! their keys as they are and the file's mode (0600) is their only protection. Changing the
//! passphrase therefore rewrites this one file, and with it every secret key and spooled
//! message at once ([`Vault::change_passphrase`]).
//!
//! Layout: a [`HEADER`]-byte header (magic, whether it is sealed, the argon2 salt, and a
//! verifier sealed under the derived key), then [`SLOT`]-byte slots. A slot is free when
//! its first byte is 0. A stored record is `2`, the slot number (u32, big-endian), a
//! 24-byte nonce, and the XChaCha20-Poly1305 ciphertext under the slot's key.
//!
//! What this cannot reach: the file system or the disk may keep an overwritten block
//! elsewhere (a journal in `data=journal` mode, a copy-on-write file system, an SSD's spare
//! blocks). Disk encryption covers those.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sequoia_openpgp::crypto::Password;
use zeroize::Zeroizing;

use crate::Error;

const MAGIC: &[u8; 16] = b"sealpost vault 1";
/// Bytes before the first slot.
pub const HEADER: usize = 128;
/// Bytes per slot.
pub const SLOT: usize = 80;
const VERIFIER: &[u8; 32] = b"sealpost vault passphrase check.";
const NONCE: usize = 24;
const TAG: usize = 16;
/// The first byte of a record sealed under a slot's key.
pub const RECORD: u8 = 2;
/// Bytes of a record before its ciphertext: format, slot, nonce.
const RECORD_HEAD: usize = 1 + 4 + NONCE;

/// Who a slot belongs to: each owner clears its own unused slots when it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Owner {
    /// A secret key in the keyring.
    Keyring = b'k',
    /// A spool entry and its message file.
    Spool = b's',
    /// The IMAP proxy's cache of opened messages on disk.
    ImapCache = b'i',
}

impl Owner {
    fn from_byte(b: u8) -> Option<Owner> {
        match b {
            b'k' => Some(Owner::Keyring),
            b's' => Some(Owner::Spool),
            b'i' => Some(Owner::ImapCache),
            _ => None,
        }
    }
}

type Key = Zeroizing<[u8; 32]>;

#[derive(Clone)]
enum Slot {
    Free,
    Used { owner: Owner, key: Key },
}

struct State {
    /// `None` for a vault in memory.
    file: Option<File>,
    /// The key that seals slots; `None` without a passphrase.
    master: Option<Key>,
    salt: [u8; 16],
    slots: Vec<Slot>,
}

/// The vault handle; one per data directory and process, shared by the keyring and the
/// spool (the file is locked while it is open).
pub struct Vault {
    path: Option<PathBuf>,
    state: Mutex<State>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// What [`Vault::change_passphrase`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resealed {
    pub secret_keys: usize,
    pub spool_entries: usize,
}

/// Whether the vault at `path` exists and is sealed with a passphrase; `None` when there is
/// no vault yet.
///
/// # Errors
/// When the file cannot be read or is not a vault.
pub fn is_sealed(path: &Path) -> Result<Option<bool>, Error> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let (sealed, _, _) = parse_header(path, &bytes)?;
            Ok(Some(sealed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl Vault {
    /// Opens (creating if needed) the vault at `path`, locked for this process.
    ///
    /// A new vault is sealed when `passphrase` is given. An existing vault that is not
    /// sealed and holds no key yet takes `passphrase` as its own; one that holds keys must
    /// be sealed with [`Vault::change_passphrase`] first, so that a passphrase never
    /// silently covers only some of the secrets.
    ///
    /// # Errors
    /// `Locked` when another process has it open; `BadPassphrase`, `PassphraseNeeded` or
    /// `NotSealed` when `passphrase` does not fit the vault; `Store` when it is corrupt.
    pub fn open(path: &Path, passphrase: Option<&Password>) -> Result<Arc<Vault>, Error> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::at(path, e))?;
        lock(&file, path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| Error::at(path, e))?;
        let state = if bytes.is_empty() {
            let state = State::new(Some(file), passphrase)?;
            state.write_all_durable(path)?;
            state
        } else {
            let mut state = State::parse(path, &bytes, passphrase)?;
            state.file = Some(file);
            if state.master.is_none() && passphrase.is_some() {
                if state.used() > 0 {
                    return Err(Error::NotSealed {
                        path: path.display().to_string(),
                    });
                }
                // Empty and unsealed: nothing was ever protected without the passphrase.
                let fresh = State::new(state.file.take(), passphrase)?;
                fresh.write_all_durable(path)?;
                state = fresh;
            }
            state
        };
        bytes.iter_mut().for_each(|b| *b = 0);
        Ok(Arc::new(Vault {
            path: Some(path.to_path_buf()),
            state: Mutex::new(state),
        }))
    }

    /// A vault in memory, for a keyring or spool in memory.
    ///
    /// # Errors
    /// When the key derivation fails.
    pub fn in_memory(passphrase: Option<&Password>) -> Result<Arc<Vault>, Error> {
        Ok(Arc::new(Vault {
            path: None,
            state: Mutex::new(State::new(None, passphrase)?),
        }))
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Whether the slots are sealed with a passphrase.
    pub fn has_passphrase(&self) -> bool {
        self.lock().is_ok_and(|s| s.master.is_some())
    }

    /// How many slots `owner` holds.
    pub fn count(&self, owner: Owner) -> Result<usize, Error> {
        Ok(self
            .lock()?
            .slots
            .iter()
            .filter(|s| matches!(s, Slot::Used { owner: o, .. } if *o == owner))
            .count())
    }

    /// Seals `plaintext` under a new record key, whose slot is on disk before this returns.
    ///
    /// # Errors
    /// When the slot cannot be written.
    pub fn seal(&self, owner: Owner, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        let mut records = self.seal_many(owner, &[plaintext])?;
        records
            .pop()
            .ok_or_else(|| Error::Corrupt("vault: no record sealed".into()))
    }

    /// Seals each plaintext under a new record key of its own, with one disk sync for all.
    ///
    /// # Errors
    /// When the slots cannot be written; then none is kept.
    pub fn seal_many(&self, owner: Owner, plaintexts: &[&[u8]]) -> Result<Vec<Vec<u8>>, Error> {
        let mut state = self.lock()?;
        let mut taken = Vec::with_capacity(plaintexts.len());
        let result = (|| {
            for _ in plaintexts {
                taken.push(state.take_slot(owner)?);
            }
            state.sync()?;
            taken
                .iter()
                .zip(plaintexts)
                .map(|(&slot, p)| state.seal_in(slot, p))
                .collect::<Result<Vec<_>, Error>>()
        })();
        if result.is_err() {
            for slot in taken {
                let _ = state.free(slot);
            }
        }
        result
    }

    /// Seals `plaintext` under the same record key as `record` (a new version of it).
    ///
    /// # Errors
    /// When `record` is not a vault record or its key is gone.
    pub fn reseal(&self, record: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        let slot = slot_of(record)?;
        self.lock()?.seal_in(slot, plaintext)
    }

    /// The plaintext of `record`.
    ///
    /// # Errors
    /// `Store` when the record is not a vault record, its key was destroyed, or it does
    /// not authenticate.
    pub fn open_record(&self, record: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        let slot = slot_of(record)?;
        let key = self.lock()?.key(slot)?;
        let (head, sealed) = record.split_at(RECORD_HEAD);
        let nonce = &head[5..];
        XChaCha20Poly1305::new(key.as_ref().into())
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &head[..5],
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| Error::Corrupt(format!("vault: the record of slot {slot} is corrupt")))
    }

    /// The key of `record`'s slot, for data stored beside the record (a spooled message's
    /// file) that must go when it goes.
    ///
    /// # Errors
    /// When `record` is not a vault record or its key is gone.
    pub fn record_key(&self, record: &[u8]) -> Result<Zeroizing<[u8; 32]>, Error> {
        let slot = slot_of(record)?;
        self.lock()?.key(slot)
    }

    /// Destroys `record`'s key: every copy of the record, wherever it lingers, can no
    /// longer be opened. The zeros reach the disk with the next sync; a crash before that
    /// leaves a slot no record names, cleared by [`Vault::retain`] at the next open.
    ///
    /// # Errors
    /// When `record` is not a vault record or the slot cannot be written.
    pub fn destroy(&self, record: &[u8]) -> Result<(), Error> {
        let slot = slot_of(record)?;
        self.lock()?.free(slot)
    }

    /// Destroys every key of `owner` whose slot no live record names (left by a crash
    /// between removing a record and destroying its key), and syncs. Returns how many.
    ///
    /// # Errors
    /// When a slot cannot be written.
    pub fn retain(&self, owner: Owner, live: &[Vec<u8>]) -> Result<usize, Error> {
        let keep: std::collections::HashSet<u32> =
            live.iter().filter_map(|r| slot_of(r).ok()).collect();
        let mut state = self.lock()?;
        let mut cleared = 0;
        for i in 0..state.slots.len() {
            let stale = matches!(&state.slots[i], Slot::Used { owner: o, .. } if *o == owner)
                && !keep.contains(&index(i)?);
            if stale {
                state.free(index(i)?)?;
                cleared += 1;
            }
        }
        if cleared > 0 {
            state.sync()?;
        }
        Ok(cleared)
    }

    /// Makes destroyed keys' zeros durable.
    ///
    /// # Errors
    /// When the file cannot be synced.
    pub fn sync(&self) -> Result<(), Error> {
        self.lock()?.sync()
    }

    /// Seals every slot under `new` (or unseals them, with `None`), replacing the file in
    /// one rename, so that every record key moves to the new passphrase or none does.
    /// This handle must be the only one open.
    ///
    /// # Errors
    /// When the new file cannot be written; the vault is then unchanged.
    pub fn change_passphrase(&self, new: Option<&Password>) -> Result<Resealed, Error> {
        let path = self
            .path
            .as_deref()
            .ok_or_else(|| Error::Corrupt("vault: a vault in memory has no file".into()))?;
        let mut state = self.lock()?;
        let mut next = State::new(None, new)?;
        next.slots = state.slots.clone();
        let tmp = path.with_extension("new");
        {
            next.file = Some(crate::disk::create_private_file(&tmp)?);
            next.write_all_durable(&tmp)?;
        }
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        // The renamed file is the vault now; keep it locked as the old one was.
        if let Some(file) = &next.file {
            lock(file, path)?;
        }
        let resealed = Resealed {
            secret_keys: next.count(Owner::Keyring),
            spool_entries: next.count(Owner::Spool),
        };
        *state = next;
        Ok(resealed)
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, Error> {
        self.state
            .lock()
            .map_err(|_| Error::Corrupt("vault lock poisoned".into()))
    }
}

/// Whether `record` is sealed under a vault slot (rather than an older format).
pub fn is_record(record: &[u8]) -> bool {
    record.first() == Some(&RECORD)
}

fn slot_of(record: &[u8]) -> Result<u32, Error> {
    if record.len() < RECORD_HEAD + TAG || record[0] != RECORD {
        return Err(Error::Corrupt("vault: not a vault record".into()));
    }
    let mut n = [0u8; 4];
    n.copy_from_slice(&record[1..5]);
    Ok(u32::from_be_bytes(n))
}

fn index(i: usize) -> Result<u32, Error> {
    u32::try_from(i).map_err(|_| Error::Corrupt("vault: too many slots".into()))
}

fn lock(file: &File, path: &Path) -> Result<(), Error> {
    use rustix::fs::{flock, FlockOperation};
    flock(file, FlockOperation::NonBlockingLockExclusive).map_err(|e| {
        if e == rustix::io::Errno::WOULDBLOCK {
            Error::Locked {
                path: path.display().to_string(),
            }
        } else {
            Error::Io(e.into())
        }
    })
}

fn derive(pass: &Password, salt: &[u8]) -> Result<Key, Error> {
    let mut key = Zeroizing::new([0u8; 32]);
    pass.map(|p| argon2::Argon2::default().hash_password_into(p, salt, key.as_mut()))
        .map_err(|e| Error::Crypto(format!("key derivation failed: {e}")))?;
    Ok(key)
}

fn seal_with(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, Error> {
    let mut nonce = [0u8; NONCE];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let sealed = XChaCha20Poly1305::new(key.into())
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| Error::Crypto("vault: cannot seal".into()))?;
    let mut out = nonce.to_vec();
    out.extend(sealed);
    Ok(out)
}

fn open_with(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let (nonce, ct) = sealed.split_at_checked(NONCE)?;
    XChaCha20Poly1305::new(key.into())
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
        .ok()
        .map(Zeroizing::new)
}

/// The header's bytes: whether sealed, the salt, and the sealed verifier (zeros when not
/// sealed).
fn parse_header(path: &Path, bytes: &[u8]) -> Result<(bool, [u8; 16], Vec<u8>), Error> {
    let corrupt = || Error::Corrupt(format!("{} is not a sealpost vault", path.display()));
    if bytes.len() < HEADER || &bytes[..16] != MAGIC {
        return Err(corrupt());
    }
    let sealed = match bytes[16] {
        0 => false,
        1 => true,
        _ => return Err(corrupt()),
    };
    let mut salt = [0u8; 16];
    salt.copy_from_slice(&bytes[17..33]);
    let verifier = bytes[33..33 + NONCE + VERIFIER.len() + TAG].to_vec();
    Ok((sealed, salt, verifier))
}

impl State {
    fn new(file: Option<File>, passphrase: Option<&Password>) -> Result<State, Error> {
        let mut salt = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let master = passphrase.map(|p| derive(p, &salt)).transpose()?;
        Ok(State {
            file,
            master,
            salt,
            slots: Vec::new(),
        })
    }

    fn parse(path: &Path, bytes: &[u8], passphrase: Option<&Password>) -> Result<State, Error> {
        let (sealed, salt, verifier) = parse_header(path, bytes)?;
        let master = match (sealed, passphrase) {
            (true, None) => {
                return Err(Error::PassphraseNeeded);
            }
            (true, Some(p)) => {
                let key = derive(p, &salt)?;
                match open_with(&key, MAGIC, &verifier) {
                    Some(v) if v.as_slice() == VERIFIER => Some(key),
                    _ => return Err(Error::BadPassphrase),
                }
            }
            (false, _) => None,
        };
        let body = &bytes[HEADER..];
        if !body.len().is_multiple_of(SLOT) {
            return Err(Error::Corrupt(format!(
                "{} is cut short (a slot is incomplete)",
                path.display()
            )));
        }
        let mut slots = Vec::with_capacity(body.len() / SLOT);
        for (i, raw) in body.chunks_exact(SLOT).enumerate() {
            slots.push(parse_slot(path, index(i)?, raw, master.as_ref())?);
        }
        Ok(State {
            file: None,
            master,
            salt,
            slots,
        })
    }

    fn used(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s, Slot::Used { .. }))
            .count()
    }

    fn count(&self, owner: Owner) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s, Slot::Used { owner: o, .. } if *o == owner))
            .count()
    }

    fn header(&self) -> Result<Vec<u8>, Error> {
        let mut h = vec![0u8; HEADER];
        h[..16].copy_from_slice(MAGIC);
        h[17..33].copy_from_slice(&self.salt);
        if let Some(master) = &self.master {
            h[16] = 1;
            let v = seal_with(master, MAGIC, VERIFIER)?;
            h[33..33 + v.len()].copy_from_slice(&v);
        }
        Ok(h)
    }

    fn slot_bytes(&self, i: u32) -> Result<Zeroizing<[u8; SLOT]>, Error> {
        let mut out = Zeroizing::new([0u8; SLOT]);
        let Some(Slot::Used { owner, key }) = self.slots.get(i as usize) else {
            return Ok(out);
        };
        out[0] = 1;
        out[1] = *owner as u8;
        match &self.master {
            None => out[2..34].copy_from_slice(key.as_ref()),
            Some(master) => {
                let sealed = seal_with(master, &slot_aad(i, *owner), key.as_ref())?;
                out[2..2 + sealed.len()].copy_from_slice(&sealed);
            }
        }
        Ok(out)
    }

    fn write_slot(&self, i: u32) -> Result<(), Error> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let bytes = self.slot_bytes(i)?;
        file.write_all_at(bytes.as_ref(), (HEADER + i as usize * SLOT) as u64)?;
        Ok(())
    }

    fn write_all_durable(&self, path: &Path) -> Result<(), Error> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let mut all = Zeroizing::new(self.header()?);
        for i in 0..self.slots.len() {
            all.extend_from_slice(self.slot_bytes(index(i)?)?.as_ref());
        }
        file.write_all_at(&all, 0)?;
        file.set_len(all.len() as u64)?;
        file.sync_all()
            .map_err(|e| Error::Corrupt(format!("cannot sync {}: {e}", path.display())))?;
        Ok(())
    }

    fn sync(&self) -> Result<(), Error> {
        if let Some(file) = &self.file {
            file.sync_data()?;
        }
        Ok(())
    }

    /// Takes a free slot (or a new one at the end) with a new random key, and writes it
    /// (not synced).
    fn take_slot(&mut self, owner: Owner) -> Result<u32, Error> {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(key.as_mut());
        let i = match self.slots.iter().position(|s| matches!(s, Slot::Free)) {
            Some(i) => i,
            None => {
                self.slots.push(Slot::Free);
                self.slots.len() - 1
            }
        };
        let i = index(i)?;
        self.slots[i as usize] = Slot::Used { owner, key };
        if let Err(e) = self.write_slot(i) {
            self.slots[i as usize] = Slot::Free;
            return Err(e);
        }
        Ok(i)
    }

    fn free(&mut self, i: u32) -> Result<(), Error> {
        if let Some(slot) = self.slots.get_mut(i as usize) {
            *slot = Slot::Free;
            self.write_slot(i)?;
        }
        Ok(())
    }

    fn key(&self, i: u32) -> Result<Key, Error> {
        match self.slots.get(i as usize) {
            Some(Slot::Used { key, .. }) => Ok(key.clone()),
            _ => Err(Error::Corrupt(format!(
                "vault: the key of slot {i} was destroyed (its record was removed)"
            ))),
        }
    }

    fn seal_in(&self, i: u32, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        let key = self.key(i)?;
        let mut head = vec![RECORD];
        head.extend_from_slice(&i.to_be_bytes());
        let sealed = seal_with(&key, &head, plaintext)?;
        head.extend(sealed);
        Ok(head)
    }
}

fn slot_aad(i: u32, owner: Owner) -> [u8; 5] {
    let mut a = [0u8; 5];
    a[..4].copy_from_slice(&i.to_be_bytes());
    a[4] = owner as u8;
    a
}

fn parse_slot(path: &Path, i: u32, raw: &[u8], master: Option<&Key>) -> Result<Slot, Error> {
    if raw[0] == 0 {
        return Ok(Slot::Free);
    }
    let corrupt = || Error::Corrupt(format!("{}: slot {i} is corrupt", path.display()));
    let owner = Owner::from_byte(raw[1]).ok_or_else(corrupt)?;
    let mut key = Zeroizing::new([0u8; 32]);
    match master {
        None => key.copy_from_slice(&raw[2..34]),
        Some(m) => {
            let opened = open_with(m, &slot_aad(i, owner), &raw[2..2 + NONCE + 32 + TAG])
                .ok_or_else(corrupt)?;
            key.copy_from_slice(&opened);
        }
    }
    Ok(Slot::Used { owner, key })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destroyed_records_cannot_be_opened_even_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault");
        let pass = Password::from("pass");
        let v = Vault::open(&path, Some(&pass)).unwrap();
        let a = v.seal(Owner::Keyring, b"alpha").unwrap();
        let b = v.seal(Owner::Spool, b"bravo").unwrap();
        assert_eq!(v.open_record(&a).unwrap().as_slice(), b"alpha");
        v.destroy(&a).unwrap();
        assert!(v.open_record(&a).is_err());
        drop(v);
        let v = Vault::open(&path, Some(&pass)).unwrap();
        assert!(v.open_record(&a).is_err());
        assert_eq!(v.open_record(&b).unwrap().as_slice(), b"bravo");
        // The freed slot is reused, under a new key.
        let c = v.seal(Owner::Keyring, b"charlie").unwrap();
        assert_eq!(slot_of(&c).unwrap(), slot_of(&a).unwrap());
        assert!(v.open_record(&a).is_err());
    }

    #[test]
    fn every_mismatch_has_its_own_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault");
        let pass = Password::from("pass");
        let v = Vault::open(&path, None).unwrap();
        v.seal(Owner::Keyring, b"x").unwrap();
        assert!(matches!(
            Vault::open(&path, None),
            Err(Error::Locked { .. })
        ));
        drop(v);
        assert!(matches!(
            Vault::open(&path, Some(&pass)),
            Err(Error::NotSealed { .. })
        ));
        let v = Vault::open(&path, None).unwrap();
        assert_eq!(
            v.change_passphrase(Some(&pass)).unwrap(),
            Resealed {
                secret_keys: 1,
                spool_entries: 0
            }
        );
        drop(v);
        assert!(matches!(
            Vault::open(&path, None),
            Err(Error::PassphraseNeeded)
        ));
        assert!(matches!(
            Vault::open(&path, Some(&Password::from("other"))),
            Err(Error::BadPassphrase)
        ));
        assert!(Vault::open(&path, Some(&pass)).is_ok());
    }

    #[test]
    fn an_empty_unsealed_vault_takes_the_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault");
        drop(Vault::open(&path, None).unwrap());
        let pass = Password::from("pass");
        let v = Vault::open(&path, Some(&pass)).unwrap();
        assert!(v.has_passphrase());
        drop(v);
        assert_eq!(is_sealed(&path).unwrap(), Some(true));
    }

    #[test]
    fn a_passphrase_change_keeps_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault");
        let old = Password::from("old");
        let new = Password::from("new");
        let v = Vault::open(&path, Some(&old)).unwrap();
        let records: Vec<Vec<u8>> = (0..5)
            .map(|i| {
                v.seal(Owner::Spool, format!("entry {i}").as_bytes())
                    .unwrap()
            })
            .collect();
        v.destroy(&records[2]).unwrap();
        v.change_passphrase(Some(&new)).unwrap();
        drop(v);
        assert!(matches!(
            Vault::open(&path, Some(&old)),
            Err(Error::BadPassphrase)
        ));
        let v = Vault::open(&path, Some(&new)).unwrap();
        for (i, r) in records.iter().enumerate() {
            match v.open_record(r) {
                Ok(p) => assert_eq!(p.as_slice(), format!("entry {i}").as_bytes()),
                Err(_) => assert_eq!(i, 2),
            }
        }
        // Back to no passphrase: the keys are then plain in the file.
        v.change_passphrase(None).unwrap();
        drop(v);
        assert_eq!(is_sealed(&path).unwrap(), Some(false));
    }

    #[test]
    fn retain_clears_slots_no_record_names() {
        let v = Vault::in_memory(None).unwrap();
        let a = v.seal(Owner::Spool, b"a").unwrap();
        let b = v.seal(Owner::Spool, b"b").unwrap();
        let k = v.seal(Owner::Keyring, b"k").unwrap();
        assert_eq!(v.retain(Owner::Spool, std::slice::from_ref(&b)).unwrap(), 1);
        assert!(v.open_record(&a).is_err());
        assert!(v.open_record(&b).is_ok());
        assert!(v.open_record(&k).is_ok());
    }

    #[test]
    fn a_tampered_record_is_refused() {
        let v = Vault::in_memory(None).unwrap();
        let mut r = v.seal(Owner::Spool, b"payload").unwrap();
        let last = r.len() - 1;
        r[last] ^= 1;
        assert!(v.open_record(&r).is_err());
        assert!(v.open_record(b"\x02\0\0").is_err());
        assert!(v.open_record(b"").is_err());
    }
}
