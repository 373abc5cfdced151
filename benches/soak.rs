//! Soak run: a long mixed load through one gateway, to show that nothing is lost and that
//! memory and file descriptors stay flat.
//!
//! `cargo bench --bench soak` (30 minutes; `SOAK_SECONDS` changes it, `SOAK_CONNECTIONS`
//! the 200 concurrent client connections). Each client loops: one message of 1 KB to
//! 10 MB (most small, a few large), to 1 to 50 recipients, some with keys (encrypted),
//! some without (signed), some only in the envelope (Bcc, a copy of their own). The
//! upstream is a counting sink in this process. Printed at the end:
//! - messages and recipients the gateway accepted (250) against recipients the sink got,
//!   once the spool has drained: any difference is mail lost (or duplicated);
//! - the gateway's RSS and open file descriptors sampled every 10 s, with their range
//!   over the last two thirds of the run (flat means no growth there);
//! - p50 and p99 from the end of DATA to the 250, through the gateway, and for the same
//!   clients straight to the sink for the first minute of the run (the baseline).

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use support::{percentiles, sealpost};

/// Recipients with keys, and without.
const KEYED: usize = 30;
const KEYLESS: usize = 60;

fn main() {
    let Some(seconds) = support::load_run("SOAK_SECONDS", 1800) else {
        return;
    };
    let connections: usize = std::env::var("SOAK_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let _ = rlimit::increase_nofile_limit(u64::MAX);

    let sink = CountingSink::start();
    let bodies = Arc::new(Bodies::new());

    // The baseline: the same clients straight to the sink, for a minute at most.
    let base_secs = (seconds / 30).clamp(5, 60);
    let direct = run_clients(
        sink.port,
        connections,
        Duration::from_secs(base_secs as u64),
        &bodies,
        None,
    );
    sink.reset();
    eprintln!(
        "soak: baseline done ({} messages straight to the sink); starting the gateway",
        direct.messages
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    sealpost(&data, &["keys", "generate", "soak@example.org"]);
    for i in 0..KEYED {
        sealpost(&data, &["keys", "generate", &format!("k{i}@keyed.example")]);
    }
    let config = format!(
        "[[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\
         max_connections = 5000\nmax_connections_per_ip = 5000\nmax_message_size = 12582912\n\n\
         [upstream]\naddress = \"127.0.0.1:{}\"\ntls = \"none\"\n\n\
         [delivery]\nretry = \"5s\"\n",
        sink.port
    );
    let gw = support::Gateway::start(&data, &config);

    let samples: Arc<Mutex<Vec<(f64, f64, usize)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (samples, stop) = (samples.clone(), stop.clone());
        let pid = gw.pid();
        let start = Instant::now();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let rss = status_mb(pid, "VmRSS:");
                let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
                    .map(|d| d.count())
                    .unwrap_or(0);
                let t = start.elapsed().as_secs_f64();
                eprintln!("soak: t={t:.0}s RSS {rss:.1} MB, {fds} fds");
                samples.lock().expect("samples").push((t, rss, fds));
                std::thread::sleep(Duration::from_secs(10));
            }
        })
    };
    let through = run_clients(
        gw.port,
        connections,
        Duration::from_secs(seconds as u64),
        &bodies,
        Some(()),
    );
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();

    // Whatever was spooled drains to the sink; wait for it, bounded.
    eprintln!(
        "soak: load done; {} recipients accepted, {} at the sink so far",
        through.recipients,
        sink.recipients()
    );
    let deadline = Instant::now() + Duration::from_secs(300);
    while sink.recipients() < through.recipients && Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
    }
    let received = sink.recipients();
    let peak = gw.status("VmHWM:");

    println!("soak: {seconds} s, {connections} connections, 1 KB to 10 MB, 1 to 50 recipients");
    println!(
        "  accepted:  {} messages, {} recipients ({} refused 4xx/5xx, {} errors)",
        through.messages, through.recipients, through.refused, through.errors
    );
    println!(
        "  delivered: {received} recipients at the sink; lost {}",
        through.recipients as i64 - received as i64
    );
    let s = samples.lock().expect("samples");
    let tail: Vec<&(f64, f64, usize)> = s.iter().filter(|x| x.0 >= seconds as f64 / 3.0).collect();
    let range = |f: &dyn Fn(&(f64, f64, usize)) -> f64| {
        tail.iter()
            .map(|x| f(x))
            .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)))
    };
    let (rlo, rhi) = range(&|x| x.1);
    let (flo, fhi) = range(&|x| x.2 as f64);
    println!(
        "  RSS over the last two thirds: {rlo:.1} to {rhi:.1} MB (peak {peak:.1} MB); fds {flo:.0} to {fhi:.0}"
    );
    for (t, rss, fds) in s.iter().step_by((s.len() / 12).max(1)) {
        println!("    t={t:>6.0}s  RSS {rss:>7.1} MB  fds {fds}");
    }
    let (d50, d99) = percentiles(&direct.latencies);
    let (g50, g99) = percentiles(&through.latencies);
    println!(
        "  latency direct (baseline, {base_secs} s): p50 {:.1} ms, p99 {:.1} ms",
        d50 * 1e3,
        d99 * 1e3
    );
    println!(
        "  latency through sealpost:  p50 {:.1} ms, p99 {:.1} ms  (p99 ratio {:.1}x)",
        g50 * 1e3,
        g99 * 1e3,
        g99 / d99
    );
}

