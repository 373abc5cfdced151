//! Keys looked up at send time in a Web Key Directory served over HTTPS on loopback by a
//! Python server with a test CA, from directories `gpg-wks-client --install-key` made,
//! and what the gateway does with hostile answers: garbage, a 100 MB body, a key for
//! another address, a server that never answers.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::common::{swaks_to, Gpg, Sealpost};
use super::upstream::{wait_for, SmtpSink};

const LONG: Duration = Duration::from_secs(30);

/// Serves `ROOT/<domain>/hu/<hash>` as WKD over HTTPS: the advanced method for Host
/// `openpgpkey.<domain>`, the direct one for Host `<domain>`. `ROOT/<domain>/mode` says
/// how the domain answers: `advanced` or `direct` (only that method), `slow` (never in
/// time), `huge` (100 MB of zeros), `garbage` (random bytes); anything else serves both.
/// Each request is appended to `ROOT/requests.log`.
const WKD_SERVER: &str = r#"
import http.server, os, ssl, sys, time, socketserver
root, cert, key = sys.argv[1], sys.argv[2], sys.argv[3]
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        host = self.headers.get("Host", "").split(":")[0].lower()
        path = self.path.split("?")[0]
        with open(os.path.join(root, "requests.log"), "a") as f:
            f.write(host + " " + self.path + "\n")
        if path.startswith("/vks/v1/by-email/"):
            import urllib.parse
            email = urllib.parse.unquote(path[len("/vks/v1/by-email/"):])
            try:
                body = open(os.path.join(root, "vks", email), "rb").read()
            except OSError:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if host.startswith("openpgpkey."):
            domain, method = host[len("openpgpkey."):], "advanced"
            prefix = "/.well-known/openpgpkey/" + domain + "/hu/"
        else:
            domain, method = host, "direct"
            prefix = "/.well-known/openpgpkey/hu/"
        try:
            mode = open(os.path.join(root, domain, "mode")).read().strip()
        except OSError:
            mode = "both"
        if mode == "slow":
            time.sleep(60)
        if mode == "huge":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            chunk = b"\0" * 65536
            try:
                for _ in range(1600):
                    self.wfile.write(chunk)
            except OSError:
                pass
            return
        if mode == "garbage":
            body = os.urandom(3000)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if mode in ("advanced", "direct") and mode != method or not path.startswith(prefix):
            self.send_error(404)
            return
        name = path[len(prefix):]
        try:
            body = open(os.path.join(root, domain, "hu", name), "rb").read()
        except OSError:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv = S(("127.0.0.1", 0), H)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

/// A WKD server for `domains` (each also as `openpgpkey.<domain>`), stopped when dropped.
struct Wkd {
    child: Child,
    port: u16,
    root: tempfile::TempDir,
    ca_file: PathBuf,
}

impl Wkd {
    fn start(domains: &[&str]) -> Wkd {
        let root = tempfile::tempdir().expect("tempdir");
        let names: Vec<String> = domains
            .iter()
            .flat_map(|d| [d.to_string(), format!("openpgpkey.{d}")])
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let issued = super::common::issue("WKD test CA", &names);
        let tls = tempfile::tempdir().expect("tempdir").keep();
        let cert_file = tls.join("server.pem");
        let key_file = tls.join("server.key");
        let ca_file = tls.join("ca.pem");
        std::fs::write(&cert_file, &issued.cert_pem).expect("write");
        std::fs::write(&key_file, &issued.key_pem).expect("write");
        std::fs::write(&ca_file, &issued.ca_pem).expect("write");
        let mut child = Command::new("python3")
            .args(["-c", WKD_SERVER])
            .arg(root.path())
            .arg(&cert_file)
            .arg(&key_file)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("port");
        let port = line.trim().parse().expect("the server's port");
        Wkd {
            child,
            port,
            root,
            ca_file,
        }
    }

