//! Attacks on the SMTP listener itself, sent byte for byte to the real binary: SMTP
//! smuggling on the outbound and inbound listeners, endless DATA lines, a client that
//! never reads its replies, password guessing, and repeated recipients. Each test
//! starts its own gateway and measures what it needs from `/proc`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::common::{Raw, Sealpost, Server};
use super::upstream::SmtpSink;

const LONG: Duration = Duration::from_secs(30);

/// One outbound and one inbound listener (in that order), each delivering to its own sink.
fn two_listeners(outbound_sink: &SmtpSink, inbound_sink: &SmtpSink) -> String {
    format!(
        "[[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\n\
         [[listener]]\nmode = \"inbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\n\
         [upstream]\naddress = \"{}\"\ntls = \"none\"\n\n\
         [inbound]\ndeliver = \"{}\"\nlocal_domains = [\"example.org\"]\n",
        outbound_sink.address(),
        inbound_sink.address()
    )
}

/// One outbound listener delivering to `sink`, with `extra` listener settings.
fn outbound(sink: &SmtpSink, extra: &str) -> String {
    format!(
        "[[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n{extra}\n\
         [upstream]\naddress = \"{}\"\ntls = \"none\"\n",
        sink.address()
    )
}

/// A field of the gateway's `/proc/PID/status` (`VmRSS`, `VmHWM`), in bytes.
fn memory(gw: &Server, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", gw.child.id()))
        .expect("/proc status of the gateway");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{field} in {status}"));
    kb * 1024
}

/// Every reply until the gateway closes the connection, as `(code, whole reply)`.
fn replies_until_close(c: &mut Raw) -> Vec<(String, String)> {
    let mut all = Vec::new();
    loop {
        let r = c.reply();
        if r.is_empty() {
            return all;
        }
        all.push((r.get(..3).unwrap_or_default().to_string(), r));
    }
}

/// The published end-of-data look-alikes (SEC Consult 2023 and the scanners built on
/// it), and whether each one leaves a bare CR or LF in the message. Only CRLF.CRLF ends
/// DATA, so in every case the "smuggled" transaction after the look-alike stays message
/// content: with a bare line end the message is refused (`554 5.6.0`); without one (NUL
/// tricks, a lone dot) it is one ordinary message whose body holds the smuggled text.
const VARIANTS: &[(&[u8], bool)] = &[
    (b"\n.\n", true),
    (b"\n.\r\n", true),
    (b"\r.\r\n", true),
    (b"\r\n.\r", true),
    (b"\r\n.\n", true),
    (b"\r\n.\r\r\n", true),
    (b"\n\n.\r\n", true),
    (b"\r\r\n.\r\r\n", true),
    (b"\r\n\x00.\r", true),
    (b"\r\n\x00.\n", true),
    (b"\r\n\x00.\r\n", false),
    (b"\r\n.\x00\r\n", false),
    (b"\r\n.", false),
];

/// Sends one message whose body hides a second transaction behind `variant`, then QUIT
/// in the same write; returns the reply codes the client saw after `354`.
fn smuggle(port: u16, case: usize, rcpt: &str, victim: &str, variant: &[u8]) -> Vec<String> {
    let mut c = Raw::connect(port);
    assert!(c.cmd("EHLO client.example.net").starts_with("250"));
    let r = c.cmd(&format!("MAIL FROM:<alice+{case}@example.net>"));
    assert!(r.starts_with("250"), "{r}");
    let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
    assert!(r.starts_with("250"), "{r}");
    assert!(c.cmd("DATA").starts_with("354"));
    let mut data = format!(
        "From: alice@example.net\r\nTo: {rcpt}\r\nSubject: case {case}\r\nX-Test-Case: {case}\r\n\r\nlegitimate body"
    )
    .into_bytes();
    data.extend_from_slice(variant);
    data.extend_from_slice(
        format!(
            "MAIL FROM:<ceo@spoofed.example>\r\nRCPT TO:<{victim}>\r\nDATA\r\n\
             From: ceo@spoofed.example\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n.\r\nQUIT\r\n"
        )
        .as_bytes(),
    );
    c.send(&data);
    replies_until_close(&mut c)
        .into_iter()
        .map(|(code, whole)| {
            if code == "554" {
                assert!(whole.starts_with("554 5.6.0"), "{whole}");
            }
            code
        })
        .collect()
}

