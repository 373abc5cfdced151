//! Signatures: exact bytes, cleartext, and each way a signature is not a signed message
//! (security rule 3).

use super::*;
use crate::transform::outbound::sign;

/// The signed part of a text message, as a client makes it.
const PART: &[u8] = b"Content-Type: text/plain; charset=us-ascii\r\n\r\nI approve the payment.\r\n";

#[test]
fn multipart_signed_is_verified_over_the_exact_bytes() {
    let w = World::new();
    let m = multipart_signed(OUTER, PART, &w.alice);
    let o = w.open_bob(&m);
    assert_verdict(&o, "valid", "none", "none");
    assert_eq!(pgp(&o), "pass");
    assert_eq!(body(&o.message), body(&m), "the body is untouched");
    let (ar, _) = ours(&o.message);
    assert!(ar.contains("policy.encrypted=no"), "{ar}");

    // One byte changed in the signed part.
    let text = String::from_utf8(m).unwrap();
    let forged = text.replace("I approve the payment.", "I approve the paymenT.");
    let o = w.open_bob(forged.as_bytes());
    assert_verdict(&o, "invalid", "none", "none");
    assert_eq!(pgp(&o), "fail");
    let (ar, _) = ours(&o.message);
    assert!(
        ar.contains(&format!("policy.signer={}", w.alice.fingerprint().to_hex())),
        "{ar}"
    );
}

#[test]
fn the_outbound_signed_form_applies_its_protected_headers() {
    let w = World::new();
    let m = crate::transform::outbound::tests::MESSAGE.replace(
        "Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= and plans",
        "Subject: inner",
    );
    let signed = sign::sign(
        m.as_bytes(),
        &w.alice,
        w.keyring.policy(),
        SystemTime::now(),
    )
    .unwrap();
    let text = String::from_utf8(signed.clone()).unwrap().replacen(
        "\r\nSubject: inner\r\nDate",
        "\r\nSubject: outer\r\nDate",
        1,
    );
    assert!(text.contains("Subject: outer"));
    let o = w.open_bob(text.as_bytes());
    assert_verdict(&o, "valid", "none", "applied");
    let out = String::from_utf8(o.message.clone()).unwrap();
    let (head, _) = out.split_once("\r\n\r\n").unwrap();
    assert!(
        head.contains("\r\nSubject: inner\r\n") && !head.contains("outer"),
        "{head}"
    );
    assert_eq!(body(&o.message), body(text.as_bytes()));

    // Tampered: kept apart, and the outer Subject stays.
    let tampered = text.replace("The plan is secret.", "The plan is public.");
    let o = w.open_bob(tampered.as_bytes());
    assert_verdict(&o, "invalid", "none", "kept-apart");
    let out = String::from_utf8(o.message.clone()).unwrap();
    assert!(out.contains("\r\nSubject: outer\r\n"));
    assert!(out.contains("\r\nX-Sealpost-Protected-Subject: inner\r\n"));
}

#[test]
fn cleartext_signed_messages_are_verified() {
    let w = World::new();
    let mut m = format!("{OUTER}\r\n").into_bytes();
    m.extend_from_slice(&cleartext(b"Meet at noon.\n", &w.alice));
    let o = w.open_bob(&m);
    assert_verdict(&o, "valid", "none", "none");
    assert_eq!(body(&o.message), body(&m));
    let forged = String::from_utf8(m).unwrap().replace("noon", "nine");
    assert_verdict(&w.open_bob(forged.as_bytes()), "invalid", "none", "none");
}

#[test]
fn a_signed_part_inside_an_unsigned_wrapper_is_partial() {
    let w = World::new();
    let signed = multipart_signed("", PART, &w.alice);
    let mut m = format!("{OUTER}MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"wrap\"\r\n\r\n--wrap\r\nContent-Type: text/plain\r\n\r\nIgnore the rest; wire the money to Mallory.\r\n--wrap\r\n").into_bytes();
    m.extend_from_slice(&signed);
    m.extend_from_slice(b"\r\n--wrap--\r\n");
    let o = w.open_bob(&m);
    assert_verdict(&o, "partial", "none", "none");
    assert_eq!(pgp(&o), "neutral");
    let (ar, _) = ours(&o.message);
    assert!(!ar.contains("policy.signer"), "{ar}");
}

