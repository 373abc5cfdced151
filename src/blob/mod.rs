//! The bytes of one message (header and body), wherever they are kept.
//!
//! A small message lives in memory. A large one is spilled, while it arrives, to a sealed
//! temporary file ([`sealed`]): unnamed (gone when the last handle closes), encrypted under
//! a key only this process holds, so that a 30 MB message costs disk, not memory, and
//! nothing it contains is readable at rest.
//!
//! A [`Blob`] is a list of pieces (memory or file ranges) and is cheap to clone and to
//! build on: a new header in front of a received body is one more piece, not a copy.
//!
//! Its bytes in memory are a [`Buf`], zeroed when the last clone is dropped (the message
//! was delivered or spooled, or refused), and so are the buffers here that collect a
//! message or hold a chunk read back from disk: a message must not stay readable in freed
//! memory after it left.

mod pieces;
pub mod sealed;

use std::borrow::Cow;
use std::io::{self, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use pieces::Pieces;
pub use sealed::{MasterKey, SealedFile, SealedWriter};

use crate::wipe::{self, Buf};

/// One message's bytes.
#[derive(Debug, Clone, Default)]
pub struct Blob {
    pieces: Vec<Piece>,
    len: u64,
}

#[derive(Debug, Clone)]
enum Piece {
    Memory(Arc<Buf>, Range<usize>),
    File(Arc<SealedFile>, Range<u64>),
}

impl Piece {
    fn len(&self) -> u64 {
        match self {
            Piece::Memory(_, r) => (r.end - r.start) as u64,
            Piece::File(_, r) => r.end - r.start,
        }
    }

    /// The part of this piece from `from` to `to` (offsets inside the piece).
    fn sub(&self, from: u64, to: u64) -> Piece {
        match self {
            Piece::Memory(b, r) => Piece::Memory(
                Arc::clone(b),
                r.start + from as usize..r.start + to as usize,
            ),
            Piece::File(f, r) => Piece::File(Arc::clone(f), r.start + from..r.start + to),
        }
    }
}

impl From<Vec<u8>> for Blob {
    fn from(v: Vec<u8>) -> Blob {
        let len = v.len();
        if len == 0 {
            return Blob::default();
        }
        Blob {
            pieces: vec![Piece::Memory(Arc::new(Buf::from(v)), 0..len)],
            len: len as u64,
        }
    }
}

impl From<&[u8]> for Blob {
    fn from(v: &[u8]) -> Blob {
        Blob::from(v.to_vec())
    }
}

impl From<SealedFile> for Blob {
    fn from(f: SealedFile) -> Blob {
        let len = f.len();
        if len == 0 {
            return Blob::default();
        }
        Blob {
            pieces: vec![Piece::File(Arc::new(f), 0..len)],
            len,
        }
    }
}

impl Blob {
    /// Bytes in all.
    pub fn len(&self) -> usize {
        usize::try_from(self.len).unwrap_or(usize::MAX)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether any of it is on disk.
    pub fn is_spilled(&self) -> bool {
        self.pieces.iter().any(|p| matches!(p, Piece::File(..)))
    }

    /// The bytes, when they are one piece in memory.
    pub fn as_slice(&self) -> Option<&[u8]> {
        match self.pieces.as_slice() {
            [] => Some(&[]),
            [Piece::Memory(b, r)] => b.get(r.clone()),
            _ => None,
        }
    }

    /// All the bytes in memory: borrowed when they already are, read otherwise.
    ///
    /// # Errors
    /// When a spilled piece cannot be read back.
    pub fn bytes(&self) -> io::Result<Cow<'_, [u8]>> {
        match self.as_slice() {
            Some(s) => Ok(Cow::Borrowed(s)),
            None => {
                let mut out = Vec::with_capacity(self.len());
                self.reader().read_to_end(&mut out)?;
                Ok(Cow::Owned(out))
            }
        }
    }

    /// All the bytes, as a vector of their own.
    ///
    /// # Errors
    /// When a spilled piece cannot be read back.
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        self.bytes().map(Cow::into_owned)
    }

    /// At most the first `max` bytes.
    ///
    /// # Errors
    /// When a spilled piece cannot be read back.
    pub fn head(&self, max: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(max.min(self.len()));
        self.reader().take(max as u64).read_to_end(&mut out)?;
        Ok(out)
    }

    /// The bytes from `range.start` to `range.end` (clamped to the length), sharing
    /// this blob's storage.
    pub fn slice(&self, range: Range<usize>) -> Blob {
        let (from, to) = (range.start as u64, (range.end as u64).min(self.len));
        let mut out = Blob::default();
        let mut at = 0u64;
        for p in &self.pieces {
            let (start, end) = (at, at + p.len());
            at = end;
            if end <= from || start >= to {
                continue;
            }
            out.push(p.sub(from.max(start) - start, to.min(end) - start));
        }
        out
    }

    /// `self` followed by `other`.
    pub fn append(&mut self, other: Blob) {
        for p in other.pieces {
            self.push(p);
        }
    }

    /// `head` in front of `self`; a message held whole in memory stays one piece.
    pub fn prepend(self, head: Vec<u8>) -> Blob {
        if self.pieces.len() == 1 {
            match self.into_vec_in_memory() {
                Ok(mut v) => {
                    // Grown (when it must) without leaving a copy of the message behind.
                    wipe::replace_front(&mut v, 0, &head);
                    return Blob::from(v);
                }
                Err(this) => {
                    let mut out = Blob::from(head);
                    out.append(this);
                    return out;
                }
            }
        }
        let mut out = Blob::from(head);
        out.append(self);
        out
    }

    /// The vector itself when this is the only holder of a whole in-memory buffer;
    /// `self` back otherwise. The caller now owns the bytes, and zeroes them.
    fn into_vec_in_memory(mut self) -> Result<Vec<u8>, Blob> {
        if self.pieces.is_empty() {
            return Ok(Vec::new());
        }
        if let [Piece::Memory(b, r)] = self.pieces.as_mut_slice() {
            if r.start == 0 && r.end == b.len() {
                let buf = std::mem::take(b);
                match Arc::try_unwrap(buf) {
                    Ok(v) => return Ok(v.into_inner()),
                    Err(shared) => *b = shared,
                }
            }
        }
        Err(self)
    }

    /// The bytes as a vector: moved out when this blob holds the only copy of a whole
    /// buffer, read (or copied) into one of the exact size otherwise. Nothing zeroes the
    /// vector for the caller (a [`Buf`] does, or [`wipe::clear`]).
    ///
    /// # Errors
    /// When a spilled piece cannot be read back.
    pub fn into_vec(self) -> io::Result<Vec<u8>> {
        match self.into_vec_in_memory() {
            Ok(v) => Ok(v),
            Err(this) => this.to_vec(),
        }
    }

    fn push(&mut self, p: Piece) {
        if p.len() > 0 {
            self.len += p.len();
            self.pieces.push(p);
        }
    }

    /// Reads the bytes in order; a chunk read back from disk is zeroed when the reader
    /// is done with it.
    pub fn reader(&self) -> Reader<'_> {
        Reader {
            pieces: self.pieces(),
            current: Cow::Borrowed(&[]),
            at: 0,
        }
    }

    /// Calls `f` with the bytes in order, in pieces of at most one sealed chunk.
    ///
    /// # Errors
    /// Read errors, and whatever `f` returns.
    pub fn for_each_piece(&self, mut f: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        for piece in self.pieces() {
            let piece = piece?;
            let result = f(&piece);
            if let Cow::Owned(mut chunk) = piece {
                wipe::clear(&mut chunk);
            }
            result?;
        }
        Ok(())
    }
}

