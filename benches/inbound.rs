//! Inbound load benchmark, all in one run:
//!
//! - throughput of the inbound listener for 10 KB PGP/MIME messages (encrypted to a local
//!   Cv25519 key, signed by a known Cv25519 sender) against 10 KB plain messages through
//!   the same listener (pass-through: verdict headers only), with Postfix's smtp-source
//!   (32 sessions) and smtp-sink;
//! - one 20 MB message: sealpost's inbound transform (in-process) and the gateway (end of
//!   DATA to 250, delivery to smtp-sink included) against `gpg --decrypt` of the same
//!   ciphertext, with the gateway's peak RSS.
//!
//! `cargo bench --bench inbound` (`INBOUND_BENCH_MESSAGES` sets the count;
//! `INBOUND_BENCH_IN_PROCESS=1` times the in-process transform only, for profilers; `=small`
//! without the 20 MB message).

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use sealpost::blob::{Blob, Spill, Writer};
use sealpost::transform::inbound::{self, Encryption, Settings, Signature};
use sealpost_keyring::{Keyring, OpenOptions};
use support::{expect, open_data, sealpost, Gateway, Sink};

const SESSIONS: usize = 32;
const SIZE: usize = 10 * 1024;
const BIG: usize = 20 * 1024 * 1024;

