//! Recipient lookup in a keyring of 100,000 certificates, against parsing one certificate;
//! then cold lookups (nothing cached in the keyring) of 10,000 certificates in a keyring
//! in PostgreSQL, against the same in sled, in the same run.
//!
//! `cargo bench -p sealpost-keyring`. The keyring is generated once and kept under
//! `target/bench-keyring/`; later runs reuse it. Both costs are measured in the same run,
//! with criterion and with a plain timing loop whose medians give the printed ratio.
//! The PostgreSQL part starts a private cluster as the integration tests do, and is
//! skipped, saying so, where PostgreSQL is not installed.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use criterion::{black_box, Criterion};
use sealpost_keyring::openpgp::cert::CertBuilder;
use sealpost_keyring::openpgp::parse::Parse;
use sealpost_keyring::openpgp::serialize::SerializeInto;
use sealpost_keyring::openpgp::Cert;
use sealpost_keyring::{Keyring, OpenOptions};

#[path = "../../benches/support/postgres.rs"]
mod postgres;

const CERTS: usize = 100_000;
/// Certificates looked up once each, cold, in the sled and PostgreSQL keyrings.
const COLD: usize = 10_000;
/// Addresses looked up in the warm phase: a busy gateway's working set.
const WORKING_SET: usize = 2_000;

fn main() {
    // `cargo test --benches` runs this without `--bench`: no PostgreSQL and no cold run.
    if std::env::args().any(|a| a == "--bench") {
        cold_lookups();
    }
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
    let chunks = generate(CERTS, "user");
    let keyring = Keyring::open(dir, OpenOptions::default()).expect("open");
    let start = Instant::now();
    for chunk in chunks {
        keyring.import(&chunk).expect("import");
    }
    eprintln!("imported them in {:.1?}", start.elapsed());
    std::fs::write(done, b"").expect("mark complete");
    keyring
}

/// `n` certificates for `{prefix}{i}@bench.example`, made on every core: one keyring
/// (concatenated certificates) per thread.
fn generate(n: usize, prefix: &str) -> Vec<Vec<u8>> {
    let start = Instant::now();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunks: Vec<Vec<u8>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut out = Vec::new();
                    for i in (t..n).step_by(threads) {
                        let (cert, _) = CertBuilder::new()
                            .add_userid(format!("User {i} <{prefix}{i}@bench.example>"))
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
    eprintln!("generated {n} certificates in {:.1?}", start.elapsed());
    chunks
}

/// Each of [`COLD`] addresses looked up once in a keyring just opened, so that every
/// lookup reads its index entry and certificate from the store and parses and checks the
/// certificate: in sled (the baseline) and in PostgreSQL, with the same certificates.
/// (PostgreSQL's own buffers hold the rows, just written: cold is the gateway's cache.)
fn cold_lookups() {
    let chunks = generate(COLD, "cold");
    let addrs: Vec<String> = (0..COLD)
        .map(|i| format!("cold{}@bench.example", (i * 7919) % COLD))
        .collect();
    let fill = |keyring: &Keyring| {
        let start = Instant::now();
        for chunk in &chunks {
            keyring.import(chunk).expect("import");
        }
        start.elapsed()
    };
    let measure = |keyring: &Keyring| {
        let now = SystemTime::now();
        let mut v: Vec<f64> = addrs
            .iter()
            .map(|a| {
                let start = Instant::now();
                black_box(keyring.lookup_encryption(a, now).expect("usable"));
                start.elapsed().as_secs_f64()
            })
            .collect();
        v.sort_by(f64::total_cmp);
        let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize] * 1e6;
        (at(0.50), at(0.99))
    };

    let dir = tempfile::tempdir().expect("tempdir");
    let took = fill(&Keyring::open(dir.path(), OpenOptions::default()).expect("open sled"));
    eprintln!("imported {COLD} certificates into sled in {took:.1?}");
    let (s50, s99) = measure(&Keyring::open(dir.path(), OpenOptions::default()).expect("open"));
    println!("cold lookups of {COLD} certificates, each once, in a keyring just opened:");
    println!("  sled:       p50 {s50:>7.1} µs, p99 {s99:>7.1} µs");

    let Some(pg) = postgres::Postgres::start() else {
        println!("  PostgreSQL: skipped (PostgreSQL is not installed)");
        return;
    };
    let open = || Keyring::open_url(&pg.url(), OpenOptions::default()).expect("open PostgreSQL");
    let took = fill(&open());
    eprintln!("imported {COLD} certificates into PostgreSQL in {took:.1?}");
    let (p50, p99) = measure(&open());
    println!(
        "  PostgreSQL: p50 {p50:>7.1} µs, p99 {p99:>7.1} µs (database on this machine, over TCP)"
    );
}
