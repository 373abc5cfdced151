//! Genuine messages: PGP/MIME, the outbound path's own output, inline PGP, compression,
//! several recipients, anonymous recipients; content kept intact.

use mail_parser::{MessageParser, MimeHeaders};

use super::*;
use crate::transform::outbound::encrypt;
use crate::transform::outbound::tests::MESSAGE;

#[test]
fn pgp_mime_encrypted_and_signed_round_trip() {
    let w = World::new();
    let payload = b"Content-Type: text/plain; charset=us-ascii\r\n\r\nThe plan is secret.\r\n";
    let data = w.alice_to_bob(payload);
    let o = w.open_bob(&pgp_mime(OUTER, &data));
    assert_verdict(&o, "valid", "decrypted", "none");
    assert_eq!(pgp(&o), "pass");
    let (ar, vd) = ours(&o.message);
    let (alice, bob) = (w.alice.fingerprint().to_hex(), w.bob.fingerprint().to_hex());
    assert_eq!(ar, format!("{ID}; pgp=pass reason=\"decrypted, good signature from the From address\" header.from=alice@example.org policy.signer={alice} policy.encrypted=yes policy.decryption-key={bob}"));
    assert!(
        vd.contains(&format!(
            "; signer={alice}; signer-address=alice@example.org; key={bob}; reason="
        )),
        "{vd}"
    );
    let text = String::from_utf8(o.message.clone()).unwrap();
    // Our fields, then the trace field, then the rest; the wrapper's MIME fields are gone.
    let after_ours = text.split("\r\nReceived: ").nth(1).unwrap();
    assert!(text.find("X-Sealpost-Verdict").unwrap() < text.find("Received:").unwrap());
    assert!(after_ours.contains("Subject: hello\r\n"));
    assert!(!text.contains("multipart/encrypted"));
    assert!(text.ends_with("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nThe plan is secret.\r\n"), "{text}");
    assert_wellformed(&o.message);
}

#[test]
fn the_outbound_path_output_opens_with_header_protection_applied() {
    let w = World::new();
    let policy = w.keyring.policy();
    let bob = w.bob.clone().strip_secret_key_material();
    let sealed = encrypt::seal(
        MESSAGE.as_bytes(),
        &[&bob],
        Some(&w.alice),
        policy,
        SystemTime::now(),
    )
    .unwrap();
    let o = w.open_bob(&sealed.message);
    assert_verdict(&o, "valid", "decrypted", "applied");
    let text = String::from_utf8(o.message.clone()).unwrap();
    assert!(
        text.contains("Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= and plans\r\n"),
        "{text}"
    );
    assert!(!text.contains("[...]"), "the obscured Subject is replaced");
    assert!(!text.contains("HP-Outer"));
    assert!(
        text.contains("X-Project: codename nightingale\r\n"),
        "inner-only fields come back"
    );
    assert_eq!(text.matches("\r\nFrom: ").count(), 1);
    assert_wellformed(&o.message);
    let parsed = MessageParser::default().parse(&o.message).unwrap();
    assert_eq!(
        parsed.body_text(0).unwrap(),
        "Grüße, Bob.\r\nThe plan is secret.\r\n"
    );
    assert_eq!(parsed.subject(), Some("Grüße and plans"));
}

/// The outer Subject of an encrypted message is the placeholder, which is no more
/// authentic than the Subject inside: that one is shown, signed or not. The rest is kept
/// apart without a valid signature.
#[test]
fn unsigned_protected_headers_show_the_subject_and_keep_the_rest_apart() {
    let w = World::new();
    let bob = w.bob.clone().strip_secret_key_material();
    let sealed = encrypt::seal(
        MESSAGE.as_bytes(),
        &[&bob],
        None,
        w.keyring.policy(),
        SystemTime::now(),
    )
    .unwrap();
    let o = w.open_bob(&sealed.message);
    assert_verdict(&o, "none", "decrypted", "kept-apart");
    assert_eq!(pgp(&o), "none");
    let text = String::from_utf8(o.message.clone()).unwrap();
    assert!(!text.contains("[...]"), "the placeholder goes: {text}");
    assert!(
        text.contains("\r\nSubject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= and plans\r\n"),
        "{text}"
    );
    assert!(!text.contains("X-Sealpost-Protected-Subject"));
    assert!(text.contains("X-Sealpost-Protected-X-Project: codename nightingale\r\n"));
    assert!(!text.contains("\r\nX-Project:"));
}

