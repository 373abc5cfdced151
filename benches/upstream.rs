//! Upstream connection reuse under load, all in one run: smtp-source straight to
//! smtp-sink (the baseline), through sealpost in pass-through (no keys), and through
//! sealpost encrypting and signing (a Cv25519 recipient key and sender key). Each
//! gateway's throughput is printed as a ratio of the direct one measured in the same run,
//! with the number of upstream connections it opened (from smtp-sink's own count), which
//! shows whether connections are reused.
//!
//! `cargo bench --bench upstream` (`UPSTREAM_BENCH_MESSAGES` sets the count, 20,000 by
//! default; `UPSTREAM_BENCH_ROUNDS` the rounds, 3: the best of each is kept, since the
//! load tools and the gateway share the machine's cores with whatever else runs).
//! `UPSTREAM_BENCH_BINARIES=/path/a,/path/b` compares builds of sealpost in the same run,
//! each round measuring them one after the other, so that load from elsewhere hits them
//! alike (this build's binary by default).
//! Targets on 2 cores: pass-through >= 0.80 of direct, encrypt+sign >= 0.45.

mod support;

use std::path::{Path, PathBuf};

use support::{sealpost, Gateway, Sink};

const SESSIONS: usize = 32;
const SIZE: usize = 10 * 1024;

fn main() {
    let Some(messages) = support::load_run("UPSTREAM_BENCH_MESSAGES", 20_000) else {
        return;
    };
    let rounds = std::env::var("UPSTREAM_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3usize);
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    support::as_deployed();

    let binaries: Vec<PathBuf> = match std::env::var("UPSTREAM_BENCH_BINARIES") {
        Ok(list) => list.split(',').map(PathBuf::from).collect(),
        Err(_) => vec![PathBuf::from(env!("CARGO_BIN_EXE_sealpost"))],
    };
    let sink = Sink::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let builds: Vec<Build> = binaries
        .iter()
        .enumerate()
        .map(|(i, bin)| Build {
            name: bin.display().to_string(),
            plain: start(bin, &dir.path().join(format!("plain{i}")), sink.port, false),
            encrypting: start(
                bin,
                &dir.path().join(format!("encrypting{i}")),
                sink.port,
                true,
            ),
            relayed: Vec::new(),
            encrypted: Vec::new(),
        })
        .collect();
    let mut builds = builds;

    let mut direct = Vec::new();
    for round in 1..=rounds {
        // Interleaved, so that a burst of load from elsewhere hits all alike.
        let d = throughput(sink.port, messages);
        direct.push(d);
        let mut line = format!("  round {round}: direct {d:.0} msg/s");
        for (i, b) in builds.iter_mut().enumerate() {
            let r = throughput(b.plain.gw.port, messages);
            let e = throughput(b.encrypting.gw.port, messages);
            b.relayed.push(r / d);
            b.encrypted.push(e / d);
            line.push_str(&format!(
                "; build {i}: pass-through {r:.0} ({:.2}), encrypt+sign {e:.0} ({:.2})",
                r / d,
                e / d
            ));
        }
        println!("{line}");
    }
    let (lo, hi) = range(&direct);
    println!(
        "upstream bench: {messages} messages of {SIZE} bytes, {SESSIONS} sessions, {rounds} rounds; \
         direct to smtp-sink {lo:.0} to {hi:.0} msg/s"
    );
    for (i, b) in builds.iter().enumerate() {
        let (rl, rh) = range(&b.relayed);
        let (el, eh) = range(&b.encrypted);
        println!("  build {i} ({})", b.name);
        println!(
            "    pass-through:   {rl:.2} to {rh:.2} of direct (target >= 0.80); peak RSS {:.1} MB",
            b.plain.gw.status("VmHWM:")
        );
        println!(
            "    encrypt + sign: {el:.2} to {eh:.2} of direct (target >= 0.45); peak RSS {:.1} MB",
            b.encrypting.gw.status("VmHWM:")
        );
        println!(
            "    {} messages through each gateway; upstream connections opened: pass-through {}, encrypt + sign {}",
            rounds * messages,
            connections(&b.plain),
            connections(&b.encrypting)
        );
    }
}

/// One build of sealpost under test: its two gateways and their ratios to direct, per
/// round.
struct Build {
    name: String,
    plain: Bench,
    encrypting: Bench,
    relayed: Vec<f64>,
    encrypted: Vec<f64>,
}

/// The lowest and the highest of `v`.
fn range(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)))
}

/// A `sealpost serve` relaying to smtp-sink on `upstream`; with `keys`, every message of
/// [`throughput`] is signed and encrypted.
fn start(bin: &Path, data: &Path, upstream: u16, keys: bool) -> Bench {
    if keys {
        for email in ["bench@example.org", "sink@example.net"] {
            sealpost(data, &["keys", "generate", email]);
        }
    }
    let http = support::free_port();
    let config = format!(
        "[[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\
         max_connections = 2000\nmax_connections_per_ip = 2000\n\n\
         [upstream]\naddress = \"127.0.0.1:{upstream}\"\ntls = \"none\"\n\n\
         [admin]\nhttp = \"127.0.0.1:{http}\"\n"
    );
    Bench {
        gw: Gateway::start_bin(bin, data, &config, &[]),
        http,
    }
}

/// A gateway and its metrics port.
struct Bench {
    gw: Gateway,
    http: u16,
}

/// Messages per second from smtp-source to `port`.
fn throughput(port: u16, messages: usize) -> f64 {
    let size = SIZE.to_string();
    let args = [
        "-l",
        &size,
        "-f",
        "bench@example.org",
        "-t",
        "sink@example.net",
    ];
    support::smtp_source(port, SESSIONS, messages, &args)
}

/// `sealpost_upstream_connections_total` from the gateway's `/metrics`: how many SMTP
/// connections it opened upstream.
fn connections(gw: &Bench) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", gw.http)) else {
        return "unknown (no /metrics)".into();
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .find(|l| l.starts_with("sealpost_upstream_connections_total "))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("unknown")
        .to_string()
}
