//! Makes the fixed test keys (`keys/`, only when missing) and the seeds of the `inbound`
//! corpus: real PGP/MIME made by sealpost's own outbound transform to the local user, an
//! inline armored message, ciphertext for someone else, a signed-only message, nested
//! ciphertext and forged result fields.
//!
//! `cargo +nightly run --manifest-path fuzz/Cargo.toml --example make_seeds`

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use openpgp::cert::CertBuilder;
use openpgp::policy::StandardPolicy;
use openpgp::serialize::stream::{Armorer, Encryptor, LiteralWriter, Message, Signer};
use openpgp::serialize::SerializeInto;
use openpgp::types::Features;
use openpgp::Cert;
use sealpost::transform::outbound::encrypt::signing_keypair;
use sealpost::transform::outbound::{protect, Outcome, Treatment};
use sealpost_fuzz::{fixed_key, keys_dir, ALICE, BOB, CAROL, MARKER};
use sealpost_keyring::openpgp;

/// Outer fields of a message from Alice to Bob.
const OUTER: &str = "Received: from mx.example.org ([192.0.2.7])\r\n\tby gw.fuzz.test (sealpost) with ESMTPS id 4F2A; Sat, 28 Nov 2026 20:00:00 +0000\r\nFrom: Alice <alice@example.org>\r\nTo: Bob <bob@example.net>\r\nSubject: the plan\r\nDate: Sat, 28 Nov 2026 20:00:00 +0000\r\nMessage-ID: <m1@example.org>\r\n";

fn main() {
    let dir = keys_dir();
    std::fs::create_dir_all(&dir).expect("keys directory");
    for (name, uid) in [("alice", ALICE), ("bob", BOB), ("carol", CAROL)] {
        let path = dir.join(format!("{name}.tsk.asc"));
        if !path.exists() {
            // v4, no expiry, SEIPDv1 as gpg 2.2 makes them: the seeds stay valid.
            let (cert, _) = CertBuilder::general_purpose(Some(uid))
                .set_validity_period(None)
                .set_features(Features::empty().set_seipdv1())
                .expect("features")
                .generate()
                .expect("key");
            let armored = cert.as_tsk().armored().to_vec().expect("armor");
            std::fs::write(&path, armored).expect("key file");
        }
    }
    let alice = Arc::new(fixed_key("alice"));
    let bob = Arc::new(fixed_key("bob").strip_secret_key_material());
    let carol = Arc::new(fixed_key("carol").strip_secret_key_material());
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/inbound");
    std::fs::create_dir_all(&out).expect("corpus directory");
    let write = |name: &str, bytes: &[u8]| {
        std::fs::write(out.join(name), bytes).expect("seed");
    };

    let text = format!(
        "{OUTER}MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nHi Bob,\r\n{MARKER}\r\nThe meeting moves to Thursday.\r\n"
    );
    let mixed = format!(
        "{OUTER}MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"mix\"\r\n\r\n--mix\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGr\u{fc}\u{df}e, {MARKER}\r\n--mix\r\nContent-Type: application/octet-stream; name=\"a.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAwQFBgcICQ==\r\n--mix--\r\n"
    );
    let encrypt = |message: &str, to: &Arc<Cert>, signer: Option<&Arc<Cert>>| {
        let treatment = Treatment::Encrypt {
            recipients: vec![Arc::clone(to)],
            signer: signer.cloned(),
        };
        let p = protect(
            message.as_bytes(),
            &treatment,
            &StandardPolicy::new(),
            SystemTime::now(),
        )
        .expect("encrypted");
        assert!(matches!(p.outcome, Outcome::Encrypted { .. }));
        p.message
    };

    let signed_to_bob = encrypt(&text, &bob, Some(&alice));
    write("pgp-mime-signed", &signed_to_bob);
    write("pgp-mime-multipart", &encrypt(&mixed, &bob, Some(&alice)));
    write("pgp-mime-unsigned", &encrypt(&text, &bob, None));
    write("pgp-mime-for-carol", &encrypt(&text, &carol, Some(&alice)));

    let inline = inline_armored(format!("Hi Bob,\n{MARKER}\n").as_bytes(), &bob, &alice);
    let mut m = format!("{OUTER}\r\n").into_bytes();
    m.extend_from_slice(&inline);
    write("inline-armored", &m);

    let plain = format!("{OUTER}Content-Type: text/plain\r\n\r\nNothing secret here.\r\n");
    let signed = protect(
        plain.as_bytes(),
        &Treatment::SignOnly {
            signer: Arc::clone(&alice),
        },
        &StandardPolicy::new(),
        SystemTime::now(),
    )
    .expect("signed");
    write("multipart-signed", &signed.message);

    let forged = format!(
        "Authentication-Results: gw.fuzz.test; pgp=pass\r\nX-Sealpost-Verdict: signature=valid;\r\n encryption=decrypted\r\n{OUTER}authentication-results: (c) GW.FUZZ.TEST ; pgp=pass\r\n\r\nPlease wire the money.\r\n"
    );
    write("forged-results", forged.as_bytes());

    let mut nested = format!(
        "{OUTER}MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n--outer\r\nContent-Type: text/html\r\n\r\n<img src=\"http://evil.example/\r\n--outer\r\nContent-Type: message/rfc822\r\n\r\n"
    )
    .into_bytes();
    nested.extend_from_slice(&signed_to_bob);
    nested.extend_from_slice(b"\r\n--outer--\r\n");
    write("nested-ciphertext", &nested);
}

/// `text` encrypted to `to` and signed by `signer`, armored, CRLF.
fn inline_armored(text: &[u8], to: &Cert, signer: &Cert) -> Vec<u8> {
    let p = StandardPolicy::new();
    let mut sink = Vec::new();
    {
        let m = Armorer::new(Message::new(&mut sink))
            .build()
            .expect("armor");
        let keys = to
            .keys()
            .with_policy(&p, None)
            .supported()
            .alive()
            .revoked(false)
            .for_transport_encryption();
        let m = Encryptor::for_recipients(m, keys)
            .build()
            .expect("encryptor");
        let key = signing_keypair(signer, &p, SystemTime::now()).expect("signing key");
        let m = Signer::new(m, key)
            .expect("signer")
            .build()
            .expect("signer");
        let mut w = LiteralWriter::new(m).build().expect("literal");
        w.write_all(text).expect("write");
        w.finalize().expect("finalize");
    }
    let mut out = Vec::with_capacity(sink.len() + sink.len() / 32);
    for &b in &sink {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}
