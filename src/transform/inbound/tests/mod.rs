//! The inbound transform against messages built in-process with sequoia: genuine ones and
//! the attacks of `security.md`. Helpers here, cases in the files below.

mod attacks;
mod integrity;
mod opening;
mod signatures;
mod spilled;

use std::io::Write;
use std::time::SystemTime;

use mail_parser::MessageParser;
use openpgp::cert::amalgamation::ValidAmalgamation;
use openpgp::cert::Preferences;
use openpgp::serialize::stream::{
    Armorer, Compressor, Encryptor, LiteralWriter, Message, Recipient, Signer,
};
use openpgp::serialize::{Serialize, SerializeInto};
use openpgp::types::CompressionAlgorithm;
use openpgp::Cert;
use sealpost_keyring::{openpgp, Keyring, OpenOptions};

use super::{open, Settings, Verdict};
use crate::blob::{self, Blob, Spill};
use crate::mime::headers;
use crate::transform::outbound::encrypt::signing_keypair;

pub use crate::transform::outbound::tests::key;

/// Our authserv-id in every test.
pub const ID: &str = "gw.example.net";

/// The keyring of a gateway for example.net: Bob and Carol are local users (secret keys),
/// Alice and Mallory are known correspondents (certificates only). Dave is unknown.
pub struct World {
    pub keyring: Keyring,
    pub alice: Cert,
    pub bob: Cert,
    pub carol: Cert,
    pub mallory: Cert,
    pub dave: Cert,
}

impl World {
    /// `payload` encrypted to Bob and signed by Alice, armored: the common fixture.
    pub fn alice_to_bob(&self, payload: &[u8]) -> Vec<u8> {
        encrypt(
            payload,
            &[&self.bob],
            How {
                signer: Some(&self.alice),
                armor: true,
                ..How::default()
            },
        )
    }

    pub fn new() -> World {
        let keyring = Keyring::open_memory(OpenOptions::default()).unwrap();
        let alice = key("Alice <alice@example.org>");
        let bob = key("Bob <bob@example.net>");
        let carol = key("Carol <carol@example.net>");
        let mallory = key("Mallory <mallory@evil.example>");
        let dave = key("Dave <dave@example.com>");
        for c in [&alice, &mallory] {
            keyring.import(&public(c)).unwrap();
        }
        for c in [&bob, &carol] {
            keyring.import(&c.as_tsk().to_vec().unwrap()).unwrap();
        }
        World {
            keyring,
            alice,
            bob,
            carol,
            mallory,
            dave,
        }
    }

    /// Opens `m` for these envelope recipients with a 1 MiB plaintext limit.
    pub fn open(&self, m: &[u8], rcpts: &[&str]) -> Vec<Opened> {
        self.open_with(m, rcpts, 1 << 20)
    }

    /// Opens `m`, held in memory, with a plaintext limit of `max`.
    pub fn open_with(&self, m: &[u8], rcpts: &[&str], max: usize) -> Vec<Opened> {
        self.open_blob(&Blob::from(m.to_vec()), rcpts, max, None)
    }

    /// Opens a blob as it is, plaintext spilling past `spill`.
    pub fn open_blob(
        &self,
        m: &Blob,
        rcpts: &[&str],
        max: usize,
        spill: Option<Spill>,
    ) -> Vec<Opened> {
        let settings = Settings {
            authserv_id: ID.into(),
            max_plaintext: max,
            spill,
        };
        open(m, rcpts, &self.keyring, &settings, SystemTime::now())
            .unwrap()
            .into_iter()
            .map(|o| Opened {
                recipients: o.recipients,
                message: o.message.to_vec().unwrap(),
                verdict: o.verdict,
                spilled: o.message.is_spilled(),
            })
            .collect()
    }

    /// Opens `m` for Bob alone.
    pub fn open_bob(&self, m: &[u8]) -> Opened {
        let mut out = self.open(m, &["bob@example.net"]);
        assert_eq!(out.len(), 1);
        out.remove(0)
    }
}

/// An opened copy with its bytes read back; equal whether the message was in memory or in
/// a sealed file (where the copy's body stayed is not compared).
#[derive(Debug, Clone)]
pub struct Opened {
    pub recipients: Vec<usize>,
    pub message: Vec<u8>,
    pub verdict: Verdict,
    pub spilled: bool,
}

impl PartialEq for Opened {
    fn eq(&self, o: &Opened) -> bool {
        (&self.recipients, &self.message, &self.verdict) == (&o.recipients, &o.message, &o.verdict)
    }
}

