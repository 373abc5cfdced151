//! Signed-only messages verified by gpg 2.2 over the exact bytes of the first part.

use std::time::SystemTime;

use mail_parser::MessageParser;
use openpgp::policy::StandardPolicy;

use super::*;
use crate::mime::seven_bit::is_clean;
use crate::transform::outbound::sign::sign;
use crate::transform::outbound::Error;

/// The hash gpg reports in VALIDSIG, as a micalg.
fn micalg_of(status: &str) -> &'static str {
    let hash = status
        .lines()
        .find(|l| l.contains("VALIDSIG"))
        .and_then(|l| l.split_whitespace().nth(9))
        .unwrap();
    match hash {
        "8" => "pgp-sha256",
        "9" => "pgp-sha384",
        "10" => "pgp-sha512",
        "11" => "pgp-sha224",
        other => panic!("unexpected hash {other}"),
    }
}

#[test]
fn gpg_verifies_signed_only_over_the_exact_part() {
    let p = StandardPolicy::new();
    let alice = key("Alice <alice@example.org>");
    let out = sign(MESSAGE.as_bytes(), &alice, &p, SystemTime::now()).unwrap();
    assert!(out.is_ascii(), "the whole message is 7-bit");
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("\r\nSubject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= and plans\r\n"),
        "not obscured"
    );
    assert!(
        text.contains("\r\nX-Project: codename nightingale\r\n"),
        "nothing hidden"
    );
    assert!(!text.contains("HP-Outer"), "hp=\"clear\" has no HP-Outer");
    assert_eq!(
        text.matches("\r\nAutocrypt: addr=alice@example.org; keydata=")
            .count(),
        1
    );
    let (part, sig, micalg) = signed_parts(&out);
    let part_text = String::from_utf8_lossy(&part);
    assert!(
        part_text.starts_with("Content-Type: text/plain; charset=utf-8; hp=\"clear\"\r\n"),
        "{part_text}"
    );
    assert!(part_text.contains("\r\nContent-Transfer-Encoding: quoted-printable\r\n"));
    assert!(part_text.contains("\r\nFrom: Alice <alice@example.org>\r\n"));
    assert!(part_text.contains("\r\nSubject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= and plans\r\n"));
    assert!(part_text.contains("\r\nMessage-ID: <m1@example.org>\r\n"));
    assert!(part_text.contains("Gr=C3=BC=C3=9Fe, Bob."), "{part_text}");
    assert!(is_clean(&part), "7-bit, no trailing whitespace");

    let (ok, status) = gpg_verify(&alice, &part, &sig);
    assert!(ok, "{status}");
    assert_good_signature(&status, &alice);
    assert_eq!(micalg, micalg_of(&status), "micalg names the hash used");

    // The decoded text is the original.
    let reparsed = MessageParser::default().parse(&out).unwrap();
    assert_eq!(
        reparsed.body_text(0).unwrap(),
        "Grüße, Bob.\r\nThe plan is secret.\r\n"
    );

    // A changed byte in the part breaks the signature.
    let mut forged = part.clone();
    let at = forged.len() - 3;
    forged[at] ^= 1;
    assert!(!gpg_verify(&alice, &forged, &sig).0);
}

#[test]
fn an_eight_bit_multipart_is_re_encoded_and_verifies() {
    let p = StandardPolicy::new();
    let alice = key("<alice@example.org>");
    let m = "From: alice@example.org\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße \r\n--x\r\nContent-Type: application/octet-stream\r\n\r\n\u{1}\u{2}bin\r\n--x--\r\n";
    let out = sign(m.as_bytes(), &alice, &p, SystemTime::now()).unwrap();
    assert!(out.is_ascii());
    let (part, sig, _) = signed_parts(&out);
    let part_text = String::from_utf8_lossy(&part);
    assert!(part_text.contains("Gr=C3=BC=C3=9Fe=20\r\n"), "{part_text}");
    assert!(
        part_text.contains("Content-Transfer-Encoding: base64\r\n\r\nAQJiaW4=\r\n"),
        "{part_text}"
    );
    assert!(is_clean(&part));
    let (ok, status) = gpg_verify(&alice, &part, &sig);
    assert!(ok, "{status}");

    let bad = "From: alice@example.org\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\npréambule\r\n--x\r\nContent-Type: text/plain\r\n\r\nok\r\n--x--\r\n";
    let err = sign(bad.as_bytes(), &alice, &p, SystemTime::now()).unwrap_err();
    assert!(matches!(err, Error::NotSevenBit));
}

