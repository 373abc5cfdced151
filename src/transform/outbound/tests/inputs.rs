//! Real-world shapes of input through `protect`: HTML, alternatives, attachments,
//! encoded words, 20 MB, already protected and malformed messages.

use std::sync::Arc;
use std::time::SystemTime;

use mail_parser::{MessageParser, MimeHeaders};
use openpgp::policy::StandardPolicy;
use openpgp::Cert;
use sealpost_keyring::openpgp;

use super::*;
use crate::transform::outbound::{protect, Outcome, Protection, Treatment};

const HTML: &str = "From: =?UTF-8?B?QWxpY2Ugw4FsdmFyZXo=?= <alice@example.org>\r\nTo: bob@example.net\r\nSubject: =?UTF-8?B?UHLDvGZ1bmcg4pyT?=\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<html><body><p>Pr=C3=BCfung <b>bestanden</b></p>\r\n<p>Zeile mit Leerzeichen am Ende=20</p></body></html>\r\n";

const ALTERNATIVE: &str = "From: alice@example.org\r\nTo: bob@example.net, carol@example.com\r\nCc: dave@example.com\r\nSubject: =?ISO-8859-1?Q?caf=E9?=\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"alt-1\"\r\n\r\n--alt-1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nCafé ☕ tonight?\r\n--alt-1\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n<p>Café ☕ <i>tonight</i>?</p>\r\n--alt-1--\r\n";

/// multipart/mixed: text, a base64 PDF-like attachment with an RFC 2231 file name, and
/// an 8-bit binary part.
fn attachments() -> Vec<u8> {
    let mut m = b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: the report\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"mix\"\r\n\r\nThis is a multi-part message in MIME format.\r\n--mix\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nSee attached.\r\n--mix\r\nContent-Type: application/pdf; name=\"report.pdf\"\r\nContent-Disposition: attachment; filename*=UTF-8''Bericht%C3%BC.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
    m.extend(base64_lines(&pseudo_random(5000)));
    m.extend_from_slice(b"\r\n--mix\r\nContent-Type: application/octet-stream; name=\"raw.bin\"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n");
    m.extend(pseudo_random(700).into_iter().map(|b| {
        if b == b'\r' || b == b'\n' || b == 0 {
            b'x'
        } else {
            b
        }
    }));
    m.extend_from_slice(b"\r\n--mix--\r\n");
    m
}

fn pseudo_random(n: usize) -> Vec<u8> {
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

fn base64_lines(data: &[u8]) -> Vec<u8> {
    crate::mime::seven_bit::base64_lines(data)
}

fn fixtures() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("text", MESSAGE.as_bytes().to_vec()),
        ("html", HTML.as_bytes().to_vec()),
        ("alternative", ALTERNATIVE.as_bytes().to_vec()),
        ("attachments", attachments()),
    ]
}

/// Decoded content of a message: texts, HTML and attachments, for comparison.
fn decoded(m: &[u8]) -> Vec<Vec<u8>> {
    let parsed = MessageParser::default().parse(m).unwrap();
    parsed
        .parts
        .iter()
        .filter(|p| !matches!(p.body, mail_parser::PartType::Multipart(_)))
        .filter(|p| {
            p.content_type()
                .is_none_or(|ct| ct.attribute("protocol").is_none())
        })
        .map(|p| p.contents().to_vec())
        .collect()
}

fn encrypt_treatment(to: &Cert, signer: &Cert) -> Treatment {
    Treatment::Encrypt {
        recipients: vec![Arc::new(to.clone())],
        signer: Some(Arc::new(signer.clone())),
        protect_subject: true,
    }
}

#[test]
fn every_shape_decrypts_in_gpg_and_sq_to_the_original_body() {
    let p = StandardPolicy::new();
    let alice = key("Alice <alice@example.org>");
    let bob = key("<bob@example.net>");
    for (name, m) in fixtures() {
        let out = protect(&m, &encrypt_treatment(&bob, &alice), &p, SystemTime::now()).unwrap();
        assert_eq!(
            out.outcome,
            Outcome::Encrypted {
                signed_by: Some(alice.fingerprint())
            },
            "{name}"
        );
        assert!(out.message.is_ascii(), "{name}: outer 7-bit");
        let armored = armored_part(&out.message);
        let (payload, status) = Gpg::decrypt(&bob, Some(&alice), &armored);
        assert_good_signature(&status, &alice);
        let (head, body) = payload_split(&payload);
        let (orig_head, orig_body) = crate::mime::headers::split_bytes(&m);
        assert_eq!(
            body, orig_body,
            "{name}: the body is the original, byte for byte"
        );
        assert!(head.contains("hp=\"cipher\""), "{name}: {head}");
        for line in String::from_utf8_lossy(orig_head).split("\r\n") {
            let protected = ["From:", "To:", "Cc:", "Subject:"]
                .iter()
                .any(|p| line.starts_with(p));
            if protected {
                assert!(
                    head.contains(&format!("{line}\r\n")),
                    "{name}: {line} inside"
                );
            }
        }
        let outer = String::from_utf8_lossy(&out.message);
        assert!(outer.contains("\r\nSubject: [...]\r\n"), "{name}");
        assert_eq!(
            decoded(&payload),
            decoded(&m),
            "{name}: same decoded content"
        );
        assert_eq!(sq_decrypt(&bob, &alice, &armored), payload, "{name}");
    }
}

