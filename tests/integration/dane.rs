//! Keys looked up at send time as DANE OPENPGPKEY records (RFC 7929), served by NSD on
//! loopback from zones the test signs with ldns-signzone, and validated by the gateway
//! from a zone's key given as `dane_trust_anchor`, or from the key of a private root zone
//! that delegates to them with DS records, as the real root does. Records in an unsigned
//! zone, in a zone signed by a key that is not the anchor, or under a tampered signature
//! are not used; a record holding a key for another address stores nothing; and with DANE
//! off (the default) no DNS query is made.

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::common::{Gpg, Sealpost};
use super::upstream::{free_port, wait_for, SmtpSink};

/// The zone the anchor vouches for, and the two that must not be believed.
const SIGNED: &str = "signed.example";
const UNSIGNED: &str = "unsigned.example";
const ROGUE: &str = "rogue.example";

/// A gpg user with a signing primary key and an encryption subkey. `big` gives RSA 3072
/// keys: a record of some 1.8 KB, more than a UDP answer carries (1232 bytes), so the
/// resolver must ask again over TCP.
fn gpg_user(email: &str, big: bool) -> Gpg {
    if big {
        super::wkd::gpg_user_with(email, "rsa3072", "rsa3072")
    } else {
        super::wkd::gpg_user(email)
    }
}

/// The owner name of `email`'s OPENPGPKEY record (RFC 7929 §3), relative to its zone.
fn owner(email: &str) -> String {
    use sha2::Digest;
    let local = email.split('@').next().expect("an address");
    let digest = sha2::Sha256::digest(local.as_bytes());
    let hex: String = digest[..28].iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}._openpgpkey")
}

/// Everyone whose key is published: the fingerprints, and Alice's secret key for the
/// tests that decrypt. No gpg home lives as long as the shared server: each would keep a
/// gpg-agent running after the tests.
struct People {
    alice_secret: Vec<u8>,
    alice: String,
    carol: String,
    mallory: String,
    uma: String,
    rob: String,
}

impl People {
    /// A gpg home holding Alice's secret key.
    fn alice_gpg(&self) -> Gpg {
        let g = Gpg::new();
        g.ok_with_input(&["--import"], &self.alice_secret);
        g
    }
}

