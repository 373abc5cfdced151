//! How large a client's message may be so that every copy made of it still fits the next
//! hop's SIZE (RFC 1870).
//!
//! The next hop counts the copy sealpost sends, not what the client sent. An encrypted
//! copy is larger: the whole message is sealed (not compressed), then ASCII-armored in
//! base64 lines of 64 characters with CRLF, which is 4/3 × 66/64 = 1.375 times the
//! sealed bytes; around that come the PGP/MIME wrapper, the outer header of header
//! protection, one session-key packet per recipient key, the signature and the
//! `Autocrypt:` header. Measured through the outbound transform (the tests below, and the
//! README), an encrypted and signed copy is 1.375 × the message plus about 3.1 KB for one
//! Cv25519 recipient, whatever the content (ASCII text, a base64 attachment, 8-bit text):
//! base64 content does not compress away because nothing is compressed. The "1.9×" of a
//! 7 MB attachment that became a 13 MB copy is that 1.375 times the 1.37 of the
//! attachment's own base64 in the client's message.
//!
//! So the listener offers `(hop SIZE − RESERVE) / 1.375`: [`RESERVE`] covers the fixed
//! part with room for many recipients' session keys (each armored X25519 one is about
//! 130 bytes, an RSA-4096 one about 720). A signed-only copy of 8-bit text is the one
//! that can grow more (quoted-printable, up to about 3×); it is not what the limit is
//! sized for, and such a copy is refused with `552` before anything is sent or spooled
//! (see [`Relay::deliver`](super::Relay::deliver)), never accepted and bounced later.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Encrypted bytes per message byte, as a fraction: 11/8 = 1.375 (base64's 4/3 times
/// the 66/64 of its CRLF every 64 characters).
pub const GROWTH: (u64, u64) = (11, 8);

/// Bytes a copy adds besides its growth: the wrapper, header protection's outer header,
/// the signature, Autocrypt, and session keys for up to about 80 RSA-4096 recipients.
pub const RESERVE: u64 = 64 * 1024;

/// The largest message whose encrypted copy fits a next hop that takes `hop` bytes.
pub fn client_limit(hop: u64) -> u64 {
    hop.saturating_sub(RESERVE).saturating_mul(GROWTH.1) / GROWTH.0
}

/// Bytes an inbound copy may gain on its way to the mailbox server: sealpost's
/// `Received:`, `Authentication-Results:` and verdict fields. Decrypting makes a message
/// smaller as a rule (no armor, no session keys), so an inbound listener offers the
/// next hop's SIZE less this, with no growth factor. A compressed ciphertext can open to
/// more than it came as: such a copy is refused with `552` before it is spooled (see
/// [`Relay::deliver`](super::Relay::deliver)).
pub const INBOUND_RESERVE: u64 = 4 * 1024;

/// What a listener can take so that its copies fit the next hop's SIZE.
#[derive(Debug, Clone)]
pub enum Fits {
    /// The copies are encrypted on the way (outbound): [`client_limit`].
    Encrypted(Arc<HopSize>),
    /// The copies are decrypted or go as they came (inbound): the next hop's SIZE less
    /// [`INBOUND_RESERVE`].
    Opened(Arc<HopSize>),
}

impl Fits {
    /// The largest message a client may send, if the next hop has a limit.
    pub fn client_limit(&self) -> Option<u64> {
        match self {
            Fits::Encrypted(hop) => hop.get().map(client_limit),
            Fits::Opened(hop) => hop.get().map(|n| n.saturating_sub(INBOUND_RESERVE)),
        }
    }
}

/// The next hop's SIZE as its last EHLO gave it, shared by the relay (which learns it on
/// each new connection) and the listeners (which offer what fits). `0` means none known:
/// not reached yet, or it gave no limit (`SIZE` alone, or `SIZE 0`, RFC 1870 §4).
#[derive(Debug, Default)]
pub struct HopSize(AtomicU64);

impl HopSize {
    pub fn get(&self) -> Option<u64> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        }
    }

    pub fn set(&self, size: Option<u64>) {
        self.0.store(size.unwrap_or(0), Ordering::Relaxed);
    }
}