/// The data reader used to end DATA at any ".\r\n" line, even after a bare LF, so the
/// bytes after `\n.\r\n` ran as a second transaction with its own MAIL FROM, on both
/// kinds of listener. Now the client sees one reply for the message and one for QUIT,
/// and the sinks see only the legitimate envelopes.
#[test]
fn smuggled_transactions_after_a_fake_end_of_data_never_run() {
    let out_sink = SmtpSink::start(&[]);
    let in_sink = SmtpSink::start(&[]);
    let s = Sealpost::new();
    let gw = s.serve(&two_listeners(&out_sink, &in_sink), &[]);
    let (out_port, in_port) = (gw.ports[0], gw.ports[1]);
    let listeners = [
        (out_port, &out_sink, "bob@example.net", "victim@example.net"),
        (in_port, &in_sink, "bob@example.org", "victim@example.org"),
    ];
    for &(port, _, rcpt, victim) in &listeners {
        for (case, &(variant, bare)) in VARIANTS.iter().enumerate() {
            let codes = smuggle(port, case, rcpt, victim, variant);
            let first = if bare { "554" } else { "250" };
            assert_eq!(
                codes,
                [first, "221"],
                "port {port}, variant {variant:?}: the smuggled MAIL, RCPT and DATA get no reply"
            );
        }
    }
    let accepted: Vec<usize> = (0..VARIANTS.len())
        .filter(|&i| !VARIANTS.get(i).is_some_and(|v| v.1))
        .collect();
    for &(_, sink, rcpt, victim) in &listeners {
        sink.wait_messages(accepted.len(), LONG);
        // A smuggled transaction would be relayed before its 250; wait a little anyway.
        std::thread::sleep(Duration::from_millis(500));
        let dumps = sink.messages();
        for d in &dumps {
            assert!(d.sender.starts_with("alice+"), "smuggled sender: {d:?}");
            assert_eq!(d.recipients, [rcpt], "smuggled recipient {victim}: {d:?}");
            let text = d.text();
            assert!(
                text.contains("smuggled body") && text.contains("MAIL FROM:<ceo@spoofed"),
                "the smuggled lines stay in the body: {text}"
            );
        }
        let mut cases: Vec<usize> = dumps
            .iter()
            .filter_map(|d| {
                d.sender
                    .strip_prefix("alice+")?
                    .split('@')
                    .next()?
                    .parse()
                    .ok()
            })
            .collect();
        cases.sort_unstable();
        assert_eq!(
            cases, accepted,
            "one message per variant without a bare line end"
        );
    }
}

/// Starts a DATA phase on a fresh connection; returns the stream, ready for body bytes.
fn open_data(port: u16) -> Raw {
    let mut c = Raw::connect(port);
    assert!(c.cmd("EHLO client.example.net").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<alice@example.net>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<bob@example.net>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c
}

/// Several clients each send one 30 MiB line with no line end. The reader used to hold
/// each line whole in memory (its buffer doubling to 32 MiB): 8 such clients raised the
/// gateway's peak RSS from 17 to 243 MiB (10 clients: 339 MB). Bytes now go to the
/// message writer as they arrive, which spills to disk past `spill_above` (1 MiB by
/// default): the same 8 clients raise it by about 6 MiB.
#[test]
fn endless_data_lines_do_not_grow_memory() {
    const CLIENTS: usize = 8;
    const LINE: usize = 30 << 20;
    let sink = SmtpSink::start(&[]);
    let s = Sealpost::new();
    let gw = s.serve(&outbound(&sink, ""), &[]);
    let port = gw.port();
    // Warm up: threads started, a message relayed.
    let mut c = open_data(port);
    c.send(b"Subject: warm-up\r\n\r\nwarm-up\r\n.\r\n");
    assert!(c.reply().starts_with("250"));
    let before = memory(&gw, "VmHWM");

    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = open_data(port);
                c.send(b"Subject: endless\r\n\r\n");
                let chunk = vec![b'a'; 64 << 10];
                for _ in 0..LINE / chunk.len() {
                    c.send(&chunk);
                }
                // A bare LF ends the line: the message is refused, nothing is relayed,
                // and the reply shows that the gateway has read every byte.
                c.send(b"\n\r\n.\r\n");
                let r = c.reply();
                assert!(r.starts_with("554 5.6.0"), "{r}");
                assert!(c.cmd("NOOP").starts_with("250"), "the session goes on");
            })
        })
        .collect();
    for t in clients {
        t.join().expect("client");
    }
    let after = memory(&gw, "VmHWM");
    let grown = after.saturating_sub(before);
    eprintln!(
        "{CLIENTS} endless {} MiB lines: peak RSS {} MiB before, {} MiB after",
        LINE >> 20,
        before >> 20,
        after >> 20
    );
    assert!(
        grown < 48 << 20,
        "peak RSS grew by {} MiB for {CLIENTS} clients (from {} MiB)",
        grown >> 20,
        before >> 20
    );
    assert!(sink.messages().len() == 1, "only the warm-up was relayed");
}

