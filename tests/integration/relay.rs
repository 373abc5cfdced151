//! The transparent relay through the real binary: swaks in, smtp-sink or a scripted
//! upstream out, faults, the spool, a crash, and bad input.

use std::time::Duration;

use super::common::{relay_config, swaks, swaks_to, Raw, Sealpost};
use super::upstream::{free_port, wait_for, RcptRule, ScriptedUpstream, SmtpSink, UpstreamTlsMode};

const LONG: Duration = Duration::from_secs(30);

#[test]
fn swaks_to_smtp_sink_byte_identical_with_envelope() {
    let direct = SmtpSink::start(&[]);
    let sink = SmtpSink::start(&[]);
    let s = Sealpost::new();
    let gw = s.serve(&relay_config(&sink.address(), ""), &[]);
    let message = "From: alice@example.org\r\nTo: bob@example.net\r\nSubject: relay\r\n\r\nline one\r\n.leading dot\r\n\r\ntrailing spaces   \r\nUTF-8: grüße\r\nlast line\r\n";
    let file = s.dir.path().join("message.eml");
    std::fs::write(&file, message).unwrap();
    let args = [
        "--from",
        "alice@example.org",
        "--to",
        "bob@example.net,carol@example.net",
        "--data",
        file.to_str().unwrap(),
        "--pipeline",
    ];
    let (ok, out) = swaks(direct.port, &args);
    assert!(ok, "{out}");
    let (ok, out) = swaks(gw.port(), &args);
    assert!(ok, "{out}");
    assert!(out.contains("250 2.0.0 Delivered"), "{out}");
    let relayed = &sink.wait_messages(1, LONG)[0];
    let reference = &direct.wait_messages(1, LONG)[0];
    assert_eq!(relayed.sender, "alice@example.org");
    assert_eq!(relayed.recipients, ["bob@example.net", "carol@example.net"]);
    assert!(
        relayed.text().contains("Received: from "),
        "{}",
        relayed.text()
    );
    // What arrives through sealpost is what arrives without it, byte for byte.
    assert_eq!(
        String::from_utf8_lossy(&relayed.body()),
        String::from_utf8_lossy(&reference.body())
    );
    assert!(String::from_utf8_lossy(&relayed.body()).starts_with("line one"));
}

#[test]
fn starttls_implicit_tls_and_local_auth() {
    let sink = SmtpSink::start(&[]);
    let s = Sealpost::new();
    let hash_out = s.run_with_input(&["hash-password"], b"correct horse\n");
    assert!(hash_out.status.success());
    let hash = String::from_utf8(hash_out.stdout)
        .unwrap()
        .trim()
        .to_string();
    let config = format!(
        "[[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:0\"\ntls = \"starttls\"\nauth = \"local\"\nrequire_auth = true\n\n\
         [[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:0\"\ntls = \"tls\"\n\n\
         [[user]]\nname = \"alice\"\npassword_hash = \"{hash}\"\n\n\
         [upstream]\naddress = \"{}\"\ntls = \"none\"\n",
        sink.address()
    );
    let gw = s.serve(&config, &[]);
    assert!(gw
        .stdout
        .lock()
        .unwrap()
        .contains("self-signed certificate SHA-256"));
    let (starttls, implicit) = (gw.ports[0], gw.ports[1]);

    // Without AUTH the first listener refuses to relay.
    let (ok, out) = swaks(
        starttls,
        &["-tls", "--from", "a@example.org", "--to", "b@example.net"],
    );
    assert!(!ok, "{out}");
    assert!(out.contains("530 5.7.0"), "{out}");
    // A wrong password, then the right one, both under STARTTLS.
    let (ok, out) = swaks(
        starttls,
        &[
            "-tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            "alice",
            "--auth-password",
            "wrong",
            "--from",
            "a@example.org",
            "--to",
            "b@example.net",
        ],
    );
    assert!(!ok && out.contains("535 5.7.8"), "{out}");
    for mech in ["PLAIN", "LOGIN"] {
        let (ok, out) = swaks(
            starttls,
            &[
                "-tls",
                "--auth",
                mech,
                "--auth-user",
                "alice",
                "--auth-password",
                "correct horse",
                "--from",
                "a@example.org",
                "--to",
                "b@example.net",
            ],
        );
        assert!(ok, "{mech}: {out}");
        assert!(out.contains("235 2.7.0"), "{out}");
    }
    // Implicit TLS.
    let (ok, out) = swaks(
        implicit,
        &["-tlsc", "--from", "a@example.org", "--to", "c@example.net"],
    );
    assert!(ok, "{out}");
    let dumps = sink.wait_messages(3, LONG);
    assert!(
        dumps.iter().any(|d| d.text().contains("with ESMTPSA")),
        "an authenticated, TLS session is recorded"
    );
    assert!(dumps.iter().any(|d| d.recipients == ["c@example.net"]));
}

