//! What an admin asks of a running gateway about one message: `sealpost log show
//! QUEUE-ID`, with a real Postfix as the upstream that takes some recipients and refuses
//! another.

use std::io::Write;

use super::common::{Raw, Sealpost};
use super::postfix::Postfix;

#[test]
fn log_show_prints_the_decision_trail_of_one_message_without_its_content() {
    let postfix = Postfix::start(
        "relay_domains = example.net\n\
         smtpd_recipient_restrictions = check_recipient_access texthash:${config_directory}/access, permit\n",
        "example.net discard:\n",
        "",
    );
    std::fs::write(
        postfix.dir.join("access"),
        "gone@example.net REJECT 5.1.1 no such user here\n",
    )
    .expect("access map");
    let s = Sealpost::new();
    let alice = s.generate("alice@example.org", &[]);
    let bob = s.generate("bob@example.net", &[]);
    // A day older than the 3 days kept: removed when serve starts.
    let trail = s.data_dir().join("trail");
    std::fs::create_dir_all(&trail).expect("trail dir");
    std::fs::write(trail.join("2000-01-01"), "{}\n").expect("old day");
    let config = format!(
        "[[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\n\
         [upstream]\naddress = \"127.0.0.1:{}\"\ntls = \"none\"\n\n\
         [admin]\nkeep_trail = \"3d\"\n",
        postfix.port
    );
    let gw = s.serve(&config, &[]);

    let mut raw = Raw::connect(gw.port());
    raw.cmd("EHLO client.example");
    assert!(raw.cmd("MAIL FROM:<alice@example.org>").starts_with("250"));
    for rcpt in ["bob@example.net", "carol@example.net", "gone@example.net"] {
        assert!(raw.cmd(&format!("RCPT TO:<{rcpt}>")).starts_with("250"));
    }
    assert!(raw.cmd("DATA").starts_with("354"));
    raw.send(
        b"From: alice@example.org\r\nTo: bob@example.net, carol@example.net, gone@example.net\r\n\
          Subject: quarterly figures SUBJECT-MARK\r\n\r\nThe body BODY-MARK.\r\n.\r\n",
    );
    let reply = raw.reply();
    let _ = raw.stream.write_all(b"QUIT\r\n");
    // Two delivered, one refused for good: accepted, and the refusal is reported.
    assert!(reply.starts_with("250"), "{reply}");
    let id = reply
        .split("queue ID ")
        .nth(1)
        .and_then(|r| r.split([';', ' ', '\r']).next())
        .expect("queue ID in the reply")
        .to_string();

    // The trail is written by its own thread, a few milliseconds after the events: what
    // the client was answered comes last.
    let shown = super::upstream::wait_for(
        std::time::Duration::from_secs(10),
        "the whole trail of the message",
        || {
            let shown = s.ok(&["log", "show", &id]);
            shown.contains("answered").then_some(shown)
        },
    );
    let line = |words: &[&str]| {
        shown
            .lines()
            .find(|l| words.iter().all(|w| l.contains(w)))
            .unwrap_or_else(|| panic!("no line with {words:?} in:\n{shown}"))
            .to_string()
    };
    let received = line(&["received", "from=alice@example.org"]);
    assert!(
        received.contains("to=bob@example.net,carol@example.net,gone@example.net"),
        "{received}"
    );
    assert!(received.contains("client=127.0.0.1:"), "{received}");
    line(&[
        "policy",
        "to=bob@example.net",
        "rule=built-in default",
        "treatment=Encrypt",
    ]);
    line(&["policy", "to=carol@example.net", "treatment=SignOnly"]);
    let copy = line(&["copy", "to=bob@example.net", "treatment=encrypted"]);
    assert!(copy.contains(&format!("keys={bob}")), "{copy}");
    assert!(copy.contains(&format!("signed_by={alice}")), "{copy}");
    line(&["copy", "to=carol@example.net", "treatment=signed"]);
    line(&[
        "copy outcome",
        "to=bob@example.net",
        "status=delivered",
        "reply=250 2.0.0 Ok: queued as",
    ]);
    line(&[
        "copy outcome",
        "to=gone@example.net",
        "status=failed",
        "reply=554 5.1.1",
    ]);
    line(&["bounce", "to=alice@example.org", "failed=gone@example.net"]);
    line(&[
        "answered",
        &format!("reply=250 2.0.0 Accepted, queue ID {id}"),
    ]);
    // In the order it happened.
    let first = shown.lines().next().unwrap_or_default();
    assert!(first.contains("received"), "{shown}");

    // As kept, one JSON object per line.
    let json = s.ok(&["log", "show", "--json", &id]);
    for l in json.lines() {
        let v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
        assert_eq!(
            v["queue_id"].as_str().map(|q| q.starts_with(&id)),
            Some(true)
        );
    }

    // Nothing of the content is kept, and the trail is private.
    let mut kept = String::new();
    for e in std::fs::read_dir(&trail).expect("trail") {
        let e = e.expect("entry");
        kept.push_str(&std::fs::read_to_string(e.path()).expect("read"));
        use std::os::unix::fs::PermissionsExt;
        let mode = e.metadata().expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", e.path().display());
    }
    assert!(!kept.contains("SUBJECT-MARK") && !kept.contains("BODY-MARK"));
    assert!(!trail.join("2000-01-01").exists(), "older than keep_trail");

    // An ID it never saw: exit 1, saying where it looked.
    let err = s.fails(&["log", "show", "NOSUCHID"], 1);
    assert!(
        err.contains("nothing recorded for queue ID NOSUCHID"),
        "{err}"
    );
    assert!(err.contains(&trail.display().to_string()), "{err}");
}