    /// Publishes `gpg`'s key for `email` with `gpg-wks-client --install-key`.
    fn publish(&self, gpg: &Gpg, email: &str) {
        let fpr = gpg.fingerprint(email);
        let out = Command::new("/usr/lib/gnupg/gpg-wks-client")
            .env("GNUPGHOME", gpg.home.path())
            .args(["--install-key", "-C"])
            .arg(self.root.path())
            .args([&fpr, email])
            .output()
            .expect("gpg-wks-client (package gnupg)");
        assert!(
            out.status.success(),
            "gpg-wks-client: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Writes `data` where `email`'s key is looked for.
    fn put(&self, email: &str, data: &[u8]) {
        let (local, domain) = email.split_once('@').expect("an address");
        let hash = Command::new("/usr/lib/gnupg/gpg-wks-client")
            .args(["--print-wkd-hash", email])
            .output()
            .expect("gpg-wks-client");
        let hash = String::from_utf8_lossy(&hash.stdout);
        let hash = hash.split_whitespace().next().expect("a hash");
        assert!(!local.is_empty());
        let dir = self.root.path().join(domain).join("hu");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(hash), data).expect("write");
    }

    /// Publishes `data` as `email`'s key on the VKS keyserver this server also is.
    fn put_vks(&self, email: &str, data: &[u8]) {
        let dir = self.root.path().join("vks");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(email), data).expect("write");
    }

    fn mode(&self, domain: &str, mode: &str) {
        let dir = self.root.path().join(domain);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("mode"), mode).expect("write");
    }

    fn requests(&self) -> String {
        std::fs::read_to_string(self.root.path().join("requests.log")).unwrap_or_default()
    }

    /// `[discovery]` pointing every domain at this server.
    fn discovery(&self, domains: &[&str], extra: &str) -> String {
        let mut s = format!(
            "[discovery]\nca_file = \"{}\"\n{extra}\n[discovery.resolve]\n",
            self.ca_file.display()
        );
        for d in domains {
            s += &format!("\"{d}\" = \"127.0.0.1:{}\"\n", self.port);
            s += &format!("\"openpgpkey.{d}\" = \"127.0.0.1:{}\"\n", self.port);
        }
        s
    }
}

impl Drop for Wkd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gpg user with a signing primary key and an encryption subkey.
pub(super) fn gpg_user(email: &str) -> Gpg {
    gpg_user_with(email, "ed25519", "cv25519")
}

/// [`gpg_user`] with the given algorithms for the primary key and the subkey.
pub(super) fn gpg_user_with(email: &str, sign: &str, encr: &str) -> Gpg {
    let g = Gpg::new();
    g.generate(&format!("<{email}>"), sign, "sign", "never");
    let fpr = g.fingerprint(email);
    g.ok(&["--quick-add-key", &fpr, encr, "encr", "never"]);
    g
}

/// Sends `body` to `to` and returns the copy that reached `sink` for it.
pub(super) fn send(
    port: u16,
    sink: &SmtpSink,
    to: &str,
    body: &str,
) -> (bool, String, Option<String>) {
    let before: Vec<String> = sink.messages().into_iter().map(|d| d.text()).collect();
    let (ok, out) = swaks_to(
        port,
        "bob@example.org",
        to,
        &[
            "--header",
            &format!("From: <bob@example.org>\nTo: <{to}>"),
            "--header",
            "Subject: hello",
            "--body",
            body,
        ],
    );
    if !ok {
        return (ok, out, None);
    }
    let copy = wait_for(LONG, &format!("the copy for {to}"), || {
        sink.messages()
            .into_iter()
            .map(|d| d.text())
            .find(|t| t.contains(&format!("To: <{to}>")) && !before.contains(t))
    });
    (ok, out, Some(copy))
}

pub(super) fn decrypts(gpg: &Gpg, message: &str, body: &str) -> bool {
    let out = gpg.run_with_input(&["--decrypt"], message.as_bytes());
    String::from_utf8_lossy(&out.stdout).contains(body)
}