#[test]
fn passthrough_auth_logs_in_upstream_as_the_client() {
    let up = ScriptedUpstream::start();
    up.require_login("bob", "bobs-provider-password");
    let s = Sealpost::new();
    let config = format!(
        "[[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:0\"\ntls = \"starttls\"\nauth = \"passthrough\"\nrequire_auth = true\n\n\
         [upstream]\naddress = \"{}\"\ntls = \"none\"\n",
        up.address()
    );
    let gw = s.serve(&config, &[]);
    let (ok, out) = swaks(
        gw.port(),
        &[
            "-tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            "bob",
            "--auth-password",
            "nope",
            "--from",
            "bob@example.org",
            "--to",
            "x@example.net",
        ],
    );
    assert!(!ok && out.contains("535 5.7.8"), "{out}");
    let (ok, out) = swaks(
        gw.port(),
        &[
            "-tls",
            "--auth",
            "LOGIN",
            "--auth-user",
            "bob",
            "--auth-password",
            "bobs-provider-password",
            "--from",
            "bob@example.org",
            "--to",
            "x@example.net",
        ],
    );
    assert!(ok, "{out}");
    let got = up.wait_received(1, LONG);
    assert_eq!(
        got[0].auth.as_deref(),
        Some("bob"),
        "delivered under the client's own login"
    );
}

#[test]
fn upstream_refused_connection_is_temporary() {
    let dead = free_port();
    let s = Sealpost::new();
    let gw = s.serve(
        &relay_config(
            &format!("127.0.0.1:{dead}"),
            "[delivery]\nbudget = \"5s\"\n",
        ),
        &[],
    );
    let (ok, out) = swaks_to(gw.port(), "a@example.org", "b@example.net", &[]);
    assert!(!ok);
    assert!(out.contains("<** 451 4.4.1"), "{out}");
    let out = s.ok(&["queue", "list"]);
    assert!(out.is_empty(), "nothing accepted, nothing spooled: {out}");
}

#[test]
fn partial_failure_spools_nothing_lost_and_sends_a_dsn() {
    let up = ScriptedUpstream::start();
    up.rule("gone@example.net", RcptRule::Reject);
    let s = Sealpost::new();
    let gw = s.serve(
        &relay_config(&up.address(), "[delivery]\nretry = \"1s\"\n"),
        &[],
    );
    let (ok, out) = swaks_to(
        gw.port(),
        "alice@example.org",
        "bob@example.net,gone@example.net",
        &["--header", "Subject: partial"],
    );
    assert!(ok, "{out}");
    assert!(out.contains("<-  250 2.0.0 Accepted"), "{out}");
    // The message to bob, then the DSN to alice from <>.
    let got = up.wait_received(2, LONG);
    assert_eq!(got[0].recipients, ["bob@example.net"]);
    let dsn = &got[1];
    assert_eq!(dsn.sender, "");
    assert_eq!(dsn.recipients, ["alice@example.org"]);
    let text = String::from_utf8_lossy(&dsn.data);
    assert!(text.contains("multipart/report"), "{text}");
    assert!(
        text.contains("Final-Recipient: rfc822; gone@example.net"),
        "{text}"
    );
    assert!(text.contains("550 5.1.1"), "{text}");
    assert!(text.contains("Subject: partial"), "{text}");
    wait_for(LONG, "an empty spool", || {
        s.ok(&["queue", "list"]).is_empty().then_some(())
    });
}

