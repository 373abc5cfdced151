//! Messages larger than `spill_above`: opened while they are read from their sealed file,
//! plaintext spilled too. Every test in the other files already opens its message both
//! ways and compares ([`World::open_with`]); these are the large cases.

use super::*;
use crate::transform::inbound::{Encryption, Signature};
use crate::transform::seven_bit;

const SECRET: &[u8] = b"LARGE-SECRET-0815";
const MIB: usize = 1 << 20;

/// A payload with a text part and a base64 attachment of about `size` bytes.
fn big_payload(size: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    let mut p = b"Content-Type: multipart/mixed; boundary=\"mix\"\r\n\r\n--mix\r\nContent-Type: text/plain\r\n\r\n".to_vec();
    p.extend_from_slice(SECRET);
    p.extend_from_slice(b"\r\n--mix\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    p.extend_from_slice(&seven_bit::base64_lines(&data));
    p.extend_from_slice(b"\r\n--mix--\r\n");
    p
}

/// Opens a spilled `m` for Bob, its plaintext spilling past 64 KiB.
fn open_spilled(w: &World, m: &[u8], max: usize) -> Opened {
    let dir = tempfile::tempdir().unwrap();
    let blob = spilled(m, dir.path());
    let mut out = w.open_blob(
        &blob,
        &["bob@example.net"],
        max,
        Some(Spill::new(dir.path(), 64 << 10)),
    );
    // Spill files are unnamed: nothing of the message or its plaintext is left there.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    assert_eq!(out.len(), 1);
    out.remove(0)
}

#[test]
fn a_large_payload_is_decrypted_into_a_spill_file_and_delivered_from_it() {
    let w = World::new();
    let payload = big_payload(3 * MIB);
    let m = pgp_mime(OUTER, &w.alice_to_bob(&payload));
    let o = open_spilled(&w, &m, 16 * MIB);
    assert_verdict(&o, "valid", "decrypted", "none");
    // The delivered body is the plaintext's, still in its sealed file.
    assert!(o.spilled);
    assert_eq!(body(&o.message), body(&payload));
    assert_wellformed(&o.message);
    // The same bytes as in memory.
    let memory = w.open_blob(&Blob::from(m.clone()), &["bob@example.net"], 16 * MIB, None);
    assert_eq!(memory[0].message, o.message);
}

#[test]
fn a_large_ciphertext_cut_flipped_or_too_large_releases_nothing() {
    let w = World::new();
    let payload = big_payload(2 * MIB);
    let binary = encrypt(
        &payload,
        &[&w.bob],
        How {
            signer: Some(&w.alice),
            ..How::default()
        },
    );
    let cut = pgp_mime(OUTER, &armor(&binary[..binary.len() / 2]));
    let mut flipped = binary.clone();
    let at = flipped.len() - 10;
    flipped[at] ^= 0x01;
    let flipped = pgp_mime(OUTER, &armor(&flipped));
    for m in [cut, flipped] {
        let o = open_spilled(&w, &m, 16 * MIB);
        assert_eq!(o.verdict.encryption, Encryption::IntegrityFailure);
        assert!(!contains(&o.message, SECRET));
        assert_eq!(body(&o.message), body(&m), "delivered unchanged");
        assert!(o.spilled, "the received body is not copied");
        assert_eq!(w.open_with(&m, &["bob@example.net"], 16 * MIB)[0], o);
    }
    // Compressed well past the limit: stopped there, nothing released.
    let bomb = pgp_mime(
        OUTER,
        &armor(&encrypt(
            &vec![b'A'; 4 * MIB],
            &[&w.bob],
            How {
                compress: true,
                ..How::default()
            },
        )),
    );
    let o = open_spilled(&w, &bomb, MIB);
    assert_eq!(o.verdict.encryption, Encryption::TooLarge);
    assert_eq!(body(&o.message), body(&bomb));
}

#[test]
fn a_large_signed_message_is_verified_while_it_is_read() {
    let w = World::new();
    let text = "a line of signed text\n".repeat(100_000);
    let part = crlf(format!("Content-Type: text/plain\r\n\r\n{text}").as_bytes());
    let m = multipart_signed(OUTER, &part, &w.alice);
    let o = open_spilled(&w, &m, 16 * MIB);
    assert_verdict(&o, "valid", "none", "none");
    assert!(o.spilled);
    assert_eq!(body(&o.message), body(&m));
    // A changed byte deep inside the signed part breaks it.
    let mut bad = m.clone();
    let at = m.len() / 2;
    bad[at] = if bad[at] == b'x' { b'y' } else { b'x' };
    let o = open_spilled(&w, &bad, 16 * MIB);
    assert_eq!(o.verdict.signature, Signature::Invalid);
}

#[test]
fn a_large_plain_message_is_walked_for_nested_openpgp_data_only() {
    let w = World::new();
    let filler = "filler text that is not OpenPGP\r\n".repeat(60_000);
    let armored =
        String::from_utf8(w.alice_to_bob(b"Content-Type: text/plain\r\n\r\nx\r\n")).unwrap();
    let nested_b64 = String::from_utf8(seven_bit::base64_lines(armored.as_bytes())).unwrap();
    let cases = [
        // An encrypted part below the root (EFAIL): noted, never opened.
        (format!("--o\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=i\r\n\r\n--i\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--i\r\nContent-Type: application/octet-stream\r\n\r\n{armored}\r\n--i--\r\n"), Encryption::NestedIgnored),
        // An armored block in a base64 text part.
        (format!("--o\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n{nested_b64}"), Encryption::NestedIgnored),
        // Nothing at all.
        (String::new(), Encryption::None),
    ];
    for (part, want) in cases {
        let m = format!("{OUTER}MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: text/plain\r\n\r\n{filler}\r\n{part}--o--\r\n");
        let o = open_spilled(&w, m.as_bytes(), 16 * MIB);
        assert_eq!(o.verdict.encryption, want);
        assert!(!contains(&o.message, b"\r\n\r\nx\r\n") || want == Encryption::None);
        assert_eq!(body(&o.message), body(m.as_bytes()));
        assert!(o.spilled);
        assert_eq!(
            w.open_with(m.as_bytes(), &["bob@example.net"], 16 * MIB)[0],
            o
        );
    }
}

#[test]
fn a_large_inline_message_and_one_for_nobody_here() {
    let w = World::new();
    let text = "inline text line\r\n".repeat(80_000);
    let armored = w.alice_to_bob(text.as_bytes());
    let mut m = format!("{OUTER}Content-Type: text/plain\r\n\r\n").into_bytes();
    m.extend_from_slice(&armored);
    let o = open_spilled(&w, &m, 16 * MIB);
    assert_verdict(&o, "valid", "decrypted", "none");
    assert_eq!(w.open_with(&m, &["bob@example.net"], 16 * MIB)[0], o);
    let for_dave = pgp_mime(
        OUTER,
        &armor(&encrypt(text.as_bytes(), &[&w.dave], How::default())),
    );
    let o = open_spilled(&w, &for_dave, 16 * MIB);
    assert_eq!(o.verdict.encryption, Encryption::NoKey);
    assert_eq!(body(&o.message), body(&for_dave));
}

#[test]
fn a_large_cleartext_signed_message_is_verified_while_it_is_read() {
    let w = World::new();
    let text = "cleartext line\r\n".repeat(100_000);
    let mut m = format!("{OUTER}Content-Type: text/plain\r\n\r\n").into_bytes();
    m.extend_from_slice(&cleartext(text.as_bytes(), &w.alice));
    let o = open_spilled(&w, &m, 16 * MIB);
    assert_verdict(&o, "valid", "none", "none");
    assert!(o.spilled);
    assert_eq!(body(&o.message), body(&m));
    assert_eq!(w.open_with(&m, &["bob@example.net"], 16 * MIB)[0], o);
    // Over the plaintext limit, it is not checked to the end: not valid.
    let o = open_spilled(&w, &m, MIB);
    assert_eq!(o.verdict.signature, Signature::Invalid);
}

#[test]
fn a_large_payload_with_bare_line_feeds_or_eight_bit_text_matches_memory() {
    let w = World::new();
    let lf = big_payload(2 * MIB)
        .split(|&b| b == b'\r')
        .collect::<Vec<_>>()
        .concat();
    let eight_bit = format!(
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{}",
        "Grüße aus Köln\r\n".repeat(100_000)
    )
    .into_bytes();
    for (payload, stays_on_disk) in [(lf, true), (eight_bit, false)] {
        let m = pgp_mime(OUTER, &w.alice_to_bob(&payload));
        let o = open_spilled(&w, &m, 16 * MIB);
        assert_verdict(&o, "valid", "decrypted", "none");
        assert_wellformed(&o.message);
        // Re-encoding a body for 7-bit transport is done in memory.
        assert_eq!(o.spilled, stays_on_disk);
        let memory = w.open_blob(&Blob::from(m), &["bob@example.net"], 16 * MIB, None);
        assert_eq!(memory[0].message, o.message);
    }
}

/// Found by the `inbound` fuzz target (`fuzz/regressions/inbound/`): with two
/// `Content-Type` (or `Content-Transfer-Encoding`) fields, the walk for nested protection
/// read the last one in memory (mail-parser's) and the first one on disk, so the same
/// message was `signature=partial` one way and `none` the other.
#[test]
fn repeated_content_fields_are_read_alike_in_memory_and_on_disk() {
    let w = World::new();
    let two_types =
        b"R\r\nContent-Type:8\r\nContent-Type:text\r\n\r\n-----BEGIN PGP SIGNATURE-----\r\n\r\n";
    let two_encodings = b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\nContent-Transfer-Encoding: 7bit\r\n\r\n-----BEGIN PGP SIGNATURE-----\r\n";
    for m in [&two_types[..], &two_encodings[..]] {
        let o = w.open(m, &["bob@example.net"]);
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].verdict.signature, Signature::Partial);
    }
}

/// Found by the `inbound` fuzz target: a multipart without a usable boundary was searched
/// as text in memory (mail-parser's reading) and skipped on disk, so its armor was
/// `nested-ignored` one way and nothing the other. Neither path decrypts it.
#[test]
fn a_multipart_without_its_boundary_is_read_alike_in_memory_and_on_disk() {
    let w = World::new();
    let no_boundary =
        b"R\r\nContent-Type: multipart/\r\n\tboundary=c\r\n\r\n-----BEGIN PGP MESSAGE-----";
    let never_found = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n-----BEGIN PGP MESSAGE-----\r\nhQ\r\n-----END PGP MESSAGE-----\r\n";
    for m in [&no_boundary[..], &never_found[..]] {
        let o = w.open(m, &["bob@example.net"]);
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].verdict.encryption, Encryption::None);
    }
}