/// `systemctl reload` (SIGHUP): systemd hears `RELOADING=1` with the monotonic time, then
/// `READY=1` once the reload is done, whether the new configuration was taken or not.
#[test]
fn systemd_hears_reloading_then_ready_on_sighup() {
    use std::os::unix::net::UnixDatagram;
    let s = Sealpost::new();
    let path = s.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    let config = "[[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n";
    let mut cmd = s.serve_command(config);
    cmd.env("NOTIFY_SOCKET", &path);
    let mut gw = super::common::start(cmd);
    let mut buf = [0u8; 256];
    let mut next = |what: &str| {
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(next("READY=1 at start"), "READY=1");
    let hup = |gw: &super::common::Server| {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &gw.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    };
    for round in ["taken", "refused"] {
        if round == "refused" {
            // A configuration serve would refuse: the old one stays, and systemd still
            // hears that the reload is over.
            std::fs::write(s.dir.path().join("sealpost.toml"), "[[listener]\n").expect("config");
        }
        hup(&gw);
        let reloading = next("RELOADING=1");
        let mut lines = reloading.lines();
        assert_eq!(lines.next(), Some("RELOADING=1"), "{reloading}");
        let usec: u64 = lines
            .next()
            .and_then(|l| l.strip_prefix("MONOTONIC_USEC="))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{reloading}"));
        assert!(usec > 0);
        assert_eq!(next("READY=1 after the reload"), "READY=1", "{round}");
    }
    let (ok, out) = super::common::swaks_to(gw.port(), "alice@example.org", "bob@example.net", &[]);
    assert!(ok, "still serving: {out}");
    assert!(gw.terminate().success());
    assert_eq!(next("STOPPING=1"), "STOPPING=1");
}

/// A directory in the data directory left owned by root (an admin command run as root,
/// in an older version) stops the service at start with that directory's path, not a
/// bare "Permission denied".
#[test]
fn a_root_owned_directory_in_the_data_directory_is_named_when_serve_stops() {
    use std::os::unix::fs::{chown, PermissionsExt};
    if !std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
    {
        eprintln!("skipped: needs root to make files another user cannot use");
        return;
    }
    for name in ["spool-data", "spool", "trail", "keyring", "vault"] {
        let s = Sealpost::new();
        std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let data = s.data_dir();
        std::fs::create_dir(&data).expect("data dir");
        chown(&data, Some(65534), Some(65534)).expect("chown");
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let root_owned = data.join(name);
        std::fs::create_dir(&root_owned).expect("root's directory");
        std::fs::set_permissions(&root_owned, std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(super::common::bin())
            .arg("--data-dir")
            .arg(&data)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .env_remove("SEALPOST_PASSPHRASE_FILE")
            .output()
            .expect("setpriv (package util-linux)");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(
            stderr.contains(&root_owned.display().to_string()),
            "{name}: {stderr}"
        );
        // A keys command that cannot look into the keyring says so, with its path,
        // rather than that there is none.
        if name == "keyring" {
            let out = std::process::Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(super::common::bin())
                .arg("--data-dir")
                .arg(root_owned.join("inside"))
                .args(["keys", "list"])
                .output()
                .expect("setpriv");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{stderr}");
            assert!(
                stderr.contains(&format!(
                    "{}: Permission denied",
                    root_owned.join("inside/keyring").display()
                )),
                "{stderr}"
            );
        }
    }
}