#[test]
fn temporary_failure_then_recovery_from_the_spool() {
    let up = ScriptedUpstream::start();
    up.rule("later@example.net", RcptRule::DeferTimes(2));
    let s = Sealpost::new();
    let gw = s.serve(
        &relay_config(&up.address(), "[delivery]\nretry = \"1s\"\n"),
        &[],
    );
    let (ok, out) = swaks_to(
        gw.port(),
        "a@example.org",
        "now@example.net,later@example.net",
        &[],
    );
    assert!(ok, "{out}");
    // Listed in the queue (through the admin socket, as serve holds the spool) ...
    let listed = s.ok(&["queue", "list"]);
    assert!(
        listed.contains("later@example.net") || up.received().len() >= 2,
        "{listed}"
    );
    let got = up.wait_received(2, LONG);
    assert_eq!(got[0].recipients, ["now@example.net"]);
    assert_eq!(got[1].recipients, ["later@example.net"]);
}

#[test]
fn all_refused_gives_the_upstream_reply_back() {
    let up = ScriptedUpstream::start();
    up.rule("x@example.net", RcptRule::Reject);
    up.rule("y@example.net", RcptRule::Reject);
    let s = Sealpost::new();
    let gw = s.serve(&relay_config(&up.address(), ""), &[]);
    let (ok, out) = swaks_to(
        gw.port(),
        "a@example.org",
        "x@example.net,y@example.net",
        &[],
    );
    assert!(!ok);
    assert!(
        out.contains("<** 550 5.1.1 <x@example.net>: no such user here"),
        "{out}"
    );
    assert!(s.ok(&["queue", "list"]).is_empty());
}

#[test]
fn stall_after_data_is_spooled_then_delivered() {
    let up = ScriptedUpstream::start();
    up.stall_after_data(Duration::from_secs(4), 1);
    let s = Sealpost::new();
    let gw = s.serve(
        &relay_config(
            &up.address(),
            "[delivery]\nbudget = \"2s\"\nretry = \"1s\"\n",
        ),
        &[],
    );
    let (ok, out) = swaks_to(gw.port(), "a@example.org", "slow@example.net", &[]);
    assert!(ok, "{out}");
    assert!(out.contains("250 2.0.0 Accepted"), "{out}");
    let got = up.wait_received(1, LONG);
    assert_eq!(got[0].recipients, ["slow@example.net"]);
}

#[test]
fn killed_after_250_delivers_after_restart() {
    let up = ScriptedUpstream::start();
    up.rule("later@example.net", RcptRule::DeferTimes(1));
    let s = Sealpost::new();
    // A long retry delay: the copy stays in the spool until the restart.
    let config = relay_config(&up.address(), "[delivery]\nretry = \"1h\"\n");
    let mut gw = s.serve(&config, &[]);
    let (ok, out) = swaks_to(
        gw.port(),
        "a@example.org",
        "now@example.net,later@example.net",
        &[],
    );
    assert!(ok && out.contains("250 2.0.0 Accepted"), "{out}");
    gw.kill9();
    assert!(
        s.ok(&["queue", "list"]).contains("later@example.net"),
        "spooled before the 250"
    );
    let _gw = s.serve(&config, &[]);
    let got = up.wait_received(2, LONG);
    assert!(got.iter().any(|r| r.recipients == ["later@example.net"]));
    wait_for(LONG, "an empty spool", || {
        s.ok(&["queue", "list"]).is_empty().then_some(())
    });
}