/// A recipient nobody imported is encrypted to the key its domain publishes, found by the
/// advanced method for one domain and by the direct method for another; gpg decrypts
/// both copies. `keys discover` (through the running server's admin socket) shows where
/// it asked; `keys list` records the keys with the trust `wkd`.
#[test]
fn keys_published_in_wkd_encrypt_mail_to_unknown_recipients() {
    let domains = ["adv.example", "direct.example"];
    let wkd = Wkd::start(&domains);
    wkd.mode("adv.example", "advanced");
    wkd.mode("direct.example", "direct");
    let alice = gpg_user("alice@adv.example");
    let dave = gpg_user("dave@direct.example");
    wkd.publish(&alice, "alice@adv.example");
    wkd.publish(&dave, "dave@direct.example");

    let s = Sealpost::new();
    s.generate("bob@example.org", &[]);
    let sink = SmtpSink::start(&[]);
    let gw = s.serve(
        &super::outbound::config(&sink, &wkd.discovery(&domains, "refresh = \"0\"")),
        &[],
    );
    let port = gw.port();

    let shown = s.ok(&["keys", "discover", "alice@adv.example"]);
    assert!(
        shown.contains("https://openpgpkey.adv.example/.well-known/openpgpkey/adv.example/hu/"),
        "{shown}"
    );
    assert!(
        shown.contains(&alice.fingerprint("alice@adv.example")),
        "{shown}"
    );
    assert!(shown.contains("would be stored"), "{shown}");
    assert!(
        !s.ok(&["keys", "list"]).contains("alice@adv.example"),
        "keys discover without --store stores nothing"
    );

    for (to, body, gpg) in [
        ("alice@adv.example", "WKD-ADVANCED-1", &alice),
        ("dave@direct.example", "WKD-DIRECT-1", &dave),
    ] {
        let (ok, out, copy) = send(port, &sink, to, body);
        assert!(ok, "{out}");
        let copy = copy.unwrap_or_default();
        assert!(copy.contains("multipart/encrypted"), "{to}: {copy}");
        assert!(!copy.contains(body), "{to}: the body in the clear: {copy}");
        assert!(decrypts(gpg, &copy, body), "gpg decrypts the copy for {to}");
    }
    let requests = wkd.requests();
    assert!(
        requests.contains("openpgpkey.adv.example /.well-known/openpgpkey/adv.example/hu/"),
        "{requests}"
    );
    assert!(
        requests.contains("direct.example /.well-known/openpgpkey/hu/"),
        "{requests}"
    );
    let listed = s.list_json().to_string();
    assert!(listed.contains("alice@adv.example"), "{listed}");
    assert!(listed.contains("\"wkd\""), "{listed}");
}

/// Hostile or broken directories: garbage, a 100 MB answer, a key for another address,
/// and a server that never answers. Each leaves the recipient keyless (its mail goes out
/// signed, not encrypted), stores nothing, and is explained by `policy explain`; the
/// slow server costs a session no more than the budget, and a `require` recipient there
/// is refused at RCPT once the budget is spent.
#[test]
fn bad_directories_store_nothing_and_the_budget_holds() {
    let domains = [
        "garbage.example",
        "huge.example",
        "other.example",
        "slow.example",
    ];
    let wkd = Wkd::start(&domains);
    wkd.mode("garbage.example", "garbage");
    wkd.mode("huge.example", "huge");
    wkd.mode("slow.example", "slow");
    // Mallory's key, published where Eve's is looked for.
    let mallory = gpg_user("mallory@other.example");
    wkd.put(
        "eve@other.example",
        &mallory.ok(&["--export", "mallory@other.example"]),
    );

    let s = Sealpost::new();
    s.generate("bob@example.org", &[]);
    let sink = SmtpSink::start(&[]);
    let config = super::outbound::config(
        &sink,
        &wkd.discovery(&domains, "budget = \"2s\"\nrefresh = \"0\"\n"),
    ) + "\n[policy.address.\"carl@slow.example\"]\nmode = \"require\"\n";
    let gw = s.serve(&config, &[]);
    let port = gw.port();

    for (i, to) in [
        "gary@garbage.example",
        "hugo@huge.example",
        "eve@other.example",
        "sam@slow.example",
    ]
    .into_iter()
    .enumerate()
    {
        let body = format!("BAD-WKD-{i}");
        let started = Instant::now();
        let (ok, out, copy) = send(port, &sink, to, &body);
        let took = started.elapsed();
        assert!(ok, "{to}: {out}");
        let copy = copy.unwrap_or_default();
        assert!(
            took < Duration::from_secs(12),
            "{to}: the session took {took:?} with a 2 s budget"
        );
        assert!(!copy.contains("multipart/encrypted"), "{to}: {copy}");
        assert!(copy.contains(&body), "{to}: {copy}");
    }
    let listed = s.ok(&["keys", "list"]);
    for to in [
        "garbage.example",
        "huge.example",
        "other.example",
        "slow.example",
    ] {
        assert!(!listed.contains(to), "nothing stored for {to}: {listed}");
    }
    let explained = wait_for(LONG, "the misses recorded", || {
        let e = s.ok(&[
            "policy",
            "explain",
            "--from",
            "bob@example.org",
            "--to",
            "eve@other.example",
            "--to",
            "hugo@huge.example",
            "--to",
            "gary@garbage.example",
        ]);
        (e.matches("found: nothing").count() == 3).then_some(e)
    });
    assert!(
        explained.contains("no user ID for eve@other.example"),
        "{explained}"
    );
    assert!(explained.contains("larger than"), "{explained}");

    // A `require` recipient at the slow domain: refused after at most the budget.
    let started = Instant::now();
    let (ok, out, _) = send(port, &sink, "carl@slow.example", "REQUIRE-SLOW");
    let took = started.elapsed();
    assert!(!ok, "{out}");
    assert!(out.contains("550") || out.contains("554"), "{out}");
    assert!(
        took < Duration::from_secs(12),
        "the refusal took {took:?} with a 2 s budget"
    );
}