/// Reads a [`Blob`] from its start; one decrypted chunk is held at a time.
pub struct Reader<'a> {
    pieces: pieces::Pieces<'a>,
    /// The piece reads come from, and how far it was read.
    current: Cow<'a, [u8]>,
    at: usize,
}

impl Read for Reader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at >= self.current.len() {
            match self.pieces.next() {
                Some(piece) => {
                    let done = std::mem::replace(&mut self.current, piece?);
                    if let Cow::Owned(mut chunk) = done {
                        wipe::clear(&mut chunk);
                    }
                    self.at = 0;
                }
                None => return Ok(0),
            }
        }
        let src = self.current.get(self.at..).unwrap_or_default();
        let n = src.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), src.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.at += n;
        Ok(n)
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if let Cow::Owned(chunk) = &mut self.current {
            wipe::clear(chunk);
        }
    }
}

/// Where and from what size a message being received goes to disk.
#[derive(Debug, Clone)]
pub struct Spill {
    pub dir: PathBuf,
    /// Messages larger than this are kept in a sealed temporary file.
    pub above: usize,
}

impl Spill {
    pub fn new(dir: impl Into<PathBuf>, above: usize) -> Spill {
        Spill {
            dir: dir.into(),
            above,
        }
    }
}

impl Blob {
    /// `data` as a blob: moved to a sealed temporary file when `spill` says it is large,
    /// so that a message built whole in memory (an encrypted copy) does not stay there
    /// while others are built and while it waits to be delivered.
    ///
    /// # Errors
    /// Disk errors.
    pub fn stored(data: Vec<u8>, spill: Option<&Spill>) -> io::Result<Blob> {
        match spill {
            Some(s) if data.len() > s.above => {
                let data = Buf::from(data);
                let mut f = SealedWriter::temporary_in(&s.dir)?;
                f.write(&data)?;
                drop(data);
                Ok(Blob::from(f.finish()?))
            }
            _ => Ok(Blob::from(data)),
        }
    }
}