#[test]
fn bad_input_gets_the_right_code_and_the_session_goes_on() {
    let sink = SmtpSink::start(&[]);
    let s = Sealpost::new();
    let config = relay_config(&sink.address(), "").replace(
        "tls = \"starttls\"\n",
        "tls = \"starttls\"\nmax_message_size = 2000\ncommand_timeout = \"2s\"\n",
    );
    let gw = s.serve(&config, &[]);
    let mut c = Raw::connect(gw.port());
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("503 5.5.1"));
    assert!(c.cmd("EHLO client.example").starts_with("250-"));
    assert!(c.cmd("DATA").starts_with("503 5.5.1"));
    assert!(c.cmd(&"X".repeat(2000)).starts_with("500 5.5.2"));
    c.send(b"NOOP\n");
    assert!(c.reply().starts_with("500 5.5.2"), "bare LF");
    c.send(b"\x00\x01\x02garbage\xff\r\n");
    assert!(c.reply().starts_with("500"));
    assert!(c
        .cmd("MAIL FROM:<a@example.org> SIZE=5000")
        .starts_with("552 5.3.4"));
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
    let mut pipelined = String::new();
    for i in 0..10_000 {
        pipelined.push_str(&format!("RCPT TO:<r{i}@example.net>\r\n"));
    }
    // Written from another thread: 10,000 replies do not fit in the socket buffers.
    let mut writer = c.stream.try_clone().unwrap();
    let sending = std::thread::spawn(move || {
        use std::io::Write;
        writer.write_all(pipelined.as_bytes()).unwrap();
    });
    let mut codes = std::collections::HashMap::new();
    for _ in 0..10_000 {
        *codes.entry(c.reply()[..3].to_string()).or_insert(0) += 1;
    }
    sending.join().unwrap();
    assert_eq!(codes.get("250"), Some(&100));
    assert_eq!(codes.get("452"), Some(&9_900));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(format!("Subject: big\r\n\r\n{}\r\n.\r\n", "y".repeat(3000)).as_bytes());
    assert!(c.reply().starts_with("552 5.3.4"));
    assert!(c.cmd("NOOP").starts_with("250"), "the session goes on");

    // STARTTLS with plaintext pipelined after it: the plaintext is never executed.
    let mut c = Raw::connect(gw.port());
    c.cmd("EHLO client.example");
    c.send(b"STARTTLS\r\nMAIL FROM:<evil@example.org>\r\n");
    assert!(c.reply().starts_with("220 2.0.0"));
    // Slow drip: one byte at a time, slower than the command timeout allows in total.
    let mut c = Raw::connect(gw.port());
    let start = std::time::Instant::now();
    for b in b"EHLO slow.example" {
        use std::io::Write;
        if c.stream.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
        if start.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    let r = c.reply();
    assert!(r.starts_with("421 4.4.2"), "{r}");
    // And the next session works.
    let (ok, out) = swaks_to(gw.port(), "a@example.org", "b@example.net", &[]);
    assert!(ok, "{out}");
}

#[test]
fn no_open_relay() {
    // A public listener without AUTH or an allow list is refused by the configuration.
    let s = Sealpost::new();
    let path = s.dir.path().join("open.toml");
    std::fs::write(
        &path,
        "[[listener]]\nmode = \"outbound\"\naddress = \"0.0.0.0:2525\"\n",
    )
    .unwrap();
    let err = s.fails(&["check-config", "--config", path.to_str().unwrap()], 1);
    assert!(err.contains("requires AUTH"), "{err}");
    // A listener that requires AUTH refuses MAIL from a client that has not logged in.
    let sink = SmtpSink::start(&[]);
    let config = relay_config(&sink.address(), "").replace(
        "tls = \"starttls\"\n",
        "tls = \"starttls\"\nrequire_auth = true\nauth = \"passthrough\"\n",
    );
    let gw = s.serve(&config, &[]);
    let mut c = Raw::connect(gw.port());
    c.cmd("EHLO outside.example");
    assert!(c
        .cmd("MAIL FROM:<spam@example.com>")
        .starts_with("530 5.7.0"));
}

#[test]
fn sigterm_drains_and_exits_cleanly() {
    let sink = SmtpSink::start(&[]);
    let s = Sealpost::new();
    let mut gw = s.serve(&relay_config(&sink.address(), ""), &[]);
    let mut idle = Raw::connect(gw.port());
    idle.cmd("EHLO idle.example");
    let status = gw.terminate();
    assert!(status.success(), "{status:?}");
    assert!(idle.reply().starts_with("421 4.3.2"));
    // The keyring is free again for direct use.
    s.ok(&["keys", "list"]);
}