/// A stranger's signature (not `valid`) over a payload whose outer Subject is the
/// placeholder: the Subject inside is shown, but its From never replaces the outer one.
#[test]
fn a_placeholder_subject_never_lets_an_unverified_from_through() {
    let w = World::new();
    let payload = b"Content-Type: text/plain; hp=\"cipher\"\r\nSubject: Quarterly figures\r\nFrom: Alice <alice@example.org>\r\nReply-To: mallory@evil.example\r\n\r\nHi.\r\n";
    let data = encrypt(
        payload,
        &[&w.bob],
        How {
            signer: Some(&w.mallory),
            armor: true,
            ..How::default()
        },
    );
    let outer = OUTER.replace("Subject: hello", "Subject: [...]");
    let o = w.open_bob(&pgp_mime(&outer, &data));
    assert_verdict(&o, "from-mismatch", "decrypted", "kept-apart");
    let text = String::from_utf8(o.message.clone()).unwrap();
    assert!(
        text.contains("\r\nSubject: Quarterly figures\r\n"),
        "{text}"
    );
    assert!(!text.contains("[...]"));
    assert!(text.contains("\r\nFrom: Alice <alice@example.org>\r\n"));
    assert!(text.contains("X-Sealpost-Protected-Reply-To: mallory@evil.example\r\n"));
    assert!(!text.contains("\r\nReply-To:"));
    assert_wellformed(&o.message);
}

#[test]
fn unmarked_payload_fields_are_kept_apart_even_when_signed() {
    let w = World::new();
    let payload = b"Subject: the real subject\r\nFrom: Mallory <mallory@example.org>\r\nContent-Type: text/plain\r\n\r\nHi.\r\n";
    let o = w.open_bob(&pgp_mime(OUTER, &w.alice_to_bob(payload)));
    // The signature is good, but nobody declared these fields protected: never applied.
    assert_verdict(&o, "valid", "decrypted", "kept-apart");
    let text = String::from_utf8(o.message.clone()).unwrap();
    assert!(text.contains("\r\nSubject: hello\r\n"), "{text}");
    assert!(text.contains("X-Sealpost-Protected-Subject: the real subject\r\n"));
    assert!(text.contains("X-Sealpost-Protected-From: Mallory <mallory@example.org>\r\n"));
    assert!(!text.contains("\r\nFrom: Mallory"));
    assert_wellformed(&o.message);
}

