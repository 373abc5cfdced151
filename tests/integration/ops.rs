//! What an admin watches and does to a running gateway: its log lines, SIGHUP, the
//! metrics and health endpoints, and systemd's readiness protocol.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use super::common::{start, swaks, Sealpost, Server};
use super::upstream::{wait_for, ScriptedUpstream};

/// The argon2 hash of `password`, from `sealpost hash-password`.
fn hash(s: &Sealpost, password: &str) -> String {
    let out = s.run_with_input(&["hash-password"], format!("{password}\n").as_bytes());
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// An outbound STARTTLS listener with local AUTH for alice, relaying to `upstream`.
fn auth_config(s: &Sealpost, upstream: &str, extra: &str) -> String {
    format!(
        "[[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:0\"\ntls = \"starttls\"\n\
         auth = \"local\"\nrequire_auth = true\n\n\
         [[user]]\nname = \"alice\"\npassword_hash = \"{}\"\n\n\
         [upstream]\naddress = \"{upstream}\"\ntls = \"none\"\n\n{extra}",
        hash(s, "correct horse")
    )
}

/// swaks with STARTTLS and AUTH PLAIN as `user`.
fn send_as(port: u16, user: &str, password: &str) -> (bool, String) {
    swaks(
        port,
        &[
            "-tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            user,
            "--auth-password",
            password,
            "--from",
            "alice@example.org",
            "--to",
            "bob@example.net",
        ],
    )
}

/// Starts `serve` with its stderr going to `log` and sealpost's info lines on.
fn serve_logging_to(s: &Sealpost, config: &str, log: &Path, args: &[&str]) -> Server {
    let mut cmd = s.serve_command(config);
    let file = std::fs::File::create(log).expect("log file");
    cmd.args(args)
        .env("RUST_LOG", "warn,sealpost=info")
        .stderr(Stdio::from(file));
    start(cmd)
}

fn read_log(log: &Path) -> String {
    std::fs::read_to_string(log).expect("read the log")
}

/// One failed AUTH and one accepted message; returns the log once both sessions ended.
fn failed_auth_then_a_message(s: &Sealpost, log: &Path, args: &[&str]) -> String {
    let up = ScriptedUpstream::start();
    let config = auth_config(s, &up.address(), "");
    let mut gw = serve_logging_to(s, &config, log, args);
    let (ok, out) = send_as(gw.port(), "mallory", "guess");
    assert!(!ok && out.contains("535"), "{out}");
    let (ok, out) = send_as(gw.port(), "alice", "correct horse");
    assert!(ok, "{out}");
    up.wait_received(1, Duration::from_secs(30));
    wait_for(Duration::from_secs(10), "two session lines", || {
        (read_log(log).matches("session ended").count() >= 2).then_some(())
    });
    gw.terminate();
    read_log(log)
}

#[test]
fn a_log_file_has_no_colour_and_a_line_per_failed_auth_and_per_session() {
    let s = Sealpost::new();
    let log = s.dir.path().join("stderr.log");
    let text = failed_auth_then_a_message(&s, &log, &[]);
    assert!(
        !text.contains('\u{1b}'),
        "ANSI escapes in a log file:\n{text}"
    );
    let failed = text
        .lines()
        .find(|l| l.contains("AUTH failed"))
        .unwrap_or_else(|| panic!("no line for the failed AUTH:\n{text}"));
    assert!(failed.contains("WARN"), "{failed}");
    assert!(failed.contains("client_ip=127.0.0.1"), "{failed}");
    assert!(failed.contains("user=mallory"), "{failed}");
    let sent = text
        .lines()
        .find(|l| l.contains("session ended") && l.contains("messages=1"))
        .unwrap_or_else(|| panic!("no session line with the message:\n{text}"));
    assert!(sent.contains("client=127.0.0.1:"), "{sent}");
    assert!(
        sent.contains("tls=\"yes\"") || sent.contains("tls=yes"),
        "{sent}"
    );
    assert!(sent.contains("user=alice"), "{sent}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let s = Sealpost::new();
    let log = s.dir.path().join("stderr.log");
    let text = failed_auth_then_a_message(&s, &log, &["--log-format", "json"]);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let failed = lines
        .iter()
        .find(|v| v["message"] == "AUTH failed")
        .unwrap_or_else(|| panic!("no JSON line for the failed AUTH:\n{text}"));
    assert_eq!(failed["level"], "WARN");
    assert_eq!(failed["client_ip"], "127.0.0.1");
    assert_eq!(failed["user"], "mallory");
    let session = lines
        .iter()
        .find(|v| v["message"] == "session ended" && v["messages"] == 1)
        .unwrap_or_else(|| panic!("no JSON session line with the message:\n{text}"));
    assert_eq!(session["tls"], "yes");
}

/// Sends SIGHUP to the server.
fn hangup(gw: &Server) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &gw.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Waits until the log shows `n` reload outcomes (success or refusal).
fn wait_reloads(log: &Path, n: usize) -> String {
    wait_for(Duration::from_secs(20), "the SIGHUP reload", || {
        let text = read_log(log);
        (text.matches("SIGHUP:").count() >= n).then_some(text)
    })
}

/// A certificate and key for localhost, as files in `dir` named `name`.crt and .key.
fn certificate(dir: &Path, name: &str) -> String {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    std::fs::write(dir.join(format!("{name}.crt")), made.cert.pem()).expect("write cert");
    std::fs::write(
        dir.join(format!("{name}.key")),
        made.signing_key.serialize_pem(),
    )
    .expect("write key");
    made.cert.pem()
}

/// A STARTTLS listener with its certificate in `dir`, local AUTH for alice with
/// `password`, and `policy` as the policy's mode.
fn reload_config(s: &Sealpost, dir: &Path, upstream: &str, password: &str, policy: &str) -> String {
    format!(
        "[[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:0\"\ntls = \"starttls\"\n\
         certificate = \"{cert}\"\nprivate_key = \"{key}\"\n\
         auth = \"local\"\nrequire_auth = true\n\n\
         [[user]]\nname = \"alice\"\npassword_hash = \"{hash}\"\n\n\
         [upstream]\naddress = \"{upstream}\"\ntls = \"none\"\n\n\
         [policy]\nmode = \"{policy}\"\n",
        cert = dir.join("server.crt").display(),
        key = dir.join("server.key").display(),
        hash = hash(s, password),
    )
}

/// The certificate the listener presents, as PEM.
fn presented_certificate(port: u16, dir: &Path) -> String {
    let file = dir.join("presented.pem");
    let _ = std::fs::remove_file(&file);
    let (_, out) = swaks(
        port,
        &[
            "-tls",
            "--tls-get-peer-cert",
            &file.display().to_string(),
            "--quit-after",
            "TLS",
        ],
    );
    std::fs::read_to_string(&file).unwrap_or_else(|_| panic!("no peer certificate: {out}"))
}

fn plain_auth(user: &str, password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"))
}

#[test]
fn sighup_reloads_users_policy_and_certificate_and_keeps_a_session_in_flight() {
    let s = Sealpost::new();
    let dir = s.dir.path().to_path_buf();
    let log = dir.join("stderr.log");
    let up = ScriptedUpstream::start();
    let old_cert = certificate(&dir, "server");
    let config = reload_config(&s, &dir, &up.address(), "old pass", "opportunistic");
    let mut gw = serve_logging_to(&s, &config, &log, &[]);
    let port = gw.port();
    assert_eq!(presented_certificate(port, &dir).trim(), old_cert.trim());

    // A session in the middle of a transaction when the signal comes.
    let mut raw = super::common::Raw::connect(port);
    assert!(raw.cmd("EHLO client.example").starts_with("250"));
    let auth = raw.cmd(&format!("AUTH PLAIN {}", plain_auth("alice", "old pass")));
    assert!(auth.starts_with("235"), "{auth}");
    assert!(raw.cmd("MAIL FROM:<alice@example.org>").starts_with("250"));
    assert!(raw.cmd("RCPT TO:<bob@example.net>").starts_with("250"));

    // New password, policy and certificate.
    let new_cert = certificate(&dir, "server");
    let config = reload_config(&s, &dir, &up.address(), "new pass", "require");
    std::fs::write(dir.join("sealpost.toml"), config).expect("write config");
    hangup(&gw);
    let text = wait_reloads(&log, 1);
    assert!(text.contains("reloaded"), "{text}");
    assert!(gw.child.try_wait().expect("status").is_none(), "{text}");

    // The session in flight finishes its message with what it started with.
    assert!(raw.cmd("DATA").starts_with("354"));
    let done = raw.cmd("Subject: in flight\r\n\r\nhello\r\n.");
    assert!(done.starts_with("250"), "{done}");
    assert!(raw.cmd("QUIT").starts_with("221"));
    up.wait_received(1, Duration::from_secs(30));

    // The next sessions see the new certificate, password and policy.
    assert_eq!(presented_certificate(port, &dir).trim(), new_cert.trim());
    let (ok, out) = send_as(port, "alice", "old pass");
    assert!(!ok && out.contains("535"), "{out}");
    let (ok, out) = send_as(port, "alice", "new pass");
    assert!(!ok, "{out}");
    assert!(
        out.contains("550 5.7.1") && out.contains("policy: require"),
        "policy `require` refuses a recipient without a key: {out}"
    );
    gw.terminate();
}

#[test]
fn a_broken_configuration_on_sighup_keeps_the_old_one() {
    let s = Sealpost::new();
    let dir = s.dir.path().to_path_buf();
    let log = dir.join("stderr.log");
    let up = ScriptedUpstream::start();
    certificate(&dir, "server");
    let config = reload_config(&s, &dir, &up.address(), "old pass", "opportunistic");
    let mut gw = serve_logging_to(&s, &config, &log, &[]);

    std::fs::write(dir.join("sealpost.toml"), "[[listener]\nnot toml").expect("write config");
    hangup(&gw);
    let text = wait_reloads(&log, 1);
    let refused = text
        .lines()
        .find(|l| l.contains("SIGHUP:"))
        .unwrap_or_default();
    assert!(
        refused.contains("ERROR") && refused.contains("old one stays"),
        "{text}"
    );
    assert!(
        refused.contains("sealpost.toml"),
        "the error names the file: {refused}"
    );

    // A certificate that no longer matches its key is refused the same way.
    let config = reload_config(&s, &dir, &up.address(), "new pass", "opportunistic");
    std::fs::write(dir.join("sealpost.toml"), config).expect("write config");
    std::fs::write(dir.join("server.key"), "not a key").expect("write key");
    hangup(&gw);
    let text = wait_reloads(&log, 2);
    assert_eq!(text.matches("old one stays").count(), 2, "{text}");

    assert!(gw.child.try_wait().expect("status").is_none(), "{text}");
    let (ok, out) = send_as(gw.port(), "alice", "old pass");
    assert!(ok, "the old configuration still serves: {out}");
    up.wait_received(1, Duration::from_secs(30));
    gw.terminate();
}

/// `GET path` on the admin HTTP listener: the status code and the body.
pub fn get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The admin HTTP port from `serve`'s start-up lines.
pub(super) fn admin_port(gw: &Server) -> u16 {
    let out = gw.stdout.lock().expect("stdout").clone();
    out.lines()
        .find_map(|l| l.split("admin HTTP on ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no admin HTTP line: {out}"))
}

/// The value of the metric line starting with `name` (labels included), if any.
pub(super) fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_count_a_sent_message_and_a_refusal_and_health_answers() {
    let s = Sealpost::new();
    let up = ScriptedUpstream::start();
    let config = super::common::relay_config(
        &up.address(),
        "[admin]\nhttp = \"127.0.0.1:0\"\n\n\
         [policy]\nmode = \"opportunistic\"\n\
         [policy.domain.\"strict.example\"]\nmode = \"require\"\n",
    );
    let mut gw = s.serve(&config, &[]);
    let file = s.dir.path().join("sealpost.toml").display().to_string();
    let shown = s.ok(&["check-config", "--config", &file]);
    assert!(shown.contains("[admin]\nhttp = \"127.0.0.1:0\""), "{shown}");
    let http = admin_port(&gw);
    let (ok, out) = super::common::swaks_to(gw.port(), "alice@example.org", "bob@example.net", &[]);
    assert!(ok, "{out}");
    up.wait_received(1, Duration::from_secs(30));
    let (ok, out) =
        super::common::swaks_to(gw.port(), "alice@example.org", "carol@strict.example", &[]);
    assert!(!ok && out.contains("550 5.7.1"), "{out}");

    let (status, text) = get(http, "/metrics");
    assert_eq!(status, 200, "{text}");
    let at = |name: &str| metric(&text, name).unwrap_or_else(|| panic!("no {name}:\n{text}"));
    assert_eq!(
        at("sealpost_messages_total{direction=\"outbound\",treatment=\"plain\"}"),
        1.0
    );
    assert_eq!(at("sealpost_refusals_total{reason=\"5.7.1\"}"), 1.0);
    assert_eq!(at("sealpost_upstream_replies_total{class=\"2xx\"}"), 1.0);
    assert_eq!(at("sealpost_spool_messages"), 0.0);
    assert_eq!(at("sealpost_spool_oldest_seconds"), 0.0);
    assert_eq!(at("sealpost_transform_seconds_count"), 1.0);
    assert_eq!(at("sealpost_keys_expiring{within=\"30d\"}"), 0.0);

    assert_eq!(get(http, "/healthz").0, 200);
    let (status, body) = get(http, "/readyz");
    assert_eq!(status, 200, "{body}");
    assert_eq!(get(http, "/nothing").0, 404);
    gw.terminate();
}

#[test]
fn readyz_turns_503_when_the_upstream_cannot_be_reached() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    // An upstream that accepts connections and closes them, until it is stopped; then
    // its port refuses connections.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let upstream = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("nonblocking");
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let acceptor = std::thread::spawn(move || {
        while !stopped.load(Ordering::Acquire) {
            match listener.accept() {
                Ok((stream, _)) => drop(stream),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    let s = Sealpost::new();
    let config =
        super::common::relay_config(&upstream.to_string(), "[admin]\nhttp = \"127.0.0.1:0\"\n");
    let mut gw = s.serve(&config, &[]);
    let http = admin_port(&gw);
    let (status, body) = get(http, "/readyz");
    assert_eq!(status, 200, "{body}");

    stop.store(true, Ordering::Release);
    acceptor.join().expect("acceptor");
    // The relay finds the upstream gone when it tries to deliver.
    let _ = super::common::swaks_to(gw.port(), "alice@example.org", "bob@example.net", &[]);
    let (status, body) = get(http, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(&upstream.to_string()), "{body}");
    assert_eq!(get(http, "/healthz").0, 200, "alive all the same");
    gw.terminate();
}

#[test]
fn systemd_hears_ready_once_listening_and_stopping_on_sigterm() {
    use std::os::unix::net::UnixDatagram;
    let s = Sealpost::new();
    let up = ScriptedUpstream::start();
    let path = s.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut cmd = s.serve_command(&super::common::relay_config(&up.address(), ""));
    cmd.env("NOTIFY_SOCKET", &path);
    let mut gw = start(cmd);
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("READY=1 from serve");
    assert_eq!(String::from_utf8_lossy(&buf[..n]), "READY=1");
    // Ready means listening: a client is served at once.
    let (ok, out) = super::common::swaks_to(gw.port(), "alice@example.org", "bob@example.net", &[]);
    assert!(ok, "{out}");
    let status = gw.terminate();
    assert!(status.success(), "{status:?}");
    let n = socket.recv(&mut buf).expect("STOPPING=1 from serve");
    assert_eq!(String::from_utf8_lossy(&buf[..n]), "STOPPING=1");
}