#[test]
fn keys_and_queue_commands_reach_the_running_server() {
    let sink = SmtpSink::start(&[]);
    let s = Sealpost::new();
    let mut gw = s.serve(&relay_config(&sink.address(), ""), &[]);
    // serve holds the keyring; these go through the admin socket, files read by the client.
    let fpr = s.generate("admin@example.org", &[]);
    let cert = s.ok(&["keys", "export", &fpr]);
    let other = Sealpost::new();
    let file = other.dir.path().join("cert.asc");
    std::fs::write(&file, &cert).unwrap();
    let out = other.ok(&["keys", "import", file.to_str().unwrap()]);
    assert!(out.starts_with("new"), "{out}");
    let out = s.ok(&["keys", "import", file.to_str().unwrap()]);
    assert!(out.starts_with("unchanged"), "{out}");
    assert!(s.ok(&["keys", "list"]).contains("admin@example.org"));
    s.fails(&["keys", "show", "nobody@example.org"], 1);
    s.fails(&["queue", "remove", "NOSUCHID"], 1);
    assert!(gw.terminate().success());
    // And directly, once the server is gone.
    assert!(s.ok(&["keys", "list"]).contains("admin@example.org"));
}

#[test]
fn upstream_tls_verified_with_a_ca_file() {
    for (mode, name) in [
        (UpstreamTlsMode::Implicit, "tls"),
        (UpstreamTlsMode::StartTls, "starttls"),
    ] {
        let up = ScriptedUpstream::start_tls(mode);
        let s = Sealpost::new();
        let ca = s.dir.path().join("upstream-ca.pem");
        std::fs::write(&ca, &up.ca_pem).unwrap();
        // Without the CA, the self-signed upstream is not trusted: a temporary failure.
        let config = format!(
            "[[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\n\
             [upstream]\naddress = \"localhost:{}\"\ntls = \"{name}\"\n",
            up.port
        );
        let mut gw = s.serve(&config, &[]);
        let (ok, out) = swaks_to(gw.port(), "a@example.org", "b@example.net", &[]);
        assert!(!ok, "{name}: {out}");
        assert!(out.contains("<** 451 4.4"), "{name}: {out}");
        assert!(gw.terminate().success());
        // With it, delivered over TLS.
        let config = format!("{config}ca_file = \"{}\"\n", ca.display());
        let gw = s.serve(&config, &[]);
        let (ok, out) = swaks_to(gw.port(), "a@example.org", "b@example.net", &[]);
        assert!(ok, "{name}: {out}");
        assert_eq!(up.wait_received(1, LONG)[0].recipients, ["b@example.net"]);
    }
}

#[test]
fn lettre_as_a_client() {
    use lettre::address::Envelope;
    use lettre::AsyncTransport;
    let up = ScriptedUpstream::start();
    let s = Sealpost::new();
    let gw = s.serve(&relay_config(&up.address(), ""), &[]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let transport =
            lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous("127.0.0.1")
                .port(gw.port())
                .build();
        let envelope = Envelope::new(
            Some("lettre@example.org".parse().unwrap()),
            vec!["dest@example.net".parse().unwrap()],
        )
        .unwrap();
        let message = b"From: lettre@example.org\r\nTo: dest@example.net\r\nSubject: from lettre\r\n\r\nhello from lettre\r\n";
        let response = transport.send_raw(&envelope, message).await.unwrap();
        assert!(response.is_positive());
    });
    let got = up.wait_received(1, LONG);
    assert_eq!(got[0].sender, "lettre@example.org");
    assert!(String::from_utf8_lossy(&got[0].data).contains("\r\n\r\nhello from lettre\r\n"));
}

