//! The outbound transform: `classify`, then `protect` encrypting (and signing) to a fixed
//! recipient and signing only, over arbitrary messages. The keys are generated once.
//! The DATA reader refuses bare CR and LF, so every bare one in the input is made a CRLF
//! first: the transform is only ever given CRLF messages.
//!
//! Checked on every input:
//! - no panic; `protect` fails exactly when `classify` does, with the same error;
//! - already encrypted mail passes through byte for byte;
//! - plaintext is encrypted (no key or backend can fail here), or signed, passed on
//!   unchanged as already signed, or refused as not 7-bit (signing only);
//! - an encrypted result holds no run of more than 64 bytes of the input body outside
//!   the outer header RFC 9788 leaves in the clear, other than the fixed PGP/MIME text
//!   every encrypted message has (its random boundary aside); no `Bcc` field travels in
//!   the clear;
//! - what sealpost encrypts, its inbound side decrypts with the recipient's key, and
//!   what it signs verifies as a good signature (round trip through `inbound::open`).
#![no_main]

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use openpgp::cert::CertBuilder;
use openpgp::policy::StandardPolicy;
use openpgp::Cert;
use sealpost::blob::Blob;
use sealpost::mime::headers;
use sealpost::transform::inbound::Encryption;
use sealpost::transform::outbound::{classify, protect, Classification, Outcome, Treatment};
use sealpost_fuzz::{
    crlf, good_signature, keyring, open, run_catching, Copy, settings, ALICE, BOB, BOB_ADDRESS,
};
use sealpost_keyring::{openpgp, Keyring};

/// Longer runs of the body than this must not appear in the clear.
const RUN: usize = 65;

struct Keys {
    alice: Arc<Cert>,
    bob: Arc<Cert>,
    /// Bob's gateway: his secret key, Alice's certificate.
    inbound: Keyring,
    /// Every `RUN`-byte window of an encrypted message's body below the outer header,
    /// from a fixed message: the PGP/MIME text all of them share.
    skeleton: HashSet<Vec<u8>>,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let generate = |uid: &str| {
            CertBuilder::general_purpose(Some(uid))
                .generate()
                .expect("key")
                .0
        };
        let alice = generate(ALICE);
        let bob = generate(BOB);
        let inbound = keyring(&bob, &[&alice]);
        let alice = Arc::new(alice);
        let bob = Arc::new(bob.strip_secret_key_material());
        let reference = protect(
            b"From: a@b.example\r\nTo: c@d.example\r\n\r\nx\r\n",
            &Treatment::Encrypt {
                recipients: vec![Arc::clone(&bob)],
                signer: Some(Arc::clone(&alice)),
                protect_subject: true,
            },
            &StandardPolicy::new(),
            SystemTime::now(),
        )
        .expect("reference message");
        Keys {
            alice,
            bob,
            inbound,
            skeleton: windows(&clear_body(&reference.message)),
        }
    })
}

/// The body of an encrypted message below its outer header, its random MIME boundary
/// replaced by a fixed word, so that the fixed text around it compares equal.
fn clear_body(message: &[u8]) -> Vec<u8> {
    let (head, body) = headers::split_bytes(message);
    let head = String::from_utf8_lossy(head);
    // Ours is the last field; the sender's fields kept outside come before it.
    let boundary = head
        .rsplit("boundary=\"")
        .next()
        .and_then(|rest| rest.split('"').next())
        .expect("a boundary in the outer header");
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    while let Some(at) = rest
        .windows(boundary.len())
        .position(|w| w == boundary.as_bytes())
    {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(b"BOUNDARY");
        rest = &rest[at + boundary.len()..];
    }
    out.extend_from_slice(rest);
    out
}

fn windows(data: &[u8]) -> HashSet<Vec<u8>> {
    data.windows(RUN).map(<[u8]>::to_vec).collect()
}

