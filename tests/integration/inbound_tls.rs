//! Inbound delivery over TLS (`[inbound] tls`, `ca_file`) through the real binary: a
//! private Dovecot LMTP server with a certificate from a test CA (STARTTLS on one port,
//! TLS from the first byte on another), smtp-sink as SMTP and LMTP servers that offer no
//! STARTTLS, and the scripted SMTP upstream with TLS as an SMTP delivery target.
//!
//! Dovecot is started once for the whole test binary and shared by these tests (each has
//! mailboxes of its own). It runs under a shell that holds a pipe from the test process:
//! when the process ends, however it ends, the pipe closes and the shell stops Dovecot
//! and removes its directory. Dovecot runs as root here, delivering as uid 65534.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::common::{issue, Gpg, Raw, Sealpost, Server};
use super::upstream::{free_port, wait_for, ScriptedUpstream, SmtpSink, UpstreamTlsMode};

const LONG: Duration = Duration::from_secs(30);

/// The private Dovecot: LMTP on 127.0.0.1 and 127.0.0.2, its certificate valid for
/// `localhost` and `127.0.0.1` only.
struct Dovecot {
    dir: PathBuf,
    /// LMTP that offers STARTTLS.
    starttls_port: u16,
    /// LMTP with TLS from the first byte.
    tls_port: u16,
    /// The CA that issued Dovecot's certificate.
    ca_pem: String,
    /// The shell, whose stdin pipe is held open: Dovecot stops when it closes.
    _shell: Mutex<std::process::Child>,
}

/// A user whose mailbox Dovecot cannot create: every delivery to it fails with
/// `451 4.2.0`, so a copy for it is spooled.
const FULL: &str = "full@example.org";

fn dovecot() -> &'static Dovecot {
    static DOVECOT: OnceLock<Dovecot> = OnceLock::new();
    DOVECOT.get_or_init(start_dovecot)
}

fn start_dovecot() -> Dovecot {
    use std::os::unix::fs::{chown, PermissionsExt};
    let dir = tempfile::Builder::new()
        .prefix("sealpost-dovecot")
        .tempdir()
        .expect("tempdir")
        .keep();
    // Delivery runs as uid 65534, which must reach the mail directory.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let domain = dir.join("mail/example.org");
    std::fs::create_dir_all(domain.join("full")).expect("mail dir");
    for d in [dir.join("mail"), domain] {
        chown(&d, Some(65534), Some(65534)).expect("chown mail dir (the tests run as root)");
    }
    let issued = issue("sealpost test CA for Dovecot", &["localhost", "127.0.0.1"]);
    std::fs::write(dir.join("cert.pem"), &issued.cert_pem).expect("cert");
    std::fs::write(dir.join("key.pem"), &issued.key_pem).expect("key");
    let (starttls_port, tls_port) = (free_port(), free_port());
    let d = dir.display();
    let config = format!(
        "base_dir = {d}/run\n\
         state_dir = {d}/state\n\
         instance_name = sealpost-test-{pid}\n\
         log_path = {d}/dovecot.log\n\
         protocols = lmtp\n\
         listen = 127.0.0.1\n\
         ssl = yes\n\
         ssl_cert = <{d}/cert.pem\n\
         ssl_key = <{d}/key.pem\n\
         first_valid_uid = 65534\n\
         mail_location = maildir:{d}/mail/%d/%n/Maildir\n\
         passdb {{\n  driver = static\n  args = nopassword=y\n}}\n\
         userdb {{\n  driver = static\n  args = uid=65534 gid=65534 home={d}/mail/%d/%n\n}}\n\
         service lmtp {{\n\
           inet_listener lmtp {{\n    address = 127.0.0.1 127.0.0.2\n    port = {starttls_port}\n  }}\n\
           inet_listener lmtps {{\n    address = 127.0.0.1\n    port = {tls_port}\n    ssl = yes\n  }}\n\
         }}\n",
        pid = std::process::id(),
    );
    let conf = dir.join("dovecot.conf");
    std::fs::write(&conf, config).expect("dovecot.conf");
    let shell = super::common::dovecot(
        &conf,
        &dir,
        &[starttls_port, tls_port],
        "dovecot-core and dovecot-lmtpd",
    );
    Dovecot {
        dir,
        starttls_port,
        tls_port,
        ca_pem: issued.ca_pem,
        _shell: Mutex::new(shell),
    }
}

