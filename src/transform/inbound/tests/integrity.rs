//! Refusals (security rules 1, 2 and 10): no integrity protection, a bad MDC, truncation,
//! a compression bomb, bad armor, keys that are not the recipient's. None may release
//! plaintext.

use openpgp::crypto::symmetric::{BlockCipherMode, Encryptor as Cfb, PaddingMode};
use openpgp::crypto::SessionKey;
use openpgp::packet::pkesk::PKESK3;
use openpgp::packet::Literal;
use openpgp::types::{DataFormat, SymmetricAlgorithm};

use super::*;

const SECRET: &[u8] = b"TOP-SECRET-PLAN-7731";

fn secret_payload() -> Vec<u8> {
    let mut p = b"Content-Type: text/plain\r\n\r\n".to_vec();
    p.extend_from_slice(SECRET);
    p.extend_from_slice(b"\r\n");
    p
}

/// A genuine SED message (RFC 4880 §5.7, no MDC) to `recipient`, built by hand: sequoia
/// refuses to write one. OpenPGP CFB: the random prefix and its two repeated bytes under
/// a zero IV, then a resynchronisation (the IV becomes ciphertext bytes 2..18).
fn sed(recipient: &Cert, plaintext: &[u8]) -> Vec<u8> {
    let algo = SymmetricAlgorithm::AES128;
    let sk = SessionKey::new(16).unwrap();
    let p = openpgp::policy::StandardPolicy::new();
    let subkey = recipient
        .keys()
        .with_policy(&p, None)
        .for_transport_encryption()
        .next()
        .unwrap();
    let pkesk = PKESK3::for_recipient(algo, &sk, subkey.key()).unwrap();
    let mut lit = Literal::new(DataFormat::Binary);
    lit.set_body(plaintext.to_vec());
    let literal = packet_bytes(&openpgp::Packet::Literal(lit));
    let prefix = [0x42u8; 18];
    let mut body = Vec::new();
    {
        let mut e = Cfb::new(
            algo,
            BlockCipherMode::CFB,
            PaddingMode::None,
            &sk,
            None,
            &mut body,
        )
        .unwrap();
        e.write_all(&prefix).unwrap();
        e.finalize().unwrap();
    }
    let iv = body[2..18].to_vec();
    {
        let mut e = Cfb::new(
            algo,
            BlockCipherMode::CFB,
            PaddingMode::None,
            &sk,
            Some(&iv),
            &mut body,
        )
        .unwrap();
        e.write_all(&literal).unwrap();
        e.finalize().unwrap();
    }
    let mut out = packet_bytes(&openpgp::Packet::from(pkesk));
    // A new-format header, tag 9, five-octet length.
    out.push(0xc0 | 9);
    out.push(0xff);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

#[test]
fn sed_is_refused() {
    let w = World::new();
    let data = sed(&w.bob, &secret_payload());
    let m = pgp_mime(OUTER, &armor(&data));
    let o = w.open_bob(&m);
    assert_verdict(&o, "none", "no-integrity", "none");
    assert_eq!(pgp(&o), "fail");
    let (ar, _) = ours(&o.message);
    assert!(
        ar.contains("policy.encrypted=failed") && !ar.contains("decryption-key"),
        "{ar}"
    );
    assert!(!contains(&o.message, SECRET));
    assert_eq!(body(&o.message), body(&m), "delivered unchanged");
    // Inline, too.
    let mut inline = format!("{OUTER}\r\n").into_bytes();
    inline.extend_from_slice(&armor(&data));
    assert_verdict(&w.open_bob(&inline), "none", "no-integrity", "none");
}

#[test]
fn the_hand_made_sed_is_a_real_one() {
    // gpg reads it (with the warning every SED earns), so the refusal above is not about
    // a broken packet.
    let w = World::new();
    let data = sed(&w.bob, SECRET);
    let gpg = crate::transform::outbound::tests::Gpg::new();
    gpg.import(&w.bob.as_tsk().to_vec().unwrap());
    let out = gpg.run(&["--ignore-mdc-error", "--decrypt"], &data);
    assert_eq!(
        out.stdout,
        SECRET,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_bad_mdc_or_truncation_releases_nothing() {
    let w = World::new();
    let good = encrypt(&secret_payload(), &[&w.bob], How::default());
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    let mut early = good.clone();
    early[good.len() - 40] ^= 0x80;
    let truncated = good[..good.len() - 10].to_vec();
    for data in [flipped, early, truncated] {
        let m = pgp_mime(OUTER, &armor(&data));
        let o = w.open_bob(&m);
        assert_verdict(&o, "none", "integrity-failure", "none");
        assert_eq!(pgp(&o), "fail");
        assert!(!contains(&o.message, SECRET));
        assert_eq!(body(&o.message), body(&m));
    }
    // The untouched message opens, so the failures above are the tampering's.
    let o = w.open_bob(&pgp_mime(OUTER, &armor(&good)));
    assert_verdict(&o, "none", "decrypted", "none");
    assert!(contains(&o.message, SECRET));
}

/// A ciphertext cut inside its first blocks, its packet still claiming the full length:
/// the OpenPGP parser panics on some of these. Each must still be a refusal.
#[test]
fn a_ciphertext_cut_in_its_first_blocks_is_refused_without_a_panic() {
    use openpgp::parse::Parse;
    let w = World::new();
    let good = encrypt(&secret_payload(), &[&w.bob], How::default());
    let pile = openpgp::PacketPile::from_bytes(&good).unwrap();
    let pkesk = packet_bytes(pile.path_ref(&[0]).unwrap());
    let seipd = packet_bytes(pile.path_ref(&[1]).unwrap());
    // New format, one-octet length: the tag, the length, then the body.
    let (head, rest) = seipd.split_at(2);
    assert!(head[1] < 192, "{head:?}");
    for cut in 0..rest.len() {
        let mut data = pkesk.clone();
        data.extend_from_slice(head);
        data.extend_from_slice(&rest[..cut]);
        let m = pgp_mime(OUTER, &armor(&data));
        let o = w.open_bob(&m);
        assert_ne!(o.verdict.encryption.word(), "decrypted", "cut at {cut}");
        assert_ne!(pgp(&o), "pass");
        assert!(!contains(&o.message, SECRET));
        assert_eq!(body(&o.message), body(&m));
    }
}

#[test]
fn a_compression_bomb_stops_at_the_limit() {
    let w = World::new();
    let p = openpgp::policy::StandardPolicy::new();
    // 200 MB of zeros, compressed, encrypted; written in chunks.
    let mut sink = Vec::new();
    {
        use openpgp::serialize::stream::{Compressor, Encryptor, LiteralWriter, Message};
        let m = Message::new(&mut sink);
        let keys: Vec<openpgp::serialize::stream::Recipient> = w
            .bob
            .keys()
            .with_policy(&p, None)
            .for_transport_encryption()
            .map(Into::into)
            .collect();
        let m = Encryptor::for_recipients(m, keys).build().unwrap();
        let m = Compressor::new(m)
            .algo(CompressionAlgorithm::Zip)
            .build()
            .unwrap();
        let mut lw = LiteralWriter::new(m).build().unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..200 {
            lw.write_all(&zeros).unwrap();
        }
        lw.finalize().unwrap();
    }
    assert!(sink.len() < 1 << 20, "it is a bomb: {} bytes", sink.len());
    let m = pgp_mime(OUTER, &armor(&sink));
    let o = w.open_with(&m, &["bob@example.net"], 1 << 20).remove(0);
    assert_verdict(&o, "none", "too-large", "none");
    assert_eq!(body(&o.message), body(&m));
    let (ar, _) = ours(&o.message);
    assert!(ar.contains("policy.encrypted=failed"), "{ar}");
}

#[test]
fn malformed_armor_is_malformed() {
    let w = World::new();
    let bad = b"-----BEGIN PGP MESSAGE-----\r\n\r\n!!! not base64 at all !!!\r\n-----END PGP MESSAGE-----\r\n";
    let mut inline = format!("{OUTER}\r\n").into_bytes();
    inline.extend_from_slice(bad);
    for m in [inline, pgp_mime(OUTER, bad)] {
        let o = w.open_bob(&m);
        assert_verdict(&o, "none", "malformed", "none");
        assert_eq!(pgp(&o), "permerror");
        assert_eq!(body(&o.message), body(&m));
    }
}

#[test]
fn ciphertext_for_another_local_user_is_not_decrypted() {
    // The reply oracle: Carol's ciphertext, sent to Bob.
    let w = World::new();
    let data = encrypt(
        &secret_payload(),
        &[&w.carol],
        How {
            armor: true,
            ..How::default()
        },
    );
    let m = pgp_mime(OUTER, &data);
    let o = w.open_bob(&m);
    assert_verdict(&o, "none", "no-key", "none");
    assert_eq!(pgp(&o), "none");
    assert_eq!(body(&o.message), body(&m));
    assert!(!contains(&o.message, SECRET));
    let (ar, _) = ours(&o.message);
    assert!(ar.contains("policy.encrypted=failed"), "{ar}");
}

#[test]
fn a_key_whose_user_id_is_not_the_recipient_is_not_used() {
    // Bob's secret key under a second, unrelated address: mail for that address is not
    // Bob's to read with it unless a user ID names it.
    let w = World::new();
    let data = encrypt(
        &secret_payload(),
        &[&w.bob],
        How {
            armor: true,
            ..How::default()
        },
    );
    let m = pgp_mime(OUTER, &data);
    let out = w.open(&m, &["postmaster@example.net"]);
    assert_verdict(&out[0], "none", "no-key", "none");
}

#[test]
fn a_pkesk_for_an_unknown_key_is_no_key() {
    let w = World::new();
    let data = encrypt(
        &secret_payload(),
        &[&w.dave],
        How {
            armor: true,
            ..How::default()
        },
    );
    let o = w.open_bob(&pgp_mime(OUTER, &data));
    assert_verdict(&o, "none", "no-key", "none");
}
