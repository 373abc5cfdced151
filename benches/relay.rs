//! Relay load benchmark, all in one run: smtp-source straight to smtp-sink, through
//! sealpost in pass-through (no keys), through sealpost encrypting and signing (one
//! Cv25519 recipient key, a Cv25519 sender key), and through sealpost encrypting and
//! signing with its keyring in PostgreSQL (a private cluster the bench starts; skipped,
//! saying so, where PostgreSQL is not installed).
//!
//! `cargo bench --bench relay` (set `RELAY_BENCH_MESSAGES` to change the count). Drives
//! 10 KB messages over 32 concurrent sessions with Postfix's smtp-source; prints the
//! throughputs and their ratios, the gateway's peak RSS, p50/p99 added latency from
//! sequential sends, the RSS of 10,000 idle connections, the peak RSS of encrypting a
//! message with a 20 MB attachment, and the PostgreSQL keyring's warm throughput
//! against the sled keyring's, from alternating runs of both gateways.

mod support;

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{
    children_cpu_seconds, cpu_seconds, expect, open_data, percentiles, sealpost_with_env, Sink,
};

const SESSIONS: usize = 32;
const SIZE: usize = 10 * 1024;
const IDLE: usize = 10_000;
/// Alternating runs of the sled and PostgreSQL gateways, each of the full count.
const KEYRING_ROUNDS: usize = 2;
/// Messages sent to each of those gateways first, so that both are measured warm.
const WARM_UP: usize = 500;