/// `data` as the DATA reader keeps a large message: in a sealed file, whatever its size.
pub fn spilled(data: &[u8], dir: &std::path::Path) -> Blob {
    let mut w = blob::Writer::new(Some(Spill::new(dir, 0)));
    for piece in data.chunks(333) {
        w.write(piece).unwrap();
    }
    let b = w.finish().unwrap();
    assert!(b.is_spilled() || data.is_empty());
    b
}

fn public(c: &Cert) -> Vec<u8> {
    c.clone().strip_secret_key_material().to_vec().unwrap()
}

/// How a test message is encrypted.
#[derive(Default, Clone, Copy)]
pub struct How<'a> {
    pub signer: Option<&'a Cert>,
    pub compress: bool,
    pub anonymous: bool,
    pub armor: bool,
}

/// `payload` encrypted to `recipients` (binary unless `how.armor`).
pub fn encrypt(payload: &[u8], recipients: &[&Cert], how: How<'_>) -> Vec<u8> {
    let p = openpgp::policy::StandardPolicy::new();
    let mut sink = Vec::new();
    {
        let m = Message::new(&mut sink);
        let m = if how.armor {
            Armorer::new(m).build().unwrap()
        } else {
            m
        };
        let mut keys: Vec<Recipient> = Vec::new();
        for c in recipients {
            for ka in c
                .keys()
                .with_policy(&p, None)
                .supported()
                .alive()
                .revoked(false)
                .for_transport_encryption()
            {
                let handle = (!how.anonymous).then(|| ka.key().key_handle());
                keys.push(Recipient::new(ka.valid_cert().features(), handle, ka.key()));
            }
        }
        let m = Encryptor::for_recipients(m, keys).build().unwrap();
        let m = if how.compress {
            Compressor::new(m)
                .algo(CompressionAlgorithm::Zip)
                .build()
                .unwrap()
        } else {
            m
        };
        let m = match how.signer {
            Some(s) => Signer::new(m, signing_keypair(s, &p, SystemTime::now()).unwrap())
                .unwrap()
                .build()
                .unwrap(),
            None => m,
        };
        let mut w = LiteralWriter::new(m).build().unwrap();
        w.write_all(payload).unwrap();
        w.finalize().unwrap();
    }
    sink
}

/// Binary OpenPGP data armored, CRLF.
pub fn armor(binary: &[u8]) -> Vec<u8> {
    let mut w = openpgp::armor::Writer::new(Vec::new(), openpgp::armor::Kind::Message).unwrap();
    w.write_all(binary).unwrap();
    crlf(&w.finalize().unwrap())
}

pub fn crlf(data: &[u8]) -> Vec<u8> {
    crate::mime::entity::crlf(data)
}

/// A PGP/MIME message (RFC 3156 §4) with these outer fields around armored `data`.
pub fn pgp_mime(outer: &str, armored: &[u8]) -> Vec<u8> {
    let mut m = format!("{outer}MIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\";\r\n\tboundary=\"enc\"\r\n\r\nThis is an OpenPGP/MIME encrypted message.\r\n--enc\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--enc\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\r\n").into_bytes();
    m.extend_from_slice(armored);
    m.extend_from_slice(b"\r\n--enc--\r\n");
    m
}

/// The usual outer fields of a message from Alice to Bob.
pub const OUTER: &str = "Received: from mx.example.org by gw.example.net; Sat, 28 Nov 2026 20:00:00 +0000\r\nFrom: Alice <alice@example.org>\r\nTo: Bob <bob@example.net>\r\nSubject: hello\r\nDate: Sat, 28 Nov 2026 20:00:00 +0000\r\nMessage-ID: <m1@example.org>\r\n";

/// A detached armored signature by `signer` over `data`.
pub fn detached(data: &[u8], signer: &Cert) -> Vec<u8> {
    let p = openpgp::policy::StandardPolicy::new();
    let mut sink = Vec::new();
    {
        let m = Message::new(&mut sink);
        let m = Armorer::new(m)
            .kind(openpgp::armor::Kind::Signature)
            .build()
            .unwrap();
        let mut s = Signer::new(m, signing_keypair(signer, &p, SystemTime::now()).unwrap())
            .unwrap()
            .detached()
            .build()
            .unwrap();
        s.write_all(data).unwrap();
        s.finalize().unwrap();
    }
    crlf(&sink)
}