impl Dovecot {
    /// The messages in `user`'s new mail (`user@example.org`).
    fn mailbox(&self, user: &str) -> Vec<String> {
        let new = self
            .dir
            .join(format!("mail/example.org/{user}/Maildir/new"));
        let mut files: Vec<PathBuf> = std::fs::read_dir(new)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .filter_map(|f| std::fs::read(f).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .collect()
    }

    fn wait_mailbox(&self, user: &str, n: usize) -> Vec<String> {
        wait_for(LONG, &format!("{n} message(s) for {user}"), || {
            let m = self.mailbox(user);
            (m.len() >= n).then_some(m)
        })
    }
}

/// Dovecot's own `Received:` field says how the message came: over TLS, it names the
/// protocol version and the protocol `LMTPS`.
fn came_over_tls(message: &str) -> bool {
    let message = message.replace("\r\n", "\n");
    let head = message.split("\n\n").next().unwrap_or_default();
    head.contains("(using TLSv1.") && head.contains(" with LMTPS")
}

/// A gateway with one inbound listener for example.org, delivering to `deliver` with
/// `tls`, trusting `ca_pem` if given; retries after a second.
fn gateway(s: &Sealpost, deliver: &str, tls: &str, ca_pem: Option<&str>) -> Server {
    let ca_line = match ca_pem {
        Some(pem) => format!("ca_file = \"{}\"\n", ca_file(s, pem).display()),
        None => String::new(),
    };
    let inbound = format!("deliver = \"{deliver}\"\ntls = \"{tls}\"\n{ca_line}");
    s.serve(&inbound_config(&inbound), &[])
}

/// `ca_pem` written to a file in the gateway's directory.
fn ca_file(s: &Sealpost, ca_pem: &str) -> PathBuf {
    let path = s.dir.path().join("mailbox-ca.pem");
    std::fs::write(&path, ca_pem).expect("write ca_file");
    path
}

/// The configuration, with `inbound` among the `[inbound]` settings. Recipients are not
/// verified at RCPT (`any`): these tests are about the delivery that follows.
fn inbound_config(inbound: &str) -> String {
    format!(
        "hostname = \"mx.example.org\"\n\n\
         [[listener]]\nmode = \"inbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\n\
         [inbound]\n{inbound}local_domains = [\"example.org\"]\nrecipients = \"any\"\n\n\
         [delivery]\nretry = \"1s\"\n"
    )
}

/// Sends `message` (CRLF line ends) from a remote sender to `rcpts`; the reply to the
/// final dot.
fn send(port: u16, rcpts: &[&str], message: &str) -> String {
    let mut c = Raw::connect(port);
    c.cmd("EHLO sender.example");
    let mail = c.cmd("MAIL FROM:<sender@remote.example>");
    assert!(mail.starts_with("250"), "{mail}");
    for r in rcpts {
        let reply = c.cmd(&format!("RCPT TO:<{r}>"));
        assert!(reply.starts_with("250"), "{reply}");
    }
    let data = c.cmd("DATA");
    assert!(data.starts_with("354"), "{data}");
    c.send(message.as_bytes());
    let reply = c.cmd(".");
    c.cmd("QUIT");
    reply
}

fn plain(to: &str, subject: &str) -> String {
    format!(
        "From: sender@remote.example\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n\
         a plain message: {subject}\r\n"
    )
}

fn queue(s: &Sealpost) -> String {
    s.ok(&["queue", "list"])
}

#[test]
fn starttls_to_dovecot_delivers_the_decrypted_message() {
    let dovecot = dovecot();
    let user = "starttls@example.org";
    let s = Sealpost::new();
    s.generate(user, &[]);
    let alice = Gpg::new();
    alice.ok_with_input(&["--import"], s.ok(&["keys", "export", user]).as_bytes());
    let secret = "the secret that only travels encrypted 7431";
    let armored = alice.ok_with_input(
        &["--armor", "--encrypt", "-r", user],
        format!("Content-Type: text/plain\r\n\r\n{secret}\r\n").as_bytes(),
    );
    let armored = String::from_utf8(armored)
        .expect("armor")
        .replace("\r\n", "\n");
    let message = format!(
        "From: alice@example.net\nTo: {user}\nSubject: over STARTTLS\nMIME-Version: 1.0\n\
         Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"enc\"\n\n\
         --enc\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n\n\
         --enc\nContent-Type: application/octet-stream\n\n{armored}\n--enc--\n"
    )
    .replace('\n', "\r\n");

    // The certificate names `localhost`, the host given in `deliver`.
    let target = format!("lmtp:localhost:{}", dovecot.starttls_port);
    let gw = gateway(&s, &target, "starttls", Some(&dovecot.ca_pem));
    let reply = send(gw.port(), &[user], &message);
    assert!(reply.starts_with("250 2.0.0 Delivered"), "{reply}");
    let got = dovecot.wait_mailbox("starttls", 1).remove(0);
    assert!(came_over_tls(&got), "{got}");
    assert!(got.contains(secret), "decrypted: {got}");
    assert!(!got.contains("BEGIN PGP MESSAGE"), "{got}");
    assert!(got.contains("encryption=decrypted"), "{got}");
    assert!(got.contains("Subject: over STARTTLS"), "{got}");
    assert!(queue(&s).is_empty());
}

#[test]
fn implicit_tls_to_dovecot_verified_by_ip_address_set_by_flag() {
    let dovecot = dovecot();
    let s = Sealpost::new();
    // The file has the CA; the flags give the target, by the IP address that the
    // certificate lists, and the TLS mode.
    let ca = ca_file(&s, &dovecot.ca_pem);
    let config = inbound_config(&format!("ca_file = \"{}\"\n", ca.display()));
    let target = format!("lmtp:127.0.0.1:{}", dovecot.tls_port);
    let gw = s.serve(&config, &["--deliver", &target, "--deliver-tls", "tls"]);
    let reply = send(
        gw.port(),
        &["implicit@example.org"],
        &plain("implicit@example.org", "from the first byte"),
    );
    assert!(reply.starts_with("250 2.0.0 Delivered"), "{reply}");
    let got = dovecot.wait_mailbox("implicit", 1).remove(0);
    assert!(came_over_tls(&got), "{got}");
    assert!(
        got.contains("a plain message: from the first byte"),
        "{got}"
    );
}

#[test]
fn a_certificate_the_gateway_cannot_verify_gets_nothing() {
    let dovecot = dovecot();
    let other = issue("another test CA", &["localhost", "127.0.0.1"]);
    let cases = [
        // Dovecot's certificate, but ca_file names another CA.
        (
            format!("lmtp:localhost:{}", dovecot.starttls_port),
            "starttls",
            &other.ca_pem,
            "is not signed by a CA in ca_file",
        ),
        (
            format!("lmtp:127.0.0.1:{}", dovecot.tls_port),
            "tls",
            &other.ca_pem,
            "is not signed by a CA in ca_file",
        ),
        // The right CA, but an address the certificate does not name.
        (
            format!("lmtp:127.0.0.2:{}", dovecot.starttls_port),
            "starttls",
            &dovecot.ca_pem,
            "the certificate is for localhost, 127.0.0.1, not 127.0.0.2",
        ),
    ];
    for (target, tls, ca, why) in cases {
        let s = Sealpost::new();
        let gw = gateway(&s, &target, tls, Some(ca));
        let reply = send(
            gw.port(),
            &["untrusted@example.org"],
            &plain("untrusted@example.org", "must not arrive"),
        );
        assert!(reply.starts_with("451 4.4.1"), "{target} {tls}: {reply}");
        assert!(reply.contains("TLS handshake failed"), "{reply}");
        assert!(reply.contains(why), "{reply}");
        // Nothing accepted: the sending server keeps the message, none is spooled.
        assert!(queue(&s).is_empty());
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(dovecot.mailbox("untrusted").is_empty());
}

#[test]
fn servers_without_starttls_get_nothing_in_the_clear() {
    // smtp-sink offers no STARTTLS, over SMTP or (-L) over LMTP.
    let smtp = SmtpSink::start(&[]);
    let lmtp = SmtpSink::start(&["-L"]);
    for (target, server) in [
        (smtp.address(), "Upstream"),
        (format!("lmtp:{}", lmtp.address()), "LMTP server"),
    ] {
        let s = Sealpost::new();
        let gw = gateway(&s, &target, "starttls", None);
        let reply = send(
            gw.port(),
            &["alice@example.org"],
            &plain("alice@example.org", "not in the clear"),
        );
        assert!(reply.starts_with("451 4.7.5"), "{target}: {reply}");
        assert!(reply.contains(server), "{reply}");
        assert!(
            reply.contains("does not offer STARTTLS, which the configuration requires"),
            "{reply}"
        );
        assert!(queue(&s).is_empty(), "the sending server keeps it");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(smtp.messages().is_empty() && lmtp.messages().is_empty());
}

#[test]
fn a_spooled_copy_waits_when_the_server_stops_offering_starttls() {
    let dovecot = dovecot();
    let s = Sealpost::new();
    let target = format!("lmtp:localhost:{}", dovecot.starttls_port);
    // One recipient delivered, one deferred by Dovecot: the deferred one is spooled.
    let mut gw = gateway(&s, &target, "starttls", Some(&dovecot.ca_pem));
    let reply = send(
        gw.port(),
        &["spooled@example.org", FULL],
        &plain("the recipients", "spooled over TLS"),
    );
    assert!(reply.starts_with("250 2.0.0 Accepted"), "{reply}");
    assert!(came_over_tls(&dovecot.wait_mailbox("spooled", 1)[0]));
    assert!(gw.terminate().success());
    let listed = queue(&s);
    assert!(listed.contains(&format!("to {FULL}")), "{listed}");
    assert!(listed.contains("451 4.2.0"), "{listed}");

    // The mailbox server is now one that offers no STARTTLS (as when a man in the middle
    // strips it from the reply): the retries send nothing, and the copy stays spooled
    // with the reason.
    let sink = SmtpSink::start(&["-L"]);
    let target = format!("lmtp:{}", sink.address());
    let _gw = gateway(&s, &target, "starttls", Some(&dovecot.ca_pem));
    let listed = wait_for(LONG, "a retry that refuses the cleartext server", || {
        let listed = queue(&s);
        listed.contains("does not offer STARTTLS").then_some(listed)
    });
    assert!(listed.contains(&format!("to {FULL}")), "{listed}");
    assert!(listed.contains("last error: 451 4.7.5"), "{listed}");
    assert!(listed.contains("nothing was sent in the clear"), "{listed}");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(queue(&s).contains(&format!("to {FULL}")), "still spooled");
    assert!(sink.messages().is_empty(), "nothing reached it");
}

#[test]
fn smtp_delivery_targets_with_starttls_and_tls() {
    for (mode, tls) in [
        (UpstreamTlsMode::StartTls, "starttls"),
        (UpstreamTlsMode::Implicit, "tls"),
    ] {
        // A certificate for `localhost`, self-signed: the ca_file is the certificate.
        let up = ScriptedUpstream::start_tls(mode);
        let target = format!("localhost:{}", up.port);
        let s = Sealpost::new();
        {
            // Without the CA (the system roots do not know it): nothing goes.
            let gw = gateway(&s, &target, tls, None);
            let reply = send(gw.port(), &["bob@example.org"], &plain("bob", "untrusted"));
            assert!(reply.starts_with("451 4.4.1"), "{tls}: {reply}");
            assert!(reply.contains("TLS handshake failed"), "{reply}");
        }
        let gw = gateway(&s, &target, tls, Some(&up.ca_pem));
        let reply = send(gw.port(), &["bob@example.org"], &plain("bob", "over TLS"));
        assert!(reply.starts_with("250 2.0.0 Delivered"), "{tls}: {reply}");
        let got = up.wait_received(1, LONG);
        assert_eq!(got.len(), 1, "{tls}");
        assert_eq!(got[0].recipients, ["bob@example.org"]);
        assert!(String::from_utf8_lossy(&got[0].data).contains("a plain message: over TLS"));
    }
}

/// `check-config` (and `serve`, which loads the same way) with `config`; the exit status
/// and what it printed.
fn check_config(s: &Sealpost, config: &str) -> (bool, String) {
    let path = s.dir.path().join("check.toml");
    std::fs::write(&path, config).expect("write config");
    let out = s.run(&["check-config", "--config", &path.display().to_string()]);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn tls_to_a_local_target_is_a_configuration_error() {
    let s = Sealpost::new();
    for (deliver, what) in [
        ("maildir:/var/mail/sealpost", "local directory"),
        ("lmtp:unix:/run/dovecot/lmtp", "local Unix socket"),
    ] {
        for tls in ["tls", "starttls"] {
            let config = format!("[inbound]\ndeliver = \"{deliver}\"\ntls = \"{tls}\"\n");
            let (ok, out) = check_config(&s, &config);
            assert!(!ok, "{config}: {out}");
            assert!(out.contains("line 3"), "{out}");
            assert!(out.contains("inbound.tls"), "{out}");
            assert!(out.contains(what), "{out}");
        }
        // `serve` refuses it the same way, before listening.
        let config = format!("[inbound]\ndeliver = \"{deliver}\"\ntls = \"tls\"\n");
        let mut serve = s.serve_command(&config);
        let out = serve.output().expect("serve");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains("inbound.tls") && err.contains(what), "{err}");
    }
    // A target on the network takes it, and check-config shows it; its ca_file must
    // hold a CA certificate.
    let ca = s.dir.path().join("ca.pem");
    let config = format!(
        "[inbound]\ndeliver = \"lmtp:mail.example.org:24\"\ntls = \"starttls\"\nca_file = \"{}\"\n",
        ca.display()
    );
    let (ok, out) = check_config(&s, &config);
    assert!(
        !ok && out.contains("cannot read") && out.contains("ca.pem"),
        "{out}"
    );
    std::fs::write(&ca, issue("a CA", &["mail.example.org"]).ca_pem).expect("ca");
    let (ok, out) = check_config(&s, &config);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "deliver = \"lmtp:mail.example.org:24\"\ntls = \"starttls\"\nca_file = \"{}\"",
            ca.display()
        )),
        "{out}"
    );
    // TLS is never on unless asked for: an existing configuration stays as it was.
    let (ok, out) = check_config(&s, "[inbound]\ndeliver = \"10.0.0.5:25\"\n");
    assert!(
        ok && out.contains("deliver = \"10.0.0.5:25\"\ntls = \"none\""),
        "{out}"
    );
}