#[test]
fn a_good_signature_from_another_address_is_a_from_mismatch() {
    let w = World::new();
    let m = multipart_signed(OUTER, PART, &w.mallory);
    let o = w.open_bob(&m);
    assert_verdict(&o, "from-mismatch", "none", "none");
    assert_eq!(pgp(&o), "fail");
    let (ar, vd) = ours(&o.message);
    assert!(ar.contains(&format!(
        "policy.signer={}",
        w.mallory.fingerprint().to_hex()
    )));
    assert!(!vd.contains("signer-address"), "{vd}");
    // Display-name tricks do not help.
    let trick = OUTER.replace(
        "From: Alice <alice@example.org>",
        "From: \"alice@example.org\" <mallory@evil.example.com>",
    );
    let o = w.open_bob(&multipart_signed(&trick, PART, &w.alice));
    assert_verdict(&o, "from-mismatch", "none", "none");
}

#[test]
fn not_exactly_one_from_address_is_multiple_from() {
    let w = World::new();
    let two_fields = OUTER.replace("To: ", "From: mallory@evil.example\r\nTo: ");
    let two_addresses = OUTER.replace(
        "From: Alice <alice@example.org>",
        "From: alice@example.org, mallory@evil.example",
    );
    let none = OUTER.replace("From: Alice <alice@example.org>\r\n", "");
    for outer in [two_fields, two_addresses, none] {
        let o = w.open_bob(&multipart_signed(&outer, PART, &w.alice));
        assert_verdict(&o, "multiple-from", "none", "none");
        assert_eq!(pgp(&o), "fail");
        let (ar, _) = ours(&o.message);
        assert!(!ar.contains("header.from"), "{ar}");
    }
}

#[test]
fn an_unknown_signer_is_reported_as_such() {
    let w = World::new();
    let o = w.open_bob(&multipart_signed(OUTER, PART, &w.dave));
    assert_verdict(&o, "unknown-signer", "none", "none");
    assert_eq!(pgp(&o), "neutral");
    let (ar, _) = ours(&o.message);
    assert!(!ar.contains("policy.signer"), "{ar}");
}

#[test]
fn encrypted_then_signed_by_a_stranger_is_decrypted_but_not_valid() {
    let w = World::new();
    let payload = b"Content-Type: text/plain\r\n\r\nfrom someone\r\n";
    let data = encrypt(
        payload,
        &[&w.bob],
        How {
            signer: Some(&w.mallory),
            armor: true,
            ..How::default()
        },
    );
    let o = w.open_bob(&pgp_mime(OUTER, &data));
    assert_verdict(&o, "from-mismatch", "decrypted", "none");
    assert_eq!(pgp(&o), "fail");
}

#[test]
fn a_decrypted_multipart_signed_payload_is_verified() {
    let w = World::new();
    let inner = multipart_signed("", PART, &w.alice);
    let data = encrypt(
        &inner,
        &[&w.bob],
        How {
            armor: true,
            ..How::default()
        },
    );
    let o = w.open_bob(&pgp_mime(OUTER, &data));
    assert_verdict(&o, "valid", "decrypted", "none");
    assert!(o.message.ends_with(&inner[inner.len() - 40..]));
}

#[test]
fn a_sender_or_a_display_name_showing_someone_else_is_not_verified() {
    let w = World::new();
    let cases = [
        (
            OUTER.replace(
                "Subject: hello",
                "Sender: Boss <boss@example.org>\r\nSubject: hello",
            ),
            "sender-mismatch",
        ),
        (
            OUTER.replace(
                "From: Alice <alice@example.org>",
                "From: \"boss@example.org\" <alice@example.org>",
            ),
            "display-name-mismatch",
        ),
    ];
    for (outer, word) in cases {
        let m = multipart_signed(&outer, PART, &w.alice);
        let o = w.open_bob(&m);
        assert_verdict(&o, word, "none", "none");
        assert_eq!(pgp(&o), "fail");
        let (ar, vd) = ours(&o.message);
        assert!(!vd.contains("signer-address="), "{vd}");
        assert!(
            ar.contains("reason=\"") && !ar.contains("good signature"),
            "{ar}"
        );
    }
    // The same signature with a Sender that is the From address is valid.
    let outer = OUTER.replace(
        "Subject: hello",
        "Sender: alice@example.org\r\nSubject: hello",
    );
    let o = w.open_bob(&multipart_signed(&outer, PART, &w.alice));
    assert_verdict(&o, "valid", "none", "none");
}
