//! Messages larger than `spill_above`: opened while they are read from their sealed file,
//! plaintext spilled too, with the same bytes delivered as for the message held in memory;
//! and the malformed inputs the fuzz targets found when large and small messages were
//! opened by two different readers.

use super::*;
use crate::mime::seven_bit;
use crate::transform::inbound::{Encryption, Signature};

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

/// Found by the `inbound` fuzz target (`fuzz/regressions/inbound/`): nested OpenPGP data
/// was once looked for in mail-parser's tree, which reads malformed MIME unlike the root's
/// classifier. The line walk reads it as the classifier does: a delimiter line is `--boundary` (or `--boundary--`) and nothing but white space,
/// a header section ends at an empty line, and a part keeps its declared type when its
/// multipart is never closed. None of these messages has anything to decrypt.
#[test]
fn malformed_mime_is_walked_by_the_delimiter_grammar() {
    use Encryption::{NestedIgnored, None as Clear};
    use Signature::{None as Unsigned, Partial};
    let w = World::new();
    let cases: [(&[u8], Encryption, Signature); 9] = [
        // mail-parser panicked on these ("could not find multipart"): the message was
        // delivered as `encryption=malformed`, as if its OpenPGP data were broken.
        (
            b"Content-Type:multipart;boundary=outer\r\n\r\n--outerContent-Type:message/rfc822\r\n\r\n--outer\r\nContent-Type:message/rfc822\r\n\r\nContent-Type:multipart/encrypted\r\n\r\n--outer--",
            NestedIgnored,
            Unsigned,
        ),
        (
            b"Content-Type:multipart;boundary=outer\r\n\r\n--outerContent-Type:message/rfc822\r\n\r\nContent-Type:message/rfc822\r\n\r\n\r\n--outer--",
            Clear,
            Unsigned,
        ),
        // mail-parser takes `--boundary` anywhere in a line, whatever follows it, as a
        // delimiter: `--ss` for boundary `s`, `--outer2`, and `--outer` after other text
        // or before more of it.
        (
            b"Content-Type:multipart/\r\n\tboundary=s\r\n\r\n--ss\r\n\r\n-----BEGIN PGP MESSAGE-----",
            Clear,
            Unsigned,
        ),
        (
            b"Content-Type:multipart;boundary=outer\r\n\r\n--outer\r\nContent-Type:multipart/encrypted\r\n\r\n--outer2\r\n\r\n-----BEGIN PGP SIGNATURE-----",
            NestedIgnored,
            Unsigned,
        ),
        (
            b"Content-Type:multipart;boundary=outer\r\n\r\n--outer\r\n\r\n-----BEGIN PGP MESSAGE-------outer-----BEGIN PGP SIGNATURE-----",
            NestedIgnored,
            Partial,
        ),
        (
            b"Content-Type:multipart;boundary=outer\r\n\r\n--outer\r\n\r\n--outer-----BEGIN PGP MESSAGE-----",
            NestedIgnored,
            Unsigned,
        ),
        // mail-parser makes a part of any type text when its multipart is never closed.
        (
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n",
            Clear,
            Unsigned,
        ),
        // ... and an attached message whose header section never ends (it has no body)
        // text, its header lines included.
        (
            b"Content-Type:message/rfc822\r\n\r\n-----BEGIN PGP SIGNATURE-----",
            Clear,
            Unsigned,
        ),
        (
            b"Content-Type:message/rfc822\r\n\r\nReceived: -----BEGIN PGP SIGNATURE-----\r\nFrom: <a@b.example>-----BEGIN PGP MESSAGE-----\r\n",
            Clear,
            Unsigned,
        ),
    ];
    for (m, encryption, signature) in cases {
        let o = w.open(m, &["bob@example.net", "dave@example.net"]);
        assert_eq!(o.len(), 1);
        let v = &o[0].verdict;
        assert_eq!(
            (v.encryption, v.signature),
            (encryption, signature),
            "{}",
            String::from_utf8_lossy(m)
        );
    }
}

