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
//! Targets on 2 cores: pass-through >= 0.80 of direct, encrypt+sign >= 0.45.

mod support;

use std::path::Path;

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
    // Measured as deployed (the systemd unit and the container set neither): with
    // RUST_BACKTRACE=1 inherited from a developer's shell, every encrypted message pays a
    // backtrace capture inside sequoia (an error made and dropped as its encryptor is
    // dropped after finalize), most of the quarter of encrypt+sign throughput that one
    // A/B run lost (the decision trail being on in it too).
    std::env::remove_var("RUST_BACKTRACE");
    std::env::remove_var("RUST_LIB_BACKTRACE");

    let sink = Sink::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = start(&dir.path().join("plain"), sink.port, false);
    let encrypting = start(&dir.path().join("encrypting"), sink.port, true);

    let (mut direct, mut relayed, mut encrypted) = (0f64, 0f64, 0f64);
    for round in 1..=rounds {
        // Interleaved, so that a burst of load from elsewhere hits all three alike.
        let d = throughput(sink.port, messages);
        let r = throughput(plain.gw.port, messages);
        let e = throughput(encrypting.gw.port, messages);
        println!(
            "  round {round}: direct {d:.0} msg/s, pass-through {r:.0} ({:.2}), encrypt+sign {e:.0} ({:.2})",
            r / d,
            e / d
        );
        direct = direct.max(d);
        relayed = relayed.max(r);
        encrypted = encrypted.max(e);
    }
    let total = (rounds * messages) as f64;
    println!(
        "upstream bench: {messages} messages of {SIZE} bytes, {SESSIONS} sessions, best of {rounds} rounds"
    );
    println!("  direct to smtp-sink:   {direct:>8.0} msg/s");
    println!(
        "  pass-through:          {relayed:>8.0} msg/s = {:.2} of direct (target >= 0.80); peak RSS {:.1} MB",
        relayed / direct,
        plain.gw.status("VmHWM:")
    );
    println!(
        "  encrypt + sign:        {encrypted:>8.0} msg/s = {:.2} of direct (target >= 0.45); peak RSS {:.1} MB",
        encrypted / direct,
        encrypting.gw.status("VmHWM:")
    );
    println!(
        "  {total:.0} messages through each gateway; upstream connections opened: pass-through {}, encrypt + sign {}",
        connections(&plain),
        connections(&encrypting)
    );
}

/// A `sealpost serve` relaying to smtp-sink on `upstream`; with `keys`, every message of
/// [`throughput`] is signed and encrypted.
fn start(data: &Path, upstream: u16, keys: bool) -> Bench {
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
        gw: Gateway::start(data, &config),
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
