//! Publishing the local users' keys: the WKD listener of `serve`, fetched over HTTPS by
//! Python with a test CA, its answers imported by gpg, its names checked against
//! `gpg-wks-client`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::common::{assert_success, Gpg, Sealpost};

/// The file name `gpg-wks-client` gives an address in a WKD.
fn wkd_hash(address: &str) -> String {
    let out = Command::new("/usr/lib/gnupg/gpg-wks-client")
        .args(["--print-wkd-hash", address])
        .output()
        .expect("gpg-wks-client (package gpg-wks-client)");
    assert_success(&out, "gpg-wks-client --print-wkd-hash");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a hash")
        .to_string()
}

/// One HTTPS request to 127.0.0.1:`port` for `host` (SNI and Host), trusting only the
/// CA in `ca`: the status, the Content-Type and the body.
const FETCH: &str = r#"
import http.client, socket, ssl, sys
port, ca, host, path, method, out = sys.argv[1:7]
ctx = ssl.create_default_context(cafile=ca)
conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=10)
conn.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(port)), timeout=10), server_hostname=host)
conn.request(method, path)
r = conn.getresponse()
open(out, "wb").write(r.read())
print(r.status, r.getheader("Content-Type") or "-")
"#;

/// Over TLS to 127.0.0.1:`port` for example.org: a POST that announces a 100 MB body and
/// sends none, then a request whose header never ends. Prints the POST's status line and
/// after how many seconds the second connection was closed.
const BOUNDED: &str = r#"
import socket, ssl, sys, time
port, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
def connect():
    return ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=60), server_hostname="example.org")
s = connect()
s.sendall(b"POST /.well-known/openpgpkey/policy HTTP/1.1\r\nHost: example.org\r\nContent-Length: 100000000\r\n\r\n")
print(s.recv(4096).split(b"\r\n")[0].decode())
s = connect()
s.sendall(b"GET /.well-known/openpgpkey/policy HTTP/1.1\r\nHost: exa")
start = time.time()
while s.recv(4096):
    pass
print(round(time.time() - start))
"#;

struct Fetched {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

fn try_fetch(port: u16, ca: &Path, host: &str, path: &str, method: &str) -> Option<Fetched> {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("body");
    let out = Command::new("python3")
        .args(["-c", FETCH, &port.to_string()])
        .arg(ca)
        .args([host, path, method])
        .arg(&out_file)
        .output()
        .expect("python3");
    if !out.status.success() {
        return None;
    }
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut words = line.split_whitespace();
    let status = words.next()?.parse().ok()?;
    let content_type = words.collect::<Vec<_>>().join(" ");
    Some(Fetched {
        status,
        content_type,
        body: std::fs::read(&out_file).unwrap_or_default(),
    })
}

fn fetch(port: u16, ca: &Path, host: &str, path: &str) -> Fetched {
    try_fetch(port, ca, host, path, "GET")
        .unwrap_or_else(|| panic!("https://{host}{path} could not be fetched"))
}

/// What gpg makes of served keys: `--with-colons` lines of a fresh keyring that imported
/// them.
fn imported(body: &[u8]) -> String {
    let gpg = Gpg::new();
    let out = gpg.run_with_input(&["--batch", "--import"], body);
    assert_success(&out, "gpg --import of the served keys");
    String::from_utf8_lossy(&gpg.ok(&["--with-colons", "--list-keys"])).into_owned()
}

fn wkd_port(stdout: &str) -> u16 {
    stdout
        .lines()
        .find_map(|l| l.split("WKD over HTTPS on ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no WKD listener in {stdout}"))
}

#[test]
fn wkd_is_served_in_both_layouts_from_the_live_keyring() {
    let s = Sealpost::new();
    let alice = s.generate("alice@example.org", &[]);
    let carol = Gpg::new();
    carol.generate("Carol <carol@example.org>", "default", "default", "never");
    let carol_fpr = carol.fingerprint("carol@example.org");
    carol.ok(&["--quick-add-uid", &carol_fpr, "carol@private.example"]);
    let secret = carol.ok(&["--armor", "--export-secret-keys", &carol_fpr]);
    assert_success(
        &s.run_with_input(&["keys", "import", "-"], &secret),
        "keys import of Carol's secret key",
    );
    // Someone else's key in the keyring is not ours to publish.
    let dave = Gpg::new();
    dave.generate("<dave@example.org>", "default", "default", "never");
    assert_success(
        &s.run_with_input(
            &["keys", "import", "-"],
            &dave.ok(&["--armor", "--export", "dave@example.org"]),
        ),
        "keys import of Dave's key",
    );

    let names = [
        "example.org",
        "openpgpkey.example.org",
        "private.example",
        "openpgpkey.private.example",
        // Named by the certificate, but not a local domain.
        "openpgpkey.example.net",
    ];
    let issued = super::common::issue("WKD test CA", &names);
    let (ca, cert, key) = (issued.ca_pem, issued.cert_pem, issued.key_pem);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    std::fs::write(dir.path().join("wkd.pem"), &cert).unwrap();
    std::fs::write(dir.path().join("wkd.key"), &key).unwrap();
    let config = format!(
        "[[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\n\
         [wkd]\nlisten = \"127.0.0.1:0\"\ncertificate = \"{}\"\nprivate_key = \"{}\"\n",
        dir.path().join("wkd.pem").display(),
        dir.path().join("wkd.key").display()
    );
    let mut gw = s.serve(&config, &[]);
    let port = wkd_port(&gw.stdout.lock().unwrap().clone());

    let carol_hash = wkd_hash("carol@example.org");
    let advanced = format!("/.well-known/openpgpkey/example.org/hu/{carol_hash}?l=carol");
    let direct = format!("/.well-known/openpgpkey/hu/{carol_hash}?l=carol");
    for (host, path) in [
        ("openpgpkey.example.org", advanced.as_str()),
        ("example.org", direct.as_str()),
    ] {
        let got = fetch(port, &ca_file, host, path);
        assert_eq!(got.status, 200, "https://{host}{path}");
        assert_eq!(got.content_type, "application/octet-stream");
        assert!(
            !got.body.starts_with(b"-----"),
            "binary, not armored: {host}{path}"
        );
        let keys = imported(&got.body);
        assert!(keys.contains(&carol_fpr), "{host}{path}: {keys}");
        assert!(keys.contains("carol@example.org"), "{keys}");
        // Only the user IDs of the domain asked about.
        assert!(!keys.contains("private.example"), "{keys}");
        assert!(!keys.contains("\nsec:"), "public keys only: {keys}");
    }
    // The same key under its other domain carries only that domain's user ID.
    let private = fetch(
        port,
        &ca_file,
        "openpgpkey.private.example",
        &format!(
            "/.well-known/openpgpkey/private.example/hu/{}",
            wkd_hash("carol@private.example")
        ),
    );
    assert_eq!(private.status, 200);
    let keys = imported(&private.body);
    assert!(keys.contains("carol@private.example"), "{keys}");
    assert!(!keys.contains("@example.org"), "{keys}");

    // The policy files of both layouts.
    for (host, path) in [
        (
            "openpgpkey.example.org",
            "/.well-known/openpgpkey/example.org/policy",
        ),
        ("example.org", "/.well-known/openpgpkey/policy"),
    ] {
        assert_eq!(
            fetch(port, &ca_file, host, path).status,
            200,
            "{host}{path}"
        );
    }
    // Unknown: an address without a key, a key that is not a local user's, a domain
    // that is not ours, an advanced path asked of the bare domain, a wrong `l=`.
    for (host, path) in [
        (
            "example.org",
            format!(
                "/.well-known/openpgpkey/hu/{}",
                wkd_hash("nobody@example.org")
            ),
        ),
        (
            "example.org",
            format!(
                "/.well-known/openpgpkey/hu/{}",
                wkd_hash("dave@example.org")
            ),
        ),
        (
            "example.org",
            format!("/.well-known/openpgpkey/hu/{carol_hash}?l=mallory"),
        ),
        (
            "openpgpkey.example.net",
            format!("/.well-known/openpgpkey/example.net/hu/{carol_hash}"),
        ),
        ("example.org", advanced.clone()),
        (
            "example.org",
            "/.well-known/openpgpkey/example.org/policy".into(),
        ),
    ] {
        assert_eq!(
            fetch(port, &ca_file, host, &path).status,
            404,
            "https://{host}{path}"
        );
    }
    let posted = try_fetch(port, &ca_file, "example.org", &direct, "POST").expect("POST");
    assert_eq!(posted.status, 405);
    let head = try_fetch(port, &ca_file, "example.org", &direct, "HEAD").expect("HEAD");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());

