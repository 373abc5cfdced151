//! The outbound transform against real OpenPGP peers: gpg 2.2 and sq 0.27 must decrypt
//! and verify what it produces.

use std::process::{Command, Stdio};
use std::time::SystemTime;

use openpgp::cert::CertBuilder;
use openpgp::policy::StandardPolicy;
use openpgp::serialize::SerializeInto;
use openpgp::Cert;
use sealpost_keyring::openpgp;

use super::encrypt::{encrypt, OBSCURED_SUBJECT};

/// A v4 key as gpg 2.2 makes them: it advertises SEIPDv1 (MDC) only.
fn key(uid: &str) -> Cert {
    CertBuilder::general_purpose(Some(uid))
        .set_features(openpgp::types::Features::empty().set_seipdv1())
        .unwrap()
        .generate()
        .unwrap()
        .0
}

fn v6_key(uid: &str) -> Cert {
    CertBuilder::general_purpose(Some(uid))
        .set_profile(openpgp::Profile::RFC9580)
        .unwrap()
        .generate()
        .unwrap()
        .0
}

const MESSAGE: &str = "Received: from client ([127.0.0.1])\r\n\tby gw (sealpost) with ESMTP id X; Sat, 28 Nov 2026 20:00:00 +0000\r\nFrom: Alice <alice@example.org>\r\nX-Project: codename nightingale\r\nTo: Bob <bob@example.net>\r\nSubject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= and plans\r\nDate: Sat, 28 Nov 2026 20:00:00 +0000\r\nMessage-ID: <m1@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße, Bob.\r\nThe plan is secret.\r\n";

/// The armored OpenPGP message inside a multipart/encrypted body, checked structurally.
fn armored_part(out: &[u8]) -> Vec<u8> {
    use mail_parser::{MessageParser, MimeHeaders};
    let m = MessageParser::default().parse(out).expect("parses");
    let ct = m.content_type().expect("content type");
    assert_eq!(ct.ctype(), "multipart");
    assert_eq!(ct.subtype(), Some("encrypted"));
    assert_eq!(ct.attribute("protocol"), Some("application/pgp-encrypted"));
    let parts: Vec<_> = m.parts.iter().skip(1).collect();
    assert_eq!(parts.len(), 2, "exactly two parts");
    assert_eq!(
        parts[0].content_type().unwrap().subtype(),
        Some("pgp-encrypted")
    );
    assert!(String::from_utf8_lossy(parts[0].contents()).contains("Version: 1"));
    assert_eq!(
        parts[1].content_type().unwrap().subtype(),
        Some("octet-stream")
    );
    parts[1].contents().to_vec()
}

struct Gpg(tempfile::TempDir);

impl Gpg {
    fn new() -> Gpg {
        Gpg(tempfile::tempdir().unwrap())
    }
    fn run(&self, args: &[&str], input: &[u8]) -> std::process::Output {
        use std::io::Write;
        let mut child = Command::new("gpg")
            .env("GNUPGHOME", self.0.path())
            .args([
                "--batch",
                "--no-tty",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                "--trust-model",
                "always",
            ])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gpg");
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }
    fn import(&self, data: &[u8]) {
        let out = self.run(&["--import"], data);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn gpg_and_sq_decrypt_and_verify_with_header_protection() {
    let p = StandardPolicy::new();
    let alice = key("Alice <alice@example.org>");
    let bob = key("Bob <bob@example.net>");
    let out = encrypt(
        MESSAGE.as_bytes(),
        &[&bob],
        Some(&alice),
        &p,
        SystemTime::now(),
    )
    .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(out.is_ascii(), "the outer message is 7-bit");
    assert!(text.contains(&format!("Subject: {OBSCURED_SUBJECT}\r\n")));
    assert!(!text.contains("plans"), "the subject is not outside");
    assert!(
        !text.contains("nightingale"),
        "other fields travel inside only"
    );
    assert!(text.starts_with("Received: from client"));
    assert!(text.contains("From: Alice <alice@example.org>\r\n"));
    assert!(text.contains("Message-ID: <m1@example.org>\r\n"));
    let armored = armored_part(&out);
    assert_eq!(
        text.matches("\r\nAutocrypt: addr=alice@example.org; keydata=")
            .count(),
        1
    );

    // sq reads the Autocrypt header back as Alice's certificate.
    let dir0 = tempfile::tempdir().unwrap();
    let eml = dir0.path().join("m.eml");
    std::fs::write(&eml, &out).unwrap();
    let ac = Command::new("sq")
        .args(["autocrypt", "decode"])
        .arg(&eml)
        .output()
        .unwrap();
    assert!(
        ac.status.success(),
        "{}",
        String::from_utf8_lossy(&ac.stderr)
    );
    let gpg0 = Gpg::new();
    gpg0.import(&ac.stdout);
    let listed = gpg0.run(&["--with-colons", "--list-keys"], b"");
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&alice.fingerprint().to_hex()));

