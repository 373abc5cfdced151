//! PGP/MIME sign+encrypt read by gpg 2.2, sq 0.27 and sequoia itself.

use std::process::Command;
use std::time::SystemTime;

use openpgp::cert::CertBuilder;
use openpgp::crypto::SessionKey;
use openpgp::packet::{PKESK, SKESK};
use openpgp::parse::stream::{
    DecryptionHelper, DecryptorBuilder, MessageStructure, VerificationHelper,
};
use openpgp::parse::{PacketParser, PacketParserResult, Parse};
use openpgp::policy::StandardPolicy;
use openpgp::serialize::SerializeInto;
use openpgp::types::SymmetricAlgorithm;
use openpgp::{Cert, KeyHandle, Packet};
use sealpost_keyring::openpgp;

use super::*;
use crate::transform::outbound::encrypt::{encrypt, seal, OBSCURED_SUBJECT};

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
    assert!(text.contains(&format!("\r\nSubject: {OBSCURED_SUBJECT}\r\n")));
    assert!(!text.contains("plans"), "the subject is not outside");
    assert!(
        !text.contains("nightingale"),
        "other fields travel inside only"
    );
    assert!(text.starts_with("Received: from client"));
    assert!(text.contains("\r\nFrom: Alice <alice@example.org>\r\n"));
    assert!(text.contains("\r\nTo: Bob <bob@example.net>\r\n"));
    assert!(text.contains("\r\nDate: Sat, 28 Nov 2026 20:00:00 +0000\r\n"));
    assert!(text.contains("\r\nMessage-ID: <m1@example.org>\r\n"));
    assert!(text.contains("\r\nMIME-Version: 1.0\r\n"));
    assert!(!text.contains("HP-Outer"), "HP-Outer is inside only");
    assert_eq!(
        text.matches("\r\nAutocrypt: addr=alice@example.org; keydata=")
            .count(),
        1
    );
    let armored = armored_part(&out);

    // sq reads the Autocrypt header back as Alice's certificate.
    let dir = Dir::new();
    let eml = dir.write("m.eml", &out);
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
    let announced = Cert::from_bytes(&ac.stdout).unwrap();
    assert_eq!(announced.fingerprint(), alice.fingerprint());

    let (payload, status) = Gpg::decrypt(&bob, Some(&alice), &armored);
    assert_good_signature(&status, &alice);
    let (head, body) = payload_split(&payload);
    assert!(
        head.starts_with("Content-Type: text/plain; charset=utf-8; hp=\"cipher\"\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nContent-Transfer-Encoding: 8bit\r\n"));
    assert!(head.contains("\r\nSubject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= and plans\r\n"));
    assert!(head.contains("\r\nFrom: Alice <alice@example.org>\r\n"));
    assert!(head.contains("\r\nTo: Bob <bob@example.net>\r\n"));
    assert!(head.contains("\r\nMessage-ID: <m1@example.org>\r\n"));
    assert!(head.contains("\r\nX-Project: codename nightingale\r\n"));
    assert!(head.contains("\r\nHP-Outer: Subject: [...]\r\n"));
    assert!(head.contains("\r\nHP-Outer: From: Alice <alice@example.org>\r\n"));
    assert!(!head.contains("Received"), "trace fields stay outside");
    assert_eq!(body, "Grüße, Bob.\r\nThe plan is secret.\r\n".as_bytes());

    assert_eq!(sq_decrypt(&bob, &alice, &armored), payload);
}

/// A sequoia decryption helper holding one TSK; records the SEIPD version it saw.
struct Helper(Cert);

impl VerificationHelper for Helper {
    fn get_certs(&mut self, _: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(vec![])
    }
    fn check(&mut self, _: MessageStructure) -> openpgp::Result<()> {
        Ok(())
    }
}

