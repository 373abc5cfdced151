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