fn status_mb(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Message bodies of the sizes the clients send, built once.
struct Bodies {
    /// (size in bytes, body lines ending in CRLF)
    sizes: Vec<(usize, Vec<u8>)>,
}

impl Bodies {
    fn new() -> Bodies {
        let line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n";
        let sizes = [1 << 10, 10 << 10, 100 << 10, 1 << 20, 10 << 20]
            .into_iter()
            .map(|size| {
                let mut body = Vec::with_capacity(size + line.len());
                while body.len() < size {
                    body.extend_from_slice(line);
                }
                (size, body)
            })
            .collect();
        Bodies { sizes }
    }

    /// Mostly small: 1 KB 45%, 10 KB 35%, 100 KB 15%, 1 MB 4%, 10 MB 1%.
    fn pick(&self, rng: &mut impl Rng) -> &[u8] {
        let i = match rng.gen_range(0..100) {
            0..45 => 0,
            45..80 => 1,
            80..95 => 2,
            95..99 => 3,
            _ => 4,
        };
        self.sizes.get(i).map_or(&[][..], |(_, b)| b)
    }
}

#[derive(Default)]
struct Totals {
    messages: u64,
    recipients: u64,
    refused: u64,
    errors: u64,
    latencies: Vec<f64>,
}

/// `connections` clients sending until `duration` is up; their totals. `gateway` says
/// whether addresses should include keyed ones (the sink takes anything either way).
fn run_clients(
    port: u16,
    connections: usize,
    duration: Duration,
    bodies: &Arc<Bodies>,
    gateway: Option<()>,
) -> Totals {
    let totals: Arc<Mutex<Totals>> = Arc::default();
    let end = Instant::now() + duration;
    let threads: Vec<_> = (0..connections)
        .map(|n| {
            let (totals, bodies) = (totals.clone(), bodies.clone());
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(n as u64);
                    let mut mine = Totals::default();
                    while Instant::now() < end {
                        if client(port, &mut rng, &bodies, gateway.is_some(), end, &mut mine)
                            .is_err()
                        {
                            mine.errors += 1;
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                    let mut t = totals.lock().expect("totals");
                    t.messages += mine.messages;
                    t.recipients += mine.recipients;
                    t.refused += mine.refused;
                    t.errors += mine.errors;
                    t.latencies.extend(mine.latencies);
                })
                .expect("spawn client")
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    Arc::try_unwrap(totals)
        .map(|m| m.into_inner().unwrap_or_default())
        .unwrap_or_default()
}

/// One connection: up to ten messages, then QUIT.
fn client(
    port: u16,
    rng: &mut impl Rng,
    bodies: &Bodies,
    keyed: bool,
    end: Instant,
    t: &mut Totals,
) -> std::io::Result<()> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(300)))?;
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    reply(&mut r)?;
    w.write_all(b"EHLO soak.example\r\n")?;
    reply(&mut r)?;
    for _ in 0..rng.gen_range(1..=10) {
        if Instant::now() >= end {
            break;
        }
        // Every draw below can be new: there are more addresses than recipients.
        let n = rng.gen_range(1..=50usize).min(KEYLESS);
        let mut rcpts: Vec<String> = Vec::with_capacity(n);
        while rcpts.len() < n {
            let a = if keyed && rng.gen_bool(0.5) {
                format!("k{}@keyed.example", rng.gen_range(0..KEYED))
            } else {
                format!("p{}@plain.example", rng.gen_range(0..KEYLESS))
            };
            if !rcpts.contains(&a) {
                rcpts.push(a);
            }
        }
        // About a third of the recipients are Bcc: in the envelope, not in the header.
        let named: Vec<&str> = rcpts
            .iter()
            .filter(|_| rng.gen_bool(0.66))
            .map(String::as_str)
            .collect();
        w.write_all(b"MAIL FROM:<soak@example.org>\r\n")?;
        let mut ok = reply(&mut r)?.starts_with('2');
        let mut accepted = 0;
        for a in &rcpts {
            w.write_all(format!("RCPT TO:<{a}>\r\n").as_bytes())?;
            if reply(&mut r)?.starts_with('2') {
                accepted += 1;
            }
        }
        ok &= accepted > 0;
        if !ok {
            t.refused += 1;
            w.write_all(b"RSET\r\n")?;
            reply(&mut r)?;
            continue;
        }
        w.write_all(b"DATA\r\n")?;
        if !reply(&mut r)?.starts_with('3') {
            t.refused += 1;
            continue;
        }
        let head = format!(
            "From: Soak <soak@example.org>\r\nTo: {}\r\nSubject: soak {}\r\nMIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=us-ascii\r\n\r\n",
            if named.is_empty() {
                "undisclosed-recipients:;".to_string()
            } else {
                named.join(", ")
            },
            rng.gen::<u32>()
        );
        w.write_all(head.as_bytes())?;
        w.write_all(bodies.pick(rng))?;
        let start = Instant::now();
        w.write_all(b".\r\n")?;
        let answer = reply(&mut r)?;
        if answer.starts_with('2') {
            t.latencies.push(start.elapsed().as_secs_f64());
            t.messages += 1;
            t.recipients += accepted;
        } else {
            t.refused += 1;
        }
    }
    let _ = w.write_all(b"QUIT\r\n");
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
    Ok(())
}

