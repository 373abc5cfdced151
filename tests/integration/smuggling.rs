//! Attacks on the SMTP listener itself, sent byte for byte to the real binary: SMTP
//! smuggling on the outbound and inbound listeners, endless DATA lines, a client that
//! never reads its replies, and repeated recipients. Each test starts its own gateway
//! and measures what it needs from `/proc`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

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

/// Today's data reader ended DATA at any ".\r\n" line, even after a bare LF, so the
/// bytes after `\n.\r\n` ran as a second transaction with its own MAIL FROM.
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
        let dumps = sink.wait_messages(accepted.len(), LONG);
        // Give a wrongly accepted smuggled transaction time to arrive as well.
        std::thread::sleep(Duration::from_millis(500));
        let dumps = if sink.messages().len() > dumps.len() {
            sink.messages()
        } else {
            dumps
        };
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

/// Several clients each send one 30 MiB line with no line end. Today's reader held each
/// line whole in memory (its buffer doubling to 32 MiB): the gateway's peak RSS grew by
/// about 270 MiB for 8 such clients (10 clients: 339 MB). Bytes now go to the message
/// writer as they arrive, which spills to disk past `spill_above` (1 MiB by default).
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
        "the flooding client was cut off ({error:?}) after {flooded_for:?}"
    );
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
