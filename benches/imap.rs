//! IMAP proxy benchmark, all in one run: fetching 1,000 10 KB PGP/MIME messages (encrypted
//! to a local Cv25519 key by gpg, signed by a known sender) through the proxy, the first
//! time (cold: each message is downloaded, decrypted and verified) and again (warm: opened
//! messages come from the proxy's cache), against fetching the same messages directly
//! from the same private Dovecot. One client, `UID FETCH 1:N (BODY.PEEK[])` on one
//! connection.
//!
//! `cargo bench --bench imap` (`IMAP_BENCH_MESSAGES` sets the count).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{free_port, sealpost, wait_port, Gateway};

const PASSWORD: &str = "bench-secret";

fn main() {
    let Some(messages) = support::load_run("IMAP_BENCH_MESSAGES", 1_000) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let gw_dir = tmp.path().join("gateway");
    sealpost(&gw_dir, &["keys", "generate", "bob@example.org"]);
    let gnupg = tmp.path().join("gnupg");
    std::fs::create_dir(&gnupg).expect("gnupg");
    let gpg = |args: &[&str], input: &[u8]| -> Vec<u8> {
        let mut child = Command::new("gpg")
            .env("GNUPGHOME", &gnupg)
            .args(["--batch", "--quiet", "--trust-model", "always"])
            .args(["--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("gpg");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("gpg input");
        child.wait_with_output().expect("gpg").stdout
    };
    gpg(
        &[
            "--quick-gen-key",
            "Alice <alice@example.net>",
            "ed25519",
            "sign",
            "never",
        ],
        b"",
    );
    let alice = gpg(&["--armor", "--export", "alice@example.net"], b"");
    let alice_file = tmp.path().join("alice.asc");
    std::fs::write(&alice_file, alice).expect("write");
    sealpost(
        &gw_dir,
        &["keys", "import", alice_file.to_str().expect("path")],
    );
    gpg(
        &["--import"],
        &sealpost(&gw_dir, &["keys", "export", "bob@example.org"]),
    );
    // Two bodies of 10 KB each: one sentence repeated, which gpg compresses to about 1 KB
    // of ciphertext (Dovecot then sends a tenth of the bytes the proxy does), and text
    // that does not compress (base64 of pseudo-random bytes, as an attachment is), whose
    // ciphertext is about as large as the message the proxy serves.
    let line = "The quick brown fox jumps over the lazy dog, again and again and again.\r\n";
    let repeated = line.repeat(10 * 1024 / line.len());
    for (name, text) in [
        ("repeated text", repeated),
        ("varied text", varied(10 * 1024)),
    ] {
        run(&tmp, &gw_dir, &gpg, messages, name, &text);
    }
}

/// gpg with the bench's home: arguments and standard input, standard output back.
type Gpg<'a> = dyn Fn(&[&str], &[u8]) -> Vec<u8> + 'a;

/// The bench for one body: its own Dovecot and gateway, the numbers printed.
fn run(
    tmp: &tempfile::TempDir,
    gw_dir: &Path,
    gpg: &Gpg<'_>,
    messages: usize,
    name: &str,
    text: &str,
) {
    let payload = format!("Content-Type: text/plain; charset=us-ascii\r\n\r\n{text}");
    let armored = gpg(
        &[
            "--armor",
            "--sign",
            "--encrypt",
            "-u",
            "alice@example.net",
            "-r",
            "bob@example.org",
        ],
        payload.as_bytes(),
    );
    let message = format!(
        "From: Alice <alice@example.net>\r\nTo: bob@example.org\r\nSubject: [...]\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n\
         --b\r\nContent-Type: application/octet-stream\r\n\r\n{}\r\n--b--\r\n",
        String::from_utf8_lossy(&armored)
            .trim_end()
            .replace("\r\n", "\n")
            .replace('\n', "\r\n")
    );

    let dovecot = Dovecot::start(
        &tmp.path().join(name.replace(' ', "-")),
        message.as_bytes(),
        messages,
    );
    let imap_port = free_port();
    let config = format!(
        "[[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\n\
         [imap]\nlisten = \"127.0.0.1:{imap_port}\"\nupstream = \"127.0.0.1:{}\"\nupstream_tls = \"none\"\n",
        dovecot.port
    );
    let gw = Gateway::start(gw_dir, &config);
    wait_port(imap_port);

    // Dovecot indexes the mailbox on its first SELECT: done once before any timing.
    let _ = fetch_all(dovecot.port, messages);
    let direct = best_of(3, || fetch_all(dovecot.port, messages));
    let cold = fetch_all(imap_port, messages);
    let warm = best_of(3, || fetch_all(imap_port, messages));
    drop(gw);

    let rate = |d: Duration| messages as f64 / d.as_secs_f64();
    println!(
        "imap bench: {messages} messages of 10 KB of {name} (PGP/MIME, signed, {} bytes stored), one connection",
        message.len()
    );
    println!("  direct from Dovecot:     {:>8.0} msg/s", rate(direct));
    println!(
        "  through sealpost, cold:  {:>8.0} msg/s = {:.2} of direct (each decrypted and verified)",
        rate(cold),
        rate(cold) / rate(direct)
    );
    println!(
        "  through sealpost, warm:  {:>8.0} msg/s = {:.2} of direct (target >= 0.50; opened messages from the cache)",
        rate(warm),
        rate(warm) / rate(direct)
    );
}

/// `len` bytes of base64 lines (76 characters) of pseudo-random bytes.
fn varied(len: usize) -> String {
    use base64::Engine;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            // xorshift64: reproducible, and nothing for zlib to find.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = String::new();
    for chunk in b64.as_bytes().chunks(76) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push_str("\r\n");
        if out.len() >= len {
            break;
        }
    }
    out
}

fn best_of(n: usize, mut f: impl FnMut() -> Duration) -> Duration {
    (0..n).map(|_| f()).min().unwrap_or_default()
}

/// Logs in, selects INBOX and fetches every message whole; the time of the FETCH.
fn fetch_all(port: u16, messages: usize) -> Duration {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    read_until(&mut s, b"\r\n");
    command(&mut s, &format!("a LOGIN bob@example.org {PASSWORD}"), "a");
    command(&mut s, "b SELECT INBOX", "b");
    let start = Instant::now();
    let got = command(
        &mut s,
        &format!("c UID FETCH 1:{messages} (BODY.PEEK[])"),
        "c",
    );
    let took = start.elapsed();
    let fetched = got.windows(7).filter(|w| w == b" FETCH ").count();
    assert_eq!(fetched, messages, "every message fetched");
    command(&mut s, "d LOGOUT", "d");
    took
}

/// Sends `line` and reads until the tagged completion; its bytes.
fn command(s: &mut TcpStream, line: &str, tag: &str) -> Vec<u8> {
    s.write_all(format!("{line}\r\n").as_bytes())
        .expect("write");
    let out = read_until(s, format!("\r\n{tag} ").as_bytes());
    // The completion is the last line; only it is read as text.
    let marker = format!("\r\n{tag} ");
    let at = out
        .windows(marker.len())
        .rposition(|w| w == marker.as_bytes())
        .unwrap_or(0);
    let last = String::from_utf8_lossy(out.get(at + 2..).unwrap_or_default());
    assert!(last.starts_with(&format!("{tag} OK")), "{line}: {last}");
    out
}

/// Reads until `marker` has been seen and the line it starts is complete.
fn read_until(s: &mut TcpStream, marker: &[u8]) -> Vec<u8> {
    // A line end in front, so that a completion as the very first line is found too.
    let mut out = b"\r\n".to_vec();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = s.read(&mut buf).unwrap_or_else(|e| {
            let tail = String::from_utf8_lossy(&out[out.len().saturating_sub(400)..]).into_owned();
            panic!("read: {e}; received so far ends with: {tail:?}")
        });
        assert!(n > 0, "connection closed");
        out.extend_from_slice(&buf[..n]);
        let from = out.len().saturating_sub(n + marker.len());
        if let Some(at) = out[from..].windows(marker.len()).rposition(|w| w == marker) {
            if out[from + at + marker.len()..].ends_with(b"\r\n") || marker == b"\r\n" {
                return out;
            }
        }
    }
}