fn main() {
    let Some(messages) = support::load_run("INBOUND_BENCH_MESSAGES", 5_000) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let inbound_dir = tmp.path().join("inbound");
    let sender_dir = tmp.path().join("sender");
    sealpost(&inbound_dir, &["keys", "generate", "bob@example.org"]);
    sealpost(&sender_dir, &["keys", "generate", "alice@example.net"]);
    let alice = sealpost(&sender_dir, &["keys", "export", "alice@example.net"]);
    let alice_file = tmp.path().join("alice.asc");
    std::fs::write(&alice_file, alice).expect("write");
    sealpost(
        &inbound_dir,
        &["keys", "import", alice_file.to_str().expect("path")],
    );
    // gpg holds Alice's secret key (to make the messages) and Bob's (to compare with).
    let gnupg = tmp.path().join("gnupg");
    std::fs::create_dir(&gnupg).expect("gnupg home");
    for (dir, who) in [
        (&sender_dir, "alice@example.net"),
        (&inbound_dir, "bob@example.org"),
    ] {
        let tsk = sealpost(dir, &["keys", "export", "--secret", "--unprotected", who]);
        gpg(&gnupg, &["--import"], &tsk);
    }

    let line = "The quick brown fox jumps over the lazy dog, again and again and again.\r\n";
    let text: String = line.repeat(SIZE / line.len());
    let plain = message("plain", "text/plain; charset=us-ascii", &text);
    let payload = format!("Content-Type: text/plain; charset=us-ascii\r\n\r\n{text}");
    let encrypted = pgp_mime(&encrypt(&gnupg, payload.as_bytes()));
    // smtp-source appends CRLF to each line it reads: the files have bare LF line ends.
    let plain_file = tmp.path().join("plain.eml");
    let enc_file = tmp.path().join("encrypted.eml");
    std::fs::write(&plain_file, plain.replace("\r\n", "\n")).expect("write");
    std::fs::write(&enc_file, encrypted.replace("\r\n", "\n")).expect("write");

    let attachment = random_base64(BIG);
    let big_payload = format!(
        "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n\
         see attached\r\n--b\r\nContent-Type: application/octet-stream\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{attachment}--b--\r\n"
    );
    let big_armored = encrypt(&gnupg, big_payload.as_bytes());
    let big_file = tmp.path().join("big.asc");
    std::fs::write(&big_file, &big_armored).expect("write");
    let big_message = pgp_mime(&big_armored);

    // In-process: the transform alone, keys already unlocked (as in the server).
    let keyring = Keyring::open(&inbound_dir, OpenOptions::default()).expect("keyring");
    let settings = Settings {
        authserv_id: "mx.example.org".into(),
        max_plaintext: 64 << 20,
        spill: None,
    };
    // As the DATA reader hands it over: a small message whole in memory, a large one in a
    // sealed spill file (the gateway's default `spill_above`), or in memory for comparison.
    let encrypted_blob = Blob::from(encrypted.clone().into_bytes());
    let plain_blob = Blob::from(plain.clone().into_bytes());
    let big_blob = Blob::from(big_message.clone().into_bytes());
    let spill = Spill::new(tmp.path(), 1 << 20);
    let spilled_settings = Settings {
        spill: Some(spill.clone()),
        ..settings.clone()
    };
    let big_spilled = {
        let mut w = Writer::new(Some(spill));
        w.write(big_message.as_bytes()).expect("spill");
        w.finish().expect("spill")
    };
    assert!(big_spilled.is_spilled());
    let open = |message: &Blob, settings: &Settings| {
        let start = Instant::now();
        let out = inbound::open(
            message,
            &["bob@example.org"],
            &keyring,
            settings,
            SystemTime::now(),
        )
        .expect("open");
        let took = start.elapsed();
        assert!(
            out.iter()
                .all(|o| o.verdict.encryption == Encryption::Decrypted
                    && o.verdict.signature == Signature::Valid),
            "not decrypted and verified: {:?}",
            out.first().map(|o| &o.verdict)
        );
        took
    };
    let _warm = open(&encrypted_blob, &settings);
    let small_runs = 200;
    let small = (0..small_runs)
        .map(|_| open(&encrypted_blob, &settings))
        .sum::<Duration>()
        .as_secs_f64()
        / f64::from(small_runs);
    // A plain message takes the same opener: what reading it costs, with nothing to open.
    let plain_runs = 2000;
    let plain_small = (0..plain_runs)
        .map(|_| {
            let start = Instant::now();
            let out = inbound::open(
                &plain_blob,
                &["bob@example.org"],
                &keyring,
                &settings,
                SystemTime::now(),
            )
            .expect("open");
            assert!(out.iter().all(|o| o.verdict.encryption == Encryption::None));
            start.elapsed()
        })
        .sum::<Duration>()
        .as_secs_f64()
        / f64::from(plain_runs);
    let only_small = std::env::var("INBOUND_BENCH_IN_PROCESS").is_ok_and(|v| v == "small");
    let (in_process, in_memory) = if only_small {
        (Duration::ZERO, Duration::ZERO)
    } else {
        let _warm = open(&big_spilled, &spilled_settings);
        let spilled = (0..3)
            .map(|_| open(&big_spilled, &spilled_settings))
            .min()
            .expect("runs");
        let memory = (0..3)
            .map(|_| open(&big_blob, &settings))
            .min()
            .expect("runs");
        (spilled, memory)
    };
    drop(keyring);
    if std::env::var_os("INBOUND_BENCH_IN_PROCESS").is_some() {
        // For profilers: the transform alone, without servers and peers.
        println!(
            "10 KB: {:.0} us/msg (plain: {:.1} us/msg); {:.1} MB: {:.0} ms",
            small * 1e6,
            plain_small * 1e6,
            big_message.len() as f64 / 1048576.0,
            in_process.as_secs_f64() * 1e3
        );
        return;
    }
    let gpg_time = (0..3)
        .map(|_| {
            let start = Instant::now();
            let out = Command::new("gpg")
                .env("GNUPGHOME", &gnupg)
                .args(["--batch", "--quiet", "--trust-model", "always"])
                .args(["--pinentry-mode", "loopback", "--passphrase", ""])
                .args(["--output", "/dev/null", "--decrypt"])
                .arg(&big_file)
                .stderr(Stdio::null())
                .status()
                .expect("gpg");
            assert!(out.success(), "gpg --decrypt failed");
            start.elapsed()
        })
        .min()
        .expect("runs");

    let sink = Sink::start();
    let config = format!(
        "hostname = \"mx.example.org\"\n\n[[listener]]\nmode = \"inbound\"\n\
         address = \"127.0.0.1:0\"\ntls = \"none\"\nmax_connections = 2000\n\
         max_connections_per_ip = 2000\n\n[inbound]\ndeliver = \"127.0.0.1:{}\"\n",
        sink.port
    );
    let gw = Gateway::start(&inbound_dir, &config);
    let passed = throughput(gw.port, &plain_file, messages);
    let decrypted = throughput(gw.port, &enc_file, messages);
    drop(gw);
    let gw = Gateway::start(&inbound_dir, &config);
    let before = gw.status("VmHWM:");
    let through_gateway = send_one(gw.port, &big_message);
    let big_rss = gw.status("VmHWM:");
    drop(gw);
    // The same size in plain text through the same listener: what the server itself holds
    // for a message this large, before any decryption.
    let big_plain = message(
        "big plain",
        "text/plain; charset=us-ascii",
        &random_base64(big_message.len()),
    );
    let gw = Gateway::start(&inbound_dir, &config);
    send_one(gw.port, &big_plain);
    let plain_rss = gw.status("VmHWM:");
    drop(gw);

    println!("inbound bench: {messages} messages of {SIZE} bytes, {SESSIONS} sessions");
    println!(
        "  transform in-process:   {:>9.0} us/msg ({:.0} msg/s on one core)",
        small * 1e6,
        1.0 / small
    );
    println!(
        "  plain in-process:       {:>9.1} us/msg (read for protection, none found)",
        plain_small * 1e6
    );
    println!("  plain (pass-through):   {passed:>9.0} msg/s");
    println!("  decrypted + verified:   {decrypted:>9.0} msg/s");
    println!(
        "  decrypted / pass-through: {:>6.1}%  (target >= 70%)",
        decrypted / passed * 100.0
    );
    let mb = big_message.len() as f64 / 1048576.0;
    println!("  {mb:.1} MB message:");
    println!(
        "    gpg --decrypt:           {:>8.0} ms",
        gpg_time.as_secs_f64() * 1e3
    );
    println!(
        "    sealpost transform:      {:>8.0} ms  ({:.1}x faster than gpg; target >= 2x; from its sealed spill file, as the gateway runs it)",
        in_process.as_secs_f64() * 1e3,
        gpg_time.as_secs_f64() / in_process.as_secs_f64()
    );
    println!(
        "      the same from memory:  {:>8.0} ms  ({:.1}x)",
        in_memory.as_secs_f64() * 1e3,
        gpg_time.as_secs_f64() / in_memory.as_secs_f64()
    );
    println!(
        "    through the gateway:     {:>8.0} ms  (end of DATA to 250, delivery included; {:.1}x)",
        through_gateway.as_secs_f64() * 1e3,
        gpg_time.as_secs_f64() / through_gateway.as_secs_f64()
    );
    println!(
        "    gateway peak RSS:        {big_rss:>8.1} MB = {:.2}x the message (target < 3x; {before:.1} MB before)",
        big_rss / mb
    );
    println!(
        "    same size in plain text: {plain_rss:>8.1} MB = {:.2}x (pass-through, for comparison)",
        plain_rss * 1048576.0 / big_plain.len() as f64
    );
}