/// The encrypted `output` of `input`: no body run in the clear, no Bcc outside, and Bob's
/// gateway decrypts it and finds Alice's signature good when it is signed.
fn check_encrypted(k: &Keys, input: &[u8], output: &[u8], signed: bool) {
    let (_, in_body) = headers::split_bytes(input);
    let (out_head, _) = headers::split_bytes(output);
    let clear = windows(&clear_body(output));
    for (at, w) in in_body.windows(RUN).enumerate() {
        assert!(
            !clear.contains(w) || k.skeleton.contains(w),
            "{RUN} bytes of the body at {at} are in the clear: {:?}",
            String::from_utf8_lossy(w)
        );
    }
    let (fields, _) = headers::split(out_head);
    assert!(
        !fields.iter().any(|f| f.is("Bcc")),
        "Bcc outside an encrypted message"
    );

    let copy = open_for_bob(k, output);
    // A payload the mailbox could not be given safely (8-bit where no encoding can carry
    // it, NUL, or lines that need re-encoding inside a container the 7-bit rewrite cannot
    // parse) is delivered as the ciphertext it came in, as `unencodable`. The input has
    // CRLF line ends already (`crlf`), so it holds no bare CR.
    let unsafe_input = input.iter().any(|&b| b >= 0x80 || b == 0)
        || sealpost::mime::seven_bit::rewrite(input).is_err();
    if copy.verdict.encryption == Encryption::Unencodable && unsafe_input {
        return;
    }
    assert_eq!(
        copy.verdict.encryption,
        Encryption::Decrypted,
        "our own encryption does not open: {:?}",
        copy.verdict
    );
    if signed {
        assert!(
            good_signature(copy.verdict.signature),
            "our own signature does not verify: {:?}",
            copy.verdict
        );
    }
}

/// Bob's gateway opening `output`: exactly one copy.
fn open_for_bob(k: &Keys, output: &[u8]) -> Copy {
    let mut copies = open(
        &Blob::from(output.to_vec()),
        &[BOB_ADDRESS],
        &k.inbound,
        &settings(None),
    );
    assert_eq!(copies.len(), 1, "{} copies for one recipient", copies.len());
    copies.remove(0)
}

/// A signed-only `output`: Bob's gateway finds Alice's signature good.
fn check_signed(k: &Keys, output: &[u8]) {
    let copy = open_for_bob(k, output);
    assert!(
        good_signature(copy.verdict.signature),
        "our own signature does not verify: {:?} in {:?}",
        copy.verdict,
        String::from_utf8_lossy(output)
    );
    assert_eq!(copy.verdict.encryption, Encryption::None);
}

fuzz_target!(|data: &[u8]| run_catching(|| one(&crlf(data))));

fn one(data: &[u8]) {
    let k = keys();
    let policy = StandardPolicy::new();
    let now = SystemTime::now();
    let classified = classify(data);

    let encrypt = Treatment::Encrypt {
        recipients: vec![Arc::clone(&k.bob)],
        signer: Some(Arc::clone(&k.alice)),
        protect_subject: true,
    };
    let sign = Treatment::SignOnly {
        signer: Arc::clone(&k.alice),
    };
    for treatment in [&encrypt, &sign] {
        let result = protect(data, treatment, &policy, now);
        match (&classified, result) {
            (Err(want), Err(got)) => {
                assert_eq!(format!("{want:?}"), format!("{got:?}"));
            }
            (Err(want), Ok(p)) => panic!("classify refused ({want}), protect gave {p:?}"),
            (Ok(Classification::Protected { kind, .. }), result) => {
                let p = result.expect("already protected mail passes");
                assert_eq!(p.outcome, Outcome::AlreadyProtected(*kind));
                assert!(p.message == data, "already protected mail was changed");
            }
            (Ok(Classification::Plain(info)), result) => match (treatment, result) {
                (Treatment::Encrypt { .. }, Ok(p)) => {
                    let Outcome::Encrypted { signed_by } = &p.outcome else {
                        panic!("encrypting gave {:?}", p.outcome);
                    };
                    check_encrypted(k, data, &p.message, signed_by.is_some());
                }
                (Treatment::Encrypt { .. }, Err(e)) => panic!("encryption failed: {e}"),
                (Treatment::SignOnly { .. }, Ok(p)) => match p.outcome {
                    Outcome::Signed { .. } => check_signed(k, &p.message),
                    Outcome::AlreadyProtected(kind) => {
                        assert_eq!(Some(kind), info.label);
                        assert!(p.message == data, "already signed mail was changed");
                    }
                    other => panic!("signing gave {other:?}"),
                },
                (Treatment::SignOnly { .. }, Err(e)) => {
                    assert!(
                        matches!(e, sealpost::transform::outbound::Error::NotSevenBit),
                        "signing failed: {e}"
                    );
                }
                (Treatment::Plain, _) => unreachable!("not tried"),
            },
        }
    }
}