    let gpg = Gpg::new();
    gpg.import(&bob.as_tsk().to_vec().unwrap());
    gpg.import(&alice.to_vec().unwrap());
    let dec = gpg.run(&["--status-fd", "2", "--decrypt"], &armored);
    let status = String::from_utf8_lossy(&dec.stderr);
    assert!(dec.status.success(), "{status}");
    assert!(status.contains("[GNUPG:] DECRYPTION_OKAY"), "{status}");
    assert!(status.contains("[GNUPG:] GOODSIG"), "{status}");
    assert!(status.contains(&alice.fingerprint().to_hex()), "{status}");
    let payload = String::from_utf8(dec.stdout).unwrap();
    assert!(
        payload.starts_with("Content-Type: text/plain; charset=utf-8; hp=\"cipher\"\r\n"),
        "{payload}"
    );
    assert!(payload.contains("Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= and plans\r\n"));
    assert!(payload.contains("HP-Outer: Subject: [...]\r\n"));
    assert!(payload.contains("X-Project: codename nightingale\r\n"));
    assert!(payload.contains("HP-Outer: From: Alice <alice@example.org>\r\n"));
    assert!(
        payload.ends_with("\r\n\r\nGrüße, Bob.\r\nThe plan is secret.\r\n"),
        "the body is the original"
    );

    let dir = tempfile::tempdir().unwrap();
    let write = |n: &str, d: &[u8]| {
        let f = dir.path().join(n);
        std::fs::write(&f, d).unwrap();
        f.display().to_string()
    };
    let key_file = write("bob.key", &bob.as_tsk().to_vec().unwrap());
    let signer_file = write("alice.cert", &alice.to_vec().unwrap());
    let msg_file = write("msg.asc", &armored);
    let sq = Command::new("sq")
        .args([
            "decrypt",
            "--recipient-key",
            &key_file,
            "--signer-cert",
            &signer_file,
            &msg_file,
        ])
        .output()
        .unwrap();
    assert!(
        sq.status.success(),
        "{}",
        String::from_utf8_lossy(&sq.stderr)
    );
    assert_eq!(String::from_utf8(sq.stdout).unwrap(), payload);
}

#[test]
fn a_v6_and_a_v4_recipient_both_read_it_gpg_gets_seipdv1() {
    let p = StandardPolicy::new();
    let v4 = key("<old@example.net>");
    let v6 = v6_key("<new@example.net>");
    let out = encrypt(MESSAGE.as_bytes(), &[&v4, &v6], None, &p, SystemTime::now()).unwrap();
    let armored = armored_part(&out);
    let gpg = Gpg::new();
    gpg.import(&v4.as_tsk().to_vec().unwrap());
    let dec = gpg.run(&["--decrypt"], &armored);
    assert!(
        dec.status.success(),
        "{}",
        String::from_utf8_lossy(&dec.stderr)
    );
    let packets = gpg.run(&["--list-packets"], &armored);
    let listing = String::from_utf8_lossy(&packets.stdout);
    assert!(
        listing.contains("encrypted data packet") || listing.contains(":encrypted data packet:"),
        "{listing}"
    );
    assert!(
        !listing.contains("aead"),
        "SEIPDv1 for a recipient set with a v4 key: {listing}"
    );

    // The v6 recipient decrypts too (with sequoia itself; gpg 2.2 cannot hold v6 keys).
    use openpgp::parse::stream::{
        DecryptionHelper, DecryptorBuilder, MessageStructure, VerificationHelper,
    };
    use openpgp::parse::Parse;
    struct H(Cert);
    impl VerificationHelper for H {
        fn get_certs(&mut self, _: &[openpgp::KeyHandle]) -> openpgp::Result<Vec<Cert>> {
            Ok(vec![])
        }
        fn check(&mut self, _: MessageStructure) -> openpgp::Result<()> {
            Ok(())
        }
    }
    impl DecryptionHelper for H {
        fn decrypt(
            &mut self,
            pkesks: &[openpgp::packet::PKESK],
            _: &[openpgp::packet::SKESK],
            sym: Option<openpgp::types::SymmetricAlgorithm>,
            decrypt: &mut dyn FnMut(
                Option<openpgp::types::SymmetricAlgorithm>,
                &openpgp::crypto::SessionKey,
            ) -> bool,
        ) -> openpgp::Result<Option<Cert>> {
            let p = StandardPolicy::new();
            for ka in self
                .0
                .keys()
                .with_policy(&p, None)
                .for_transport_encryption()
                .secret()
            {
                let mut pair = ka.key().clone().into_keypair()?;
                for pkesk in pkesks {
                    if let Some((algo, sk)) = pkesk.decrypt(&mut pair, sym) {
                        if decrypt(algo, &sk) {
                            return Ok(Some(self.0.clone()));
                        }
                    }
                }
            }
            Ok(None)
        }
    }
    let mut d = DecryptorBuilder::from_bytes(&armored[..])
        .unwrap()
        .with_policy(&p, None, H(v6.clone()))
        .unwrap();
    let mut plain = Vec::new();
    std::io::copy(&mut d, &mut plain).unwrap();
    assert!(String::from_utf8_lossy(&plain).contains("The plan is secret."));
}