/// A private Dovecot with Bob's mailbox holding `count` copies of `message`.
struct Dovecot {
    port: u16,
    shell: Child,
}

impl Dovecot {
    fn start(tmp: &Path, message: &[u8], count: usize) -> Dovecot {
        let dir = tmp.join("dovecot");
        let cur = dir.join("mail/example.org/bob/Maildir/cur");
        std::fs::create_dir_all(&cur).expect("maildir");
        for sub in ["new", "tmp"] {
            std::fs::create_dir_all(cur.with_file_name(sub)).expect("maildir");
        }
        for i in 0..count {
            std::fs::write(
                cur.join(format!("{}.m{i}.bench:2,", 1_700_000_000 + i)),
                message,
            )
            .expect("message");
        }
        std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        if support::is_root() {
            for entry in walk(&dir.join("mail")) {
                chown(&entry, Some(65534), Some(65534)).expect("chown");
            }
        }
        std::fs::write(
            dir.join("passwd"),
            format!("bob@example.org:{{PLAIN}}{PASSWORD}::::::\n"),
        )
        .expect("passwd");
        let port = free_port();
        let d = dir.display();
        let config = format!(
            "base_dir = {d}/run\nstate_dir = {d}/state\ninstance_name = sealpost-bench-{pid}\n\
             log_path = {d}/dovecot.log\nprotocols = imap\nlisten = 127.0.0.1\nssl = no\n\
             disable_plaintext_auth = no\nfirst_valid_uid = 65534\n\
             mail_location = maildir:{d}/mail/%d/%n/Maildir\n\
             passdb {{\n  driver = passwd-file\n  args = {d}/passwd\n}}\n\
             userdb {{\n  driver = static\n  args = uid=65534 gid=65534 home={d}/mail/%d/%n\n}}\n\
             service imap-login {{\n  inet_listener imap {{\n    port = {port}\n  }}\n  inet_listener imaps {{\n    port = 0\n  }}\n}}\n",
            pid = std::process::id(),
        );
        let conf = dir.join("dovecot.conf");
        std::fs::write(&conf, config).expect("dovecot.conf");
        // Dovecot stops when this shell's stdin closes, with the bench.
        let shell = Command::new("sh")
            .arg("-c")
            .arg(r#"dovecot -F -c "$1" & pid=$!; read -r _ignored; kill "$pid"; wait "$pid""#)
            .arg("sh")
            .arg(&conf)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dovecot (package dovecot-imapd)");
        wait_port(port);
        Dovecot { port, shell }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        drop(self.shell.stdin.take());
        let _ = self.shell.wait();
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