/// A known key is fetched again in the background: its revocation, published later,
/// stops its use; and a different key published for an address with a pinned key goes
/// to the review queue while mail keeps using the pinned key, until an admin accepts it.
#[test]
fn refresh_brings_revocations_and_queues_a_changed_key() {
    let domains = ["adv.example"];
    let wkd = Wkd::start(&domains);
    let carol = gpg_user("carol@adv.example");
    wkd.publish(&carol, "carol@adv.example");
    let frank_old = gpg_user("frank@adv.example");
    let frank_new = gpg_user("frank@adv.example");
    wkd.publish(&frank_new, "frank@adv.example");
    let gina_old = gpg_user("gina@adv.example");
    let gina_new = gpg_user("gina@adv.example");
    wkd.publish(&gina_new, "gina@adv.example");

    let s = Sealpost::new();
    s.generate("bob@example.org", &[]);
    for (g, email) in [
        (&frank_old, "frank@adv.example"),
        (&gina_old, "gina@adv.example"),
    ] {
        let pinned = g.ok(&["--export", email]);
        assert!(s
            .run_with_input(&["keys", "import", "-"], &pinned)
            .status
            .success());
    }
    let sink = SmtpSink::start(&[]);
    let log = s.dir.path().join("serve.log");
    let mut cmd = s.serve_command(
        &(super::outbound::config(&sink, &wkd.discovery(&domains, "refresh = \"2s\""))
            + "\n[policy.address.\"gina@adv.example\"]\nhold_on_review = true\n"),
    );
    cmd.env("NO_COLOR", "1")
        .stderr(std::fs::File::create(&log).expect("log file"));
    let gw = super::common::start(cmd);
    let port = gw.port();

    let (ok, out, first) = send(port, &sink, "carol@adv.example", "CAROL-1");
    assert!(ok, "{out}");
    let first = first.unwrap_or_default();
    assert!(decrypts(&carol, &first, "CAROL-1"), "{first}");

    // The refresh finds Frank's new key: queued, never used in place of the pinned one.
    let new_fpr = frank_new.fingerprint("frank@adv.example");
    wait_for(LONG, "the changed key in the review queue", || {
        s.ok(&["keys", "review", "list"])
            .contains(&new_fpr)
            .then_some(())
    });
    let (ok, out, to_frank) = send(port, &sink, "frank@adv.example", "FRANK-1");
    assert!(ok, "{out}");
    let to_frank = to_frank.unwrap_or_default();
    assert!(
        decrypts(&frank_old, &to_frank, "FRANK-1"),
        "the pinned key is used"
    );
    assert!(!decrypts(&frank_new, &to_frank, "FRANK-1"));
    // Gina's rule holds her mail while her changed key waits.
    let gina_fpr = gina_new.fingerprint("gina@adv.example");
    wait_for(LONG, "Gina's changed key in the review queue", || {
        s.ok(&["keys", "review", "list"])
            .contains(&gina_fpr)
            .then_some(())
    });
    let (ok, out, _) = send(port, &sink, "gina@adv.example", "GINA-1");
    assert!(
        !ok && out.contains("450"),
        "deferred while the key waits: {out}"
    );
    let explained = s.ok(&[
        "policy",
        "explain",
        "--from",
        "bob@example.org",
        "--to",
        "gina@adv.example",
    ]);
    assert!(explained.contains("deferred (450)"), "{explained}");
    s.ok(&["keys", "review", "accept", &gina_fpr]);
    let (ok, out, to_gina) = send(port, &sink, "gina@adv.example", "GINA-2");
    assert!(ok, "{out}");
    assert!(decrypts(&gina_new, &to_gina.unwrap_or_default(), "GINA-2"));

    // Two more refresh rounds see Frank's queued key again: the admin was told once.
    std::thread::sleep(Duration::from_millis(4500));
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    let told = logged
        .lines()
        .filter(|l| l.contains("queued for review") && l.contains("frank@adv.example"))
        .count();
    assert_eq!(told, 1, "{logged}");
    s.ok(&["keys", "review", "accept", &new_fpr]);
    let (ok, out, to_frank) = send(port, &sink, "frank@adv.example", "FRANK-2");
    assert!(ok, "{out}");
    let to_frank = to_frank.unwrap_or_default();
    assert!(
        decrypts(&frank_new, &to_frank, "FRANK-2"),
        "the accepted key is used"
    );

    // Carol revokes her key and publishes the revoked certificate.
    let fpr = carol.fingerprint("carol@adv.example");
    let rev = carol.revocation_cert(&fpr);
    carol.ok_with_input(&["--import"], &rev);
    wkd.publish(&carol, "carol@adv.example");
    wait_for(LONG, "the revocation through the refresh", || {
        let listed = s.list_json().to_string();
        listed.contains("revoked").then_some(())
    });
    let (ok, out, second) = send(port, &sink, "carol@adv.example", "CAROL-2");
    assert!(ok, "{out}");
    let second = second.unwrap_or_default();
    assert!(
        !second.contains("multipart/encrypted"),
        "a revoked key is not used: {second}"
    );
}

