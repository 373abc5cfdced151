//! Answers on their way to the client: bytes of their own, and opened messages written
//! from where the cache holds them, without copying them first (a client downloading a
//! mailbox gets megabytes of them in one go).

use std::io::IoSlice;
use std::sync::Arc;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::cache::Entry;

/// Slices handed to one `writev`.
const SLICES: usize = 64;

/// What waits to be written to the client, in order.
#[derive(Default)]
pub struct Outbox {
    pieces: Vec<Piece>,
    len: usize,
}

enum Piece {
    Bytes(Vec<u8>),
    /// An opened message, kept alive by the cache's handle while it is written.
    Cached(Arc<Entry>),
}

impl Piece {
    fn bytes(&self) -> &[u8] {
        match self {
            Piece::Bytes(b) => b,
            Piece::Cached(e) => match &**e {
                Entry::Opened(b) => b,
                Entry::Plain => &[],
            },
        }
    }
}

impl Outbox {
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.len += bytes.len();
        if let Some(Piece::Bytes(last)) = self.pieces.last_mut() {
            last.extend_from_slice(bytes);
        } else {
            self.pieces.push(Piece::Bytes(bytes.to_vec()));
        }
    }

    /// The opened message in `entry`, written as it is in the cache.
    pub fn push_cached(&mut self, entry: Arc<Entry>) {
        let piece = Piece::Cached(entry);
        self.len += piece.bytes().len();
        self.pieces.push(piece);
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes everything, a few dozen pieces a system call, and empties the box.
    ///
    /// # Errors
    /// The client's connection failing.
    pub async fn flush<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        w: &mut W,
    ) -> std::io::Result<()> {
        let (mut at, mut offset) = (0, 0);
        while at < self.pieces.len() {
            let slices: Vec<IoSlice<'_>> = self
                .pieces
                .iter()
                .skip(at)
                .take(SLICES)
                .enumerate()
                .map(|(i, p)| {
                    let b = p.bytes();
                    IoSlice::new(if i == 0 {
                        b.get(offset..).unwrap_or_default()
                    } else {
                        b
                    })
                })
                .collect();
            let mut n = w.write_vectored(&slices).await?;
            if n == 0 && slices.iter().any(|s| !s.is_empty()) {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            while let Some(p) = self.pieces.get(at) {
                let left = p.bytes().len() - offset;
                if n < left {
                    offset += n;
                    break;
                }
                n -= left;
                at += 1;
                offset = 0;
            }
        }
        self.pieces.clear();
        self.len = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wipe::Buf;

    /// A writer that takes at most 7 bytes a call, to split every piece.
    struct Trickle(Vec<u8>);

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let n = buf.len().min(7);
            self.0.extend_from_slice(&buf[..n]);
            std::task::Poll::Ready(Ok(n))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn pieces_go_out_in_order_however_the_writes_split() {
        let mut o = Outbox::default();
        let mut expected = Vec::new();
        for i in 0..100u8 {
            let head = format!("* {i} FETCH (BODY[] {{20}}\r\n");
            o.extend_from_slice(head.as_bytes());
            let body = vec![b'a' + i % 26; 20];
            o.push_cached(Arc::new(Entry::Opened(Buf::from(body.clone()))));
            o.extend_from_slice(b")\r\n");
            expected.extend_from_slice(head.as_bytes());
            expected.extend_from_slice(&body);
            expected.extend_from_slice(b")\r\n");
        }
        assert_eq!(o.len(), expected.len());
        let mut w = Trickle(Vec::new());
        o.flush(&mut w).await.unwrap();
        assert_eq!(w.0, expected);
        assert!(o.is_empty());
    }
}
