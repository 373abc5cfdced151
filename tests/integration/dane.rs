//! Keys looked up at send time as DANE OPENPGPKEY records (RFC 7929), served by NSD on
//! loopback from zones the test signs with ldns-signzone, and validated by the gateway
//! from a zone key given as `dane_trust_anchor`. Records in an unsigned zone, in a zone
//! signed by a key that is not the anchor, or under a tampered signature are not used; a
//! record holding a key for another address stores nothing; and with DANE off (the
//! default) no DNS query is made.

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::common::{swaks_to, Gpg, Sealpost};
use super::upstream::{free_port, wait_for, SmtpSink};

const LONG: Duration = Duration::from_secs(30);

/// The zone the anchor vouches for, and the two that must not be believed.
const SIGNED: &str = "signed.example";
const UNSIGNED: &str = "unsigned.example";
const ROGUE: &str = "rogue.example";

/// A gpg user with a signing primary key and an encryption subkey. `big` gives RSA 3072
/// keys: a record of some 1.8 KB, more than a UDP answer carries (1232 bytes), so the
/// resolver must ask again over TCP.
fn gpg_user(email: &str, big: bool) -> Gpg {
    let g = Gpg::new();
    let (sign, encr) = if big {
        ("rsa3072", "rsa3072")
    } else {
        ("ed25519", "cv25519")
    };
    g.generate(&format!("<{email}>"), sign, "sign", "never");
    let fpr = g.fingerprint(email);
    g.ok(&["--quick-add-key", &fpr, encr, "encr", "never"]);
    g
}

/// The owner name of `email`'s OPENPGPKEY record (RFC 7929 §3), relative to its zone.
fn owner(email: &str) -> String {
    use sha2::Digest;
    let local = email.split('@').next().expect("an address");
    let digest = sha2::Sha256::digest(local.as_bytes());
    let hex: String = digest[..28].iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}._openpgpkey")
}

/// Everyone whose key is published, with the gpg home that can decrypt for them.
struct People {
    alice: Gpg,
    carol: Gpg,
    mallory: Gpg,
    uma: Gpg,
    rob: Gpg,
}

/// NSD serving the three zones on 127.0.0.1 (UDP and TCP) at a port picked at run time,
/// from a temporary directory; it stops when the shell that started it reads end of
/// input, that is when this is dropped or the test process ends.
struct Dns {
    port: u16,
    dir: PathBuf,
    anchor: PathBuf,
    people: People,
    _shell: Mutex<Child>,
}

fn ldns(program: &str, dir: &Path, args: &[&str]) -> String {
    let out = Command::new(program)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} (package ldnsutils): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A zone file for `zone` with an OPENPGPKEY record for each `(email, certificate)`.
fn zone_file(zone: &str, records: &[(&str, &[u8])]) -> String {
    use base64::Engine;
    let mut z = format!(
        "$ORIGIN {zone}.\n$TTL 300\n\
         @ IN SOA ns.{zone}. admin.{zone}. 1 3600 600 86400 300\n\
         @ IN NS ns.{zone}.\nns IN A 127.0.0.1\n"
    );
    for (email, cert) in records {
        z += &format!(
            "{} IN OPENPGPKEY {}\n",
            owner(email),
            base64::engine::general_purpose::STANDARD.encode(cert)
        );
    }
    z
}

/// Signs `DIR/<zone>.zone` with a new single key (flags 257, signing everything, as a
/// combined signing key) into `DIR/<zone>.signed`; returns the key's `.key` file.
fn sign(dir: &Path, zone: &str) -> PathBuf {
    let base = ldns(
        "ldns-keygen",
        dir,
        &["-r", "/dev/urandom", "-k", "-a", "ECDSAP256SHA256", zone],
    );
    ldns(
        "ldns-signzone",
        dir,
        &[
            "-f",
            &format!("{zone}.signed"),
            &format!("{zone}.zone"),
            &base,
        ],
    );
    dir.join(format!("{base}.key"))
}

