//! Inbound delivery over LMTP through the real binary: swaks into an inbound listener,
//! an LMTP server on TCP or a Unix socket out, per-recipient replies after DATA, the
//! spool, DSNs; and 8-bit messages to next hops with and without 8BITMIME (LMTP and SMTP).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::common::{relay_config, swaks, Sealpost};
use super::upstream::{
    free_port, wait_for, LmtpServer, LmtpTransaction, ScriptedUpstream, SmtpSink,
};

const LONG: Duration = Duration::from_secs(30);

/// One inbound listener for example.org, retries after a second, then `extra`.
fn inbound_config(deliver: Option<&str>, extra: &str) -> String {
    let deliver = deliver.map_or(String::new(), |d| format!("deliver = \"{d}\"\n"));
    format!(
        "[[listener]]\nmode = \"inbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\n\
         [inbound]\n{deliver}local_domains = [\"example.org\"]\n\n\
         [delivery]\nretry = \"1s\"\n\n{extra}"
    )
}

/// A UTF-8 text message with 8-bit bytes in its body (and a line with trailing space).
const EIGHT_BIT: &str = "From: sender@remote.example\r\nTo: alice@example.org\r\nSubject: umlauts\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln – ½ € \r\n.zweite Zeile\r\n";

fn decoded_text(message: &[u8]) -> String {
    let parsed = mail_parser::MessageParser::default()
        .parse(message)
        .expect("a message");
    parsed.body_text(0).expect("a text body").into_owned()
}

/// Writes `message` for swaks's `--data`, which ends the data with CRLF.CRLF itself: the
/// file leaves out the last line's CRLF, so that what arrives is `message`.
fn data_file(s: &Sealpost, name: &str, message: &str) -> String {
    let file = s.dir.path().join(name);
    std::fs::write(&file, message.strip_suffix("\r\n").unwrap_or(message)).unwrap();
    file.display().to_string()
}

fn send(port: u16, to: &str, extra: &[&str]) -> (bool, String) {
    let mut args = vec!["--from", "sender@remote.example", "--to", to];
    args.extend_from_slice(extra);
    swaks(port, &args)
}

#[test]
fn two_recipients_one_data_both_delivered() {
    let lmtp = LmtpServer::tcp(true);
    let s = Sealpost::new();
    let gw = s.serve(&inbound_config(Some(lmtp.target()), ""), &[]);
    let (ok, out) = send(
        gw.port(),
        "alice@example.org,bob@example.org",
        &["--header", "Subject: lmtp", "--body", "hello over LMTP"],
    );
    assert!(ok, "{out}");
    assert!(out.contains("<-  250 2.0.0 Delivered"), "{out}");
    let t = lmtp.wait_transactions(1, LONG);
    assert_eq!(t.len(), 1, "one DATA for both recipients");
    assert_eq!(t[0].recipients, ["alice@example.org", "bob@example.org"]);
    assert!(!t[0].lhlo.is_empty());
    assert!(t[0].mail.starts_with("MAIL FROM:<sender@remote.example>"));
    assert!(!t[0].mail.contains("BODY="), "7-bit data: {}", t[0].mail);
    let text = String::from_utf8_lossy(&t[0].data);
    assert!(text.contains("Subject: lmtp") && text.contains("hello over LMTP"));
    assert!(
        text.contains("\r\nReceived: from ") || text.starts_with("Received: from "),
        "{text}"
    );
    assert!(
        text.starts_with("Authentication-Results: "),
        "results first: {text}"
    );
    assert!(s.ok(&["queue", "list"]).is_empty());
}

#[test]
fn a_452_after_data_is_spooled_and_retried_over_a_unix_socket() {
    let lmtp = LmtpServer::unix(true);
    lmtp.after_data(
        "bob@example.org",
        &["452 4.2.2 <bob@example.org> Mailbox is full"],
    );
    let s = Sealpost::new();
    // The target from the command line, over the file's (which has none).
    let gw = s.serve(&inbound_config(None, ""), &["--deliver", lmtp.target()]);
    let (ok, out) = send(
        gw.port(),
        "alice@example.org,bob@example.org",
        &["--header", "Subject: retry me"],
    );
    assert!(ok, "{out}");
    assert!(out.contains("<-  250 2.0.0 Accepted"), "{out}");
    let t = lmtp.wait_transactions(2, LONG);
    assert_eq!(t[0].recipients, ["alice@example.org", "bob@example.org"]);
    assert!(
        t[0].replies[1].starts_with("452 4.2.2"),
        "{:?}",
        t[0].replies
    );
    assert_eq!(t[1].recipients, ["bob@example.org"], "only bob is retried");
    assert_eq!(t[1].data, t[0].data, "the same message");
    assert!(t[1].replies[0].starts_with("250"));
    wait_for(LONG, "an empty spool", || {
        s.ok(&["queue", "list"]).is_empty().then_some(())
    });
    assert_eq!(lmtp.transactions().len(), 2, "delivered once each");
}