/// The fuzz target's inputs for the cases above, as it found them, in memory and in a
/// sealed file.
#[test]
fn the_fuzz_inputs_for_malformed_mime_open_alike_in_memory_and_on_disk() {
    let w = World::new();
    let inputs: [&[u8]; 8] = [
        include_bytes!("../../../../fuzz/regressions/inbound/mime-parser-panic-nested-encrypted"),
        include_bytes!("../../../../fuzz/regressions/inbound/mime-parser-panic"),
        include_bytes!("../../../../fuzz/regressions/inbound/unclosed-binary-part-read-as-text"),
        include_bytes!(
            "../../../../fuzz/regressions/inbound/delimiter-inside-a-line-hides-signature"
        ),
        include_bytes!(
            "../../../../fuzz/regressions/inbound/delimiter-inside-a-line-hides-ciphertext"
        ),
        include_bytes!("../../../../fuzz/regressions/inbound/attached-header-never-ends-deep"),
        include_bytes!(
            "../../../../fuzz/regressions/inbound/attached-header-never-ends-armor-in-fields"
        ),
        include_bytes!("../../../../fuzz/regressions/inbound/attached-header-never-ends"),
    ];
    let rcpts = ["bob@example.net", "dave@example.net"];
    for m in inputs {
        let m = wire(m);
        let o = w.open(&m, &rcpts);
        assert_eq!(o.len(), 1);
        assert_ne!(o[0].verdict.encryption, Encryption::Decrypted);
        let dir = tempfile::tempdir().unwrap();
        let spill = Some(Spill::new(dir.path(), 0));
        let on_disk = w.open_blob(&spilled(&m, dir.path()), &rcpts, 1 << 20, spill);
        assert_eq!(on_disk, o);
    }
}

/// `data` as the DATA reader lets it through: it refuses a bare CR or LF, so the fuzz
/// target makes each a CRLF before it compares the two paths.
fn wire(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 16);
    let mut bytes = data.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        match b {
            b'\r' | b'\n' => {
                if b == b'\r' && bytes.peek() == Some(&b'\n') {
                    bytes.next();
                }
                out.extend_from_slice(b"\r\n");
            }
            _ => out.push(b),
        }
    }
    out
}

/// Found by the `inbound` fuzz target (`fuzz/regressions/inbound/short-armor-without-footer`):
/// armor that is not of the plain shape went to sequoia as it is for a small message, and
/// through a dearmoring reader of sequoia's for a large one. A short block without its
/// footer then failed before its first packet (`malformed`) or after it (ciphertext for a
/// key nobody here has). Such armor goes to sequoia as it is.
#[test]
fn broken_armor_goes_to_sequoia_as_it_is() {
    let w = World::new();
    let rcpts = ["bob@example.net", "dave@example.net"];
    let found = include_bytes!("../../../../fuzz/regressions/inbound/short-armor-without-footer");
    let o = w.open(found, &rcpts);
    assert_eq!(o.len(), 2);
    assert!(o.iter().all(|o| o.verdict.encryption == Encryption::NoKey));
    // The same, made here: a packet of an unknown type, then the first byte of an
    // encrypted data packet, armored on the line of the armor header, with no footer.
    let mut packets = vec![0xed, 94];
    packets.extend([0u8; 94]);
    packets.extend([0xd2, 25, 0xf5]);
    let mut data = b"-----BEGIN PGP MESSAGE-----".to_vec();
    data.extend(crate::mime::seven_bit::base64_lines(&packets));
    let o = w.open(&pgp_mime(OUTER, &data), &rcpts);
    assert_eq!(o.len(), 2);
    assert!(o.iter().all(|o| o.verdict.encryption == Encryption::NoKey));
}

/// Found by the `inbound` fuzz target
/// (`fuzz/regressions/inbound/payload-not-a-mime-entity-loses-its-text`): a PGP/MIME
/// container whose plaintext is plain text, not a MIME entity, lost that text: its lines
/// were read as a header section and dropped as malformed fields. It is all body now,
/// whether or not an empty line follows the first lines.
#[test]
fn a_payload_that_is_not_a_mime_entity_keeps_its_text() {
    let w = World::new();
    for plain in [
        &b"Hi Bob,\r\nthe text that must arrive\r\n"[..],
        b"Hi Bob,\r\nthe text that must arrive\r\n\r\nand a second paragraph\r\n",
    ] {
        let m = pgp_mime(OUTER, &w.alice_to_bob(plain));
        let o = w.open_bob(&m);
        assert_eq!(o.verdict.encryption, Encryption::Decrypted);
        assert!(
            contains(&o.message, b"the text that must arrive"),
            "{}",
            String::from_utf8_lossy(&o.message)
        );
        assert!(contains(&o.message, b"Hi Bob,"));
    }
}