/// NSD serving the three zones and a root zone above them on 127.0.0.1 (UDP and TCP) at a
/// port picked at run time, from a temporary directory; it stops when the shell that
/// started it reads end of input, that is when this is dropped or the test process ends.
struct Dns {
    port: u16,
    /// The key of `signed.example`, the only one it is signed with.
    anchor: PathBuf,
    /// The key-signing key of the root zone, which also has a zone-signing key.
    root_anchor: PathBuf,
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

/// A new key for `zone` (a key-signing key, flags 257, with `ksk`); its base name, for
/// `DIR/<base>.key` (the DNSKEY record) and `DIR/<base>.ds` (its DS record, for a KSK).
fn keygen(dir: &Path, zone: &str, ksk: bool) -> String {
    let mut args = vec!["-r", "/dev/urandom", "-a", "ECDSAP256SHA256"];
    if ksk {
        args.push("-k");
    }
    args.push(zone);
    ldns("ldns-keygen", dir, &args)
}

/// Signs `DIR/<file>.zone` into `DIR/<file>.signed` with a new key-signing key, and a
/// zone-signing key too with `zsk` (else the one key signs everything, as a combined
/// signing key does); returns the key-signing key's base name.
fn sign(dir: &Path, zone: &str, file: &str, zsk: bool) -> String {
    let ksk = keygen(dir, zone, true);
    let out = format!("{file}.signed");
    let input = format!("{file}.zone");
    let mut args = vec!["-f", &out, "-o", zone, &input, &ksk];
    let zsk = zsk.then(|| keygen(dir, zone, false));
    if let Some(z) = &zsk {
        args.push(z);
    }
    ldns("ldns-signzone", dir, &args);
    ksk
}

/// A DS record as ldns-keygen wrote it.
fn ds(dir: &Path, base: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{base}.ds"))).expect("the DS record")
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
        // Each user's certificate and fingerprint; the gpg homes go when this ends.
        let user = |email: &str, big: bool| {
            let g = gpg_user(email, big);
            (g.ok(&["--export", email]), g.fingerprint(email), g)
        };
        let (alice, alice_fpr, alice_gpg) = user(&format!("alice@{SIGNED}"), true);
        assert!(
            alice.len() > 1500,
            "Alice's record must not fit a UDP answer"
        );
        let (carol, carol_fpr, _) = user(&format!("carol@{SIGNED}"), false);
        let (mallory, mallory_fpr, _) = user(&format!("mallory@{SIGNED}"), false);
        let (uma, uma_fpr, _) = user(&format!("uma@{UNSIGNED}"), false);
        let (rob, rob_fpr, _) = user(&format!("rob@{ROGUE}"), false);
        let people = People {
            alice_secret: alice_gpg.ok(&["--export-secret-keys", &alice_fpr]),
            alice: alice_fpr,
            carol: carol_fpr,
            mallory: mallory_fpr,
            uma: uma_fpr,
            rob: rob_fpr,
        };
        drop(alice_gpg);

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
        let signed_key = sign(&dir, SIGNED, SIGNED, false);
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
        sign(&dir, ROGUE, ROGUE, false);
        // The root vouches for a key the rogue zone is not signed with.
        let decoy = keygen(&dir, ROGUE, true);

        // The root: each zone delegated to this server, with the DS of the signed zone's
        // key and of the decoy; none for the unsigned zone, which the root's NSEC record
        // then proves unsigned.
        let mut root = "$ORIGIN .\n$TTL 300\n\
             . IN SOA ns.root-servers.test. admin.root-servers.test. 1 3600 600 86400 300\n\
             . IN NS ns.root-servers.test.\nns.root-servers.test. IN A 127.0.0.1\n"
            .to_string();
        for zone in [SIGNED, UNSIGNED, ROGUE] {
            root += &format!("{zone}. IN NS ns.{zone}.\nns.{zone}. IN A 127.0.0.1\n");
        }
        root += &ds(&dir, &signed_key);
        root += &ds(&dir, &decoy);
        std::fs::write(dir.join("root.zone"), root).expect("zone");
        let root_key = sign(&dir, ".", "root", true);

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
            text += "zone:\n  name: \".\"\n  zonefile: root.signed\n";
            std::fs::write(&conf, text).expect("nsd.conf");
            let _ = std::fs::remove_file(dir.join("nsd.log"));
            // No privileges dropped and nothing outside the directory: `username: ""`,
            // `chroot: ""`, and every file NSD writes named above.
            let shell = Command::new("sh")
                .arg("-c")
                .arg(r#"nsd -d -c "$1" & pid=$!; read -r keep; kill -TERM "$pid"; wait "$pid"; [ "$keep" = keep ] || rm -rf "$2""#)
                .arg("sh")
                .arg(&conf)
                .arg(&dir)
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
                    anchor: dir.join(format!("{signed_key}.key")),
                    root_anchor: dir.join(format!("{root_key}.key")),
                    people,
                    _shell: shell,
                };
            }
            stop(&shell, true);
        }
        panic!(
            "NSD did not start (package nsd): {}",
            std::fs::read_to_string(dir.join("nsd.log")).unwrap_or_default()
        );
    }

    /// `[discovery]` with DANE on, asking this server, trusting the signed zone's key.
    fn discovery(&self) -> String {
        self.discovery_from(&self.anchor)
    }

    /// `[discovery]` with DANE on, asking this server, trusting `anchor`.
    fn discovery_from(&self, anchor: &Path) -> String {
        format!(
            "[discovery]\nwkd = false\ndane = true\nrefresh = \"0\"\n\
             dane_resolver = [\"127.0.0.1:{}\"]\ndane_trust_anchor = \"{}\"\n",
            self.port,
            anchor.display()
        )
    }
}

