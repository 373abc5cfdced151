//! ASCII armor (RFC 4880 §6) written straight into the outgoing message, with CRLF line
//! ends: the OpenPGP packets are never held in a second buffer, and no armored copy is
//! converted afterwards.
//!
//! The output is byte for byte what sequoia's `armor::Writer` makes (64 columns, the
//! CRC-24 line, no armor headers), with CRLF in place of LF. Sequoia's writer sizes a
//! scratch buffer to each write and hashes the CRC a byte at a time; for a 20 MB
//! attachment that buffer alone was as large as the message.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::io::Write;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// Input bytes per armored line: 48 bytes make 64 base64 characters.
const LINE_BYTES: usize = 48;
const LINE_CHARS: usize = 64;

/// The armor of an encrypted message, around whatever is written into it.
pub struct Armored<'a> {
    out: &'a mut Vec<u8>,
    /// Input bytes of the current, incomplete line.
    pending: [u8; LINE_BYTES],
    pending_len: usize,
    crc: Crc24,
}

impl<'a> Armored<'a> {
    /// Starts a `PGP MESSAGE` block at the end of `out`.
    pub fn message(out: &'a mut Vec<u8>) -> Armored<'a> {
        out.extend_from_slice(b"-----BEGIN PGP MESSAGE-----\r\n\r\n");
        Armored {
            out,
            pending: [0; LINE_BYTES],
            pending_len: 0,
            crc: Crc24::new(),
        }
    }

    /// Writes the last line, the checksum and the end line.
    pub fn finish(self) {
        let Armored {
            out,
            pending,
            pending_len,
            crc,
        } = self;
        if let Some(rest) = pending.get(..pending_len).filter(|r| !r.is_empty()) {
            line(out, rest);
        }
        out.push(b'=');
        let sum = crc.value().to_be_bytes();
        line(out, sum.get(1..).unwrap_or_default());
        out.extend_from_slice(b"-----END PGP MESSAGE-----\r\n");
    }
}

/// One armored line: `bytes` (at most 48) in base64, then CRLF.
fn line(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut chars = [0u8; LINE_CHARS];
    // 48 bytes never need more than 64 characters, so this cannot fail.
    let n = STANDARD.encode_slice(bytes, &mut chars).unwrap_or(0);
    out.extend_from_slice(chars.get(..n).unwrap_or_default());
    out.extend_from_slice(b"\r\n");
}

impl Write for Armored<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.crc.update(buf);
        let mut rest = buf;
        if self.pending_len > 0 {
            let take = (LINE_BYTES - self.pending_len).min(rest.len());
            let (head, tail) = rest.split_at(take);
            if let Some(slot) = self
                .pending
                .get_mut(self.pending_len..self.pending_len + take)
            {
                slot.copy_from_slice(head);
            }
            self.pending_len += take;
            rest = tail;
            if self.pending_len < LINE_BYTES {
                return Ok(buf.len());
            }
            line(self.out, &self.pending);
            self.pending_len = 0;
        }
        let mut lines = rest.chunks_exact(LINE_BYTES);
        self.out.reserve(rest.len() / LINE_BYTES * (LINE_CHARS + 2));
        for l in lines.by_ref() {
            line(self.out, l);
        }
        let tail = lines.remainder();
        if let Some(slot) = self.pending.get_mut(..tail.len()) {
            slot.copy_from_slice(tail);
        }
        self.pending_len = tail.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The armor checksum (RFC 4880 §6.1), eight bytes per step.
struct Crc24 {
    /// The CRC in the top 24 bits; the low byte stays zero.
    reg: u32,
}

/// `TABLES[k][b]`: the register change for byte `b` followed by `k` zero bytes.
static TABLES: [[u32; 256]; 8] = tables();

// Evaluated at compile time only: an index out of range would fail the build, not a run.
#[allow(clippy::indexing_slicing)]
const fn tables() -> [[u32; 256]; 8] {
    const POLY: u32 = 0x0086_4CFB << 8;
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut r = (i as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            r = if r & 0x8000_0000 != 0 {
                (r << 1) ^ POLY
            } else {
                r << 1
            };
            bit += 1;
        }
        t[0][i] = r;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[k - 1][i];
            t[k][i] = (prev << 8) ^ t[0][(prev >> 24) as usize];
            i += 1;
        }
        k += 1;
    }
    t
}

/// A table entry; a byte always indexes within the 256 entries.
fn at(table: &[u32; 256], i: u8) -> u32 {
    table.get(usize::from(i)).copied().unwrap_or(0)
}

impl Crc24 {
    fn new() -> Crc24 {
        Crc24 {
            reg: 0x00B7_04CE << 8,
        }
    }

    fn update(&mut self, data: &[u8]) {
        let t = &TABLES;
        let mut words = data.chunks_exact(8);
        for w in words.by_ref() {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            let [h0, h1, h2, h3] =
                (self.reg ^ u32::from_be_bytes([b[0], b[1], b[2], b[3]])).to_be_bytes();
            self.reg = at(&t[7], h0)
                ^ at(&t[6], h1)
                ^ at(&t[5], h2)
                ^ at(&t[4], h3)
                ^ at(&t[3], b[4])
                ^ at(&t[2], b[5])
                ^ at(&t[1], b[6])
                ^ at(&t[0], b[7]);
        }
        for &b in words.remainder() {
            self.reg = (self.reg << 8) ^ at(&t[0], self.reg.to_be_bytes()[0] ^ b);
        }
    }

    fn value(&self) -> u32 {
        self.reg >> 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealpost_keyring::openpgp::armor::{Kind, Writer};

    /// What sequoia's armor writer makes of `data`, with CRLF line ends.
    fn sequoia(data: &[u8]) -> Vec<u8> {
        let mut w = Writer::new(Vec::new(), Kind::Message).unwrap();
        w.write_all(data).unwrap();
        let lf = w.finalize().unwrap();
        String::from_utf8(lf)
            .unwrap()
            .replace('\n', "\r\n")
            .into_bytes()
    }

    fn ours(data: &[u8], pieces: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut a = Armored::message(&mut out);
        let step = data.len() / pieces.max(1) + 1;
        for chunk in data.chunks(step) {
            a.write_all(chunk).unwrap();
        }
        a.finish();
        out
    }

    #[test]
    fn same_bytes_as_sequoia_for_every_length_and_split() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7919 % 251) as u8).collect();
        // An OpenPGP message is never empty (sequoia writes nothing at all for no data).
        for len in (1..200).chain([479, 480, 481, 1000]) {
            let d = &data[..len];
            for pieces in [1, 2, 3, 7, 50] {
                assert_eq!(
                    String::from_utf8(ours(d, pieces)).unwrap(),
                    String::from_utf8(sequoia(d)).unwrap(),
                    "{len} bytes in {pieces} pieces"
                );
            }
        }
    }

    #[test]
    fn checksum_matches_the_bitwise_definition() {
        fn bitwise(data: &[u8]) -> u32 {
            let mut crc: u32 = 0xB704CE;
            for &b in data {
                crc ^= u32::from(b) << 16;
                for _ in 0..8 {
                    crc <<= 1;
                    if crc & 0x100_0000 != 0 {
                        crc ^= 0x864CFB;
                    }
                }
            }
            crc & 0xFF_FFFF
        }
        let data: Vec<u8> = (0..300u32).map(|i| (i * 31 + 7) as u8).collect();
        for len in [0, 1, 7, 8, 9, 63, 64, 65, 300] {
            let mut c = Crc24::new();
            c.update(&data[..len]);
            assert_eq!(c.value(), bitwise(&data[..len]), "{len}");
        }
    }
}