fn main() {
    let Some(messages) = support::load_run("RELAY_BENCH_MESSAGES", 20_000) else {
        return;
    };
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    support::as_deployed();

    let sink = Sink::start();
    let direct_load = Load::measure(sink.port, messages, &sink, None);
    let direct = direct_load.rate;
    let direct_lat = latencies(sink.port, 500);

    let gw = Gateway::start(sink.port, Keys::None);
    let relayed_load = Load::measure(gw.port(), messages, &sink, Some(gw.server.pid()));
    let relayed = relayed_load.rate;
    let relay_lat = latencies(gw.port(), 500);
    let peak_rss = gw.status("VmHWM:");
    let before_idle = gw.status("VmRSS:");
    let idle = hold_idle(gw.port(), IDLE);
    let idle_rss = gw.status("VmRSS:");
    drop(idle);
    drop(gw);

    let enc = Gateway::start(sink.port, Keys::Sled);
    let encrypted_load = Load::measure(enc.port(), messages, &sink, Some(enc.server.pid()));
    let encrypted = encrypted_load.rate;
    let enc_rss = enc.status("VmHWM:");
    let big = big_message(enc.port());
    let big_rss = enc.status("VmHWM:");

    // The same load through a gateway whose keyring is in PostgreSQL, alternating with
    // the sled gateway, so that what else runs on the machine falls on both alike.
    let pg = support::postgres::Postgres::start();
    let keyrings = pg.as_ref().map(|pg| {
        let shared = Gateway::start(sink.port, Keys::Postgres(pg.url()));
        throughput(enc.port(), WARM_UP);
        throughput(shared.port(), WARM_UP);
        let (mut on_sled, mut on_pg) = (Vec::new(), Vec::new());
        for _ in 0..KEYRING_ROUNDS {
            on_sled.push(throughput(enc.port(), messages));
            on_pg.push(throughput(shared.port(), messages));
        }
        (on_sled, on_pg)
    });

    let ratio = relayed / direct;
    println!("relay bench: {messages} messages of {SIZE} bytes, {SESSIONS} sessions");
    println!("  direct to smtp-sink:   {direct:>9.0} msg/s");
    println!("  through sealpost:      {relayed:>9.0} msg/s");
    println!(
        "  ratio:                 {:>9.1}%  (target >= 80%)",
        ratio * 100.0
    );
    println!(
        "  sealpost peak RSS:     {:>9.1} MB (target < 100 MB)",
        peak_rss
    );
    let (d50, d99) = percentiles(&direct_lat);
    let (r50, r99) = percentiles(&relay_lat);
    println!(
        "  latency direct:        p50 {:.2} ms, p99 {:.2} ms",
        d50 * 1e3,
        d99 * 1e3
    );
    println!(
        "  latency via sealpost:  p50 {:.2} ms, p99 {:.2} ms  (added: p50 {:.2} ms, p99 {:.2} ms)",
        r50 * 1e3,
        r99 * 1e3,
        (r50 - d50) * 1e3,
        (r99 - d99) * 1e3
    );
    println!(
        "  {IDLE} idle connections: RSS {:.1} MB (was {:.1} MB before; target < 200 MB)",
        idle_rss, before_idle
    );
    println!("  encrypted + signed:    {encrypted:>9.0} msg/s");
    println!(
        "  encrypted / pass-through: {:>6.1}%  (target >= 70%); peak RSS {:.1} MB",
        encrypted / relayed * 100.0,
        enc_rss
    );
    println!(
        "  {:.1} MB message encrypted: peak RSS {:.1} MB = {:.1}x the message (target < 3x)",
        big as f64 / 1048576.0,
        big_rss,
        big_rss * 1048576.0 / big as f64
    );
    println!(
        "  encrypted + signed / direct: {:>5.1}%  (target >= 45%)",
        encrypted / direct * 100.0
    );
    cpu_report(&direct_load, &relayed_load, &encrypted_load);
    match keyrings {
        Some((on_sled, on_pg)) => {
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
            let runs = |v: &[f64]| {
                v.iter()
                    .map(|r| format!("{r:.0}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            println!("  keyring in sled vs PostgreSQL, encrypted + signed, warm ({KEYRING_ROUNDS} alternating runs each):");
            println!(
                "    sled:       {:>9.0} msg/s (runs: {})",
                mean(&on_sled),
                runs(&on_sled)
            );
            println!(
                "    PostgreSQL: {:>9.0} msg/s (runs: {})",
                mean(&on_pg),
                runs(&on_pg)
            );
            println!(
                "    PostgreSQL / sled: {:>6.1}%  (target >= 95%)",
                mean(&on_pg) / mean(&on_sled) * 100.0
            );
        }
        None => println!("  keyring in PostgreSQL: skipped (PostgreSQL is not installed)"),
    }
}

/// Where an encrypting gateway keeps its keys.
enum Keys {
    /// None: pass-through.
    None,
    /// The sled keyring in its data directory.
    Sled,
    /// The PostgreSQL keyring at this URL.
    Postgres(String),
}

/// A `sealpost serve` relaying to `upstream`, on its own data directory.
struct Gateway {
    // Declared first: the server stops before its directory goes.
    server: support::Gateway,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// With keys, the keyring holds a secret key for the sender and a key for the
    /// recipient smtp-source uses, so every message is signed and encrypted. Both
    /// encrypting gateways have a keyring passphrase, which the PostgreSQL keyring needs
    /// for secret keys, so that they differ in their keyring only.
    fn start(upstream: u16, keys: Keys) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let passphrase = dir.path().join("passphrase");
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&passphrase)
                .and_then(|mut f| f.write_all(b"bench passphrase"))
                .expect("write passphrase");
        }
        let pass = passphrase.to_str().expect("path");
        let (env, keyring): (Vec<(&str, &str)>, String) = match &keys {
            Keys::None => (Vec::new(), String::new()),
            Keys::Sled => (vec![("SEALPOST_PASSPHRASE_FILE", pass)], String::new()),
            Keys::Postgres(url) => (
                vec![
                    ("SEALPOST_PASSPHRASE_FILE", pass),
                    ("SEALPOST_KEYRING_URL", url.as_str()),
                ],
                format!("[keyring]\nurl = \"{url}\"\n"),
            ),
        };
        if !matches!(keys, Keys::None) {
            for email in ["bench@example.org", "sink@example.net"] {
                sealpost_with_env(&data, &["keys", "generate", email], &env);
            }
        }
        let config = format!(
            "[[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\
             max_connections = 20000\nmax_connections_per_ip = 20000\n\n\
             [upstream]\naddress = \"127.0.0.1:{upstream}\"\ntls = \"none\"\n\n{keyring}"
        );
        let serve_env: Vec<(&str, &std::path::Path)> = if matches!(keys, Keys::None) {
            Vec::new()
        } else {
            vec![("SEALPOST_PASSPHRASE_FILE", passphrase.as_path())]
        };
        Gateway {
            server: support::Gateway::start_with_env(&data, &config, &serve_env),
            _dir: dir,
        }
    }

    fn port(&self) -> u16 {
        self.server.port
    }

    /// A field of /proc/PID/status, in MB.
    fn status(&self, field: &str) -> f64 {
        self.server.status(field)
    }
}

/// One load run: its rate, and the CPU time each process spent per message.
struct Load {
    rate: f64,
    source_us: f64,
    sink_us: f64,
    gateway_us: f64,
}

impl Load {
    /// [`throughput`] on `port`, with the CPU time of smtp-source, of the sink and of the
    /// gateway process `gateway` (none when smtp-source talks to the sink directly).
    fn measure(port: u16, messages: usize, sink: &Sink, gateway: Option<u32>) -> Load {
        let gateway_cpu = || gateway.map_or(0.0, cpu_seconds);
        let before = (
            children_cpu_seconds(),
            cpu_seconds(sink.pid()),
            gateway_cpu(),
        );
        let rate = throughput(port, messages);
        let per_message = |after: f64, before: f64| (after - before) * 1e6 / messages as f64;
        Load {
            rate,
            source_us: per_message(children_cpu_seconds(), before.0),
            sink_us: per_message(cpu_seconds(sink.pid()), before.1),
            gateway_us: per_message(gateway_cpu(), before.2),
        }
    }