/// Sends `message` (CRLF line ends, no final dot) to `rcpt` on the gateway's `port`, with
/// `size` as MAIL's SIZE parameter when given: the reply to MAIL when it is refused, else
/// the reply to the final dot.
fn send_sized(port: u16, rcpt: &str, size: Option<usize>, message: &[u8]) -> String {
    let mut raw = Raw::connect(port);
    raw.cmd("EHLO sender.example");
    let param = size.map(|n| format!(" SIZE={n}")).unwrap_or_default();
    let mail = raw.cmd(&format!("MAIL FROM:<sender@remote.example>{param}"));
    if !mail.starts_with("250") {
        return mail;
    }
    let reply = raw.cmd(&format!("RCPT TO:<{rcpt}>"));
    assert!(reply.starts_with("250"), "{reply}");
    assert!(raw.cmd("DATA").starts_with("354"));
    raw.send(message);
    raw.cmd(".")
}

#[test]
fn the_inbound_listener_offers_the_next_hops_size_and_refuses_more_before_spooling() {
    // Postfix as the inbound next hop, over SMTP, with a small message_size_limit.
    let limit = 120_000;
    let postfix = super::postfix::Postfix::start(
        &format!("message_size_limit = {limit}\nrelay_domains = example.org\n"),
        "example.org discard:\n",
        "",
    );
    let s = Sealpost::new();
    s.generate("bob@example.org", &[]);
    let config = format!(
        "[[listener]]\nmode = \"inbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\n\
         [inbound]\ndeliver = \"smtp:127.0.0.1:{}\"\nlocal_domains = [\"example.org\"]\n\n\
         [delivery]\nretry = \"1h\"\n",
        postfix.port
    );
    let gw = s.serve(&config, &[]);
    let port = gw.port();

    // Postfix's limit less 4 KiB for the fields sealpost adds; no room for encryption.
    let offered = limit - 4096;
    let ehlo = Raw::connect(port).cmd("EHLO sender.example");
    assert!(ehlo.contains(&format!("250-SIZE {offered}\r\n")), "{ehlo}");
    let over = send_sized(port, "bob@example.org", Some(offered + 1), b"");
    assert!(over.starts_with("552 5.3.4"), "{over}");
    assert!(over.contains("next hop"), "{over}");

    let message = |size: usize, subject: &str| {
        let mut m = format!(
            "From: sender@remote.example\r\nTo: bob@example.org\r\nSubject: {subject}\r\n\r\n"
        );
        while m.len() + 80 < size {
            m.push_str(&"x".repeat(78));
            m.push_str("\r\n");
        }
        m.into_bytes()
    };
    // Without SIZE: the data over the limit is refused at the final dot.
    let reply = send_sized(
        port,
        "bob@example.org",
        None,
        &message(offered + 2000, "big"),
    );
    assert!(reply.starts_with("552"), "{reply}");
    // Just under it: delivered.
    let reply = send_sized(
        port,
        "bob@example.org",
        None,
        &message(offered - 100, "fits"),
    );
    assert!(reply.starts_with("250 2.0.0 Delivered"), "{reply}");

    // A compressed ciphertext that opens to more than the next hop takes: told 552
    // before anything is spooled, never a 250 and a bounce.
    let gpg = super::common::Gpg::new();
    gpg.ok_with_input(
        &["--import"],
        s.ok(&["keys", "export", "bob@example.org"]).as_bytes(),
    );
    let plain = format!(
        "Content-Type: text/plain\r\n\r\n{}",
        "compressible text\r\n".repeat(10_000)
    );
    let armored = String::from_utf8(gpg.ok_with_input(
        &[
            "--armor",
            "--trust-model",
            "always",
            "--compress-algo",
            "zlib",
            "--encrypt",
            "-r",
            "bob@example.org",
        ],
        plain.as_bytes(),
    ))
    .unwrap();
    assert!(armored.len() < offered / 4, "{}", armored.len());
    let encrypted = format!(
        "From: sender@remote.example\r\nTo: bob@example.org\r\nSubject: expands\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n\
         --b\r\nContent-Type: application/octet-stream\r\n\r\n{}\r\n--b--\r\n",
        armored.replace("\r\n", "\n").replace('\n', "\r\n").trim_end()
    );
    let reply = send_sized(port, "bob@example.org", None, encrypted.as_bytes());
    assert!(reply.starts_with("552 5.3.4"), "{reply}");
    assert!(reply.contains("decryption"), "{reply}");
    assert!(s.ok(&["queue", "list"]).is_empty(), "nothing spooled");
}