#[test]
fn a_550_after_data_bounces_as_smtp_refusals_do() {
    let lmtp = LmtpServer::tcp(true);
    let reply = "550 5.1.1 <gone@example.org> User doesn't exist";
    lmtp.after_data("gone@example.org", &[reply, reply]);
    // DSNs leave through the outbound transport: a scripted upstream records them.
    let up = ScriptedUpstream::start();
    let s = Sealpost::new();
    let extra = format!(
        "[upstream]\naddress = \"{}\"\ntls = \"none\"\n",
        up.address()
    );
    let gw = s.serve(&inbound_config(Some(lmtp.target()), &extra), &[]);

    // One accepted, one refused: 250 to the client, a DSN to the sender.
    let (ok, out) = send(
        gw.port(),
        "alice@example.org,gone@example.org",
        &["--header", "Subject: partly refused"],
    );
    assert!(ok, "{out}");
    assert!(out.contains("<-  250 2.0.0 Accepted"), "{out}");
    let dsn = &up.wait_received(1, LONG)[0];
    assert_eq!(dsn.sender, "");
    assert_eq!(dsn.recipients, ["sender@remote.example"]);
    let text = String::from_utf8_lossy(&dsn.data);
    assert!(text.contains("multipart/report"), "{text}");
    assert!(
        text.contains("Final-Recipient: rfc822; gone@example.org"),
        "{text}"
    );
    assert!(text.contains("Status: 5.1.1"), "{text}");
    assert!(text.contains("User doesn't exist"), "{text}");
    assert!(text.contains("Subject: partly refused"), "{text}");
    assert!(
        !text.contains("Final-Recipient: rfc822; alice@example.org"),
        "{text}"
    );

    // Only refused recipients: the LMTP server's reply goes back, nothing is spooled.
    let (ok, out) = send(gw.port(), "gone@example.org", &[]);
    assert!(!ok, "{out}");
    assert!(out.contains(&format!("<** {reply}")), "{out}");
    assert_eq!(lmtp.transactions().len(), 2, "a 5xx is never retried");
    assert!(s.ok(&["queue", "list"]).is_empty());
    assert_eq!(up.received().len(), 1, "no DSN when the client was told");
}

/// Sends the 8-bit message through a gateway delivering to `lmtp`; what `lmtp` received.
fn eight_bit_through(lmtp: &LmtpServer) -> LmtpTransaction {
    let s = Sealpost::new();
    let gw = s.serve(&inbound_config(Some(lmtp.target()), ""), &[]);
    let file = data_file(&s, "8bit.eml", EIGHT_BIT);
    let (ok, out) = send(gw.port(), "alice@example.org", &["--data", &file]);
    assert!(ok, "{out}");
    lmtp.wait_transactions(1, LONG).remove(0)
}

#[test]
fn eight_bit_to_lmtp_without_8bitmime_arrives_quoted_printable() {
    let lmtp = LmtpServer::tcp(false);
    let t = &eight_bit_through(&lmtp);
    assert!(!t.mail.contains("BODY=8BITMIME"), "{}", t.mail);
    assert!(t.data.is_ascii(), "{}", String::from_utf8_lossy(&t.data));
    let text = String::from_utf8_lossy(&t.data);
    assert!(
        text.contains("Content-Transfer-Encoding: quoted-printable\r\n"),
        "{text}"
    );
    assert!(!text.contains("Content-Transfer-Encoding: 8bit"), "{text}");
    assert_eq!(decoded_text(&t.data), decoded_text(EIGHT_BIT.as_bytes()));
}

#[test]
fn eight_bit_to_lmtp_with_8bitmime_arrives_byte_identical() {
    let lmtp = LmtpServer::unix(true);
    let t = &eight_bit_through(&lmtp);
    assert!(t.mail.ends_with(" BODY=8BITMIME"), "{}", t.mail);
    // sealpost adds its Received field on top; everything after it is the client's bytes.
    assert!(
        t.data.ends_with(EIGHT_BIT.as_bytes()),
        "{}",
        String::from_utf8_lossy(&t.data)
    );
}

#[test]
fn an_smtp_server_given_as_lmtp_is_a_clear_temporary_error() {
    let smtp = ScriptedUpstream::start();
    let s = Sealpost::new();
    let target = format!("lmtp:{}", smtp.address());
    let gw = s.serve(&inbound_config(Some(&target), ""), &[]);
    let (ok, out) = send(gw.port(), "alice@example.org", &[]);
    assert!(!ok, "{out}");
    // Asked at RCPT whether Alice exists, the misconfigured target cannot answer: a
    // temporary refusal that says why, before any data.
    assert!(out.contains("<** 450 4.1.1"), "{out}");
    assert!(out.contains("is not an LMTP server"), "{out}");
    assert!(smtp.received().is_empty());
    assert!(s.ok(&["queue", "list"]).is_empty(), "the client keeps it");
}