/// A client that pipelines commands and never reads the replies. Today's writes had no
/// timeout: once the socket buffers were full the connection hung in `write` for good and
/// kept its per-IP slot, so with `max_connections_per_ip = 1` every later connection
/// from that address got `421 4.3.2`.
#[test]
fn a_client_that_never_reads_is_cut_off_and_frees_its_slot() {
    let sink = SmtpSink::start(&[]);
    let s = Sealpost::new();
    let config = outbound(
        &sink,
        "max_connections_per_ip = 1\ncommand_timeout = \"2s\"\n",
    );
    let gw = s.serve(&config, &[]);
    let port = gw.port();
    let mut flood = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    flood
        .set_write_timeout(Some(Duration::from_secs(40)))
        .unwrap();
    let flooding = std::thread::spawn(move || {
        // HELP: a 6-byte command with a 100-byte reply fills the buffers quickly.
        let commands = b"HELP\r\n".repeat(4096);
        let started = Instant::now();
        loop {
            if let Err(e) = flood.write_all(&commands) {
                return (started.elapsed(), e.kind());
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let greeting = loop {
        let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut first = [0u8; 64];
        let n = c.read(&mut first).unwrap_or(0);
        let text = String::from_utf8_lossy(first.get(..n).unwrap_or_default()).into_owned();
        if text.starts_with("220") {
            break text;
        }
        assert!(
            text.starts_with("421 4.3.2"),
            "a second connection is refused while the first holds the slot: {text}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the flooding client still holds its slot after {:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(greeting.contains("ESMTP"), "{greeting}");
    let (flooded_for, error) = flooding.join().expect("flooding thread");
    assert!(
        flooded_for < Duration::from_secs(20),
        "the flooding client was still connected after {flooded_for:?} ({error:?})"
    );
}

/// A raw async client bound to its own loopback address, so that one test can act as
/// many client IPs.
struct Client {
    read: BufReader<tokio::net::tcp::OwnedReadHalf>,
    write: tokio::net::tcp::OwnedWriteHalf,
}

impl Client {
    async fn connect(ip: Ipv4Addr, port: u16) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(SocketAddr::from((ip, 0))).expect("bind");
        let stream = socket
            .connect(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .expect("connect");
        let (r, w) = stream.into_split();
        let mut c = Client {
            read: BufReader::new(r),
            write: w,
        };
        let greeting = c.reply().await;
        assert!(greeting.starts_with("220"), "{greeting}");
        c
    }

    /// The next reply, all lines; empty once the gateway has closed.
    async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(LONG, self.read.read_line(&mut line))
                .await
                .expect("a reply in time")
                .unwrap_or(0);
            all.push_str(&line);
            if n == 0 || line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    async fn cmd(&mut self, line: &str) -> String {
        if self
            .write
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .is_err()
        {
            return String::new();
        }
        self.reply().await
    }
}

/// `AUTH PLAIN` for alice with `password`.
fn plain(password: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("\0alice\0{password}"));
    format!("AUTH PLAIN {b64}")
}

/// Many clients guess passwords at once. Each argon2 check takes 19 MiB. Checks used to
/// run on blocking threads with no cap: 60 concurrent clients (two guesses each) raised
/// the gateway's peak RSS from 36 MiB to 2224 MiB, and its RSS stayed there afterwards
/// (glibc's per-thread arenas kept the memory). Checks now run on at most four threads
/// (one per CPU) that reuse their argon2 memory: on two CPUs the same load raises both
/// by about 20 MiB, the second thread's blocks. An address that keeps failing is refused
/// before any check runs.
#[test]
fn password_guessing_is_bounded_in_memory_and_blocked_per_address() {
    const CLIENTS: u8 = 60;
    let sink = SmtpSink::start(&[]);
    let s = Sealpost::new();
    let hash = s.run_with_input(&["hash-password"], b"correct horse\n");
    assert!(hash.status.success());
    let hash = String::from_utf8(hash.stdout).unwrap().trim().to_string();
    let config = format!(
        "{}\n[[user]]\nname = \"alice\"\npassword_hash = \"{hash}\"\n",
        outbound(&sink, "auth = \"local\"\nmax_connections_per_ip = 200\n")
    );
    let gw = s.serve(&config, &[]);
    let port = gw.port();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Warm up: one good login, so that the password threads exist.
        let mut c = Client::connect(Ipv4Addr::new(127, 0, 0, 3), port).await;
        assert!(c.cmd("EHLO c.test").await.starts_with("250"));
        let r = c.cmd(&plain("correct horse")).await;
        assert!(r.starts_with("235 2.7.0"), "{r}");
    });
    let before = memory(&gw, "VmHWM");
    let rss_before = memory(&gw, "VmRSS");

    rt.block_on(async {
        let guesses: Vec<_> = (0..CLIENTS)
            .map(|i| {
                tokio::spawn(async move {
                    let ip = Ipv4Addr::new(127, 0, 1, i.saturating_add(1));
                    let mut c = Client::connect(ip, port).await;
                    assert!(c.cmd("EHLO c.test").await.starts_with("250"));
                    for guess in 0..2 {
                        let r = c.cmd(&plain(&format!("guess {guess}"))).await;
                        assert!(r.starts_with("535 5.7.8"), "{ip}: {r}");
                    }
                })
            })
            .collect();
        for g in guesses {
            g.await.expect("guessing client");
        }
    });
    let after = memory(&gw, "VmHWM");
    std::thread::sleep(Duration::from_millis(500));
    let rss_after = memory(&gw, "VmRSS");
    let grown = after.saturating_sub(before);
    eprintln!(
        "{CLIENTS} clients guessing passwords: peak RSS {} MiB before, {} MiB after; \
         RSS {} MiB before, {} MiB after",
        before >> 20,
        after >> 20,
        rss_before >> 20,
        rss_after >> 20
    );
    assert!(
        grown < 100 << 20,
        "peak RSS grew by {} MiB for {CLIENTS} guessing clients (from {} MiB)",
        grown >> 20,
        before >> 20
    );
    assert!(
        rss_after < rss_before + (100 << 20),
        "RSS stays {} MiB after the guesses (from {} MiB)",
        rss_after >> 20,
        rss_before >> 20
    );

    rt.block_on(async {
        // One address keeps guessing, connection after connection, until the gateway
        // refuses its AUTH outright.
        let attacker = Ipv4Addr::new(127, 0, 0, 2);
        let mut refused = None;
        'connections: for _ in 0..10 {
            let mut c = Client::connect(attacker, port).await;
            assert!(c.cmd("EHLO c.test").await.starts_with("250"));
            loop {
                let r = c.cmd(&plain("wrong")).await;
                if r.starts_with("421 4.7.0") && r.contains("address") {
                    refused = Some(r);
                    break 'connections;
                }
                if !r.starts_with("535") {
                    break;
                }
            }
        }
        let refused = refused.expect("an address that keeps failing gets 421 4.7.0");
        assert!(refused.contains("try again"), "{refused}");
        // Blocked means blocked: even the right password is not checked now.
        let mut c = Client::connect(attacker, port).await;
        assert!(c.cmd("EHLO c.test").await.starts_with("250"));
        let r = c.cmd(&plain("correct horse")).await;
        assert!(r.starts_with("421 4.7.0"), "{r}");
        assert!(c.reply().await.is_empty(), "and the connection is closed");
        // Other addresses are not affected.
        let mut c = Client::connect(Ipv4Addr::new(127, 0, 0, 4), port).await;
        assert!(c.cmd("EHLO c.test").await.starts_with("250"));
        let r = c.cmd(&plain("correct horse")).await;
        assert!(r.starts_with("235 2.7.0"), "{r}");
    });
}

/// Twenty RCPTs for one recipient (the domain in varying case) are one recipient: one
/// RCPT upstream and one message, not twenty decryptions and deliveries.
#[test]
fn duplicate_recipients_are_delivered_once() {
    let sink = SmtpSink::start(&[]);
    let s = Sealpost::new();
    let gw = s.serve(&outbound(&sink, ""), &[]);
    let mut c = Raw::connect(gw.port());
    assert!(c.cmd("EHLO client.example.net").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<alice@example.net>").starts_with("250"));
    for i in 0..20 {
        let domain = if i % 2 == 0 {
            "example.net"
        } else {
            "Example.NET"
        };
        let r = c.cmd(&format!("RCPT TO:<bob@{domain}>"));
        assert!(r.starts_with("250 2.1.5"), "{r}");
        assert_eq!(r.contains("duplicate"), i > 0, "{r}");
    }
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(b"Subject: once\r\n\r\nbody\r\n.\r\n");
    let r = c.reply();
    assert!(r.starts_with("250"), "{r}");
    assert!(c.cmd("QUIT").starts_with("221"));
    let dumps = sink.wait_messages(1, LONG);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sink.messages().len(), 1, "one message: {dumps:?}");
    assert_eq!(
        dumps.first().map(|d| d.recipients.clone()),
        Some(vec!["bob@example.net".to_string()])
    );
}