    // A body is never waited for, and a header that never ends is cut off.
    let out = Command::new("python3")
        .args(["-c", BOUNDED, &port.to_string()])
        .arg(&ca_file)
        .output()
        .expect("python3");
    assert_success(&out, "the bounded requests");
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("HTTP/1.1 405 Method Not Allowed"),
        "{out}"
    );
    let closed_after: u64 = lines.next().and_then(|l| l.parse().ok()).expect("seconds");
    assert!((9..=15).contains(&closed_after), "{out}");

    // Alice's key is revoked while the server runs: the next fetch serves it revoked.
    let alice_path = format!(
        "/.well-known/openpgpkey/hu/{}",
        wkd_hash("alice@example.org")
    );
    let before = imported(&fetch(port, &ca_file, "example.org", &alice_path).body);
    assert!(
        before.contains(&format!("fpr:::::::::{alice}:")),
        "{before}"
    );
    assert!(!before.contains("pub:r:"), "{before}");
    let revocation = s.ok(&["keys", "export", "--revocation", &alice]);
    assert_success(
        &s.run_with_input(&["keys", "import", "-"], revocation.as_bytes()),
        "keys import of the revocation",
    );
    let after = imported(&fetch(port, &ca_file, "example.org", &alice_path).body);
    assert!(after.contains("pub:r:"), "served revoked: {after}");

    // SIGHUP: a new certificate (another CA) is used for the next connections.
    let issued = super::common::issue("WKD test CA 2", &names);
    let (ca2, cert2, key2) = (issued.ca_pem, issued.cert_pem, issued.key_pem);
    let ca2_file = dir.path().join("ca2.pem");
    std::fs::write(&ca2_file, &ca2).unwrap();
    std::fs::write(dir.path().join("wkd.pem"), &cert2).unwrap();
    std::fs::write(dir.path().join("wkd.key"), &key2).unwrap();
    assert!(try_fetch(port, &ca2_file, "example.org", &direct, "GET").is_none());
    let _ = Command::new("kill")
        .args(["-HUP", &gw.child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(got) = try_fetch(port, &ca2_file, "example.org", &direct, "GET") {
            assert_eq!(got.status, 200);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not used"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(gw.terminate().success());
}