impl DecryptionHelper for Helper {
    fn decrypt(
        &mut self,
        pkesks: &[PKESK],
        _: &[SKESK],
        sym: Option<SymmetricAlgorithm>,
        decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
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

fn sequoia_decrypt(tsk: &Cert, armored: &[u8]) -> Vec<u8> {
    let p = StandardPolicy::new();
    let mut d = DecryptorBuilder::from_bytes(armored)
        .unwrap()
        .with_policy(&p, None, Helper(tsk.clone()))
        .unwrap();
    let mut plain = Vec::new();
    std::io::copy(&mut d, &mut plain).unwrap();
    plain
}

/// The version of the SEIPD packet of an armored message.
fn seipd_version(armored: &[u8]) -> u8 {
    let mut ppr = PacketParser::from_bytes(armored).unwrap();
    while let PacketParserResult::Some(pp) = ppr {
        if let Packet::SEIP(s) = &pp.packet {
            return s.version();
        }
        ppr = pp.next().unwrap().1;
    }
    panic!("no SEIPD packet");
}

#[test]
fn a_v6_and_a_v4_recipient_both_read_it_gpg_gets_seipdv1() {
    let p = StandardPolicy::new();
    let v4 = key("<old@example.net>");
    let v6 = v6_key("<new@example.net>");
    let out = encrypt(MESSAGE.as_bytes(), &[&v4, &v6], None, &p, SystemTime::now()).unwrap();
    let armored = armored_part(&out);
    assert_eq!(
        seipd_version(&armored),
        1,
        "SEIPDv1 for a set with a v4 key"
    );
    let (from_gpg, _) = Gpg::decrypt(&v4, None, &armored);
    assert!(String::from_utf8_lossy(&from_gpg).contains("The plan is secret."));
    // gpg 2.2 cannot hold v6 keys: sequoia reads it for the v6 recipient.
    assert_eq!(sequoia_decrypt(&v6, &armored), from_gpg);

    // Every recipient advertises SEIPDv2: sequoia uses it.
    let v6b = v6_key("<other@example.net>");
    let out = encrypt(
        MESSAGE.as_bytes(),
        &[&v6, &v6b],
        None,
        &p,
        SystemTime::now(),
    )
    .unwrap();
    let armored = armored_part(&out);
    assert_eq!(seipd_version(&armored), 2);
    assert_eq!(sequoia_decrypt(&v6b, &armored), from_gpg);
}

#[test]
fn v6_signer_does_not_sign_for_v4() {
    let p = StandardPolicy::new();
    let signer = v6_key("<alice@example.org>");
    let v4 = key("<bob@example.net>");
    let v6 = v6_key("<carol@example.net>");
    let sealed = seal(
        MESSAGE.as_bytes(),
        &[&v4, &v6],
        Some(&signer),
        &p,
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!(sealed.signed_by, None, "documented outcome: unsigned");
    assert!(!String::from_utf8_lossy(&sealed.message).contains("Autocrypt:"));
    let (_, status) = Gpg::decrypt(&v4, None, &armored_part(&sealed.message));
    assert!(!status.contains("SIG"), "{status}");

    let sealed = seal(
        MESSAGE.as_bytes(),
        &[&v6],
        Some(&signer),
        &p,
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!(sealed.signed_by, Some(signer.fingerprint()));
    // A v4 signer signs for everyone.
    let v4_signer = key("<alice@example.org>");
    let sealed = seal(
        MESSAGE.as_bytes(),
        &[&v4, &v6],
        Some(&v4_signer),
        &p,
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!(sealed.signed_by, Some(v4_signer.fingerprint()));
    let (_, status) = Gpg::decrypt(&v4, Some(&v4_signer), &armored_part(&sealed.message));
    assert_good_signature(&status, &v4_signer);
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
    // Not the message's fault: the pipeline answers it as a temporary failure.
    assert!(!err.is_input());
    let err = encrypt(MESSAGE.as_bytes(), &[], None, &p, SystemTime::now()).unwrap_err();
    assert!(!err.is_input());
    // An expired recipient key is not used.
    let (expiring, _) = CertBuilder::general_purpose(Some("<e@example.net>"))
        .set_validity_period(std::time::Duration::from_secs(3600))
        .generate()
        .unwrap();
    let later = SystemTime::now() + std::time::Duration::from_secs(7200);
    assert!(encrypt(MESSAGE.as_bytes(), &[&expiring], None, &p, later).is_err());
}

#[test]
fn bcc_never_travels() {
    let p = StandardPolicy::new();
    let bob = key("<bob@example.net>");
    let m = MESSAGE.replace("To: Bob", "Bcc: Hidden <hidden@example.com>\r\nTo: Bob");
    let out = encrypt(m.as_bytes(), &[&bob], None, &p, SystemTime::now()).unwrap();
    assert!(!String::from_utf8_lossy(&out).contains("hidden@"));
    let (payload, _) = Gpg::decrypt(&bob, None, &armored_part(&out));
    assert!(!String::from_utf8_lossy(&payload).contains("hidden@"));
}

#[test]
fn the_signature_is_dated_now_and_names_its_recipients() {
    let p = StandardPolicy::new();
    let alice = key("<alice@example.org>");
    let bob = key("<bob@example.net>");
    let now = SystemTime::now() - std::time::Duration::from_secs(60);
    let out = encrypt(MESSAGE.as_bytes(), &[&bob], Some(&alice), &p, now).unwrap();
    let gpg = Gpg::new();
    gpg.import(&bob.as_tsk().to_vec().unwrap());
    let listing = gpg.run(&["--list-packets"], &armored_part(&out));
    let listing = String::from_utf8_lossy(&listing.stdout);
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        listing.contains(&format!("sig created {secs}"))
            || listing.contains(&format!("created {secs}")),
        "{listing}"
    );
    // gpg 2.2 does not name subpacket 35 (Intended Recipient Fingerprint).
    assert!(listing.contains("hashed subpkt 35 len 21"), "{listing}");
}

/// A repeated Content-Type or Content-Transfer-Encoding at the top: the Cryptographic
/// Payload is what the classifier read, and carries only that one of each.
#[test]
fn a_repeated_content_field_is_encrypted_as_it_was_classified() {
    use super::sign::{values, REPEATED};
    use crate::transform::outbound::{protect, Treatment};
    let p = StandardPolicy::new();
    let bob = key("<bob@example.net>");
    let t = Treatment::Encrypt {
        recipients: vec![std::sync::Arc::new(bob.clone())],
        signer: None,
        protect_subject: true,
    };
    for (m, ct, cte) in REPEATED {
        let out = protect(m.as_bytes(), &t, &p, SystemTime::now()).unwrap();
        let payload = sequoia_decrypt(&bob, &armored_part(&out.message));
        let (head, body) = crate::mime::headers::split_bytes(&payload);
        assert_eq!(
            values(head, "Content-Type"),
            [format!("{ct}; hp=\"cipher\"")]
        );
        assert_eq!(
            values(head, "Content-Transfer-Encoding"),
            cte.into_iter().collect::<Vec<_>>()
        );
        assert_eq!(body, crate::mime::headers::split_bytes(m.as_bytes()).1);
    }
}