/// A VKS keyserver, when configured, supplies keys with the trust `keyserver`: enough for
/// an opportunistic recipient, not for one whose rule requires a key from WKD up.
#[test]
fn a_keyserver_supplies_keys_below_wkd_trust() {
    let wkd = Wkd::start(&["keys.example"]);
    let zed = gpg_user("zed@vks.example");
    let yan = gpg_user("yan@vks.example");
    wkd.put_vks("zed@vks.example", &zed.ok(&["--export", "zed@vks.example"]));
    wkd.put_vks("yan@vks.example", &yan.ok(&["--export", "yan@vks.example"]));

    let s = Sealpost::new();
    s.generate("bob@example.org", &[]);
    let sink = SmtpSink::start(&[]);
    let discovery = wkd.discovery(
        &["keys.example"],
        "wkd = false\nkeyservers = [\"https://keys.example\"]\nrefresh = \"0\"\n",
    );
    let gw = s.serve(
        &(super::outbound::config(&sink, &discovery)
            + "\n[policy.address.\"yan@vks.example\"]\nmode = \"require\"\n"),
        &[],
    );
    let port = gw.port();
    let (ok, out, copy) = send(port, &sink, "zed@vks.example", "VKS-1");
    assert!(ok, "{out}");
    let copy = copy.unwrap_or_default();
    assert!(decrypts(&zed, &copy, "VKS-1"), "{copy}");
    let listed = s.list_json().to_string();
    assert!(listed.contains("\"keyserver\""), "{listed}");

    let (ok, out, _) = send(port, &sink, "yan@vks.example", "VKS-2");
    assert!(!ok && out.contains("550"), "{out}");
    // WKD is off: no directory was asked.
    assert!(!wkd.requests().contains("openpgpkey"), "{}", wkd.requests());
}

/// With `autocrypt = false`, the Autocrypt header of received mail stores nothing.
#[test]
fn autocrypt_can_be_switched_off() {
    use base64::Engine;
    let s = Sealpost::new();
    s.generate("bob@example.org", &[]);
    let alice = gpg_user("alice@example.net");
    let keydata = base64::engine::general_purpose::STANDARD
        .encode(alice.ok(&["--export", "alice@example.net"]));
    let sink = SmtpSink::start(&[]);
    let inbound = super::upstream::free_port();
    let gw = s.serve(
        &format!(
            "[[listener]]\nmode = \"inbound\"\naddress = \"127.0.0.1:{inbound}\"\ntls = \"none\"\n\n\
             [inbound]\ndeliver = \"{}\"\nlocal_domains = [\"example.org\"]\nrecipients = \"any\"\n\n\
             [discovery]\nautocrypt = false\nwkd = false\n",
            sink.address()
        ),
        &[],
    );
    let (ok, out) = swaks_to(
        gw.port(),
        "alice@example.net",
        "bob@example.org",
        &[
            "--header",
            "From: <alice@example.net>",
            "--header",
            &format!("Autocrypt: addr=alice@example.net; keydata={keydata}"),
            "--body",
            "hi",
        ],
    );
    assert!(ok, "{out}");
    sink.wait_messages(1, LONG);
    let listed = s.ok(&["keys", "list"]);
    assert!(!listed.contains("alice@example.net"), "{listed}");
}