#[test]
fn a_recipient_without_an_encryption_key_is_an_error_not_a_plaintext() {
    let p = StandardPolicy::new();
    let (signer_only, _) = CertBuilder::new()
        .add_userid("<s@example.net>")
        .add_signing_subkey()
        .generate()
        .unwrap();
    let err = encrypt(
        MESSAGE.as_bytes(),
        &[&signer_only],
        None,
        &p,
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("no key usable for encryption"));
    assert_eq!(err.reply().code, 451);
}

/// The signed part and the signature of a multipart/signed message, as bytes.
fn signed_parts(out: &[u8]) -> (Vec<u8>, Vec<u8>, String) {
    let text = String::from_utf8(out.to_vec()).unwrap();
    let b = text
        .split("boundary=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let micalg = text
        .split("micalg=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let first = text.find(&format!("\r\n--{b}\r\n")).unwrap() + b.len() + 6;
    let second = text[first..].find(&format!("\r\n--{b}\r\n")).unwrap() + first;
    let part = text[first..second].to_string();
    let sig_start = text.find("-----BEGIN PGP SIGNATURE-----").unwrap();
    let sig_end = text.find("-----END PGP SIGNATURE-----").unwrap() + 27;
    (
        part.into_bytes(),
        text.as_bytes()[sig_start..sig_end].to_vec(),
        micalg,
    )
}

#[test]
fn gpg_verifies_signed_only_over_the_exact_part() {
    let p = StandardPolicy::new();
    let alice = key("Alice <alice@example.org>");
    let out = super::sign::sign(MESSAGE.as_bytes(), &alice, &p, SystemTime::now()).unwrap();
    assert!(out.is_ascii(), "the whole message is 7-bit");
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("Content-Type: multipart/signed; micalg=pgp-sha"),
        "{text}"
    );
    assert!(
        text.contains("Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= and plans\r\n"),
        "subject stays outside"
    );
    let (part, sig, micalg) = signed_parts(&out);
    let part_text = String::from_utf8_lossy(&part);
    assert!(
        part_text.starts_with("Content-Type: text/plain; charset=utf-8; hp=\"clear\"\r\n"),
        "{part_text}"
    );
    assert!(part_text.contains("Content-Transfer-Encoding: quoted-printable\r\n"));
    assert!(part_text.contains("Gr=C3=BC=C3=9Fe, Bob."), "{part_text}");

    let gpg = Gpg::new();
    gpg.import(&alice.to_vec().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let part_file = dir.path().join("part");
    let sig_file = dir.path().join("part.asc");
    std::fs::write(&part_file, &part).unwrap();
    std::fs::write(&sig_file, &sig).unwrap();
    let v = gpg.run(
        &[
            "--status-fd",
            "2",
            "--verify",
            sig_file.to_str().unwrap(),
            part_file.to_str().unwrap(),
        ],
        b"",
    );
    let status = String::from_utf8_lossy(&v.stderr);
    assert!(v.status.success() && status.contains("GOODSIG"), "{status}");
    // micalg names the hash the signature used.
    let hash = status
        .lines()
        .find(|l| l.contains("VALIDSIG"))
        .and_then(|l| l.split_whitespace().nth(9))
        .unwrap();
    let expected = match hash {
        "8" => "pgp-sha256",
        "9" => "pgp-sha384",
        "10" => "pgp-sha512",
        other => panic!("unexpected hash {other}"),
    };
    assert_eq!(micalg, expected);

    // A changed byte in the part breaks the signature.
    let mut forged = part.clone();
    let at = forged.len() - 3;
    forged[at] ^= 1;
    std::fs::write(&part_file, &forged).unwrap();
    let v = gpg.run(
        &[
            "--verify",
            sig_file.to_str().unwrap(),
            part_file.to_str().unwrap(),
        ],
        b"",
    );
    assert!(!v.status.success());
}

#[test]
fn an_eight_bit_multipart_is_re_encoded_and_verifies() {
    let p = StandardPolicy::new();
    let alice = key("<alice@example.org>");
    let m = "From: alice@example.org\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße\r\n--x--\r\n";
    let out = super::sign::sign(m.as_bytes(), &alice, &p, SystemTime::now()).unwrap();
    assert!(out.is_ascii());
    let (part, sig, _) = signed_parts(&out);
    assert!(String::from_utf8_lossy(&part).contains("Gr=C3=BC=C3=9Fe"));
    let gpg = Gpg::new();
    gpg.import(&alice.to_vec().unwrap());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p"), &part).unwrap();
    std::fs::write(dir.path().join("p.asc"), &sig).unwrap();
    let v = gpg.run(
        &[
            "--verify",
            dir.path().join("p.asc").to_str().unwrap(),
            dir.path().join("p").to_str().unwrap(),
        ],
        b"",
    );
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    let bad = "From: alice@example.org\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\npréambule\r\n--x\r\nContent-Type: text/plain\r\n\r\nok\r\n--x--\r\n";
    let err = super::sign::sign(bad.as_bytes(), &alice, &p, SystemTime::now()).unwrap_err();
    assert!(matches!(err, super::Error::NotSevenBit));
}
