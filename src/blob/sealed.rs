//! A sealed file: bytes written once, in order, then read back at any offset, encrypted and
//! authenticated at rest in chunks.
//!
//! Layout: a 32-byte random salt, then chunks of [`CHUNK`] bytes of plaintext (the last one
//! shorter), each sealed with AES-256-GCM (ring's, with the processor's AES instructions:
//! a 20 MB message costs a few milliseconds) under a key derived from the caller's master
//! key and the salt. A chunk's nonce is its number and whether it is the last, so
//! chunks cannot be reordered, dropped or cut off at the end without the read failing.
//! The salt makes every file's key its own, so one master key (the spool's) can seal many
//! files without ever reusing a nonce under one key.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;

use rand::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use sha2::{Digest, Sha256};

use crate::wipe::Buf;

/// Plaintext bytes per chunk.
pub const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;
const SALT: usize = 32;
/// Sealed bytes per full chunk.
const STORED: u64 = (CHUNK + TAG) as u64;

/// A key that seals files; each file derives its own from it.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl MasterKey {
    pub fn new(bytes: [u8; 32]) -> MasterKey {
        MasterKey(bytes)
    }

    /// A key only this process knows: what it seals is unreadable once the process ends.
    pub fn random() -> MasterKey {
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        MasterKey(k)
    }

    fn cipher(&self, salt: &[u8]) -> io::Result<LessSafeKey> {
        let mut h = Sha256::new();
        h.update(b"sealpost sealed file v1\0");
        h.update(self.0);
        h.update(salt);
        let key = UnboundKey::new(&AES_256_GCM, &h.finalize())
            .map_err(|_| corrupt("cannot make a key"))?;
        Ok(LessSafeKey::new(key))
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<hidden>)")
    }
}

/// Unique per chunk under one file's key: the chunk number, and the last-chunk flag.
fn nonce(index: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&index.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

fn corrupt(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("sealed file: {what}"))
}

/// Writes a sealed file in order; [`SealedWriter::finish`] seals the last chunk.
pub struct SealedWriter {
    file: File,
    cipher: LessSafeKey,
    /// Plaintext not sealed yet: at most one chunk, kept until it is known whether more
    /// follows (the last chunk is sealed differently). Zeroed when dropped, in case the
    /// file is abandoned before it is sealed.
    pending: Buf,
    index: u64,
    len: u64,
}

impl SealedWriter {
    /// Starts a sealed file in `file` (empty, opened for writing and reading).
    ///
    /// # Errors
    /// When the salt cannot be written.
    pub fn new(mut file: File, master: &MasterKey) -> io::Result<SealedWriter> {
        let mut salt = [0u8; SALT];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        file.write_all(&salt)?;
        Ok(SealedWriter {
            cipher: master.cipher(&salt)?,
            file,
            pending: Buf::with_capacity(CHUNK + TAG),
            index: 0,
            len: 0,
        })
    }

    /// An unnamed file in `dir` (gone when closed), sealed under a key of its own.
    ///
    /// # Errors
    /// When `dir` cannot hold a file.
    pub fn temporary_in(dir: &std::path::Path) -> io::Result<SealedWriter> {
        SealedWriter::new(tempfile::tempfile_in(dir)?, &MasterKey::random())
    }

    /// Plaintext bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `data`.
    ///
    /// # Errors
    /// Disk errors; the file is then useless.
    pub fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if self.pending.len() == CHUNK {
                self.seal(false)?;
            }
            let take = (CHUNK - self.pending.len()).min(data.len());
            let (now, rest) = data.split_at(take);
            self.pending.extend_from_slice(now);
            self.len += take as u64;
            data = rest;
        }
        Ok(())
    }

    fn seal(&mut self, last: bool) -> io::Result<()> {
        self.cipher
            .seal_in_place_append_tag(nonce(self.index, last), Aad::empty(), &mut *self.pending)
            .map_err(|_| corrupt("cannot seal"))?;
        self.file.write_all(&self.pending)?;
        self.pending.clear();
        self.index += 1;
        Ok(())
    }

    /// Seals what is left and returns the file for reading.
    ///
    /// # Errors
    /// Disk errors.
    pub fn finish(mut self) -> io::Result<SealedFile> {
        if !self.pending.is_empty() {
            self.seal(true)?;
        }
        self.file.flush()?;
        Ok(SealedFile {
            file: self.file,
            cipher: self.cipher,
            len: self.len,
        })
    }

    /// Seals what is left, syncs the file to disk and returns it (for files that must
    /// survive a crash).
    ///
    /// # Errors
    /// Disk errors.
    pub fn finish_durable(self) -> io::Result<SealedFile> {
        let sealed = self.finish()?;
        sealed.file.sync_all()?;
        Ok(sealed)
    }
}

/// A finished sealed file, read at any offset (by several readers at once).
pub struct SealedFile {
    file: File,
    cipher: LessSafeKey,
    len: u64,
}