/// One whole reply; its last line.
fn reply(r: &mut impl BufRead) -> std::io::Result<String> {
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(line);
        }
    }
}

/// An SMTP server that takes everything and counts the recipients of each message whose
/// final dot it answered with 250.
struct CountingSink {
    port: u16,
    recipients: Arc<AtomicU64>,
}

impl CountingSink {
    fn start() -> CountingSink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind sink");
        let port = listener.local_addr().expect("sink address").port();
        let recipients = Arc::new(AtomicU64::new(0));
        let count = recipients.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let count = count.clone();
                let _ = std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn(move || {
                        let _ = sink_session(stream, &count);
                    });
            }
        });
        CountingSink { port, recipients }
    }

    fn recipients(&self) -> u64 {
        self.recipients.load(Ordering::SeqCst)
    }

    fn reset(&self) {
        self.recipients.store(0, Ordering::SeqCst);
    }
}

fn sink_session(stream: TcpStream, count: &AtomicU64) -> std::io::Result<()> {
    let mut w = stream.try_clone()?;
    let mut r = BufReader::with_capacity(64 * 1024, stream);
    w.write_all(b"220 sink.example ESMTP\r\n")?;
    let mut rcpts = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let verb = line
            .get(..4)
            .map(|v| v.to_ascii_uppercase())
            .unwrap_or_default();
        match &verb[..] {
            b"EHLO" => w.write_all(
                b"250-sink.example\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE 100000000\r\n250 ENHANCEDSTATUSCODES\r\n",
            )?,
            b"MAIL" => {
                rcpts = 0;
                w.write_all(b"250 2.1.0 OK\r\n")?;
            }
            b"RCPT" => {
                rcpts += 1;
                w.write_all(b"250 2.1.5 OK\r\n")?;
            }
            b"DATA" => {
                w.write_all(b"354 go\r\n")?;
                loop {
                    line.clear();
                    if r.read_until(b'\n', &mut line)? == 0 {
                        return Ok(());
                    }
                    if line == b".\r\n" {
                        break;
                    }
                }
                count.fetch_add(rcpts, Ordering::SeqCst);
                w.write_all(b"250 2.0.0 queued\r\n")?;
            }
            b"QUIT" => {
                w.write_all(b"221 bye\r\n")?;
                return Ok(());
            }
            _ => w.write_all(b"250 OK\r\n")?,
        }
    }
}
