//! The per-message cost of the outbound transform, without sockets: classifying a 10 KB
//! message, and encrypting and signing it the way the gateway does (one Cv25519
//! recipient, a Cv25519 signer, keys taken from the keyring's caches).
//!
//! `cargo bench --bench protect`. Complements `benches/relay.rs`, whose wall-clock numbers
//! depend on the machine's load.

use std::sync::Arc;
use std::time::SystemTime;

use criterion::{black_box, Criterion};
use sealpost::transform::outbound::{self, Treatment};
use sealpost_keyring::{GenerateRequest, Keyring, OpenOptions};

/// About 10 KB, shaped like smtp-source's messages plus the gateway's trace header.
fn message() -> Vec<u8> {
    let mut m = String::from(
        "Received: from bench.example ([127.0.0.1])\r\n\tby gw (sealpost) with ESMTP id 0123456789AB\r\n\tfor <sink@example.net>; Sun, 29 Nov 2026 04:00:00 +0000\r\n\
         From: <bench@example.org>\r\nTo: <sink@example.net>\r\nDate: Sun, 29 Nov 2026 04:00:00 +0000\r\n\
         Message-Id: <20261129040000.0123@bench.example>\r\n\r\n",
    );
    let line = format!("{}\r\n", "X".repeat(78));
    while m.len() < 10 * 1024 {
        m.push_str(&line);
    }
    m.into_bytes()
}

fn main() {
    let keyring = Keyring::open_memory(OpenOptions::default()).expect("keyring");
    for email in ["bench@example.org", "sink@example.net"] {
        keyring
            .generate(&GenerateRequest {
                email: email.into(),
                name: None,
                profile: Default::default(),
                cipher: Default::default(),
                ..Default::default()
            })
            .expect("generate");
    }
    let now = SystemTime::now();
    let signer = keyring
        .signing_cert_for("bench@example.org", now)
        .expect("lookup")
        .expect("a signing key");
    let recipients = keyring
        .lookup_encryption("sink@example.net", now)
        .expect("a recipient key");
    let message = message();
    let treatment = Treatment::Encrypt {
        recipients: recipients.clone(),
        signer: Some(Arc::clone(&signer)),
        protect_subject: true,
    };
    let unsigned = Treatment::Encrypt {
        recipients,
        signer: None,
        protect_subject: true,
    };
    let policy = keyring.policy();

    let mut c = Criterion::default().configure_from_args();
    c.bench_function("classify 10 KB", |b| {
        b.iter(|| black_box(outbound::classify(black_box(&message)).expect("plain")))
    });
    c.bench_function("protect 10 KB: encrypt + sign", |b| {
        b.iter(|| black_box(outbound::protect(&message, &treatment, policy, now).expect("ok")))
    });
    c.bench_function("protect 10 KB: encrypt only", |b| {
        b.iter(|| black_box(outbound::protect(&message, &unsigned, policy, now).expect("ok")))
    });
    c.bench_function("autocrypt header", |b| {
        b.iter(|| {
            black_box(
                outbound::autocrypt::header(&signer, "bench@example.org", policy, now)
                    .expect("header"),
            )
        })
    });
    c.final_summary();
}