#[test]
fn eight_bit_to_an_smtp_upstream_without_8bitmime_is_re_encoded() {
    let multipart = "From: alice@example.org\r\nTo: bob@example.net\r\nSubject: parts\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nnaïve café\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\n\u{e9}t\u{e9}\r\n--b--\r\n";
    let seven_bit = SmtpSink::start(&["-8"]);
    let eight_bit = SmtpSink::start(&[]);
    let s = Sealpost::new();
    let file = data_file(&s, "parts.eml", multipart);
    let args = [
        "--from",
        "alice@example.org",
        "--to",
        "bob@example.net",
        "--data",
        &file,
    ];
    for (sink, kept) in [(&seven_bit, false), (&eight_bit, true)] {
        let gw = s.serve(&relay_config(&sink.address(), ""), &[]);
        let (ok, out) = swaks(gw.port(), &args);
        assert!(ok, "{out}");
        let dump = &sink.wait_messages(1, LONG)[0];
        let mail_args = &sink.mail_args()[0];
        if kept {
            assert!(mail_args.contains("BODY=8BITMIME"), "{mail_args}");
            // smtp-sink rewrites line ends in its dumps: compare with swaks straight to it.
            let reference = SmtpSink::start(&[]);
            let (ok, out) = swaks(reference.port, &args);
            assert!(ok, "{out}");
            let direct = &reference.wait_messages(1, LONG)[0];
            assert_eq!(dump.body(), direct.body(), "byte-identical");
            assert!(!dump.body().is_ascii());
        } else {
            assert!(!mail_args.contains("BODY="), "{mail_args}");
            assert!(dump.message.is_ascii(), "{}", dump.text());
            assert!(dump.text().contains("Content-Transfer-Encoding: base64"));
            assert_eq!(decoded_text(&dump.message), "naïve café");
        }
        drop(gw);
    }

    // 8-bit bytes outside any part cannot be re-encoded: refused for good, not sent.
    let preamble = multipart.replace(
        "\r\n\r\n--b\r\nContent-Type: text/plain",
        "\r\n\r\npréambule\r\n--b\r\nContent-Type: text/plain",
    );
    data_file(&s, "parts.eml", &preamble);
    let gw = s.serve(&relay_config(&seven_bit.address(), ""), &[]);
    let (ok, out) = swaks(gw.port(), &args);
    assert!(!ok, "{out}");
    assert!(out.contains("<** 554 5.6.3"), "{out}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(seven_bit.messages().len(), 1, "nothing more was sent");
    drop(gw);
}

/// A private Dovecot LMTP server on 127.0.0.1:`port`, its own files in `root/name`, the
/// mail under `root/mail`, which outlives it (so that a restarted Dovecot, in another
/// directory, delivers to the same mailboxes). Its log says `Connect from` for each
/// connection, and `state=GREETING` for one closed before a word was said.
struct DovecotLmtp {
    dir: PathBuf,
    shell: std::process::Child,
}

impl DovecotLmtp {
    fn start(root: &Path, name: &str, port: u16) -> DovecotLmtp {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("dovecot dir");
        let (d, r) = (dir.display(), root.display());
        let config = format!(
            "base_dir = {d}/run\n\
             state_dir = {d}/state\n\
             instance_name = sealpost-lmtp-{pid}-{name}\n\
             log_path = {d}/dovecot.log\n\
             protocols = lmtp\n\
             listen = 127.0.0.1\n\
             ssl = no\n\
             first_valid_uid = 65534\n\
             mail_location = maildir:{r}/mail/%d/%n/Maildir\n\
             passdb {{\n  driver = static\n  args = nopassword=y\n}}\n\
             userdb {{\n  driver = static\n  args = uid=65534 gid=65534 home={r}/mail/%d/%n\n}}\n\
             service lmtp {{\n  inet_listener lmtp {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n}}\n",
            pid = std::process::id(),
        );
        let conf = dir.join("dovecot.conf");
        std::fs::write(&conf, config).expect("dovecot.conf");
        let shell = super::common::dovecot(&conf, &dir, &[port], "dovecot-core and dovecot-lmtpd");
        DovecotLmtp { dir, shell }
    }

    /// Connections Dovecot's LMTP service accepted from sealpost, from its log: those
    /// that did not close before saying anything (the start-up check's).
    fn connections(&self) -> usize {
        let log = self.log();
        let count = |what: &str| log.lines().filter(|l| l.contains(what)).count();
        count("Connect from 127.0.0.1") - count("(state=GREETING)")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dovecot.log")).unwrap_or_default()
    }

    /// Stops Dovecot and waits until it has.
    fn stop(mut self) {
        drop(self.shell.stdin.take());
        let _ = self.shell.wait();
    }
}

/// The subjects of the messages in `user`'s new mail under `root/mail`.
fn subjects(root: &Path, user: &str) -> Vec<String> {
    let new = root.join(format!("mail/example.org/{user}/Maildir/new"));
    let mut found: Vec<String> = std::fs::read_dir(new)
        .map(|d| {
            d.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                .collect::<Vec<String>>()
        })
        .unwrap_or_default()
        .iter()
        .filter_map(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
        })
        .collect();
    found.sort();
    found
}

