//! What a running gateway keeps in memory after its sessions ended: a passthrough login
//! and a decrypted message, looked for in the live memory of `sealpost serve` (the
//! private and anonymous mappings of `/proc/PID/mem`, which a parent may read), as a core
//! dump or a swapped-out page would show them.
//!
//! What the gateway's own buffers held is asserted gone. What only a dependency held
//! (sequoia's buffered readers and decompressor, lettre's command strings) is counted
//! and printed, never asserted: the README lists those buffers.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;

use super::common::{Gpg, Raw, Sealpost};
use super::upstream::{wait_for, ScriptedUpstream};

const LONG: Duration = Duration::from_secs(60);

/// Lines of the decrypted message, as many as the core dump of the report held.
const LINES: usize = 4525;

/// A string no other test, and nothing in the binary, contains.
fn unique(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{tag}{:x}{:x}", std::process::id(), nanos)
}

/// How often each of `needles` occurs in the memory of process `pid` that is its own:
/// the heap, anonymous mappings (other threads' heaps and stacks, large allocations) and
/// the stack. Mappings of files (the binary, libraries) are left out, and so are regions
/// that cannot be read. Only resident pages are read.
fn scan(pid: u32, needles: &[&[u8]]) -> Vec<usize> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).expect("read smaps");
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).expect("open /proc/PID/mem");
    let finders: Vec<memchr::memmem::Finder<'_>> =
        needles.iter().map(memchr::memmem::Finder::new).collect();
    let overlap = needles.iter().map(|n| n.len()).max().unwrap_or(1) - 1;
    let mut counts = vec![0; needles.len()];
    for (start, end) in private_regions(&smaps) {
        // A match across a chunk edge is found once: each chunk is read with the
        // needle's length of the next one, and a match that starts in that tail is left
        // for the next chunk.
        const CHUNK: u64 = 8 << 20;
        let mut at = start;
        let mut buf = Vec::new();
        while at < end {
            let len = (end - at).min(CHUNK + overlap as u64);
            buf.resize(len as usize, 0);
            if mem.read_exact_at(&mut buf, at).is_err() {
                break;
            }
            let owned = (end - at).min(CHUNK) as usize;
            for (f, count) in finders.iter().zip(counts.iter_mut()) {
                *count += f.find_iter(&buf).filter(|&pos| pos < owned).count();
            }
            at += CHUNK;
        }
    }
    counts
}

/// The readable, private, resident mappings of `smaps` that are not files: `[heap]`,
/// `[stack]` and anonymous ones.
fn private_regions(smaps: &str) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut current: Option<(u64, u64)> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if first.ends_with(':') {
            // A field of the current mapping: keep it only if some of it is resident.
            if first == "Rss:" {
                let kb: u64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                if let Some(r) = current.take() {
                    if kb > 0 {
                        out.push(r);
                    }
                }
            }
            continue;
        }
        current = None;
        let Some((start, end)) = first.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        else {
            continue;
        };
        let perms = fields.next().unwrap_or("");
        let path = fields.nth(3).unwrap_or("");
        let own = path.is_empty()
            || path == "[heap]"
            || path.starts_with("[stack")
            || path.starts_with("[anon");
        if perms.starts_with('r') && perms.ends_with('p') && own {
            current = Some((start, end));
        }
    }
    out
}

/// Sends `lines` (CRLF line ends, no final dot) as one message over a fresh session.
fn send(raw: &mut Raw, from: &str, to: &str, message: &str) {
    assert!(raw.cmd(&format!("MAIL FROM:<{from}>")).starts_with("250"));
    let rcpt = raw.cmd(&format!("RCPT TO:<{to}>"));
    assert!(rcpt.starts_with("250"), "{rcpt}");
    assert!(raw.cmd("DATA").starts_with("354"));
    raw.send(message.as_bytes());
    let done = raw.cmd(".");
    assert!(done.starts_with("250"), "{done}");
}

