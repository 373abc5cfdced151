//! sealpost with a real Postfix 3.7 next to it: a private instance per test (`postfix -c
//! DIR`, its own queue, ports and log; never the system's configuration), as the
//! upstream that limits the message size, and in the recipes of `deploy/postfix/`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use super::common::{Raw, Sealpost};
use super::upstream::{free_port, wait_for};

/// A private Postfix: `main.cf` and `master.cf` of its own in a temporary directory,
/// `smtpd` on `port`. It stops, and its directory goes, when the test process ends (the
/// shell that runs it waits on a pipe that closes then) or when dropped.
pub struct Postfix {
    pub dir: PathBuf,
    pub port: u16,
    shell: Mutex<std::process::Child>,
}

impl Postfix {
    /// Starts Postfix with `main` appended to a private `main.cf`, `transport` as its
    /// transport map, and `master` appended to its `master.cf` (whose first service is
    /// `smtpd` on 127.0.0.1:`port`).
    pub fn start(main: &str, transport: &str, master: &str) -> Postfix {
        use std::os::unix::fs::{chown, PermissionsExt};
        let dir = tempfile::Builder::new()
            .prefix("sealpost-postfix")
            .tempdir()
            .expect("tempdir")
            .keep();
        // Postfix's daemons run as the postfix user, which must reach the queue.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::create_dir(dir.join("queue")).expect("queue dir");
        std::fs::create_dir(dir.join("data")).expect("data dir");
        let postfix = users_id("postfix");
        chown(dir.join("data"), Some(postfix), None)
            .expect("chown the data directory (the tests run as root)");
        let port = free_port();
        let d = dir.display();
        // The map in the directory, unless `main` names its own.
        let transport_maps = if main.contains("transport_maps") {
            String::new()
        } else {
            format!("transport_maps = texthash:{d}/transport\n")
        };
        std::fs::write(
            dir.join("main.cf"),
            format!(
                "compatibility_level = 3.6\n\
                 queue_directory = {d}/queue\n\
                 data_directory = {d}/data\n\
                 inet_interfaces = 127.0.0.1\n\
                 inet_protocols = ipv4\n\
                 maillog_file_prefixes = {d}\n\
                 maillog_file = {d}/maillog\n\
                 myhostname = mx.example.test\n\
                 mydestination =\n\
                 mynetworks = 127.0.0.0/8\n\
                 alias_maps =\n\
                 alias_database =\n\
                 disable_dns_lookups = yes\n\
                 smtp_dns_support_level = disabled\n\
                 {transport_maps}\
                 smtpd_relay_restrictions = permit_mynetworks, reject\n\
                 {main}\n"
            ),
        )
        .expect("main.cf");
        std::fs::write(dir.join("transport"), transport).expect("transport");
        std::fs::write(
            dir.join("master.cf"),
            format!("127.0.0.1:{port} inet n - n - - smtpd\n{MASTER}{master}"),
        )
        .expect("master.cf");
        let shell = Command::new("sh")
            .arg("-c")
            .arg(
                r#"postfix -c "$1" start-fg & pid=$!; read -r _ignored; postfix -c "$1" stop; wait "$pid"; rm -rf "$2""#,
            )
            .arg("sh")
            .arg(&dir)
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh");
        let postfix = Postfix {
            dir,
            port,
            shell: Mutex::new(shell),
        };
        let up = (0..400).any(|_| {
            std::thread::sleep(Duration::from_millis(25));
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(
            up,
            "Postfix did not start (package postfix): {}",
            postfix.log()
        );
        postfix
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }

    /// Waits until its log has a line with every one of `words`; returns that line.
    pub fn wait_log(&self, words: &[&str]) -> String {
        wait_for(
            Duration::from_secs(30),
            &format!("{words:?} in Postfix's log"),
            || {
                self.log()
                    .lines()
                    .find(|l| words.iter().all(|w| l.contains(w)))
                    .map(str::to_string)
            },
        )
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        if let Ok(mut shell) = self.shell.lock() {
            drop(shell.stdin.take());
            let _ = shell.wait();
        }
    }
}

/// The services `master.cf` needs besides `smtpd` (Debian's list, no chroot).
const MASTER: &str = "\
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
lmtp      unix  - - n - - lmtp
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
";

/// A user's uid from /etc/passwd.
fn users_id(name: &str) -> u32 {
    std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&name)).then(|| f.get(2)?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no user {name} (package postfix)"))
}

/// Sends `message` from `from` to `to` over a raw session; returns the reply to MAIL
/// (with `size` as its SIZE parameter when given) or, when it is accepted, to the data.
fn send(port: u16, from: &str, to: &[&str], size: Option<usize>, message: &[u8]) -> String {
    let mut raw = Raw::connect(port);
    raw.cmd("EHLO client.example");
    let param = size.map(|n| format!(" SIZE={n}")).unwrap_or_default();
    let mail = raw.cmd(&format!("MAIL FROM:<{from}>{param}"));
    if !mail.starts_with("250") {
        return mail;
    }
    for rcpt in to {
        let r = raw.cmd(&format!("RCPT TO:<{rcpt}>"));
        assert!(r.starts_with("250"), "{rcpt}: {r}");
    }
    assert!(raw.cmd("DATA").starts_with("354"));
    raw.send(message);
    raw.send(b".\r\n");
    let reply = raw.reply();
    let _ = raw.stream.write_all(b"QUIT\r\n");
    reply
}

/// About `size` bytes of mail from alice: a base64 attachment (which encryption grows by
/// 1.375) or 8-bit UTF-8 text (which a signed copy re-encodes as quoted-printable, about
/// 2.9 times as large).
fn message(to: &str, size: usize, eight_bit: bool) -> Vec<u8> {
    let mut m =
        format!("From: alice@example.org\r\nTo: {to}\r\nSubject: size\r\nMIME-Version: 1.0\r\n");
    if eight_bit {
        m.push_str(
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
        );
        let line = "Съешь же ещё этих мягких французских булок, да выпей чаю\r\n";
        while m.len() + line.len() < size {
            m.push_str(line);
        }
    } else {
        m.push_str(
            "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n",
        );
        let line =
            "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n";
        while m.len() + line.len() < size {
            m.push_str(line);
        }
    }
    m.into_bytes()
}

/// Postfix's `message_size_limit` for the size test.
const POSTFIX_LIMIT: usize = 300_000;

#[test]
fn the_listener_offers_what_still_fits_the_upstreams_size_once_encrypted() {
    let postfix = Postfix::start(
        &format!("message_size_limit = {POSTFIX_LIMIT}\nrelay_domains = example.net\n"),
        "example.net discard:\n",
        "",
    );
    let s = Sealpost::new();
    s.generate("alice@example.org", &[]);
    s.generate("bob@example.net", &[]);
    let config = format!(
        "[[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\n\
         [upstream]\naddress = \"127.0.0.1:{}\"\ntls = \"none\"\n",
        postfix.port
    );
    let gw = s.serve(&config, &[]);
    let port = gw.port();

    // The limit offered: Postfix's, less a reserve of 64 KiB, divided by 1.375 (base64
    // armor: 4/3 times 66/64), as src/relay/size.rs derives it.
    let limit = (POSTFIX_LIMIT - 65536) * 8 / 11;
    let ehlo = Raw::connect(port).cmd("EHLO client.example");
    assert!(ehlo.contains(&format!("250-SIZE {limit}\r\n")), "{ehlo}");

    // Told before the message is sent.
    let over = send(
        port,
        "alice@example.org",
        &["bob@example.net"],
        Some(limit + 1),
        b"",
    );
    assert!(over.starts_with("552 5.3.4"), "{over}");
    assert!(over.contains("next hop"), "{over}");

    // The largest message offered, encrypted for bob, fits Postfix's limit and is taken.
    let m = message("bob@example.net", limit - 100, false);
    let reply = send(
        port,
        "alice@example.org",
        &["bob@example.net"],
        Some(m.len() + 3),
        &m,
    );
    assert!(reply.starts_with("250"), "{reply}");
    let sent = postfix.wait_log(&["to=<bob@example.net>", "status=sent"]);
    assert!(sent.contains("discard"), "{sent}");

    // Signed only, for carol (no key), 8-bit text grows past Postfix's limit as
    // quoted-printable. Bob's encrypted copy would fit: without the check, bob's went
    // and carol's bounced after a 250. The whole message is refused instead, and Postfix
    // never sees any of it.
    let before = postfix.log().matches("from=<alice@example.org>").count();
    let m = message("bob@example.net, carol@example.net", 120_000, true);
    let reply = send(
        port,
        "alice@example.org",
        &["bob@example.net", "carol@example.net"],
        None,
        &m,
    );
    assert!(reply.starts_with("552 5.3.4"), "{reply}");
    assert!(reply.contains("carol@example.net"), "{reply}");
    assert!(
        reply.contains(&format!("at most {POSTFIX_LIMIT}")),
        "{reply}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let after = postfix.log().matches("from=<alice@example.org>").count();
    assert_eq!(before, after, "{}", postfix.log());
}

/// A recipe file from `deploy/postfix/`.
fn recipe(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/postfix")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A private Dovecot from `deploy/postfix/dovecot.conf` (its LMTP port and users file
/// replaced), with IMAP for reading back; alice@example.org's password is `pw`.
struct Dovecot {
    dir: PathBuf,
    lmtp: u16,
    imap: u16,
    shell: Mutex<std::process::Child>,
}

impl Dovecot {
    fn start() -> Dovecot {
        use std::os::unix::fs::{chown, PermissionsExt};
        let dir = tempfile::Builder::new()
            .prefix("sealpost-dovecot")
            .tempdir()
            .expect("tempdir")
            .keep();
        // Delivery runs as uid 65534, which must reach the mail directory.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::create_dir(dir.join("mail")).expect("mail dir");
        chown(dir.join("mail"), Some(65534), Some(65534)).expect("chown (the tests run as root)");
        let d = dir.display();
        std::fs::write(
            dir.join("users"),
            format!("alice@example.org:{{PLAIN}}pw:65534:65534::{d}/mail/alice::\n"),
        )
        .expect("users");
        let (lmtp, imap) = (free_port(), free_port());
        let config = recipe("dovecot.conf")
            .replace("port = 24", &format!("port = {lmtp}"))
            .replace("/etc/dovecot/users", &format!("{d}/users"));
        let config = format!(
            "base_dir = {d}/run\n\
             state_dir = {d}/state\n\
             instance_name = sealpost-postfix-test-{pid}\n\
             log_path = {d}/dovecot.log\n\
             listen = 127.0.0.1\n\
             ssl = no\n\
             disable_plaintext_auth = no\n\
             first_valid_uid = 65534\n\
             mail_location = maildir:{d}/mail/%d/%n/Maildir\n\
             service imap-login {{\n  inet_listener imap {{\n    port = {imap}\n  }}\n  inet_listener imaps {{\n    port = 0\n  }}\n}}\n\
             {config}",
            pid = std::process::id(),
        );
        let conf = dir.join("dovecot.conf");
        std::fs::write(&conf, config).expect("dovecot.conf");
        let shell = Command::new("sh")
            .arg("-c")
            .arg(r#"dovecot -F -c "$1" & pid=$!; read -r _ignored; kill "$pid"; wait "$pid"; rm -rf "$2""#)
            .arg("sh")
            .arg(&conf)
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh");
        let dovecot = Dovecot {
            dir,
            lmtp,
            imap,
            shell: Mutex::new(shell),
        };
        let up = |port: u16| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        let started = (0..400).any(|_| {
            std::thread::sleep(Duration::from_millis(25));
            up(lmtp) && up(imap)
        });
        assert!(
            started,
            "Dovecot did not start (packages dovecot-core, dovecot-lmtpd, dovecot-imapd): {}",
            std::fs::read_to_string(dovecot.dir.join("dovecot.log")).unwrap_or_default()
        );
        dovecot
    }

    /// alice's INBOX read over IMAP with Python's imaplib, one message after another.
    fn inbox(&self) -> Vec<String> {
        let script = "import imaplib, sys\n\
            m = imaplib.IMAP4('127.0.0.1', int(sys.argv[1]))\n\
            m.login('alice@example.org', 'pw')\n\
            m.select('INBOX')\n\
            for n in m.search(None, 'ALL')[1][0].split():\n    \
                sys.stdout.buffer.write(m.fetch(n, '(RFC822)')[1][0][1] + b'\\n=====SEP=====\\n')\n\
            m.logout()\n";
        let out = Command::new("python3")
            .args(["-c", script, &self.imap.to_string()])
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "imaplib: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .split("\n=====SEP=====\n")
            .filter(|m| !m.trim().is_empty())
            .map(str::to_string)
            .collect()
    }

    fn wait_inbox(&self, n: usize) -> Vec<String> {
        wait_for(
            Duration::from_secs(60),
            &format!("{n} message(s) over IMAP"),
            || {
                let m = self.inbox();
                (m.len() >= n).then_some(m)
            },
        )
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if let Ok(mut shell) = self.shell.lock() {
            drop(shell.stdin.take());
            let _ = shell.wait();
        }
    }
}

/// `deploy/postfix/sealpost.toml` with the test's ports and smtp-sink as the smarthost.
fn sealpost_recipe(out: u16, inbound: u16, upstream: u16, lmtp: u16) -> String {
    recipe("sealpost.toml")
        .replace("127.0.0.1:10025", &format!("127.0.0.1:{out}"))
        .replace("127.0.0.1:2525", &format!("127.0.0.1:{inbound}"))
        .replace("lmtp:127.0.0.1:24", &format!("lmtp:127.0.0.1:{lmtp}"))
        .replace(
            "address = \"smtp.provider.example:587\"\ntls = \"starttls\"",
            &format!("address = \"127.0.0.1:{upstream}\"\ntls = \"none\""),
        )
}

/// Mail for alice from outside, encrypted with gpg to her key (as sealpost exports it).
fn encrypted_for_alice(s: &Sealpost, marker: &str) -> String {
    let gpg = super::common::Gpg::new();
    gpg.ok_with_input(
        &["--import"],
        s.ok(&["keys", "export", "alice@example.org"]).as_bytes(),
    );
    let armored = gpg.ok_with_input(
        &[
            "--trust-model",
            "always",
            "--armor",
            "--encrypt",
            "-r",
            "alice@example.org",
        ],
        format!("The plaintext {marker}.\n").as_bytes(),
    );
    format!(
        "From: dave@example.net\r\nTo: alice@example.org\r\nSubject: for alice\r\n\r\n{}",
        String::from_utf8_lossy(&armored).replace('\n', "\r\n")
    )
}

/// smtp-sink as the smarthost, writing each message it gets into a directory of its own.
fn dump_sink() -> (std::process::Child, tempfile::TempDir, u16) {
    let dump = tempfile::tempdir().expect("dump dir");
    let sink_port = free_port();
    let mut sink = Command::new("smtp-sink");
    {
        // smtp-sink drops to `nobody` when run as root; that user writes the dumps.
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
            sink.args(["-u", "nobody"]);
        }
        std::fs::set_permissions(dump.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
    }
    let sink = sink
        .arg("-d")
        .arg(dump.path().join("%M%S."))
        .arg(format!("127.0.0.1:{sink_port}"))
        .arg("64")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("smtp-sink (package postfix)");
    wait_for(Duration::from_secs(10), "smtp-sink", || {
        std::net::TcpStream::connect(("127.0.0.1", sink_port)).ok()
    });
    (sink, dump, sink_port)
}

/// The first message smtp-sink wrote into `dump`.
fn dumped(dump: &tempfile::TempDir) -> String {
    wait_for(Duration::from_secs(30), "a copy at the smarthost", || {
        let files: Vec<_> = std::fs::read_dir(dump.path()).ok()?.flatten().collect();
        let f = files.first()?;
        Some(std::fs::read_to_string(f.path()).unwrap_or_default())
    })
}

#[test]
fn postfix_relays_through_sealpost_and_delivers_to_dovecot_as_the_recipes_say() {
    let dovecot = Dovecot::start();
    let (mut sink, dump, sink_port) = dump_sink();
    let (out, inbound) = (free_port(), free_port());
    let main = format!(
        "{}\n{}",
        recipe("relayhost.main.cf").replace("127.0.0.1]:10025", &format!("127.0.0.1]:{out}")),
        recipe("mx.main.cf").replace("/etc/postfix/transport", "${config_directory}/transport")
    );
    let transport = recipe("transport").replace(":2525", &format!(":{inbound}"));
    let postfix = Postfix::start(&main, &transport, "");

    let s = Sealpost::new();
    s.generate("alice@example.org", &[]);
    s.generate("bob@example.net", &[]);
    let config = sealpost_recipe(out, inbound, sink_port, dovecot.lmtp);
    let mut gw = s.serve(&config, &[]);

    // Submission: Postfix relays to sealpost, which sends bob's copy encrypted.
    let (ok, text) = super::common::swaks_to(
        postfix.port,
        "alice@example.org",
        "bob@example.net",
        &["--header", "Subject: outgoing", "--body", "OUTGOING-MARK"],
    );
    assert!(ok, "{text}");
    postfix.wait_log(&[
        "to=<bob@example.net>",
        &format!("relay=127.0.0.1[127.0.0.1]:{out}"),
        "status=sent",
    ]);
    let sent = wait_for(
        Duration::from_secs(30),
        "bob's copy at the smarthost",
        || {
            let files: Vec<_> = std::fs::read_dir(dump.path()).ok()?.flatten().collect();
            let f = files.first()?;
            Some(std::fs::read_to_string(f.path()).unwrap_or_default())
        },
    );
    assert!(sent.contains("multipart/encrypted"), "{sent}");
    assert!(sent.contains("-----BEGIN PGP MESSAGE-----"), "{sent}");
    assert!(!sent.contains("OUTGOING-MARK"), "{sent}");

    // MX: encrypted mail for alice lands in Dovecot decrypted, with its verdict.
    let (ok, text) = super::common::swaks_to(
        postfix.port,
        "dave@example.net",
        "alice@example.org",
        &["--data", &encrypted_for_alice(&s, "FIRST-MARK")],
    );
    assert!(ok, "{text}");
    let inbox = dovecot.wait_inbox(1);
    assert!(
        inbox[0].contains("The plaintext FIRST-MARK."),
        "{}",
        inbox[0]
    );
    let unfolded = inbox[0].replace("\r\n\t", " ").replace("\n\t", " ");
    assert!(unfolded.contains("X-Sealpost-Verdict:"), "{unfolded}");
    assert!(unfolded.contains("encryption=decrypted"), "{unfolded}");

    // sealpost stopped: Postfix keeps the mail queued, and delivers it once sealpost is
    // back.
    gw.terminate();
    let (ok, text) = super::common::swaks_to(
        postfix.port,
        "dave@example.net",
        "alice@example.org",
        &["--data", &encrypted_for_alice(&s, "SECOND-MARK")],
    );
    assert!(ok, "{text}");
    postfix.wait_log(&["to=<alice@example.org>", "status=deferred"]);
    assert_eq!(dovecot.inbox().len(), 1);
    let _gw = s.serve(&config, &[]);
    let flushed = Command::new("postqueue")
        .arg("-c")
        .arg(&postfix.dir)
        .arg("-f")
        .status()
        .expect("postqueue");
    assert!(flushed.success());
    let inbox = dovecot.wait_inbox(2);
    assert!(
        inbox
            .iter()
            .any(|m| m.contains("The plaintext SECOND-MARK.")),
        "{inbox:?}"
    );
    let _ = sink.kill();
    let _ = sink.wait();
}

#[test]
fn postfix_passes_mail_through_sealpost_as_a_content_filter_and_reinjects_it() {
    let (mut sink, dump, sink_port) = dump_sink();
    let (out, reinject) = (free_port(), free_port());
    let main = format!(
        "{}\nrelay_domains = example.net\n",
        recipe("content-filter.main.cf").replace("127.0.0.1]:10025", &format!("127.0.0.1]:{out}"))
    );
    let master = recipe("content-filter.master.cf")
        .replace("127.0.0.1:10026", &format!("127.0.0.1:{reinject}"));
    let postfix = Postfix::start(
        &main,
        &format!("example.net smtp:[127.0.0.1]:{sink_port}\n"),
        &master,
    );
    let s = Sealpost::new();
    s.generate("alice@example.org", &[]);
    s.generate("bob@example.net", &[]);
    // sealpost's upstream is Postfix's reinjection listener, as the recipe says.
    let config = sealpost_recipe(out, free_port(), reinject, free_port());
    let _gw = s.serve(&config, &[]);

    let (ok, text) = super::common::swaks_to(
        postfix.port,
        "alice@example.org",
        "bob@example.net",
        &["--header", "Subject: filtered", "--body", "FILTERED-MARK"],
    );
    assert!(ok, "{text}");
    // Into the filter, back through the reinjection listener, out to the smarthost.
    postfix.wait_log(&[
        "to=<bob@example.net>",
        &format!("relay=127.0.0.1[127.0.0.1]:{out}"),
        "status=sent",
    ]);
    postfix.wait_log(&[
        "to=<bob@example.net>",
        &format!("relay=127.0.0.1[127.0.0.1]:{sink_port}"),
        "status=sent",
    ]);
    let sent = dumped(&dump);
    assert!(sent.contains("multipart/encrypted"), "{sent}");
    assert!(!sent.contains("FILTERED-MARK"), "{sent}");
    let _ = sink.kill();
    let _ = sink.wait();
}