#[test]
fn every_shape_signs_and_gpg_verifies() {
    let p = StandardPolicy::new();
    let alice = key("Alice <alice@example.org>");
    for (name, m) in fixtures() {
        let treatment = Treatment::SignOnly {
            signer: Arc::new(alice.clone()),
        };
        let out = protect(&m, &treatment, &p, SystemTime::now()).unwrap();
        assert_eq!(
            out.outcome,
            Outcome::Signed {
                by: alice.fingerprint()
            }
        );
        assert!(out.message.is_ascii(), "{name}: 7-bit");
        let (part, sig, _) = signed_parts(&out.message);
        let (ok, status) = gpg_verify(&alice, &part, &sig);
        assert!(ok, "{name}: {status}");
        assert!(String::from_utf8_lossy(&part).contains("hp=\"clear\""));
        let mut original = decoded(&m);
        let mut signed = decoded(&out.message);
        // The signature part is extra; texts may lose the line break before a delimiter.
        signed.retain(|c| !c.starts_with(b"-----BEGIN PGP SIGNATURE"));
        for c in original.iter_mut().chain(signed.iter_mut()) {
            while c.ends_with(b"\n") || c.ends_with(b"\r") {
                c.pop();
            }
        }
        assert_eq!(signed, original, "{name}: same decoded content");
    }
}

#[test]
fn twenty_megabytes_encrypt_and_sign() {
    let p = StandardPolicy::new();
    let alice = key("<alice@example.org>");
    let bob = key("<bob@example.net>");
    let data = pseudo_random(20 * 1024 * 1024);
    let mut m = b"From: alice@example.org\r\nTo: bob@example.net\r\nSubject: big\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nbig file\r\n--b\r\nContent-Type: application/octet-stream; name=big.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
    m.extend(base64_lines(&data));
    m.extend_from_slice(b"\r\n--b--\r\n");
    let now = SystemTime::now();

    let out = protect(&m, &encrypt_treatment(&bob, &alice), &p, now).unwrap();
    assert!(out.message.len() < m.len() * 3 / 2, "armor overhead only");
    let (payload, status) = Gpg::decrypt(&bob, Some(&alice), &armored_part(&out.message));
    assert_good_signature(&status, &alice);
    let (_, body) = payload_split(&payload);
    assert!(
        body == crate::mime::headers::split_bytes(&m).1,
        "the 20 MB body arrives intact"
    );

    let signed = protect(
        &m,
        &Treatment::SignOnly {
            signer: Arc::new(alice.clone()),
        },
        &p,
        now,
    )
    .unwrap();
    let (part, sig, _) = signed_parts(&signed.message);
    let (ok, status) = gpg_verify(&alice, &part, &sig);
    assert!(ok, "{status}");
}