fn maildir_files(maildir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(maildir.join("new"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

/// A passthrough login and a decrypted message are delivered, the sessions close, and the
/// gateway's memory is searched for them. The password must be gone from it, whole or in
/// part. The decrypted message must be gone in the form the gateway builds for delivery
/// (CRLF line ends: the plaintext as sequoia hands it out has the LF of gpg's input), and
/// from every buffer that held it from its start (see the last assertion).
#[test]
fn a_delivered_login_and_decrypted_message_do_not_stay_in_memory() {
    let password = unique("pw-Linger-");
    let mark = unique("Linger-body-");
    let outbound_mark = unique("Linger-out-");
    let s = Sealpost::new();
    s.generate("bob@example.org", &[]);
    let gpg = Gpg::new();
    gpg.ok_with_input(
        &["--import"],
        s.ok(&["keys", "export", "bob@example.org"]).as_bytes(),
    );
    let encrypted = |mark: &str| {
        let mut body = String::new();
        for i in 0..LINES {
            body.push_str(&format!("{i:05} {mark} a line of the secret message\n"));
        }
        let armored = gpg.ok_with_input(
            &["--armor", "--encrypt", "-r", "bob@example.org"],
            body.as_bytes(),
        );
        let mut message =
            String::from("From: alice@example.net\r\nTo: bob@example.org\r\nSubject: in\r\n\r\n");
        for line in String::from_utf8_lossy(&armored).lines() {
            message.push_str(line);
            message.push_str("\r\n");
        }
        assert!(!message.contains(mark));
        message
    };
    // A gateway that has run for a while: the allocator has raised its threshold for
    // giving large blocks straight back to the system (glibc does when it frees one), and
    // a message's buffers come from the heap, where freed bytes stay.
    let earlier = encrypted(&unique("Earlier-"));
    let secret = encrypted(&mark);
    let later = encrypted(&unique("Later-"));

    let up = ScriptedUpstream::start();
    up.require_login("carol", &password);
    let maildir = s.dir.path().join("Maildir");
    let config = format!(
        "[[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\
         auth = \"passthrough\"\nrequire_auth = true\n\n\
         [[listener]]\nmode = \"inbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\n\
         [upstream]\naddress = \"{}\"\ntls = \"none\"\n\n\
         [inbound]\ndeliver = \"maildir:{}\"\nlocal_domains = [\"example.org\"]\n",
        up.address(),
        maildir.display()
    );
    let gw = s.serve(&config, &[]);
    let (outbound, inbound) = (gw.ports[0], gw.ports[1]);

    // Outbound: AUTH PLAIN with the password, one message, QUIT.
    let plain = base64::engine::general_purpose::STANDARD.encode(format!("\0carol\0{password}"));
    let mut c = Raw::connect(outbound);
    c.cmd("EHLO client.example");
    let auth = c.cmd(&format!("AUTH PLAIN {plain}"));
    assert!(auth.starts_with("235"), "{auth}");
    let mut message =
        String::from("From: carol@example.org\r\nTo: dan@example.net\r\nSubject: out\r\n\r\n");
    for i in 0..100 {
        message.push_str(&format!("{i:03} {outbound_mark}\r\n"));
    }
    send(&mut c, "carol@example.org", "dan@example.net", &message);
    c.cmd("QUIT");
    drop(c);
    let got = up.wait_received(1, LONG);
    assert_eq!(got[0].auth.as_deref(), Some("carol"));

    // Inbound: gpg messages to Bob, decrypted and delivered to his Maildir.
    let mut c = Raw::connect(inbound);
    c.cmd("EHLO mx.example.net");
    // The secret message twice, between others, as a busy gateway would see it: where
    // its buffers end up in the heap, and whether later messages reuse them, varies.
    for message in [&earlier, &secret, &later, &secret] {
        send(&mut c, "alice@example.net", "bob@example.org", message);
    }
    c.cmd("QUIT");
    drop(c);
    let files = wait_for(LONG, "the decrypted copies", || {
        let f = maildir_files(&maildir);
        (f.len() == 4).then_some(f)
    });
    let copy = files
        .iter()
        .map(|f| std::fs::read_to_string(f).expect("read a copy"))
        .find(|c| c.contains(&mark))
        .expect("a copy of the secret message");
    assert!(copy.contains("encryption=decrypted"), "{copy}");
    assert_eq!(copy.matches(&mark).count(), LINES, "the whole message");

    // The connections wind down; nothing here waits for a particular moment.
    std::thread::sleep(Duration::from_secs(2));

    let tail = &password[password.len() - 16..];
    let crlf = format!("{mark} a line of the secret message\r\n");
    let lf = format!("{mark} a line of the secret message\n");
    let out_line = format!("{outbound_mark}\r\n");
    let held = maildir.display().to_string();
    let needles: [(&str, &[u8]); 8] = [
        ("password", password.as_bytes()),
        ("password tail", tail.as_bytes()),
        ("AUTH PLAIN response (base64)", plain.as_bytes()),
        ("decrypted line, as delivered (CRLF)", crlf.as_bytes()),
        ("decrypted line, as decrypted (LF)", lf.as_bytes()),
        ("decrypted marker, any form", mark.as_bytes()),
        ("outbound plaintext line", out_line.as_bytes()),
        ("the Maildir path (held for good)", held.as_bytes()),
    ];
    let bytes: Vec<&[u8]> = needles.iter().map(|(_, n)| *n).collect();
    let counts = scan(gw.child.id(), &bytes);
    let lines = lines_held(gw.child.id(), mark.as_bytes());
    let early: Vec<usize> = lines.iter().copied().filter(|&l| l <= 2).collect();
    let mut report = String::new();
    for ((what, _), n) in needles.iter().zip(&counts) {
        report.push_str(&format!("{what}: {n}\n"));
    }
    report.push_str(&format!(
        "lines of the decrypted message found: {}\n",
        runs(&lines)
    ));
    report.push_str(&format!(
        "first lines of the decrypted message (a buffer that held it from its start): {}\n",
        early.len()
    ));
    let _ = writeln!(std::io::stderr(), "memory of sealpost serve:\n{report}");
    // The scan reads the gateway's memory: what its configuration holds for good is found.
    assert!(
        counts[7] > 0,
        "the scan found nothing the gateway holds:\n{report}"
    );

    assert_eq!(counts[0], 0, "the password is still in memory:\n{report}");
    assert_eq!(
        counts[1], 0,
        "part of the password is still in memory:\n{report}"
    );
    assert_eq!(
        counts[3], 0,
        "the delivered plaintext is still in memory:\n{report}"
    );
    // The plaintext as sequoia hands it out is read into one buffer of the gateway's,
    // from its first byte, and the delivered copy is built from it: each buffer the
    // gateway had (and each smaller copy left behind as one grew) began with the
    // message's first lines. Sequoia's readers and the decompressor hold windows that
    // move along as the message is read (freed as they are, which the gateway cannot
    // change: the lines counted above), and the last of them hold its end. A first line
    // found in memory was the gateway's.
    assert!(
        early.is_empty(),
        "the start of the decrypted message is still in memory (lines {:?}…):\n{report}",
        early.iter().take(5).collect::<Vec<_>>()
    );
}

/// The line numbers of the lines of the decrypted message found in the memory of `pid`
/// (each line starts with its number, then `mark`), in the regions [`scan`] reads.
fn lines_held(pid: u32, mark: &[u8]) -> Vec<usize> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).expect("read smaps");
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).expect("open /proc/PID/mem");
    let finder = memchr::memmem::Finder::new(mark);
    let mut lines = Vec::new();
    for (start, end) in private_regions(&smaps) {
        let mut buf = vec![0u8; (end - start) as usize];
        if mem.read_exact_at(&mut buf, start).is_err() {
            continue;
        }
        for at in finder.find_iter(&buf) {
            let number = buf
                .get(at.saturating_sub(6)..at.saturating_sub(1))
                .and_then(|n| std::str::from_utf8(n).ok())
                .and_then(|n| n.parse::<usize>().ok());
            lines.extend(number);
        }
    }
    lines
}

/// Line numbers as runs of consecutive lines: `first+count`, for the report.
fn runs(lines: &[usize]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&first) = lines.get(i) {
        let mut n = 1;
        while lines.get(i + n) == Some(&(first + n)) {
            n += 1;
        }
        out.push(format!("{first}+{n}"));
        i += n;
    }
    out.join(" ")
}
