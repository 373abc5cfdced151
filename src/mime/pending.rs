//! Decoded bytes waiting to be read: the part every inbound decoder's `Read` shares (they
//! decode a batch, then hand it out in whatever pieces the reader asks for).
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

/// A batch of decoded bytes and how far it has been read.
#[derive(Debug, Default)]
pub struct Pending {
    bytes: Vec<u8>,
    at: usize,
}

impl Pending {
    pub fn with_capacity(n: usize) -> Pending {
        Pending {
            bytes: Vec::with_capacity(n),
            at: 0,
        }
    }

    /// Whether everything decoded so far was read.
    pub fn is_drained(&self) -> bool {
        self.at >= self.bytes.len()
    }

    /// Starts the next batch: the emptied buffer to decode into.
    pub fn next_batch(&mut self) -> &mut Vec<u8> {
        self.bytes.clear();
        self.at = 0;
        &mut self.bytes
    }

    /// Copies as much as `buf` takes; how much that was.
    pub fn take(&mut self, buf: &mut [u8]) -> usize {
        let available = self.bytes.get(self.at..).unwrap_or_default();
        let n = available.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), available.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.at += n;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_a_batch_in_any_pieces() {
        let mut p = Pending::with_capacity(8);
        assert!(p.is_drained());
        p.next_batch().extend_from_slice(b"abcdefg");
        let mut out = Vec::new();
        let mut buf = [0u8; 3];
        while !p.is_drained() {
            let n = p.take(&mut buf);
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, b"abcdefg");
        p.next_batch().push(b'x');
        assert_eq!(p.take(&mut [0u8; 0]), 0);
        assert!(!p.is_drained());
    }
}