#[test]
fn a_binary_single_part_becomes_base64() {
    let p = StandardPolicy::new();
    let alice = key("<alice@example.org>");
    let mut m = b"From: alice@example.org\r\nSubject: data\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n".to_vec();
    let data: Vec<u8> = (0..=255u8).cycle().take(3000).filter(|&b| b != 0).collect();
    m.extend_from_slice(&data);
    let out = sign(&m, &alice, &p, SystemTime::now()).unwrap();
    assert!(out.is_ascii());
    let (part, sig, _) = signed_parts(&out);
    assert!(String::from_utf8_lossy(&part).contains("\r\nContent-Transfer-Encoding: base64\r\n"));
    assert!(!String::from_utf8_lossy(&part).contains("binary"));
    assert!(gpg_verify(&alice, &part, &sig).0);
    let reparsed = MessageParser::default().parse(&out).unwrap();
    let inner = reparsed.parts.iter().find(|p| p.is_binary()).unwrap();
    assert_eq!(inner.contents(), &data[..]);
}

#[test]
fn trailing_whitespace_in_header_lines_is_not_signed() {
    let p = StandardPolicy::new();
    let alice = key("<alice@example.org>");
    let m = "From: alice@example.org\r\nSubject: trailing \r\n  folded\t\r\nContent-Type: text/plain\r\n\r\nok\r\n";
    let out = sign(m.as_bytes(), &alice, &p, SystemTime::now()).unwrap();
    let (part, sig, _) = signed_parts(&out);
    assert!(is_clean(&part), "{}", String::from_utf8_lossy(&part));
    assert!(String::from_utf8_lossy(&part).contains("\r\nSubject: trailing\r\n  folded\r\n"));
    assert!(gpg_verify(&alice, &part, &sig).0);
}

/// Messages with a repeated Content-Type and Content-Transfer-Encoding, read by the
/// classifier (mail-parser) by the last of each.
pub const REPEATED: [(&str, &str, Option<&str>); 2] = [
    // The last says text, 8-bit: re-encoded as text. The first said multipart.
    (
        "From: alice@example.org\r\nContent-Type: multipart/mixed; boundary=x\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nGrüße\r\n",
        "text/plain; charset=utf-8",
        None,
    ),
    // The last says multipart, 7bit; the first said text, base64.
    (
        "From: alice@example.org\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\nContent-Type: multipart/mixed; boundary=x\r\nContent-Transfer-Encoding: 7bit\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nhello\r\n--x--\r\n",
        "multipart/mixed; boundary=x",
        Some("7bit"),
    ),
];

/// The values of the fields `name` in a header section.
pub fn values(head: &[u8], name: &str) -> Vec<String> {
    let (fields, _) = crate::mime::headers::split(head);
    fields
        .iter()
        .filter(|f| f.is(name))
        .map(|f| f.value())
        .collect()
}

/// A repeated Content-Type or Content-Transfer-Encoding at the top: the signed part is
/// what the classifier read, and carries only that one of each.
#[test]
fn a_repeated_content_field_is_signed_as_it_was_classified() {
    use crate::transform::outbound::{protect, Outcome, Treatment};
    let p = StandardPolicy::new();
    let alice = key("<alice@example.org>");
    let t = Treatment::SignOnly {
        signer: std::sync::Arc::new(alice.clone()),
    };
    for (m, ct, cte) in REPEATED {
        let out = protect(m.as_bytes(), &t, &p, SystemTime::now()).unwrap();
        assert_eq!(
            out.outcome,
            Outcome::Signed {
                by: alice.fingerprint()
            }
        );
        let (part, _, _) = signed_parts(&out.message);
        assert_eq!(
            values(&part, "Content-Type"),
            [format!("{ct}; hp=\"clear\"")]
        );
        let cte = cte.unwrap_or("quoted-printable");
        assert_eq!(values(&part, "Content-Transfer-Encoding"), [cte]);
    }
}
