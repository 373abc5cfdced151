//! The inbound transform: `inbound::open` over arbitrary messages, for two envelope
//! recipients of a gateway whose memory keyring holds one local user's secret key (Bob)
//! and one correspondent's certificate (Alice). The other recipient, Dave, is local too
//! but has no key.
//!
//! Each input is opened twice, whole in memory and spilled to a sealed file (plaintext
//! spilled too), as the DATA reader and the pipeline do for a large message: one opener,
//! but the bytes come from a file in pieces. The DATA reader refuses bare CR and LF, so
//! what reaches `open` has CRLF line ends only: the two are compared on the input with
//! every bare CR or LF made a CRLF. An input
//! that had some is also opened as it is, in memory, for every other check.
//!
//! Checked on every input:
//! - no panic, and no error: with a memory keyring, `open` has nothing temporary to fail;
//! - in memory and on disk give the same copies, verdicts and bytes (CRLF input);
//! - every envelope recipient gets exactly one copy;
//! - `encryption=decrypted` only for Bob, only with Bob's key, and only when the copy
//!   holds the plaintext of a ciphertext made for him: the seeds' plaintexts carry a
//!   marker that appears nowhere in the clear, and the fuzzer cannot make new ciphertext
//!   for Bob's key, so a decrypted copy without it released plaintext that was never
//!   encrypted (security rules 1 and 2);
//! - `signature=valid` only from Alice's key, for her address as the single From;
//! - the delivered header has exactly one `Authentication-Results` with our authserv-id
//!   and one `X-Sealpost-Verdict`, ours, on top (rule 4).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use openpgp::{Cert, Fingerprint};
use sealpost::blob::{self, Blob, Spill};
use sealpost::transform::inbound::{Encryption, Signature};
use sealpost_fuzz::{
    check_result_fields, crlf, fixed_key, keyring, open, run_catching, settings, Copy,
    ALICE_ADDRESS, BOB_ADDRESS, MARKER,
};
use sealpost_keyring::{openpgp, Keyring};

const RECIPIENTS: [&str; 2] = [BOB_ADDRESS, "dave@example.net"];

struct World {
    keyring: Keyring,
    alice: Fingerprint,
    bob: Fingerprint,
    dir: tempfile::TempDir,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let alice: Cert = fixed_key("alice");
        let bob: Cert = fixed_key("bob");
        World {
            keyring: keyring(&bob, &[&alice]),
            alice: alice.fingerprint(),
            bob: bob.fingerprint(),
            dir: tempfile::tempdir().expect("spill directory"),
        }
    })
}

/// `data` as the DATA reader keeps a large message: in a sealed file.
fn spilled(data: &[u8], dir: &std::path::Path) -> Blob {
    let mut w = blob::Writer::new(Some(Spill::new(dir, 0)));
    for piece in data.chunks(333) {
        w.write(piece).expect("spill write");
    }
    w.finish().expect("spill finish")
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn check(w: &World, input: &[u8], copies: &[Copy]) {
    let mut seen = [0usize; RECIPIENTS.len()];
    for c in copies {
        for &i in &c.recipients {
            seen[i] += 1;
        }
        let v = &c.verdict;
        if v.encryption == Encryption::Decrypted {
            assert_eq!(c.recipients, [0], "decrypted for {:?}", c.recipients);
            assert_eq!(
                v.decryption_key.as_ref(),
                Some(&w.bob),
                "decrypted with another key"
            );
            assert!(
                contains(&c.message, MARKER.as_bytes()),
                "decrypted, but no seed's plaintext in {:?}",
                String::from_utf8_lossy(&c.message)
            );
        }
        if v.signature == Signature::Valid {
            assert_eq!(
                v.signer.as_ref(),
                Some(&w.alice),
                "valid, signed by {:?}",
                v.signer
            );
            assert_eq!(v.signer_address.as_deref(), Some(ALICE_ADDRESS));
            assert_eq!(v.from.as_deref(), Some(ALICE_ADDRESS));
        }
        check_result_fields(&c.message);
    }
    assert_eq!(
        seen,
        [1, 1],
        "copies per recipient for {} bytes",
        input.len()
    );
}

fuzz_target!(|data: &[u8]| run_catching(|| one(data)));

fn one(raw: &[u8]) {
    let w = world();
    let normalised = crlf(raw);
    if normalised != raw {
        let copies = open(
            &Blob::from(raw.to_vec()),
            &RECIPIENTS,
            &w.keyring,
            &settings(None),
        );
        check(w, raw, &copies);
    }
    let data = &normalised[..];
    let memory = open(
        &Blob::from(data.to_vec()),
        &RECIPIENTS,
        &w.keyring,
        &settings(None),
    );
    check(w, data, &memory);
    let streamed = open(
        &spilled(data, w.dir.path()),
        &RECIPIENTS,
        &w.keyring,
        &settings(Some(Spill::new(w.dir.path(), 0))),
    );
    if memory != streamed {
        let show = |copies: &[Copy]| {
            copies
                .iter()
                .map(|c| {
                    format!(
                        "{:?} {:?}\n{}",
                        c.recipients,
                        c.verdict,
                        String::from_utf8_lossy(&c.message)
                    )
                })
                .collect::<Vec<_>>()
                .join("\n----\n")
        };
        panic!(
            "the spilled message opens differently from the one in memory:\n== memory\n{}\n== spilled\n{}",
            show(&memory),
            show(&streamed)
        );
    }
}
