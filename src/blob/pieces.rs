//! Pulling a [`Blob`]'s bytes piece by piece, for callers that cannot take a callback: an
//! async writer that awaits between pieces, or an iterator handed to another library.

use std::borrow::Cow;
use std::io;

use super::{sealed, Blob, Piece};
use crate::wipe;

impl Blob {
    /// The bytes in order, in pieces of at most one sealed chunk: borrowed from memory,
    /// or one chunk read from disk and decrypted per item (so at most one chunk of a
    /// spilled message is held at a time).
    pub fn pieces(&self) -> Pieces<'_> {
        Pieces {
            pieces: &self.pieces,
            piece: 0,
            at: 0,
        }
    }
}

/// The iterator [`Blob::pieces`] returns; an item is an error when a chunk cannot be read
/// back or fails authentication, and the iteration ends after it.
pub struct Pieces<'a> {
    pieces: &'a [Piece],
    piece: usize,
    /// Offset inside the current piece.
    at: u64,
}

impl<'a> Iterator for Pieces<'a> {
    type Item = io::Result<Cow<'a, [u8]>>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let p = self.pieces.get(self.piece)?;
            if self.at >= p.len() {
                self.piece += 1;
                self.at = 0;
                continue;
            }
            let item = match p {
                Piece::Memory(b, r) => {
                    let from = r.start + self.at as usize;
                    let to = r.end.min(from + sealed::CHUNK);
                    b.get(from..to)
                        .map(Cow::Borrowed)
                        .ok_or_else(|| io::Error::other("blob piece out of range"))
                }
                Piece::File(f, r) => {
                    let size = sealed::CHUNK as u64;
                    let pos = r.start + self.at;
                    let index = pos / size;
                    f.chunk(index).and_then(|mut chunk| {
                        let from = (pos - index * size) as usize;
                        let to = ((r.end - index * size) as usize).min(chunk.len());
                        if from >= to {
                            return Err(io::Error::other("blob piece out of range"));
                        }
                        // The chunk's own buffer, cut to the range: no copy, and the
                        // plaintext cut off is zeroed.
                        let cut = chunk.len() - to;
                        chunk.truncate(to);
                        wipe::vacated(&mut chunk, cut);
                        wipe::drain_front(&mut chunk, from);
                        Ok(Cow::Owned(chunk))
                    })
                }
            };
            match &item {
                Ok(bytes) => self.at += bytes.len() as u64,
                // One error, then the end: the caller must not mistake the rest for all.
                Err(_) => self.piece = self.pieces.len(),
            }
            return Some(item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::{Spill, Writer};

    #[test]
    fn pieces_agree_with_the_bytes_for_slices_and_prepends() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3 * sealed::CHUNK + 77)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut w = Writer::new(Some(Spill::new(dir.path(), 1000)));
        w.write(&data).unwrap();
        let big = w.finish().unwrap().prepend(b"X: 1\r\n".to_vec());
        let mut expected = b"X: 1\r\n".to_vec();
        expected.extend_from_slice(&data);
        for (a, b) in [
            (0, expected.len()),
            (3, sealed::CHUNK + 9),
            (sealed::CHUNK + 6, 2 * sealed::CHUNK + 6),
        ] {
            let s = big.slice(a..b);
            let mut got = Vec::new();
            for p in s.pieces() {
                let p = p.unwrap();
                assert!(!p.is_empty() && p.len() <= sealed::CHUNK);
                got.extend_from_slice(&p);
            }
            assert_eq!(got, &expected[a..b], "{a}..{b}");
        }
        let small = Blob::from(vec![1u8; 2 * sealed::CHUNK + 1]);
        assert_eq!(small.pieces().count(), 3);
        assert!(matches!(small.pieces().next(), Some(Ok(Cow::Borrowed(_)))));
        assert_eq!(Blob::default().pieces().count(), 0);
    }

    #[test]
    fn a_chunk_that_fails_ends_the_pieces_with_an_error() {
        let named = tempfile::NamedTempFile::new().unwrap();
        let key = sealed::MasterKey::random();
        let mut w = sealed::SealedWriter::new(named.reopen().unwrap(), &key).unwrap();
        w.write(&vec![5u8; 2 * sealed::CHUNK]).unwrap();
        w.finish_durable().unwrap();
        // Flip a byte of the second chunk.
        let mut raw = std::fs::read(named.path()).unwrap();
        let last = raw.len() - 100;
        raw[last] ^= 1;
        std::fs::write(named.path(), &raw).unwrap();
        let f = sealed::SealedFile::open(named.reopen().unwrap(), &key).unwrap();
        let blob = Blob::from(f);
        let items: Vec<_> = blob.pieces().collect();
        assert_eq!(items.len(), 2);
        assert!(items[0].is_ok());
        assert!(items[1].is_err());
    }
}