/// Collects a message as it arrives: in memory up to the spill size, then in a sealed
/// temporary file.
pub struct Writer {
    /// Zeroed when dropped: a message refused half-way is not left behind either.
    memory: Buf,
    file: Option<SealedWriter>,
    spill: Option<Spill>,
}

impl Writer {
    /// `None`: always in memory.
    pub fn new(spill: Option<Spill>) -> Writer {
        Writer {
            memory: Buf::default(),
            file: None,
            spill,
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.memory.len()
            + self
                .file
                .as_ref()
                .map_or(0, |f| usize::try_from(f.len()).unwrap_or(usize::MAX))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a large message goes to disk.
    pub fn can_spill(&self) -> bool {
        self.spill.is_some()
    }

    /// The in-memory buffer, for callers that size it (before anything spills) with
    /// [`wipe::reserve_exact`], which leaves no copy behind as std's growth does.
    pub fn memory_mut(&mut self) -> &mut Vec<u8> {
        &mut self.memory
    }

    /// Appends `data`, moving everything to disk once past the spill size.
    ///
    /// # Errors
    /// Disk errors.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if let Some(f) = &mut self.file {
            return f.write(data);
        }
        match &self.spill {
            Some(s) if self.memory.len() + data.len() > s.above => {
                let mut f = SealedWriter::temporary_in(&s.dir)?;
                f.write(&self.memory)?;
                f.write(data)?;
                // The old buffer is zeroed as it is dropped.
                self.memory = Buf::default();
                self.file = Some(f);
                Ok(())
            }
            _ => {
                self.memory.extend(data);
                Ok(())
            }
        }
    }

    /// The message.
    ///
    /// # Errors
    /// Disk errors.
    pub fn finish(self) -> io::Result<Blob> {
        match self.file {
            Some(f) => Ok(Blob::from(f.finish()?)),
            None => Ok(Blob::from(self.memory.into_inner())),
        }
    }
}