    fn total_us(&self) -> f64 {
        self.source_us + self.sink_us + self.gateway_us
    }
}

/// Where the CPU goes, and what the ratios to direct can reach on this machine. The load
/// tools share the cores with sealpost, so once the cores are busy a run's rate is about
/// the cores divided by the CPU time all three processes spend per message: the ratio to
/// direct is then the ratio of those totals, which the line "CPU-bound estimate" checks
/// against the measured one.
fn cpu_report(direct: &Load, relayed: &Load, encrypted: &Load) {
    println!("  CPU time per message (µs):  smtp-source  smtp-sink  sealpost     total");
    for (name, load) in [
        ("direct", direct),
        ("pass-through", relayed),
        ("encrypted + signed", encrypted),
    ] {
        println!(
            "    {name:<22} {:>11.0} {:>10.0} {:>9.0} {:>9.0}",
            load.source_us,
            load.sink_us,
            load.gateway_us,
            load.total_us()
        );
    }
    println!(
        "  CPU-bound estimate of the ratios (direct total / run total): pass-through {:.1}%, encrypted + signed {:.1}%",
        direct.total_us() / relayed.total_us() * 100.0,
        direct.total_us() / encrypted.total_us() * 100.0
    );
    // A proxy must at least receive the sessions smtp-sink receives in the direct run; the
    // bound takes that as sealpost's whole cost, relaying included.
    let floor = relayed.source_us + relayed.sink_us + direct.sink_us;
    println!(
        "  ceiling of pass-through on these cores: were sealpost to spend no more per message \
         than smtp-sink spends receiving the same sessions ({:.0} µs), the ratio would be {:.1}%",
        direct.sink_us,
        direct.total_us() / floor * 100.0
    );
    let budget = direct.total_us() / 0.45 - encrypted.source_us - encrypted.sink_us;
    println!(
        "  45% of direct for encrypted + signed leaves sealpost {:.0} µs per message; \
         it spends {:.0} (pass-through {:.0}, encrypting and signing {:.0} more)",
        budget,
        encrypted.gateway_us,
        relayed.gateway_us,
        encrypted.gateway_us - relayed.gateway_us
    );
}

/// Messages per second from smtp-source.
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

/// Seconds from the end of DATA to the 250, for `n` messages sent one after another on
/// one session.
fn latencies(port: u16, n: usize) -> Vec<f64> {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut w = stream.try_clone().expect("clone");
    let mut r = BufReader::new(stream);
    let body: String = "x".repeat(76) + "\r\n";
    let message = format!(
        "From: bench@example.org\r\nTo: sink@example.net\r\nSubject: latency\r\n\r\n{}.\r\n",
        body.repeat(SIZE / body.len())
    );
    expect(&mut r, "220");
    w.write_all(b"EHLO bench.example\r\n").expect("write");
    expect(&mut r, "250 ");
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        w.write_all(b"MAIL FROM:<bench@example.org>\r\n")
            .expect("write");
        expect(&mut r, "250");
        w.write_all(b"RCPT TO:<sink@example.net>\r\n")
            .expect("write");
        expect(&mut r, "250");
        w.write_all(b"DATA\r\n").expect("write");
        expect(&mut r, "354");
        let start = Instant::now();
        w.write_all(message.as_bytes()).expect("write");
        expect(&mut r, "250");
        out.push(start.elapsed().as_secs_f64());
    }
    let _ = w.write_all(b"QUIT\r\n");
    out
}

/// Sends one message with a 20 MB attachment; returns its size.
fn big_message(port: u16) -> usize {
    let line = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n";
    let mut message = String::from(
        "From: bench@example.org\r\nTo: sink@example.net\r\nSubject: big\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
         --b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n",
    );
    while message.len() < 20 * 1024 * 1024 {
        message.push_str(line);
    }
    message.push_str("--b--\r\n.\r\n");
    let (mut w, mut r) = open_data(
        port,
        "bench@example.org",
        "sink@example.net",
        Duration::from_secs(120),
    );
    w.write_all(message.as_bytes()).expect("write");
    expect(&mut r, "250");
    message.len()
}

/// Opens `n` connections and reads each greeting; they stay open while the result lives.
fn hold_idle(port: u16, n: usize) -> Vec<TcpStream> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("idle connect");
        let mut buf = [0u8; 512];
        let _ = s.read(&mut buf);
        conns.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    conns
}