/// The `SIZE` keyword's value in EHLO reply lines (the code and separator already off):
/// `Some(n)` for a limit, `None` for no keyword or no limit.
pub fn from_ehlo<'a>(lines: impl IntoIterator<Item = &'a str>) -> Option<u64> {
    lines.into_iter().find_map(|line| {
        let mut words = line.split_ascii_whitespace();
        if !words.next()?.eq_ignore_ascii_case("SIZE") {
            return None;
        }
        words.next()?.parse().ok().filter(|n| *n > 0)
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use sealpost_keyring::openpgp::policy::StandardPolicy;

    use super::*;
    use crate::transform::outbound::{protect, Treatment};

    fn noise(n: usize) -> Vec<u8> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    /// A message of about `size` bytes in each of the shapes that matter for growth:
    /// incompressible base64 (an attachment), ASCII text, and 8-bit UTF-8 text.
    fn shapes(size: usize) -> Vec<(&'static str, Vec<u8>)> {
        let head =
            "From: alice@example.org\r\nTo: bob@example.net\r\nSubject: s\r\nMIME-Version: 1.0\r\n";
        let mut attachment = format!(
            "{head}Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n\
             --b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        )
        .into_bytes();
        attachment.extend(crate::mime::seven_bit::base64_lines(&noise(size * 3 / 4)));
        attachment.extend_from_slice(b"\r\n--b--\r\n");
        let line = "The quick brown fox jumps over the lazy dog again.\r\n";
        let ascii = format!("{head}\r\n{}", line.repeat(size / line.len())).into_bytes();
        let line = "Съешь же ещё этих мягких французских булок, да выпей чаю\r\n";
        let eight = format!(
            "{head}Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{}",
            line.repeat(size / line.len())
        )
        .into_bytes();
        vec![
            ("base64 attachment", attachment),
            ("ASCII text", ascii),
            ("8-bit text", eight),
        ]
    }

    #[test]
    fn an_encrypted_copy_of_a_message_at_the_offered_limit_fits_the_next_hop() {
        let alice = Arc::new(crate::transform::outbound::tests::key(
            "<alice@example.org>",
        ));
        let bob = Arc::new(crate::transform::outbound::tests::key("<bob@example.net>"));
        let policy = StandardPolicy::new();
        let treatment = Treatment::Encrypt {
            recipients: vec![bob],
            signer: Some(alice),
            protect_subject: true,
        };
        for hop in [200_000u64, 3_000_000] {
            let limit = client_limit(hop) as usize;
            for (name, mut m) in shapes(limit) {
                // Exactly at the limit: the largest message the listener takes.
                m.truncate(limit);
                while std::str::from_utf8(&m).is_err() {
                    m.pop();
                }
                let out = protect(&m, &treatment, &policy, SystemTime::now()).unwrap();
                let copy = out.message.len() as u64;
                assert!(copy <= hop, "{name}: {copy} > {hop}");
                // And the factor is not wasteful: the copy fills the room but the reserve.
                assert!(
                    copy >= (hop - RESERVE) * 99 / 100,
                    "{name}: {copy} of {hop}"
                );
                let growth = (copy as f64 - 3200.0) / m.len() as f64;
                assert!((1.37..1.38).contains(&growth), "{name}: {growth}");
            }
        }
    }

    #[test]
    fn the_limit_is_read_from_the_ehlo_reply() {
        let ehlo = [
            "mx.example greets gw",
            "PIPELINING",
            "SIZE 10240000",
            "8BITMIME",
        ];
        assert_eq!(from_ehlo(ehlo), Some(10_240_000));
        assert_eq!(from_ehlo(["mx", "size 52428800"]), Some(52_428_800));
        // RFC 1870 §4: no number, or 0, means no fixed limit.
        assert_eq!(from_ehlo(["mx", "SIZE"]), None);
        assert_eq!(from_ehlo(["mx", "SIZE 0"]), None);
        assert_eq!(from_ehlo(["mx", "SIZE lots"]), None);
        assert_eq!(from_ehlo(["mx", "PIPELINING"]), None);
        assert_eq!(client_limit(10_000_000), (10_000_000 - RESERVE) * 8 / 11);
        assert_eq!(client_limit(1000), 0);
        let hop = Arc::new(HopSize::default());
        let (outbound, inbound) = (Fits::Encrypted(hop.clone()), Fits::Opened(hop.clone()));
        assert_eq!(outbound.client_limit(), None);
        assert_eq!(inbound.client_limit(), None);
        hop.set(Some(1_440_000));
        assert_eq!(
            outbound.client_limit(),
            Some((1_440_000 - RESERVE) * 8 / 11)
        );
        assert_eq!(inbound.client_limit(), Some(1_440_000 - INBOUND_RESERVE));
        hop.set(None);
        assert_eq!(hop.get(), None);
        assert_eq!(inbound.client_limit(), None);
    }
}