fn wait_subjects(root: &Path, user: &str, n: usize) -> Vec<String> {
    wait_for(LONG, &format!("{n} message(s) for {user}"), || {
        let s = subjects(root, user);
        (s.len() >= n).then_some(s)
    })
}

#[test]
fn messages_to_dovecot_share_one_lmtp_connection_that_survives_a_restart() {
    use std::os::unix::fs::{chown, PermissionsExt};
    let root = tempfile::Builder::new()
        .prefix("sealpost-lmtp-reuse")
        .tempdir()
        .expect("tempdir");
    // Delivery runs as uid 65534, which must reach the mail directory; the mailbox of
    // `full` cannot be made, so Dovecot answers 451 for it after the final dot.
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let domain = root.path().join("mail/example.org");
    std::fs::create_dir_all(domain.join("full")).unwrap();
    for d in [root.path().join("mail"), domain] {
        chown(&d, Some(65534), Some(65534)).expect("chown (the tests run as root)");
    }
    let port = free_port();
    let first = DovecotLmtp::start(root.path(), "first", port);
    let s = Sealpost::new();
    // Retries an hour later: the spooled copy for `full` stays out of the way.
    let config = format!(
        "[[listener]]\nmode = \"inbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\n\
         [inbound]\ndeliver = \"lmtp:127.0.0.1:{port}\"\nlocal_domains = [\"example.org\"]\n\n\
         [delivery]\nretry = \"1h\"\n\n[admin]\nhttp = \"127.0.0.1:0\"\n"
    );
    let gw = s.serve(&config, &[]);
    let connections = || {
        let (status, text) = super::ops::get(super::ops::admin_port(&gw), "/metrics");
        assert_eq!(status, 200, "{text}");
        super::ops::metric(&text, "sealpost_upstream_connections_total")
    };
    let subject = |n: u32| format!("reuse {n}");
    let (ok, out) = send(
        gw.port(),
        "alice@example.org",
        &["--header", &format!("Subject: {}", subject(1))],
    );
    assert!(ok && out.contains("<-  250 2.0.0 Delivered"), "{out}");
    // A reply per recipient after the final dot, on the reused connection: alice's
    // copy is delivered, full's spooled.
    let (ok, out) = send(
        gw.port(),
        "alice@example.org,full@example.org",
        &["--header", &format!("Subject: {}", subject(2))],
    );
    assert!(ok && out.contains("<-  250 2.0.0 Accepted"), "{out}");
    let (ok, out) = send(
        gw.port(),
        "alice@example.org",
        &["--header", &format!("Subject: {}", subject(3))],
    );
    assert!(ok && out.contains("<-  250 2.0.0 Delivered"), "{out}");
    assert_eq!(
        wait_subjects(root.path(), "alice", 3),
        [subject(1), subject(2), subject(3)]
    );
    let queued = s.ok(&["queue", "list"]);
    assert!(queued.contains("full@example.org"), "{queued}");
    assert!(!queued.contains("alice@"), "{queued}");
    // The recipient checks at RCPT, the SMTPUTF8 question at start and three messages:
    // one connection.
    assert_eq!(
        first.connections(),
        1,
        "one LMTP connection: {}",
        first.log()
    );
    assert_eq!(connections(), Some(1.0), "counted in the metrics");

    // Dovecot restarts between two messages: the idle connection is gone, and the next
    // message goes over a new one, once.
    first.stop();
    let second = DovecotLmtp::start(root.path(), "second", port);
    let (ok, out) = send(
        gw.port(),
        "alice@example.org",
        &["--header", &format!("Subject: {}", subject(4))],
    );
    assert!(ok && out.contains("<-  250 2.0.0 Delivered"), "{out}");
    assert_eq!(
        wait_subjects(root.path(), "alice", 4),
        [subject(1), subject(2), subject(3), subject(4)]
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(subjects(root.path(), "alice").len(), 4, "delivered once");
    assert_eq!(second.connections(), 1);
    assert_eq!(connections(), Some(2.0));
    drop(gw);
    second.stop();
}