/// `multipart/signed` with these outer fields, the signed part `part` (CRLF, no final line
/// break) and a signature by `signer` over it.
pub fn multipart_signed(outer: &str, part: &[u8], signer: &Cert) -> Vec<u8> {
    let sig = detached(part, signer);
    let mut m = format!("{outer}MIME-Version: 1.0\r\nContent-Type: multipart/signed; micalg=pgp-sha512;\r\n protocol=\"application/pgp-signature\"; boundary=\"sig\"\r\n\r\n--sig\r\n").into_bytes();
    m.extend_from_slice(part);
    m.extend_from_slice(
        b"\r\n--sig\r\nContent-Type: application/pgp-signature; name=\"signature.asc\"\r\n\r\n",
    );
    m.extend_from_slice(&sig);
    m.extend_from_slice(b"\r\n--sig--\r\n");
    m
}

/// Cleartext-signed `text` (RFC 9580 §7), CRLF.
pub fn cleartext(text: &[u8], signer: &Cert) -> Vec<u8> {
    let p = openpgp::policy::StandardPolicy::new();
    let mut sink = Vec::new();
    {
        let m = Message::new(&mut sink);
        let mut s = Signer::new(m, signing_keypair(signer, &p, SystemTime::now()).unwrap())
            .unwrap()
            .cleartext()
            .build()
            .unwrap();
        s.write_all(text).unwrap();
        s.finalize().unwrap();
    }
    crlf(&sink)
}

/// A signed-only OpenPGP message (a one-pass signed literal), armored.
pub fn signed_message(payload: &[u8], signer: &Cert) -> Vec<u8> {
    let p = openpgp::policy::StandardPolicy::new();
    let mut sink = Vec::new();
    {
        let m = Message::new(&mut sink);
        let m = Armorer::new(m).build().unwrap();
        let m = Signer::new(m, signing_keypair(signer, &p, SystemTime::now()).unwrap())
            .unwrap()
            .build()
            .unwrap();
        let mut w = LiteralWriter::new(m).build().unwrap();
        w.write_all(payload).unwrap();
        w.finalize().unwrap();
    }
    crlf(&sink)
}

/// The values of our two fields (unfolded), checking there is exactly one of each, that
/// they come first, and that every line is within 78 columns.
pub fn ours(m: &[u8]) -> (String, String) {
    let (head, _) = headers::split_bytes(m);
    let head = String::from_utf8_lossy(head);
    assert!(
        head.starts_with("Authentication-Results: ") && head.contains("\r\nX-Sealpost-Verdict: "),
        "{head}"
    );
    let (fields, _) = headers::split(m);
    let ar: Vec<_> = fields
        .iter()
        .filter(|f| f.is("Authentication-Results") && f.value().starts_with(ID))
        .collect();
    let vd: Vec<_> = fields
        .iter()
        .filter(|f| f.is("X-Sealpost-Verdict"))
        .collect();
    assert_eq!((ar.len(), vd.len()), (1, 1), "{head}");
    for f in [ar[0], vd[0]] {
        for line in f.wire().split("\r\n") {
            assert!(line.len() <= 78, "{line}");
        }
    }
    // Folding replaced a space by CRLF TAB.
    let unfold = |f: &headers::Field| f.raw.replace("\r\n\t", " ").trim().to_string();
    (unfold(ar[0]), unfold(vd[0]))
}

/// Asserts the verdict field says `signature=`, `encryption=`, `protected-headers=`.
pub fn assert_verdict(o: &Opened, s: &str, e: &str, p: &str) {
    let (_, vd) = ours(&o.message);
    let want = format!("signature={s}; encryption={e}; protected-headers={p}");
    assert!(vd.starts_with(&want), "want {want}, got {vd}");
}

/// The `pgp=` result.
pub fn pgp(o: &Opened) -> String {
    let (ar, _) = ours(&o.message);
    ar.split_whitespace()
        .find_map(|w| w.strip_prefix("pgp="))
        .unwrap()
        .to_string()
}

/// Whether `needle` occurs anywhere in `hay`, also decoded (base64, quoted-printable).
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    let raw = hay.windows(needle.len()).any(|w| w == needle);
    let decoded = MessageParser::default().parse(hay).is_some_and(|m| {
        m.parts
            .iter()
            .any(|p| p.contents().windows(needle.len()).any(|w| w == needle))
    });
    raw || decoded
}

/// The body of a delivered message (everything after the empty line).
pub fn body(m: &[u8]) -> &[u8] {
    headers::split_bytes(m).1
}

/// Every line of a delivered message ends with CRLF, and the body is 7-bit.
pub fn assert_wellformed(m: &[u8]) {
    assert!(
        !m.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'),
        "bare LF"
    );
    assert!(
        crate::mime::seven_bit::is_clean(body(m)),
        "not 7-bit: {}",
        String::from_utf8_lossy(m)
    );
}

/// A serialised packet.
pub fn packet_bytes(p: &openpgp::Packet) -> Vec<u8> {
    let mut v = Vec::new();
    p.serialize(&mut v).unwrap();
    v
}