impl std::fmt::Debug for SealedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedFile")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl SealedFile {
    /// Opens a sealed file written earlier under `master`.
    ///
    /// # Errors
    /// When it cannot be read or is too short to be one.
    pub fn open(file: File, master: &MasterKey) -> io::Result<SealedFile> {
        let mut salt = [0u8; SALT];
        file.read_exact_at(&mut salt, 0)
            .map_err(|_| corrupt("no salt"))?;
        let stored = file.metadata()?.len().saturating_sub(SALT as u64);
        let chunks = stored.div_ceil(STORED);
        let len = stored
            .checked_sub(chunks * TAG as u64)
            .ok_or_else(|| corrupt("cut short"))?;
        if chunks > 0 && stored - (chunks - 1) * STORED <= TAG as u64 {
            return Err(corrupt("cut short"));
        }
        Ok(SealedFile {
            cipher: master.cipher(&salt)?,
            file,
            len,
        })
    }

    /// Plaintext bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of chunks.
    pub fn chunks(&self) -> u64 {
        self.len.div_ceil(CHUNK as u64)
    }

    /// The plaintext of chunk `index`.
    ///
    /// # Errors
    /// Disk errors, and `InvalidData` when the chunk was changed, moved or cut.
    pub fn chunk(&self, index: u64) -> io::Result<Vec<u8>> {
        let count = self.chunks();
        if index >= count {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "sealed file: past the end",
            ));
        }
        let last = index + 1 == count;
        let plain = if last {
            self.len - index * CHUNK as u64
        } else {
            CHUNK as u64
        };
        let mut sealed = vec![0u8; plain as usize + TAG];
        self.file
            .read_exact_at(&mut sealed, SALT as u64 + index * STORED)?;
        let plain = self
            .cipher
            .open_in_place(nonce(index, last), Aad::empty(), &mut sealed)
            .map_err(|_| corrupt("a chunk fails authentication"))?
            .len();
        sealed.truncate(plain);
        Ok(sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(data: &[u8], master: &MasterKey) -> (SealedFile, tempfile::NamedTempFile) {
        let named = tempfile::NamedTempFile::new().unwrap();
        let mut w = SealedWriter::new(named.reopen().unwrap(), master).unwrap();
        // Uneven pieces, across chunk edges.
        for piece in data.chunks(7001) {
            w.write(piece).unwrap();
        }
        assert_eq!(w.len(), data.len() as u64);
        (w.finish_durable().unwrap(), named)
    }

    fn read_all(f: &SealedFile) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..f.chunks() {
            out.extend(f.chunk(i).unwrap());
        }
        out
    }

    #[test]
    fn round_trips_every_length_around_chunk_edges() {
        let master = MasterKey::random();
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 5] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let (f, named) = written(&data, &master);
            assert_eq!(f.len(), len as u64);
            assert_eq!(read_all(&f), data, "len {len}");
            // Reopened from disk, the length comes from the file alone.
            let again = SealedFile::open(named.reopen().unwrap(), &master).unwrap();
            assert_eq!(again.len(), len as u64);
            assert_eq!(read_all(&again), data, "reopened, len {len}");
        }
    }

    #[test]
    fn nothing_readable_at_rest() {
        let data = b"Subject: secret\r\n\r\nthe plaintext\r\n".repeat(100);
        let (_, named) = written(&data, &MasterKey::random());
        let raw = std::fs::read(named.path()).unwrap();
        assert!(!raw.windows(9).any(|w| w == b"plaintext"));
    }

    #[test]
    fn a_changed_cut_or_wrong_key_file_fails() {
        let master = MasterKey::random();
        let data = vec![7u8; 2 * CHUNK + 100];
        let (_, named) = written(&data, &master);
        let raw = std::fs::read(named.path()).unwrap();

        let wrong = SealedFile::open(named.reopen().unwrap(), &MasterKey::random()).unwrap();
        assert!(wrong.chunk(0).is_err());

        let mut flipped = raw.clone();
        flipped[SALT + 10] ^= 1;
        std::fs::write(named.path(), &flipped).unwrap();
        let f = SealedFile::open(named.reopen().unwrap(), &master).unwrap();
        assert!(f.chunk(0).is_err());
        assert!(f.chunk(1).is_ok());

        // Cut after a whole chunk: the new last chunk was not sealed as the last.
        let cut = &raw[..SALT + 2 * STORED as usize];
        std::fs::write(named.path(), cut).unwrap();
        let f = SealedFile::open(named.reopen().unwrap(), &master).unwrap();
        assert!(f.chunk(f.chunks() - 1).is_err());

        // Cut inside a chunk.
        std::fs::write(named.path(), &raw[..raw.len() - 5]).unwrap();
        let f = SealedFile::open(named.reopen().unwrap(), &master).unwrap();
        assert!(f.chunk(f.chunks() - 1).is_err());

        // Two files under one master key have different keys (their own salt).
        let (_, other) = written(&data, &master);
        let o = std::fs::read(other.path()).unwrap();
        assert_ne!(o[SALT..SALT + 64], raw[SALT..SALT + 64]);
    }
}