#[test]
fn protected_inputs_pass_through_byte_exact() {
    let p = StandardPolicy::new();
    let alice = key("<alice@example.org>");
    let bob = key("<bob@example.net>");
    let encrypted = protect(
        MESSAGE.as_bytes(),
        &encrypt_treatment(&bob, &alice),
        &p,
        SystemTime::now(),
    )
    .unwrap()
    .message;
    let signed =
        crate::transform::outbound::sign::sign(MESSAGE.as_bytes(), &alice, &p, SystemTime::now())
            .unwrap();
    // Real ciphertext passes through whatever the treatment.
    for t in [
        encrypt_treatment(&bob, &alice),
        Treatment::SignOnly {
            signer: Arc::new(alice.clone()),
        },
    ] {
        let out = protect(&encrypted, &t, &p, SystemTime::now()).unwrap();
        assert_eq!(
            out.outcome,
            Outcome::AlreadyProtected(Protection::Encrypted)
        );
        assert!(out.message == encrypted, "byte-exact");
    }
    // Labels are not encryption: a signed-only copy leaves them as they are, an
    // encrypted copy encrypts them like any other message.
    let labelled: Vec<(Vec<u8>, Protection)> = vec![
        (signed, Protection::Signed),
        (b"From: a@example.org\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHA6CAMIACAQAxggFOMIIBSgIBADAyMCYx\r\n".to_vec(), Protection::Pkcs7),
        (b"From: a@example.org\r\nSubject: x\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nhF4DAAAAAAAAAAASAQdA\r\n=abcd\r\n-----END PGP MESSAGE-----\r\n".to_vec(), Protection::InlinePgp),
        (b"From: a@example.org\r\n\r\n-----BEGIN PGP SIGNED MESSAGE-----\r\nHash: SHA256\r\n\r\nhello\r\n-----BEGIN PGP SIGNATURE-----\r\n\r\niHUEARYIAB0WIQ\r\n-----END PGP SIGNATURE-----\r\n".to_vec(), Protection::InlinePgp),
        (b"From: a@example.org\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\r\n\r\n--b\r\n\r\nVersion: 1\r\n--b--\r\n".to_vec(), Protection::Encrypted),
    ];
    for (m, kind) in labelled {
        let t = Treatment::SignOnly {
            signer: Arc::new(alice.clone()),
        };
        let out = protect(&m, &t, &p, SystemTime::now()).unwrap();
        assert_eq!(out.outcome, Outcome::AlreadyProtected(kind));
        assert!(out.message == m, "byte-exact");
        let out = protect(&m, &encrypt_treatment(&bob, &alice), &p, SystemTime::now()).unwrap();
        assert!(
            matches!(out.outcome, Outcome::Encrypted { .. }),
            "{kind:?}: {:?}",
            out.outcome
        );
        assert!(crate::transform::outbound::classify::is_openpgp_ciphertext(
            &out.message[out
                .message
                .windows(27)
                .position(|w| w == b"-----BEGIN PGP MESSAGE-----")
                .unwrap()..]
        ));
    }
    let plain = protect(MESSAGE.as_bytes(), &Treatment::Plain, &p, SystemTime::now()).unwrap();
    assert_eq!(
        (plain.message.as_slice(), plain.outcome),
        (MESSAGE.as_bytes(), Outcome::Plain)
    );
}

#[test]
fn malformed_input_is_refused_with_5xx_never_encrypted() {
    let p = StandardPolicy::new();
    let alice = key("<alice@example.org>");
    let bob = key("<bob@example.net>");
    let mut deep = String::from(
        "From: alice@example.org\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n",
    );
    for i in 0..200 {
        deep.push_str(&format!(
            "--b{i}\r\nContent-Type: multipart/mixed; boundary=b{}\r\n\r\n",
            i + 1
        ));
    }
    let cases: Vec<Vec<u8>> = vec![
        MESSAGE
            .replace("From: Alice <alice@example.org>\r\n", "")
            .into_bytes(),
        MESSAGE
            .replace("To: Bob", "From: mallory@example.com\r\nTo: Bob")
            .into_bytes(),
        MESSAGE
            .replace(
                "From: Alice <alice@example.org>",
                "From: alice@example.org, mallory@example.com",
            )
            .into_bytes(),
        MESSAGE
            .replace(
                "X-Project: codename nightingale",
                &format!("X-Long: {}", "a".repeat(100 * 1024)),
            )
            .into_bytes(),
        deep.into_bytes(),
    ];
    for m in cases {
        for t in [
            encrypt_treatment(&bob, &alice),
            Treatment::SignOnly {
                signer: Arc::new(alice.clone()),
            },
        ] {
            let err = protect(&m, &t, &p, SystemTime::now()).unwrap_err();
            // The message's own fault: refused for good by the pipeline.
            assert!(err.is_input(), "{err}");
        }
    }
}

#[test]
fn mangled_messages_never_panic() {
    let p = StandardPolicy::new();
    let alice = key("<alice@example.org>");
    let bob = key("<bob@example.net>");
    let treatments = [
        encrypt_treatment(&bob, &alice),
        Treatment::SignOnly {
            signer: Arc::new(alice.clone()),
        },
    ];
    const NOISE: &[u8] = b":;=\"\r\n- \t\x80\xff<>@bB";
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    for (_, original) in fixtures() {
        for _ in 0..40 {
            let mut m = original.clone();
            for _ in 0..1 + next(8) {
                let at = next(m.len());
                match next(3) {
                    0 => m[at] = NOISE[next(NOISE.len())],
                    1 => m.insert(at, NOISE[next(NOISE.len())]),
                    _ => m.truncate(at.max(1)),
                }
            }
            for t in &treatments {
                match protect(&m, t, &p, SystemTime::now()) {
                    Ok(out) => assert!(!out.message.is_empty()),
                    // Any error at all, never a panic.
                    Err(e) => assert!(!e.to_string().is_empty()),
                }
            }
        }
    }
}
