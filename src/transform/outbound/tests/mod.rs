//! The outbound transform against real OpenPGP peers: gpg 2.2 and sq 0.27 must decrypt
//! and verify what it produces. Helpers here, cases in the files below.

mod encrypt;
mod inputs;
mod sign;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use mail_parser::{MessageParser, MimeHeaders};
use openpgp::cert::CertBuilder;
use openpgp::serialize::SerializeInto;
use openpgp::Cert;
use sealpost_keyring::openpgp;

/// A v4 key as gpg 2.2 makes them: it advertises SEIPDv1 (MDC) only.
pub fn key(uid: &str) -> Cert {
    CertBuilder::general_purpose(Some(uid))
        .set_features(openpgp::types::Features::empty().set_seipdv1())
        .unwrap()
        .generate()
        .unwrap()
        .0
}

/// `cert`'s secret key for signing (`signing`) or for transport encryption.
pub fn secret_key(
    cert: &Cert,
    signing: bool,
) -> openpgp::packet::Key<openpgp::packet::key::SecretParts, openpgp::packet::key::UnspecifiedRole>
{
    let policy = openpgp::policy::StandardPolicy::new();
    let keys = cert.keys().with_policy(&policy, None).secret();
    let key = if signing {
        keys.for_signing().next()
    } else {
        keys.for_transport_encryption().next()
    };
    key.unwrap().key().clone().role_into_unspecified()
}

/// An RFC 9580 (v6) key.
pub fn v6_key(uid: &str) -> Cert {
    CertBuilder::general_purpose(Some(uid))
        .set_profile(openpgp::Profile::RFC9580)
        .unwrap()
        .generate()
        .unwrap()
        .0
}

/// A text message with trace fields, a field that must travel inside only, an RFC 2047
/// Subject and an 8-bit UTF-8 body.
pub const MESSAGE: &str = "Received: from client ([127.0.0.1])\r\n\tby gw (sealpost) with ESMTP id X; Sat, 28 Nov 2026 20:00:00 +0000\r\nFrom: Alice <alice@example.org>\r\nX-Project: codename nightingale\r\nTo: Bob <bob@example.net>\r\nSubject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= and plans\r\nDate: Sat, 28 Nov 2026 20:00:00 +0000\r\nMessage-ID: <m1@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße, Bob.\r\nThe plan is secret.\r\n";

/// A temporary file directory for the peers.
pub struct Dir(tempfile::TempDir);

impl Dir {
    pub fn new() -> Dir {
        Dir(tempfile::tempdir().unwrap())
    }
    pub fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let f = self.0.path().join(name);
        std::fs::write(&f, data).unwrap();
        f
    }
}

/// gpg 2.2 with a temporary GNUPGHOME.
pub struct Gpg(tempfile::TempDir);

impl Gpg {
    pub fn new() -> Gpg {
        Gpg(tempfile::tempdir().unwrap())
    }

    pub fn run(&self, args: &[&str], input: &[u8]) -> Output {
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
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        // Large inputs: write while gpg writes its output.
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        out
    }