/// Spoils the signature over `email`'s OPENPGPKEY record in a signed zone file: the record
/// stays, its RRSIG no longer verifies.
fn tamper(signed: &Path, email: &str) {
    let text = std::fs::read_to_string(signed).expect("signed zone");
    let name = owner(email);
    let mut done = false;
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            if fields.first().is_some_and(|f| f.starts_with(&name))
                && fields.get(3) == Some(&"RRSIG")
                && fields.get(4) == Some(&"OPENPGPKEY")
            {
                let sig = fields.last().expect("a signature");
                let mut chars: Vec<char> = sig.chars().collect();
                chars[10] = if chars[10] == 'A' { 'B' } else { 'A' };
                done = true;
                let spoiled: String = chars.into_iter().collect();
                return l.replacen(sig, &spoiled, 1);
            }
            l.to_string()
        })
        .collect();
    assert!(
        done,
        "no RRSIG over {email}'s record in {}",
        signed.display()
    );
    std::fs::write(signed, lines.join("\n") + "\n").expect("write zone");
}

impl Dns {
    fn start() -> Dns {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let people = People {
            alice: gpg_user(&format!("alice@{SIGNED}"), true),
            carol: gpg_user(&format!("carol@{SIGNED}"), false),
            mallory: gpg_user(&format!("mallory@{SIGNED}"), false),
            uma: gpg_user(&format!("uma@{UNSIGNED}"), false),
            rob: gpg_user(&format!("rob@{ROGUE}"), false),
        };
        let export = |g: &Gpg, email: &str| g.ok(&["--export", email]);
        let alice = export(&people.alice, &format!("alice@{SIGNED}"));
        assert!(
            alice.len() > 1500,
            "Alice's record must not fit a UDP answer"
        );
        let carol = export(&people.carol, &format!("carol@{SIGNED}"));
        let mallory = export(&people.mallory, &format!("mallory@{SIGNED}"));
        let uma = export(&people.uma, &format!("uma@{UNSIGNED}"));
        let rob = export(&people.rob, &format!("rob@{ROGUE}"));

        let carol_at = format!("carol@{SIGNED}");
        let alice_at = format!("alice@{SIGNED}");
        let eve_at = format!("eve@{SIGNED}");
        let signed_records: [(&str, &[u8]); 3] = [
            (&alice_at, &alice),
            (&carol_at, &carol),
            // Mallory's key where Eve's is looked for.
            (&eve_at, &mallory),
        ];
        std::fs::write(
            dir.join(format!("{SIGNED}.zone")),
            zone_file(SIGNED, &signed_records),
        )
        .expect("zone");
        let anchor = sign(&dir, SIGNED);
        tamper(&dir.join(format!("{SIGNED}.signed")), &carol_at);

        let uma_at = format!("uma@{UNSIGNED}");
        std::fs::write(
            dir.join(format!("{UNSIGNED}.signed")),
            zone_file(UNSIGNED, &[(&uma_at, &uma)]),
        )
        .expect("zone");
        let rob_at = format!("rob@{ROGUE}");
        std::fs::write(
            dir.join(format!("{ROGUE}.zone")),
            zone_file(ROGUE, &[(&rob_at, &rob)]),
        )
        .expect("zone");
        sign(&dir, ROGUE);

        for _ in 0..5 {
            let port = free_port();
            let conf = dir.join("nsd.conf");
            let mut text = format!(
                "server:\n  ip-address: 127.0.0.1@{port}\n  port: {port}\n\
                 \x20 username: \"\"\n  chroot: \"\"\n  zonesdir: \"{d}\"\n  database: \"\"\n\
                 \x20 pidfile: \"{d}/nsd.pid\"\n  xfrdfile: \"{d}/xfrd.state\"\n\
                 \x20 zonelistfile: \"{d}/zone.list\"\n  xfrdir: \"{d}\"\n\
                 \x20 logfile: \"{d}/nsd.log\"\n  server-count: 1\n  reuseport: no\n\
                 \x20 hide-version: yes\n  verbosity: 1\n\
                 remote-control:\n  control-enable: no\n",
                d = dir.display()
            );
            for zone in [SIGNED, UNSIGNED, ROGUE] {
                text += &format!("zone:\n  name: {zone}\n  zonefile: {zone}.signed\n");
            }
            std::fs::write(&conf, text).expect("nsd.conf");
            let _ = std::fs::remove_file(dir.join("nsd.log"));
            // No privileges dropped and nothing outside the directory: `username: ""`,
            // `chroot: ""`, and every file NSD writes named above.
            let shell = Command::new("sh")
                .arg("-c")
                .arg(r#"nsd -d -c "$1" & pid=$!; read -r _ignored; kill -TERM "$pid"; wait "$pid""#)
                .arg("sh")
                .arg(&conf)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("sh");
            let shell = Mutex::new(shell);
            let log = dir.join("nsd.log");
            let up = (0..400).any(|_| {
                std::thread::sleep(Duration::from_millis(25));
                std::fs::read_to_string(&log).is_ok_and(|l| l.contains("nsd started"))
                    && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
            if up {
                return Dns {
                    port,
                    dir,
                    anchor,
                    people,
                    _shell: shell,
                };
            }
            stop(&shell);
        }
        panic!(
            "NSD did not start (package nsd): {}",
            std::fs::read_to_string(dir.join("nsd.log")).unwrap_or_default()
        );
    }

    /// `[discovery]` with DANE on, asking this server, trusting the signed zone's key.
    fn discovery(&self) -> String {
        format!(
            "[discovery]\nwkd = false\ndane = true\nrefresh = \"0\"\n\
             dane_resolver = [\"127.0.0.1:{}\"]\ndane_trust_anchor = \"{}\"\n",
            self.port,
            self.anchor.display()
        )
    }
}

fn stop(shell: &Mutex<Child>) {
    if let Ok(mut shell) = shell.lock() {
        drop(shell.stdin.take());
        let _ = shell.wait();
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        stop(&self._shell);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One server for every test here: signing the zones and RSA keys take seconds.
fn dns() -> &'static Dns {
    static DNS: OnceLock<Dns> = OnceLock::new();
    DNS.get_or_init(Dns::start)
}

fn outbound_config(sink: &SmtpSink, discovery: &str) -> String {
    format!(
        "[[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\n\
         [upstream]\naddress = \"{}\"\ntls = \"none\"\n\n{discovery}",
        sink.address()
    )
}

/// Sends `body` to `to` and returns the copy that reached `sink` for it.
fn send(port: u16, sink: &SmtpSink, to: &str, body: &str) -> String {
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
    assert!(ok, "{to}: {out}");
    wait_for(LONG, &format!("the copy for {to}"), || {
        sink.messages()
            .into_iter()
            .map(|d| d.text())
            .find(|t| t.contains(&format!("To: <{to}>")) && !before.contains(t))
    })
}

fn decrypts(gpg: &Gpg, message: &str, body: &str) -> bool {
    let out = gpg.run_with_input(&["--decrypt"], message.as_bytes());
    String::from_utf8_lossy(&out.stdout).contains(body)
}

/// A recipient nobody imported is encrypted to the key in its DNSSEC-signed OPENPGPKEY
/// record (too large for UDP: fetched again over TCP), and gpg decrypts the copy.
/// `keys discover` shows the record asked for, its proof and the key, and stores nothing;
/// the message stores it with the source `dane` and the trust `wkd`.
#[test]
fn a_signed_record_encrypts_mail_to_an_unknown_recipient() {
    let dns = dns();
    let s = Sealpost::new();
    s.generate("bob@example.org", &[]);
    let sink = SmtpSink::start(&[]);
    let gw = s.serve(&outbound_config(&sink, &dns.discovery()), &[]);
    let alice = format!("alice@{SIGNED}");
    let fpr = dns.people.alice.fingerprint(&alice);

    let shown = s.ok(&["keys", "discover", &alice]);
    assert!(shown.contains("\ndane:\n"), "{shown}");
    assert!(
        shown.contains(&format!(
            "asked OPENPGPKEY {}.{SIGNED}. via 127.0.0.1:{}: 1 record(s), DNSSEC secure",
            owner(&alice),
            dns.port
        )),
        "{shown}"
    );
    assert!(shown.contains(&fpr), "{shown}");
    assert!(shown.contains("would be stored"), "{shown}");
    assert!(
        !s.ok(&["keys", "list"]).contains(&alice),
        "keys discover without --store stores nothing"
    );

    let copy = send(gw.port(), &sink, &alice, "DANE-SIGNED-1");
    assert!(copy.contains("multipart/encrypted"), "{copy}");
    assert!(
        !copy.contains("DANE-SIGNED-1"),
        "the body in the clear: {copy}"
    );
    assert!(
        decrypts(&dns.people.alice, &copy, "DANE-SIGNED-1"),
        "gpg decrypts the copy"
    );
    let listed = s.list_json().to_string();
    assert!(listed.contains(&alice), "{listed}");
    assert!(listed.contains("\"dane\""), "{listed}");
    assert!(
        listed.contains("\"wkd\""),
        "the trust of DANE is wkd's: {listed}"
    );
}

/// A record in an unsigned zone, in a zone signed by a key that is not the anchor, and
/// one whose signature was spoiled: none is used, each says why in `keys discover`, the
/// mail goes out as policy says for keyless recipients (signed, readable) and nothing is
/// stored. Mallory's key published under Eve's name is found, but has no user ID for Eve:
/// nothing stored either.
#[test]
fn unproven_records_and_keys_for_other_addresses_store_nothing() {
    let dns = dns();
    let s = Sealpost::new();
    s.generate("bob@example.org", &[]);
    let sink = SmtpSink::start(&[]);
    let gw = s.serve(&outbound_config(&sink, &dns.discovery()), &[]);

    let cases = [
        (format!("uma@{UNSIGNED}"), &dns.people.uma),
        (format!("rob@{ROGUE}"), &dns.people.rob),
        (format!("carol@{SIGNED}"), &dns.people.carol),
    ];
    for (to, person) in &cases {
        let shown = s.ok(&["keys", "discover", to]);
        assert!(shown.contains("\ndane:\n"), "{to}: {shown}");
        assert!(
            shown.contains("DNSSEC validation failed") || shown.contains("not signed"),
            "{to}: {shown}"
        );
        assert!(!shown.contains(&person.fingerprint(to)), "{to}: {shown}");
    }
    let eve = format!("eve@{SIGNED}");
    let shown = s.ok(&["keys", "discover", &eve]);
    assert!(shown.contains("DNSSEC secure"), "{shown}");
    assert!(shown.contains("(dropped: another address)"), "{shown}");

    let mut all: Vec<&str> = cases.iter().map(|(to, _)| to.as_str()).collect();
    all.push(&eve);
    for (i, to) in all.iter().enumerate() {
        let body = format!("DANE-UNPROVEN-{i}");
        let copy = send(gw.port(), &sink, to, &body);
        assert!(!copy.contains("multipart/encrypted"), "{to}: {copy}");
        assert!(copy.contains(&body), "{to}: {copy}");
    }
    let listed = s.ok(&["keys", "list"]);
    for to in &all {
        assert!(!listed.contains(to), "nothing stored for {to}: {listed}");
    }
    assert!(
        !listed.contains(&dns.people.mallory.fingerprint(&format!("mallory@{SIGNED}"))),
        "{listed}"
    );
}

/// A resolver that only notes whether anything reached it, over UDP or TCP.
struct Silent {
    udp: UdpSocket,
    tcp: TcpListener,
}

impl Silent {
    fn start() -> Silent {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = tcp.local_addr().expect("address").port();
        let udp = UdpSocket::bind(("127.0.0.1", port)).expect("bind UDP on the TCP port");
        udp.set_nonblocking(true).expect("nonblocking");
        tcp.set_nonblocking(true).expect("nonblocking");
        Silent { udp, tcp }
    }

    fn port(&self) -> u16 {
        self.tcp.local_addr().expect("address").port()
    }

    fn asked(&self) -> bool {
        let mut buf = [0u8; 512];
        self.udp.recv_from(&mut buf).is_ok() || self.tcp.accept().is_ok()
    }
}

/// Without `dane` in `[discovery]` no DNS query is made, not even with a resolver named,
/// and the published key is not used.
#[test]
fn dane_is_off_by_default() {
    let dns = dns();
    let silent = Silent::start();
    let s = Sealpost::new();
    s.generate("bob@example.org", &[]);
    let sink = SmtpSink::start(&[]);
    let discovery = format!(
        "[discovery]\nwkd = false\nrefresh = \"0\"\n\
         dane_resolver = [\"127.0.0.1:{}\"]\ndane_trust_anchor = \"{}\"\n",
        silent.port(),
        dns.anchor.display()
    );
    let gw = s.serve(&outbound_config(&sink, &discovery), &[]);
    let alice = format!("alice@{SIGNED}");
    let copy = send(gw.port(), &sink, &alice, "DANE-OFF-1");
    assert!(!copy.contains("multipart/encrypted"), "{copy}");
    assert!(copy.contains("DANE-OFF-1"), "{copy}");
    assert!(!s.ok(&["keys", "list"]).contains(&alice));
    let refused = s.run(&["keys", "discover", &alice]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("no source is enabled"),
        "{refused:?}"
    );
    assert!(!silent.asked(), "a DNS query with DANE off");
}