/// Ends NSD; its directory goes too unless `keep` (for another try at another port).
fn stop(shell: &Mutex<Child>, keep: bool) {
    if let Ok(mut shell) = shell.lock() {
        if let Some(mut input) = shell.stdin.take() {
            if keep {
                use std::io::Write;
                let _ = input.write_all(b"keep\n");
            }
        }
        let _ = shell.wait();
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        // The shell removes the directory once NSD has ended.
        stop(&self._shell, false);
    }
}

/// One server for every test here: signing the zones and RSA keys take seconds.
fn dns() -> &'static Dns {
    static DNS: OnceLock<Dns> = OnceLock::new();
    DNS.get_or_init(Dns::start)
}

/// Sends `body` to `to`, which must be accepted; the copy that reached `sink` for it.
fn send(port: u16, sink: &SmtpSink, to: &str, body: &str) -> String {
    let (ok, out, copy) = super::wkd::send(port, sink, to, body);
    assert!(ok, "{to}: {out}");
    copy.unwrap_or_default()
}

/// A recipient nobody imported is encrypted to the key in its DNSSEC-signed OPENPGPKEY
/// record (too large for UDP: fetched again over TCP), and gpg decrypts the copy.
/// `keys discover` shows the record asked for, its proof and the key, and stores nothing
/// (and, for an address without a record, that there is none); the message stores it
/// with the source `dane` and the trust `wkd`.
#[test]
fn a_signed_record_encrypts_mail_to_an_unknown_recipient() {
    let dns = dns();
    let s = Sealpost::new();
    s.generate("bob@example.org", &[]);
    let sink = SmtpSink::start(&[]);
    let gw = s.serve(&super::outbound::config(&sink, &dns.discovery()), &[]);
    let alice = format!("alice@{SIGNED}");
    let fpr = &dns.people.alice;

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
    assert!(shown.contains(fpr.as_str()), "{shown}");
    assert!(shown.contains("would be stored"), "{shown}");
    assert!(
        !s.ok(&["keys", "list"]).contains(&alice),
        "keys discover without --store stores nothing"
    );
    let shown = s.ok(&["keys", "discover", &format!("nobody@{SIGNED}")]);
    assert!(
        shown.contains("nothing: no OPENPGPKEY record for the address"),
        "{shown}"
    );

    let copy = send(gw.port(), &sink, &alice, "DANE-SIGNED-1");
    assert!(copy.contains("multipart/encrypted"), "{copy}");
    assert!(
        !copy.contains("DANE-SIGNED-1"),
        "the body in the clear: {copy}"
    );
    assert!(
        super::wkd::decrypts(&dns.people.alice_gpg(), &copy, "DANE-SIGNED-1"),
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
    let gw = s.serve(&super::outbound::config(&sink, &dns.discovery()), &[]);

    let cases = [
        (format!("uma@{UNSIGNED}"), &dns.people.uma),
        (format!("rob@{ROGUE}"), &dns.people.rob),
        (format!("carol@{SIGNED}"), &dns.people.carol),
    ];
    for (to, fpr) in &cases {
        let shown = s.ok(&["keys", "discover", to]);
        assert!(shown.contains("\ndane:\n"), "{to}: {shown}");
        assert!(
            shown.contains("DNSSEC validation failed") || shown.contains("not signed"),
            "{to}: {shown}"
        );
        assert!(!shown.contains(fpr.as_str()), "{to}: {shown}");
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
    assert!(!listed.contains(dns.people.mallory.as_str()), "{listed}");
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

    /// How many queries (datagrams and connections) arrived since the last call.
    fn queries(&self) -> usize {
        let mut buf = [0u8; 4096];
        let mut n = 0;
        while self.udp.recv_from(&mut buf).is_ok() {
            n += 1;
        }
        // Accepted connections are dropped at once: closed without an answer.
        while self.tcp.accept().is_ok() {
            n += 1;
        }
        n
    }

    fn asked(&self) -> bool {
        self.queries() > 0
    }
}

/// A resolver that never answers costs a message no more than the budget (it goes out
/// signed, readable), the lookup that outlasts it ends in a recorded miss, and the
/// address is not asked again before `retry_after`. With no `dane_trust_anchor` the
/// configuration starts from the root keys built in.
#[test]
fn a_silent_resolver_costs_the_budget_once() {
    let silent = Silent::start();
    let s = Sealpost::new();
    s.generate("bob@example.org", &[]);
    let sink = SmtpSink::start(&[]);
    let discovery = format!(
        "[discovery]\nwkd = false\ndane = true\nbudget = \"2s\"\nrefresh = \"0\"\n\
         dane_resolver = [\"127.0.0.1:{}\"]\n",
        silent.port()
    );
    let gw = s.serve(&super::outbound::config(&sink, &discovery), &[]);
    let to = "zed@quiet.example";
    let started = std::time::Instant::now();
    let copy = send(gw.port(), &sink, to, "DANE-SILENT-1");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(12),
        "the session took {took:?} with a 2 s budget"
    );
    assert!(copy.contains("DANE-SILENT-1"), "{copy}");
    assert!(silent.asked(), "the resolver was asked");
    let explained = wait_for(Duration::from_secs(60), "the miss recorded", || {
        let e = s.ok(&["policy", "explain", "--from", "bob@example.org", "--to", to]);
        e.contains("found: nothing").then_some(e)
    });
    assert!(explained.contains("dane: "), "{explained}");
    silent.queries();
    let copy = send(gw.port(), &sink, to, "DANE-SILENT-2");
    assert!(copy.contains("DANE-SILENT-2"), "{copy}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(silent.queries(), 0, "asked again despite the recorded miss");
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
    let gw = s.serve(&super::outbound::config(&sink, &discovery), &[]);
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

/// From the key-signing key of a private root (which signs its keys with a separate
/// zone-signing key), the chain runs through the DS record the root holds for the signed
/// zone: its record encrypts mail. The root proves with NSEC that the unsigned zone has no
/// DS: `keys discover` says the zone is not signed, and its key is not used. The rogue
/// zone's DS names a key it is not signed with: validation fails.
#[test]
fn a_private_root_vouches_for_the_signed_zone_and_proves_the_unsigned_one() {
    let dns = dns();
    let s = Sealpost::new();
    s.generate("bob@example.org", &[]);
    let sink = SmtpSink::start(&[]);
    let gw = s.serve(
        &super::outbound::config(&sink, &dns.discovery_from(&dns.root_anchor)),
        &[],
    );
    let alice = format!("alice@{SIGNED}");
    let shown = s.ok(&["keys", "discover", &alice]);
    assert!(shown.contains("DNSSEC secure"), "{shown}");
    let copy = send(gw.port(), &sink, &alice, "DANE-ROOT-1");
    assert!(
        super::wkd::decrypts(&dns.people.alice_gpg(), &copy, "DANE-ROOT-1"),
        "gpg decrypts the copy: {copy}"
    );

    let uma = format!("uma@{UNSIGNED}");
    let shown = s.ok(&["keys", "discover", &uma]);
    assert!(shown.contains("1 record(s), DNSSEC insecure"), "{shown}");
    assert!(shown.contains("nothing: the zone is not signed"), "{shown}");
    let shown = s.ok(&["keys", "discover", &format!("rob@{ROGUE}")]);
    assert!(
        shown.contains("nothing: DNSSEC validation failed"),
        "{shown}"
    );

    let copy = send(gw.port(), &sink, &uma, "DANE-ROOT-2");
    assert!(!copy.contains("multipart/encrypted"), "{copy}");
    assert!(copy.contains("DANE-ROOT-2"), "{copy}");
    let listed = s.ok(&["keys", "list"]);
    assert!(listed.contains(&alice), "{listed}");
    assert!(!listed.contains(&uma), "{listed}");
}
