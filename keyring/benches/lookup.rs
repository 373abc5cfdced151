//! Recipient lookup in a keyring of 100,000 certificates, against parsing one certificate.
//!
//! `cargo bench -p sealpost-keyring`. The keyring is generated once and kept under
//! `target/bench-keyring/`; later runs reuse it. Both costs are measured in the same run,
//! with criterion and with a plain timing loop whose medians give the printed ratio.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use criterion::{black_box, Criterion};
use sealpost_keyring::openpgp::cert::CertBuilder;
use sealpost_keyring::openpgp::parse::Parse;
use sealpost_keyring::openpgp::serialize::SerializeInto;
use sealpost_keyring::openpgp::Cert;
use sealpost_keyring::{Keyring, OpenOptions};

const CERTS: usize = 100_000;
/// Addresses looked up in the warm phase: a busy gateway's working set.
const WORKING_SET: usize = 2_000;

fn main() {
    let dir = keyring_dir();
    let keyring = open_or_build(&dir);
    let now = SystemTime::now();

    // A deterministic spread of addresses over the whole keyring.
    let addrs: Vec<String> = (0..WORKING_SET)
        .map(|i| format!("user{}@bench.example", (i * 7919) % CERTS))
        .collect();
    for a in &addrs {
        keyring.lookup_encryption(a, now).expect("usable");
    }
    let typical = CertBuilder::general_purpose(Some("Typical User <typical@example.org>"))
        .generate()
        .expect("generate")
        .0
        .to_vec()
        .expect("serialize");

    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(5));
    let mut i = 0usize;
    c.bench_function("warm lookup_encryption by email (100k keyring)", |b| {
        b.iter(|| {
            i = (i + 1) % addrs.len();
            black_box(keyring.lookup_encryption(&addrs[i], now).expect("usable"))
        })
    });
    c.bench_function("Cert::from_bytes (one certificate)", |b| {
        b.iter(|| black_box(Cert::from_bytes(black_box(&typical)).expect("parse")))
    });
    c.final_summary();

    // The ratio from medians of the same run, measured the same way.
    let lookup = median_ns(200, 100, |n| {
        let a = &addrs[n % addrs.len()];
        black_box(keyring.lookup_encryption(a, now).expect("usable"));
    });
    let parse = median_ns(200, 10, |_| {
        black_box(Cert::from_bytes(&typical).expect("parse"));
    });
    println!(
        "keyring of {CERTS} certificates: warm lookup median {:.2} µs, one parse median {:.2} µs, ratio: {:.1}× (target ≥ 20×)",
        lookup / 1e3,
        parse / 1e3,
        parse / lookup
    );
}

/// Median nanoseconds per call over `samples` batches of `batch` calls.
fn median_ns(samples: usize, batch: usize, mut f: impl FnMut(usize)) -> f64 {
    let mut v = Vec::with_capacity(samples);
    let mut n = 0;
    for _ in 0..samples {
        let start = Instant::now();
        for _ in 0..batch {
            f(n);
            n += 1;
        }
        v.push(start.elapsed().as_nanos() as f64 / batch as f64);
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn keyring_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("bench-keyring").join(CERTS.to_string())
}

/// Opens the cached keyring, or generates it: certificates made on every core, imported in
/// one batch.
fn open_or_build(dir: &std::path::Path) -> Keyring {
    let done = dir.join("complete");
    if done.exists() {
        let start = Instant::now();
        let keyring = Keyring::open(dir, OpenOptions::default()).expect("open cached keyring");
        eprintln!("opened the cached keyring in {:.1?}", start.elapsed());
        return keyring;
    }
    let _ = std::fs::remove_dir_all(dir);
    let start = Instant::now();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunks: Vec<Vec<u8>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut out = Vec::new();
                    for i in (t..CERTS).step_by(threads) {
                        let (cert, _) = CertBuilder::new()
                            .add_userid(format!("User {i} <user{i}@bench.example>"))
                            .add_transport_encryption_subkey()
                            .generate()
                            .expect("generate");
                        out.extend(cert.to_vec().expect("serialize"));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    eprintln!("generated {CERTS} certificates in {:.1?}", start.elapsed());
    let keyring = Keyring::open(dir, OpenOptions::default()).expect("open");
    let start = Instant::now();
    for chunk in chunks {
        keyring.import(&chunk).expect("import");
    }
    eprintln!("imported them in {:.1?}", start.elapsed());
    std::fs::write(done, b"").expect("mark complete");
    keyring
}