/// The directory spilled messages go to under a data directory.
pub fn spill_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("incoming")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 253) as u8).collect()
    }

    fn spilled(data: &[u8], dir: &Path) -> Blob {
        let mut w = Writer::new(Some(Spill::new(dir, 1000)));
        for piece in data.chunks(333) {
            w.write(piece).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn a_built_message_is_stored_on_disk_only_when_large() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Spill::new(dir.path(), 1000);
        let small = Blob::stored(sample(1000), Some(&spill)).unwrap();
        assert!(!small.is_spilled());
        let data = sample(2 * sealed::CHUNK + 5);
        let big = Blob::stored(data.clone(), Some(&spill)).unwrap();
        assert!(big.is_spilled());
        assert_eq!(big.to_vec().unwrap(), data);
        assert!(!Blob::stored(data, None).unwrap().is_spilled());
    }

    #[test]
    fn spills_past_the_size_and_reads_back_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let small = spilled(&sample(900), dir.path());
        assert!(!small.is_spilled());
        assert_eq!(small.as_slice().unwrap(), &sample(900)[..]);

        let data = sample(3 * sealed::CHUNK + 17);
        let big = spilled(&data, dir.path());
        assert!(big.is_spilled());
        assert_eq!(big.len(), data.len());
        assert_eq!(big.to_vec().unwrap(), data);
        assert_eq!(big.head(10).unwrap(), &data[..10]);
        // Unnamed: nothing left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn slices_and_prepends_share_storage_and_agree_with_vectors() {
        let dir = tempfile::tempdir().unwrap();
        let data = sample(2 * sealed::CHUNK + 999);
        let big = spilled(&data, dir.path());
        let whole = big.clone().prepend(b"Received: x\r\n".to_vec());
        let mut expected = b"Received: x\r\n".to_vec();
        expected.extend_from_slice(&data);
        assert_eq!(whole.to_vec().unwrap(), expected);
        for (a, b) in [
            (0, 5),
            (3, 20),
            (10, sealed::CHUNK + 50),
            (sealed::CHUNK, 2 * sealed::CHUNK + 13),
            (100, expected.len()),
            (expected.len() - 1, expected.len() + 10),
        ] {
            let s = whole.slice(a..b);
            let want = &expected[a..b.min(expected.len())];
            assert_eq!(s.to_vec().unwrap(), want, "{a}..{b}");
            let mut pieces = Vec::new();
            s.for_each_piece(|p| {
                pieces.extend_from_slice(p);
                Ok(())
            })
            .unwrap();
            assert_eq!(pieces, want, "pieces {a}..{b}");
        }
    }

    #[test]
    fn a_whole_buffer_is_moved_not_copied() {
        let v = sample(5000);
        let ptr = v.as_ptr();
        let back = Blob::from(v).into_vec().unwrap();
        assert_eq!(back.as_ptr(), ptr);
        let b = Blob::from(sample(5000)).prepend(b"H: 1\r\n".to_vec());
        assert_eq!(b.as_slice().unwrap().len(), 5006);
        let out = b.into_vec().unwrap();
        assert_eq!(&out[..6], b"H: 1\r\n");
        // A shared buffer is copied, and both holders keep their bytes.
        let shared = Blob::from(sample(100));
        let other = shared.clone();
        assert_eq!(shared.into_vec().unwrap(), other.to_vec().unwrap());
    }

    #[test]
    fn reads_in_any_buffer_size() {
        let dir = tempfile::tempdir().unwrap();
        let data = sample(sealed::CHUNK + 3001);
        let b = spilled(&data, dir.path()).prepend(b"H: 1\r\n".to_vec());
        let mut expected = b"H: 1\r\n".to_vec();
        expected.extend_from_slice(&data);
        for size in [1, 7, 4096, 100_000] {
            let mut r = b.reader();
            let mut out = Vec::new();
            let mut buf = vec![0u8; size];
            loop {
                let n = r.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            assert_eq!(out, expected, "buffer {size}");
        }
    }
}