    pub fn import(&self, data: &[u8]) {
        let out = self.run(&["--import"], data);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Decrypts with the recipient's TSK and the signer's cert imported; returns the
    /// plaintext and the status lines.
    pub fn decrypt(recipient: &Cert, signer: Option<&Cert>, armored: &[u8]) -> (Vec<u8>, String) {
        let gpg = Gpg::new();
        gpg.import(&recipient.as_tsk().to_vec().unwrap());
        if let Some(s) = signer {
            gpg.import(&s.to_vec().unwrap());
        }
        let dir = Dir::new();
        let input = dir.write("msg.asc", armored);
        let out = dir.0.path().join("plain");
        let dec = gpg.run(
            &[
                "--status-fd",
                "2",
                "--output",
                out.to_str().unwrap(),
                "--decrypt",
                input.to_str().unwrap(),
            ],
            b"",
        );
        let status = String::from_utf8_lossy(&dec.stderr).to_string();
        assert!(dec.status.success(), "{status}");
        assert!(status.contains("[GNUPG:] DECRYPTION_OKAY"), "{status}");
        (std::fs::read(out).unwrap(), status)
    }
}

/// Asserts gpg's status shows a good, valid signature by `signer`.
pub fn assert_good_signature(status: &str, signer: &Cert) {
    assert!(status.contains("[GNUPG:] GOODSIG"), "{status}");
    let validsig = status
        .lines()
        .find(|l| l.starts_with("[GNUPG:] VALIDSIG"))
        .unwrap_or_else(|| panic!("no VALIDSIG: {status}"));
    // VALIDSIG <signing key fpr> … <primary key fpr> is the last field.
    assert!(
        validsig.ends_with(&signer.fingerprint().to_hex()),
        "{validsig}"
    );
}

/// sq 0.27 decrypts with the recipient's key and checks the signature by `signer`.
pub fn sq_decrypt(recipient: &Cert, signer: &Cert, armored: &[u8]) -> Vec<u8> {
    let dir = Dir::new();
    let key = dir.write("key", &recipient.as_tsk().to_vec().unwrap());
    let cert = dir.write("cert", &signer.to_vec().unwrap());
    let msg = dir.write("msg.asc", armored);
    let sq = Command::new("sq")
        .arg("decrypt")
        .arg("--recipient-key")
        .arg(&key)
        .arg("--signer-cert")
        .arg(&cert)
        .arg(&msg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&sq.stderr);
    assert!(sq.status.success(), "{stderr}");
    assert!(stderr.contains("Good signature"), "{stderr}");
    sq.stdout
}

/// The armored OpenPGP message inside a multipart/encrypted body, checked structurally.
pub fn armored_part(out: &[u8]) -> Vec<u8> {
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
    let ct = parts[1].content_type().unwrap();
    assert_eq!(ct.subtype(), Some("octet-stream"));
    assert_eq!(ct.attribute("name"), Some("encrypted.asc"));
    let armored = parts[1].contents().to_vec();
    assert!(armored.starts_with(b"-----BEGIN PGP MESSAGE-----"));
    armored
}

/// A decrypted Cryptographic Payload: its header section and its body.
pub fn payload_split(payload: &[u8]) -> (String, Vec<u8>) {
    let (head, body) = crate::mime::headers::split_bytes(payload);
    (String::from_utf8(head.to_vec()).unwrap(), body.to_vec())
}

/// The signed part, the armored signature and the micalg of a multipart/signed message.
pub fn signed_parts(out: &[u8]) -> (Vec<u8>, Vec<u8>, String) {
    let m = MessageParser::default().parse(out).expect("parses");
    let ct = m.content_type().expect("content type");
    assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("signed")));
    assert_eq!(ct.attribute("protocol"), Some("application/pgp-signature"));
    let micalg = ct.attribute("micalg").unwrap().to_string();
    let b = ct.attribute("boundary").unwrap().to_string();
    let delimiter = format!("\r\n--{b}\r\n");
    let text = out;
    let find = |from: usize, needle: &[u8]| {
        text[from..]
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|i| i + from)
    };
    let first = find(0, delimiter.as_bytes()).unwrap() + delimiter.len();
    let second = find(first, delimiter.as_bytes()).unwrap();
    let sig_start = find(second, b"-----BEGIN PGP SIGNATURE-----").unwrap();
    let sig_end = find(sig_start, b"-----END PGP SIGNATURE-----").unwrap() + 27;
    (
        text[first..second].to_vec(),
        text[sig_start..sig_end].to_vec(),
        micalg,
    )
}

/// gpg verifies a detached signature over exactly `part`; returns the status lines.
pub fn gpg_verify(signer: &Cert, part: &[u8], sig: &[u8]) -> (bool, String) {
    let gpg = Gpg::new();
    gpg.import(&signer.to_vec().unwrap());
    let dir = Dir::new();
    let part_file = dir.write("part", part);
    let sig_file = dir.write("part.asc", sig);
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
    (
        v.status.success(),
        String::from_utf8_lossy(&v.stderr).to_string(),
    )
}