fn gpg(home: &Path, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gpg")
        .env("GNUPGHOME", home)
        .args(["--batch", "--quiet", "--trust-model", "always"])
        .args(["--pinentry-mode", "loopback", "--passphrase", ""])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("gpg");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("gpg");
    let _ = writer.join();
    assert!(out.status.success(), "gpg {args:?} failed");
    out.stdout
}

/// Encrypted to Bob, signed by Alice, armored.
fn encrypt(gnupg: &Path, payload: &[u8]) -> String {
    let args = [
        "--armor",
        "--encrypt",
        "--sign",
        "-r",
        "bob@example.org",
        "-u",
        "alice@example.net",
    ];
    String::from_utf8(gpg(gnupg, &args, payload)).expect("armor is ASCII")
}

/// About `len` bytes of base64 lines of pseudo-random data: an attachment that does not
/// compress much, like the photos and archives people send, so that the armored message is
/// about as large as the plaintext.
fn random_base64(len: usize) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = String::with_capacity(len + 78);
    while out.len() < len {
        for _ in 0..76 {
            // xorshift64: fast, deterministic, good enough not to compress.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            out.push(char::from(ALPHABET[(state >> 58) as usize]));
        }
        out.push_str("\r\n");
    }
    out
}

fn message(subject: &str, content_type: &str, body: &str) -> String {
    format!(
        "From: Alice <alice@example.net>\r\nTo: bob@example.org\r\nSubject: {subject}\r\n\
         MIME-Version: 1.0\r\nContent-Type: {content_type}\r\n\r\n{body}"
    )
}

fn pgp_mime(armored: &str) -> String {
    let body = format!(
        "--enc\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n\
         --enc\r\nContent-Type: application/octet-stream\r\n\r\n{}\r\n--enc--\r\n",
        armored
            .replace("\r\n", "\n")
            .replace('\n', "\r\n")
            .trim_end()
    );
    message(
        "[...]",
        "multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"enc\"",
        &body,
    )
}

/// Messages per second from smtp-source sending `file`.
fn throughput(port: u16, file: &Path, messages: usize) -> f64 {
    let file = file.to_str().expect("path");
    let args = [
        "-F",
        file,
        "-f",
        "alice@example.net",
        "-t",
        "bob@example.org",
    ];
    support::smtp_source(port, SESSIONS, messages, &args)
}

/// Sends `message` once; the time from the end of DATA to the 250.
fn send_one(port: u16, message: &str) -> Duration {
    let (mut w, mut r) = open_data(
        port,
        "alice@example.net",
        "bob@example.org",
        Duration::from_secs(300),
    );
    w.write_all(message.as_bytes()).expect("write");
    w.write_all(b"\r\n").expect("write");
    let start = Instant::now();
    w.write_all(b".\r\n").expect("write");
    expect(&mut r, "250");
    start.elapsed()
}