#[test]
fn html_attachments_and_charsets_stay_intact() {
    let w = World::new();
    let html = "<p>Grüße — ünïcödé</p>\r\n";
    let bin: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let b64 = crate::mime::seven_bit::base64_lines(&bin);
    let mut payload = format!("Content-Type: multipart/mixed; boundary=\"mix\"\r\n\r\n--mix\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{html}\r\n--mix\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n").into_bytes();
    payload.extend_from_slice(b"caf\xe9\r\n");
    payload.extend_from_slice(b"\r\n--mix\r\nContent-Type: application/octet-stream; name=\"a.bin\"\r\nContent-Disposition: attachment; filename=\"a.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    payload.extend_from_slice(&b64);
    payload.extend_from_slice(b"\r\n--mix--\r\n");
    let data = w.alice_to_bob(&payload);
    let o = w.open_bob(&pgp_mime(OUTER, &data));
    assert_verdict(&o, "valid", "decrypted", "none");
    assert_wellformed(&o.message);
    let parsed = MessageParser::default().parse(&o.message).unwrap();
    let part = |sub: &str| {
        parsed
            .parts
            .iter()
            .find(|p| p.content_type().and_then(|c| c.subtype()) == Some(sub))
            .unwrap()
    };
    assert_eq!(part("html").text_contents().unwrap(), html);
    assert!(part("plain").text_contents().unwrap().starts_with("café"));
    let att = parsed.attachment(0).unwrap();
    assert_eq!(att.attachment_name(), Some("a.bin"));
    assert_eq!(att.contents(), &bin[..]);
}

#[test]
fn inline_encrypted_becomes_the_text_body() {
    let w = World::new();
    let plain = "Grüße aus Köln.\nZweite Zeile.\n";
    let data = encrypt(
        plain.as_bytes(),
        &[&w.bob],
        How {
            signer: Some(&w.alice),
            armor: true,
            ..How::default()
        },
    );
    let mut m = format!("{OUTER}MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n").into_bytes();
    m.extend_from_slice(&data);
    let o = w.open_bob(&m);
    assert_verdict(&o, "valid", "decrypted", "none");
    assert_wellformed(&o.message);
    let text = String::from_utf8(o.message.clone()).unwrap();
    assert!(text.contains("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"), "{text}");
    assert!(!text.contains("BEGIN PGP"));
    let parsed = MessageParser::default().parse(&o.message).unwrap();
    assert_eq!(
        parsed.body_text(0).unwrap(),
        "Grüße aus Köln.\r\nZweite Zeile.\r\n"
    );
}

#[test]
fn compressed_messages_open() {
    let w = World::new();
    let payload = b"Content-Type: text/plain\r\n\r\ncompressed and signed\r\n";
    let data = encrypt(
        payload,
        &[&w.bob],
        How {
            signer: Some(&w.alice),
            compress: true,
            armor: true,
            ..How::default()
        },
    );
    let o = w.open_bob(&pgp_mime(OUTER, &data));
    assert_verdict(&o, "valid", "decrypted", "none");
    assert!(o.message.ends_with(b"\r\n\r\ncompressed and signed\r\n"));
}

#[test]
fn each_recipient_gets_a_copy_opened_with_its_own_key() {
    let w = World::new();
    let payload = b"Content-Type: text/plain\r\n\r\nfor both\r\n";
    let data = encrypt(
        payload,
        &[&w.bob, &w.carol],
        How {
            armor: true,
            ..How::default()
        },
    );
    let m = pgp_mime(OUTER, &data);
    let out = w.open(&m, &["bob@example.net", "Carol@Example.NET"]);
    assert_eq!(out.len(), 2);
    for (i, (o, cert)) in out.iter().zip([&w.bob, &w.carol]).enumerate() {
        assert_eq!(o.recipients, vec![i]);
        assert_verdict(o, "none", "decrypted", "none");
        assert_eq!(o.verdict.decryption_key, Some(cert.fingerprint()));
        assert!(o.message.ends_with(b"\r\n\r\nfor both\r\n"));
    }
}

#[test]
fn anonymous_recipients_are_tried_with_the_recipients_own_keys_only() {
    let w = World::new();
    let payload = b"Content-Type: text/plain\r\n\r\nhidden recipient\r\n";
    let data = encrypt(
        payload,
        &[&w.bob],
        How {
            anonymous: true,
            armor: true,
            ..How::default()
        },
    );
    let m = pgp_mime(OUTER, &data);
    let out = w.open(&m, &["bob@example.net", "carol@example.net"]);
    assert_verdict(&out[0], "none", "decrypted", "none");
    assert_verdict(&out[1], "none", "no-key", "none");
    assert!(!contains(&out[1].message, b"hidden recipient"));
}

#[test]
fn plain_mail_gets_one_copy_for_everyone() {
    let w = World::new();
    let m = format!("{OUTER}\r\nJust text.\r\n");
    let out = w.open(m.as_bytes(), &["bob@example.net", "carol@example.net"]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].recipients, vec![0, 1]);
    assert_verdict(&out[0], "none", "none", "none");
    assert_eq!(pgp(&out[0]), "none");
    let (ar, _) = ours(&out[0].message);
    assert!(
        ar.contains("policy.encrypted=no") && !ar.contains("policy.signer"),
        "{ar}"
    );
    // The message as received below our fields.
    let (ours_head, rest) = out[0].message.split_at(out[0].message.len() - m.len());
    assert_eq!(rest, m.as_bytes());
    assert!(String::from_utf8_lossy(ours_head).starts_with("Authentication-Results:"));
}

#[test]
fn inline_signed_only_messages_are_verified_not_changed() {
    let w = World::new();
    let mut m = format!("{OUTER}\r\n").into_bytes();
    m.extend_from_slice(&signed_message(b"signed, not encrypted\n", &w.alice));
    let o = w.open_bob(&m);
    assert_verdict(&o, "valid", "none", "none");
    assert_eq!(body(&o.message), body(&m));
}
