//! Keys found, reviewed and kept, through the real binary: trust in `policy explain`, the
//! review queue, and the key lifecycle (generate, extend, backup and restore, protected
//! imports), with gpg as the peer.

use std::time::{Duration, SystemTime};

use sealpost_keyring::openpgp::parse::Parse;
use sealpost_keyring::openpgp::Cert;
use sealpost_keyring::{Keyring, Offer, OpenOptions, Source};

use super::common::{swaks_to, Gpg, Sealpost};
use super::outbound::{armored, config};
use super::upstream::SmtpSink;

const LONG: Duration = Duration::from_secs(30);

/// What a discovery source would hand the keyring: offered through the library while no
/// `serve` holds the keyring.
fn offer(s: &Sealpost, email: &str, cert: &[u8], source: Source) -> Offer {
    let k = Keyring::open(&s.data_dir(), OpenOptions::default()).expect("open the keyring");
    let cert = Cert::from_bytes(cert).expect("a certificate");
    k.offer_discovered(email, cert, source, SystemTime::now())
        .expect("offer")
}

/// Runs `sealpost ARGS` with `stdin`, failing the test on a non-zero exit.
trait OkWith {
    fn ok_with(&self, args: &[&str], stdin: &[u8]) -> String;
}

impl OkWith for Sealpost {
    fn ok_with(&self, args: &[&str], stdin: &[u8]) -> String {
        let out = self.run_with_input(args, stdin);
        super::common::assert_success(&out, &format!("sealpost {}", args.join(" ")));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Sends one message through `sealpost serve` and returns what the next hop received.
fn send_one(s: &Sealpost, policy: &str, to: &str) -> String {
    let sink = SmtpSink::start(&[]);
    let gw = s.serve(&config(&sink, policy), &[]);
    let (ok, out) = swaks_to(
        gw.port(),
        "alice@example.org",
        to,
        &[
            "--header",
            "Subject: hello",
            "--body",
            "the plans are ready",
        ],
    );
    assert!(ok, "{out}");
    let dump = sink.wait_messages(1, LONG)[0].text();
    drop(gw);
    dump
}

fn decrypts(gpg: &Gpg, dump: &str) -> bool {
    let dec = gpg.run_with_input(&["--decrypt"], armored(dump).as_bytes());
    dec.status.success() && String::from_utf8_lossy(&dec.stdout).contains("the plans are ready")
}

#[test]
fn a_changed_key_waits_for_review_and_accept_switches() {
    let s = Sealpost::new();
    let old = Gpg::new();
    let old_fpr = old.generate("<bob@example.net>", "default", "default", "never");
    s.ok_with(
        &["keys", "import", "-"],
        &old.ok(&["--armor", "--export", "bob@example.net"]),
    );
    let new = Gpg::new();
    let new_fpr = new.generate("Bob <bob@example.net>", "default", "default", "never");
    let offered = offer(
        &s,
        "bob@example.net",
        &new.ok(&["--export", "bob@example.net"]),
        Source::Wkd,
    );
    assert!(matches!(offered, Offer::Queued { .. }), "{offered:?}");

    let shown = s.ok(&["keys", "show", &old_fpr]);
    assert!(
        shown.contains("trust:   pinned (imported by an admin"),
        "{shown}"
    );
    let listed = s.ok(&["keys", "review", "list"]);
    assert!(
        listed.contains(&format!("bob@example.net  {new_fpr}")),
        "{listed}"
    );
    assert!(listed.contains("found by wkd"), "{listed}");
    assert!(listed.contains(&format!("current: {old_fpr}")), "{listed}");
    let queued = s.ok(&["keys", "review", "export", &new_fpr]);
    let gpg = Gpg::new();
    let shown = String::from_utf8_lossy(
        &gpg.ok_with_input(&["--with-colons", "--show-keys"], queued.as_bytes()),
    )
    .into_owned();
    assert!(
        shown.contains(&new_fpr) && shown.contains("Bob <bob@example.net>"),
        "{shown}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&s.ok(&["keys", "review", "list", "--json"])).unwrap();
    assert_eq!(json[0]["source"], "wkd");

    let explain = |s: &Sealpost| {
        s.ok(&[
            "policy",
            "explain",
            "--from",
            "alice@example.org",
            "--to",
            "bob@example.net",
        ])
    };
    let out = explain(&s);
    assert!(
        out.contains(&format!("key:   {old_fpr} (keyring)")),
        "{out}"
    );
    assert!(out.contains("trust pinned (imported by an admin"), "{out}");
    assert!(
        out.contains(&format!("queue: {new_fpr} (found by wkd) waits for review")),
        "{out}"
    );
    // Until an admin decides, mail goes to the key the admin pinned.
    let dump = send_one(&s, "", "bob@example.net");
    assert!(decrypts(&old, &dump), "{dump}");
    assert!(!decrypts(&new, &dump));

    let out = s.ok(&["keys", "review", "accept", &new_fpr]);
    assert!(
        out.contains(&format!("accepted {new_fpr} for bob@example.net")),
        "{out}"
    );
    assert!(out.contains(&format!("removed  {old_fpr}")), "{out}");
    let out = explain(&s);
    assert!(
        out.contains(&format!("key:   {new_fpr} (keyring)")),
        "{out}"
    );
    assert!(
        out.contains("trust pinned (found by wkd, accepted by an admin"),
        "{out}"
    );
    assert!(s
        .ok(&["keys", "review", "list"])
        .contains("no keys are waiting"));
    let dump = send_one(&s, "", "bob@example.net");
    assert!(decrypts(&new, &dump), "{dump}");

    // A rejected key stays out, even when offered again.
    let third = Gpg::new();
    let third_fpr = third.generate("<bob@example.net>", "default", "default", "never");
    let cert = third.ok(&["--export", "bob@example.net"]);
    offer(&s, "bob@example.net", &cert, Source::Autocrypt);
    let out = s.ok(&["keys", "review", "reject", &third_fpr]);
    assert!(out.contains("rejected"), "{out}");
    let again = offer(&s, "bob@example.net", &cert, Source::Autocrypt);
    assert!(matches!(again, Offer::Ignored(_)), "{again:?}");
    let err = s.fails(&["keys", "review", "accept", &third_fpr], 1);
    assert!(err.contains("not waiting for review"), "{err}");
}

#[test]
fn policy_explain_shows_trust_and_the_minimum_of_require() {
    let s = Sealpost::new();
    let carol = Gpg::new();
    let fpr = carol.generate("<carol@example.net>", "default", "default", "never");
    let offered = offer(
        &s,
        "carol@example.net",
        &carol.ok(&["--export", "carol@example.net"]),
        Source::Autocrypt,
    );
    assert!(
        matches!(offered, Offer::Stored { new: true, .. }),
        "{offered:?}"
    );
    let explain = |policy: &str| {
        let file = s.dir.path().join("explain.toml");
        std::fs::write(&file, policy).unwrap();
        s.ok(&[
            "--config",
            file.to_str().unwrap(),
            "policy",
            "explain",
            "--from",
            "alice@example.org",
            "--to",
            "carol@example.net",
        ])
    };
    let out = explain("");
    assert!(out.contains(&format!("key:   {fpr} (keyring)")), "{out}");
    assert!(out.contains("trust autocrypt (found by autocrypt"), "{out}");
    assert!(
        out.contains("keys from autocrypt up (built-in default for mode opportunistic)"),
        "{out}"
    );
    assert!(out.contains("copy:  encrypted"), "{out}");

    let out = explain("[policy]\nmode = \"require\"\n");
    assert!(
        out.contains("keys from wkd up (built-in default for mode require)"),
        "{out}"
    );
    assert!(out.contains("below the policy's minimum, wkd"), "{out}");
    assert!(out.contains("refused at RCPT: 550 5.7.1"), "{out}");

    let out = explain(
        "[policy]\nmode = \"require\"\n\n[policy.address.\"carol@example.net\"]\nmin_trust = \"autocrypt\"\n",
    );
    assert!(
        out.contains("keys from autocrypt up ([policy.address.\"carol@example.net\"])"),
        "{out}"
    );
    assert!(out.contains("copy:  encrypted"), "{out}");

    // The gateway encrypts to the discovered key where the policy allows it.
    let dump = send_one(&s, "", "carol@example.net");
    assert!(decrypts(&carol, &dump), "{dump}");
}

/// `keys list --json` entry for `fpr`.
fn listed(s: &Sealpost, fpr: &str) -> serde_json::Value {
    s.list_json()
        .as_array()
        .expect("array")
        .iter()
        .find(|k| k["fingerprint"] == fpr)
        .cloned()
        .unwrap_or_else(|| panic!("{fpr} not listed"))
}

/// Days from now until an RFC 3339 or `keys list` date.
fn days_until(date: &str) -> i64 {
    let t = chrono::NaiveDateTime::parse_from_str(date, "%Y-%m-%d %H:%M:%S UTC")
        .expect("a date")
        .and_utc();
    (t - chrono::Utc::now()).num_days()
}

#[test]
fn generate_expires_in_two_years_refuses_a_second_key_and_keeps_a_revocation() {
    let s = Sealpost::new();
    let out = s.ok(&["keys", "generate", "alice@example.org"]);
    let fpr = out.split_whitespace().nth(1).unwrap().to_string();
    assert!(out.contains("revocation certificate kept"), "{out}");
    let expires = listed(&s, &fpr)["validity"]["expires"]
        .as_str()
        .expect("an expiry")
        .to_string();
    let days = days_until(&expires);
    assert!((729..=730).contains(&days), "{expires}: {days} days");

    let err = s.fails(&["keys", "generate", "Alice@Example.org"], 1);
    assert!(err.contains("has a secret key already"), "{err}");
    assert!(err.contains(&fpr) && err.contains("--force"), "{err}");
    assert_eq!(s.list_json().as_array().unwrap().len(), 1);
    let second = s.generate("alice@example.org", &["--force", "--expires", "never"]);
    assert!(listed(&s, &second)["validity"]["expires"].is_null());

    // gpg takes the revocation certificate and sees the key revoked.
    let rev = s.ok(&["keys", "export", "--revocation", &fpr]);
    assert!(
        rev.contains("-----BEGIN PGP PUBLIC KEY BLOCK-----"),
        "{rev}"
    );
    let gpg = Gpg::new();
    let mut both = s.ok(&["keys", "export", &fpr]);
    both.push_str(&rev);
    gpg.ok_with_input(&["--import"], both.as_bytes());
    let colons =
        String::from_utf8_lossy(&gpg.ok(&["--with-colons", "--list-keys", &fpr])).into_owned();
    assert!(colons.lines().any(|l| l.starts_with("pub:r:")), "{colons}");
    // And so does sealpost.
    s.ok_with(&["keys", "import", "-"], rev.as_bytes());
    assert_eq!(listed(&s, &fpr)["validity"]["status"], "revoked");
    let err = s.fails(&["keys", "export", "--revocation", "--secret", &fpr], 2);
    assert!(err.contains("cannot be used with"), "{err}");
}

#[test]
fn extend_renews_a_key_gpg_then_sees() {
    let s = Sealpost::new();
    let fpr = s.generate("dora@example.org", &["--expires", "10d"]);
    let days = days_until(listed(&s, &fpr)["validity"]["expires"].as_str().unwrap());
    assert!((9..=10).contains(&days), "{days}");
    let out = s.ok(&["keys", "extend", "dora@example.org", "--expires", "2y"]);
    assert!(out.contains(&format!("extended {fpr}")), "{out}");
    let days = days_until(listed(&s, &fpr)["validity"]["expires"].as_str().unwrap());
    assert!((729..=730).contains(&days), "{days}");

    let gpg = Gpg::new();
    gpg.ok_with_input(&["--import"], s.ok(&["keys", "export", &fpr]).as_bytes());
    let colons =
        String::from_utf8_lossy(&gpg.ok(&["--with-colons", "--list-keys", &fpr])).into_owned();
    let expiry: i64 = colons
        .lines()
        .find(|l| l.starts_with("pub:"))
        .and_then(|l| l.split(':').nth(6))
        .and_then(|e| e.parse().ok())
        .expect("gpg shows an expiry");
    let days = (expiry - chrono::Utc::now().timestamp()) / 86400;
    assert!((728..=730).contains(&days), "{colons}");

    let err = s.fails(
        &["keys", "extend", "dora@example.org", "--expires", "soon"],
        2,
    );
    assert!(err.contains("not an expiry"), "{err}");
    let bob = Gpg::new();
    bob.generate("<bob@example.net>", "default", "default", "1y");
    s.ok_with(
        &["keys", "import", "-"],
        &bob.ok(&["--armor", "--export", "bob@example.net"]),
    );
    let err = s.fails(&["keys", "extend", "bob@example.net", "--expires", "2y"], 1);
    assert!(err.contains("no secret key"), "{err}");
}

#[test]
fn a_passphrase_protected_gpg_key_is_imported_and_sealed_again() {
    let s = Sealpost::with_passphrase("keyring passphrase");
    let gpg = Gpg::new();
    let (fpr, protected) = protected_key(&gpg, "Erin <erin@example.org>", "gpg secret 42");
    let key = super::common::write(s.dir.path(), "erin.asc", &protected);
    let key = key.to_str().unwrap();

    let err = s.fails(&["keys", "import", key], 1);
    assert!(err.contains("--passphrase-file"), "{err}");
    assert!(s.list_json().as_array().unwrap().is_empty());
    let wrong = super::common::write(s.dir.path(), "wrong", b"not it\n");
    s.fails(
        &[
            "keys",
            "import",
            key,
            "--passphrase-file",
            wrong.to_str().unwrap(),
        ],
        1,
    );
    let right = super::common::write(s.dir.path(), "right", b"gpg secret 42\n");
    let out = s.ok(&[
        "keys",
        "import",
        key,
        "--passphrase-file",
        right.to_str().unwrap(),
    ]);
    assert!(out.contains("[secret key]"), "{out}");
    assert_eq!(listed(&s, &fpr)["has_secret"], true);
    // Unlocked now: it exports without the gpg passphrase, and gpg takes it as it is.
    let clear = s.ok(&["keys", "export", "--secret", "--unprotected", &fpr]);
    let other = Gpg::new();
    other.ok_with_input(&["--import"], clear.as_bytes());
    let listing =
        String::from_utf8_lossy(&other.ok(&["--list-secret-keys", "--with-colons"])).into_owned();
    assert!(listing.contains(&fpr), "{listing}");
}

#[test]
fn a_gpg_revocation_file_with_its_colon_is_refused_and_says_what_it_is() {
    let s = Sealpost::new();
    let gpg = Gpg::new();
    let fpr = gpg.generate("<fred@example.org>", "default", "default", "never");
    s.ok_with(
        &["keys", "import", "-"],
        &gpg.ok(&["--armor", "--export", &fpr]),
    );
    let rev = gpg
        .home
        .path()
        .join("openpgp-revocs.d")
        .join(format!("{fpr}.rev"));
    let text = std::fs::read_to_string(&rev).expect("gpg keeps a revocation certificate");
    assert!(
        text.contains("\n:-----BEGIN PGP PUBLIC KEY BLOCK-----"),
        "{text}"
    );
    let err = s.fails(&["keys", "import", rev.to_str().unwrap()], 1);
    assert!(err.contains("revocation certificate"), "{err}");
    assert!(err.contains("remove the ':'"), "{err}");
    assert_eq!(listed(&s, &fpr)["validity"]["status"], "usable");
    // As the message says: without the colon it revokes.
    let fixed = super::common::write(
        s.dir.path(),
        "fixed.rev",
        text.replace(":-----BEGIN", "-----BEGIN").as_bytes(),
    );
    s.ok(&["keys", "import", fixed.to_str().unwrap()]);
    assert_eq!(listed(&s, &fpr)["validity"]["status"], "revoked");
}

#[test]
fn a_restored_keyring_decrypts_what_the_original_did() {
    let first = Sealpost::with_passphrase("first machine");
    let bob = first.generate("bob@example.org", &[]);
    // A discovered key and a queued one travel too.
    let carol = Gpg::new();
    carol.generate("<carol@example.net>", "default", "default", "never");
    offer_with(
        &first,
        "first machine",
        "carol@example.net",
        &carol.ok(&["--export", "carol@example.net"]),
        Source::Wkd,
    );
    let pass = super::common::write(first.dir.path(), "backup-pass", b"backup passphrase\n");
    let file = first.dir.path().join("keys.pgp");
    let out = first.ok(&[
        "keys",
        "backup",
        file.to_str().unwrap(),
        "--passphrase-file",
        pass.to_str().unwrap(),
    ]);
    assert!(out.contains("2 certificates, 1 secret keys"), "{out}");
    let err = first.fails(
        &[
            "keys",
            "backup",
            file.to_str().unwrap(),
            "--passphrase-file",
            pass.to_str().unwrap(),
        ],
        1,
    );
    assert!(err.contains("never replaced"), "{err}");
    let raw = std::fs::read(&file).unwrap();
    assert!(raw.starts_with(b"-----BEGIN PGP MESSAGE-----"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // gpg reads the backup with the passphrase: it is ordinary OpenPGP.
    let gpg = Gpg::new();
    let opened = gpg
        .command()
        .args(["--passphrase", "backup passphrase", "--decrypt"])
        .arg(&file)
        .output()
        .expect("gpg");
    assert!(
        opened.status.success(),
        "{}",
        String::from_utf8_lossy(&opened.stderr)
    );
    assert!(opened.stdout.starts_with(b"sealpost keyring backup 1\n"));

    let second = Sealpost::with_passphrase("second machine");
    let wrong = super::common::write(second.dir.path(), "wrong", b"guess\n");
    let err = second.fails(
        &[
            "keys",
            "restore",
            file.to_str().unwrap(),
            "--passphrase-file",
            wrong.to_str().unwrap(),
        ],
        1,
    );
    assert!(err.contains("nothing restored"), "{err}");
    let out = second.ok(&[
        "keys",
        "restore",
        file.to_str().unwrap(),
        "--passphrase-file",
        pass.to_str().unwrap(),
    ]);
    assert!(out.contains("2 certificates, 1 secret keys"), "{out}");
    assert_eq!(second.list_json(), first.list_json());
    let explain = second.ok(&[
        "policy",
        "explain",
        "--from",
        "bob@example.org",
        "--to",
        "carol@example.net",
    ]);
    assert!(explain.contains("trust wkd (found by wkd"), "{explain}");

    // Mail a gpg user encrypted to Bob's key before the move decrypts on the new machine.
    let alice = Gpg::new();
    alice.ok_with_input(
        &["--import"],
        first.ok(&["keys", "export", &bob]).as_bytes(),
    );
    let armored = String::from_utf8(alice.ok_with_input(
        &["--armor", "--encrypt", "-r", "bob@example.org"],
        b"Content-Type: text/plain\r\n\r\nthe restored key opens this\r\n",
    ))
    .unwrap();
    let message = format!(
        "From: alice@example.net\r\nTo: bob@example.org\r\nSubject: moved\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n\
         --b\r\nContent-Type: application/octet-stream\r\n\r\n{}\r\n--b--\r\n",
        armored.replace('\n', "\r\n").trim_end()
    );
    let eml = super::common::write(second.dir.path(), "moved.eml", message.as_bytes());
    let sink = SmtpSink::start(&[]);
    let gw = second.serve(
        &format!(
            "[[listener]]\nmode = \"inbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\n\
             [inbound]\ndeliver = \"{}\"\nrecipients = \"any\"\n",
            sink.address()
        ),
        &[],
    );
    let (ok, out) = swaks_to(
        gw.port(),
        "alice@example.net",
        "bob@example.org",
        &["--data", eml.to_str().unwrap()],
    );
    assert!(ok, "{out}");
    let copy = sink.wait_messages(1, LONG)[0].text();
    assert!(copy.contains("the restored key opens this"), "{copy}");
}

/// [`offer`] for a keyring sealed with `passphrase`.
fn offer_with(s: &Sealpost, passphrase: &str, email: &str, cert: &[u8], source: Source) -> Offer {
    let k = Keyring::open(
        &s.data_dir(),
        OpenOptions {
            passphrase: Some(passphrase.into()),
            ..OpenOptions::default()
        },
    )
    .expect("open the keyring");
    let cert = Cert::from_bytes(cert).expect("a certificate");
    k.offer_discovered(email, cert, source, SystemTime::now())
        .expect("offer")
}

/// The file name `gpg-wks-client` gives an address in a WKD.
fn wkd_hash(address: &str) -> String {
    let out = std::process::Command::new("/usr/lib/gnupg/gpg-wks-client")
        .args(["--print-wkd-hash", address])
        .output()
        .expect("gpg-wks-client (package gpg-wks-client)");
    super::common::assert_success(&out, "gpg-wks-client --print-wkd-hash");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a hash")
        .to_string()
}

#[test]
fn wkd_export_writes_both_layouts_where_gpg_looks() {
    let s = Sealpost::new();
    let alice = s.generate("Alice@example.org", &[]);
    let bob = s.generate("bob@example.org", &[]);
    let carol = Gpg::new();
    carol.ok(&[
        "--quick-gen-key",
        "Carol <carol@example.org>",
        "default",
        "default",
        "never",
    ]);
    let carol_fpr = carol.fingerprint("carol@example.org");
    carol.ok(&["--quick-add-uid", &carol_fpr, "carol@private.example"]);
    s.ok_with(
        &["keys", "import", "-"],
        &carol.ok(&["--armor", "--export-secret-keys", &carol_fpr]),
    );
    // Someone else's key is not ours to publish.
    let dave = Gpg::new();
    dave.generate("<dave@example.org>", "default", "default", "never");
    s.ok_with(
        &["keys", "import", "-"],
        &dave.ok(&["--armor", "--export", "dave@example.org"]),
    );

    let web = tempfile::tempdir().unwrap();
    let acme = web.path().join(".well-known").join("acme-challenge");
    std::fs::create_dir_all(&acme).unwrap();
    std::fs::write(acme.join("token"), b"keep me").unwrap();
    let out = s.ok(&["keys", "wkd-export", web.path().to_str().unwrap()]);
    assert!(
        out.contains(&format!("published alice@example.org  {alice}")),
        "{out}"
    );
    assert!(
        out.contains(&format!("published carol@private.example  {carol_fpr}")),
        "{out}"
    );
    assert!(!out.contains("dave@"), "{out}");

    let root = web.path().join(".well-known").join("openpgpkey");
    assert!(
        root.join("policy").is_file(),
        "the direct layout's policy file"
    );
    assert!(root.join("example.org").join("policy").is_file());
    assert!(root.join("private.example").join("policy").is_file());
    let shown = |file: &std::path::Path| {
        let gpg = Gpg::new();
        String::from_utf8_lossy(&gpg.ok(&["--with-colons", "--show-keys", file.to_str().unwrap()]))
            .into_owned()
    };
    for (address, domain, fpr) in [
        ("alice@example.org", "example.org", &alice),
        ("bob@example.org", "example.org", &bob),
        ("carol@example.org", "example.org", &carol_fpr),
        ("carol@private.example", "private.example", &carol_fpr),
    ] {
        let hash = wkd_hash(address);
        let advanced = root.join(domain).join("hu").join(&hash);
        let direct = root.join("hu").join(&hash);
        for file in [&advanced, &direct] {
            let keys = shown(file);
            assert!(keys.contains(fpr.as_str()), "{}: {keys}", file.display());
            assert!(!keys.contains("sec:"), "public keys only: {keys}");
        }
        // Each domain's copy names only that domain's addresses.
        let other = if domain == "example.org" {
            "private.example"
        } else {
            "@example.org"
        };
        assert!(!shown(&advanced).contains(other), "{}", shown(&advanced));
    }
    assert!(!root
        .join("example.org")
        .join("hu")
        .join(wkd_hash("dave@example.org"))
        .exists());

    // A second export replaces the first: a removed key is gone, other files stay.
    s.ok(&["keys", "remove", &bob]);
    s.ok(&[
        "keys",
        "wkd-export",
        web.path().to_str().unwrap(),
        "--domain",
        "example.org",
    ]);
    assert!(!root
        .join("example.org")
        .join("hu")
        .join(wkd_hash("bob@example.org"))
        .exists());
    assert!(root
        .join("example.org")
        .join("hu")
        .join(wkd_hash("alice@example.org"))
        .exists());
    assert!(!root.join("private.example").exists());
    assert_eq!(std::fs::read(acme.join("token")).unwrap(), b"keep me");
}

#[test]
fn import_asks_for_a_protected_keys_passphrase_on_a_terminal() {
    use std::io::{Read, Write};
    let s = Sealpost::new();
    let gpg = Gpg::new();
    let (fpr, protected) = protected_key(&gpg, "<gus@example.org>", "typed at the prompt");
    let key = super::common::write(s.dir.path(), "gus.asc", &protected);
    // script(1) gives the command a terminal of its own.
    let command = format!(
        "{} --data-dir {} keys import {}",
        super::common::bin(),
        s.data_dir().display(),
        key.display()
    );
    let mut child = std::process::Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .env_remove("SEALPOST_PASSPHRASE_FILE")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script (package bsdutils)");
    let mut stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut stdin = child.stdin.take().expect("stdin");
    let deadline = std::time::Instant::now() + LONG;
    while !String::from_utf8_lossy(&seen).contains(&format!("secret key {fpr}: ")) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => seen.extend(chunk),
            Err(_) => panic!("no prompt: {}", String::from_utf8_lossy(&seen)),
        }
    }
    stdin.write_all(b"typed at the prompt\n").unwrap();
    let status = child.wait().expect("wait");
    while let Ok(chunk) = rx.recv_timeout(Duration::from_secs(2)) {
        seen.extend(chunk);
    }
    let text = String::from_utf8_lossy(&seen);
    assert!(status.success(), "{text}");
    assert!(text.contains("[secret key]"), "{text}");
    assert!(!text.contains("typed at the prompt"), "echoed: {text}");
    assert_eq!(listed(&s, &fpr)["has_secret"], true);
}

#[test]
fn a_backup_is_taken_through_the_admin_socket_while_serve_runs() {
    let s = Sealpost::new();
    let fpr = s.generate("hal@example.org", &[]);
    let sink = SmtpSink::start(&[]);
    let _gw = s.serve(&config(&sink, ""), &[]);
    super::upstream::wait_for(LONG, "the admin socket", || {
        s.data_dir().join("admin.sock").exists().then_some(())
    });
    let pass = super::common::write(s.dir.path(), "pass", b"through the socket\n");
    let file = s.dir.path().join("keys.pgp");
    let err = s.fails(
        &[
            "keys",
            "backup",
            file.to_str().unwrap(),
            "--passphrase-file",
            pass.to_str().unwrap(),
        ],
        1,
    );
    assert!(err.contains("keys backup - "), "{err}");
    assert!(!file.exists());
    let backup = s.ok(&[
        "keys",
        "backup",
        "-",
        "--passphrase-file",
        pass.to_str().unwrap(),
    ]);
    assert!(
        backup.starts_with("-----BEGIN PGP MESSAGE-----"),
        "{backup}"
    );

    let other = Sealpost::new();
    let pass2 = super::common::write(other.dir.path(), "pass", b"through the socket\n");
    let out = other.ok_with(
        &[
            "keys",
            "restore",
            "-",
            "--passphrase-file",
            pass2.to_str().unwrap(),
        ],
        backup.as_bytes(),
    );
    assert!(out.contains("1 secret keys"), "{out}");
    assert_eq!(listed(&other, &fpr)["has_secret"], true);
}

#[test]
fn trust_review_and_restore_work_on_a_postgresql_keyring() {
    let pg = super::postgres::Postgres::start();
    let url = pg.database("lifecycle");
    let s = Sealpost::with_passphrase("one passphrase for the fleet");
    let keys = |args: &[&str], stdin: &[u8]| {
        let out = s
            .command()
            .env("SEALPOST_KEYRING_URL", &url)
            .args(args)
            .output_with(stdin);
        super::common::assert_success(&out, &format!("sealpost {}", args.join(" ")));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let old = Gpg::new();
    let old_fpr = old.generate("<ivan@example.net>", "default", "default", "never");
    keys(
        &["keys", "import", "-"],
        &old.ok(&["--armor", "--export", "ivan@example.net"]),
    );
    // A discovery source offers a different key: it waits in the database's queue.
    let new = Gpg::new();
    let new_fpr = new.generate("<ivan@example.net>", "default", "default", "never");
    let k = Keyring::open_url(
        &url,
        OpenOptions {
            passphrase: Some("one passphrase for the fleet".into()),
            ..OpenOptions::default()
        },
    )
    .expect("the PostgreSQL keyring");
    let offered = k
        .offer_discovered(
            "ivan@example.net",
            Cert::from_bytes(&new.ok(&["--export", "ivan@example.net"])).unwrap(),
            Source::Keyserver,
            SystemTime::now(),
        )
        .unwrap();
    assert!(matches!(offered, Offer::Queued { .. }), "{offered:?}");
    let listed = keys(&["keys", "review", "list"], b"");
    assert!(
        listed.contains(&new_fpr) && listed.contains("found by keyserver"),
        "{listed}"
    );
    keys(&["keys", "review", "accept", &new_fpr], b"");
    let shown = keys(&["keys", "show", "ivan@example.net"], b"");
    assert!(
        shown.contains(&new_fpr) && !shown.contains(&old_fpr),
        "{shown}"
    );
    assert!(
        shown.contains("pinned (found by keyserver, accepted by an admin"),
        "{shown}"
    );

    // A data directory's backup restores into the database, secret key included.
    let local = Sealpost::new();
    let fpr = local.generate("judy@example.org", &[]);
    let pass = super::common::write(local.dir.path(), "pass", b"move me\n");
    let backup = local.ok(&[
        "keys",
        "backup",
        "-",
        "--passphrase-file",
        pass.to_str().unwrap(),
    ]);
    let out = keys(
        &[
            "keys",
            "restore",
            "-",
            "--passphrase-file",
            pass.to_str().unwrap(),
        ],
        backup.as_bytes(),
    );
    assert!(out.contains("1 secret keys"), "{out}");
    let shown = keys(&["keys", "show", &fpr], b"");
    assert!(shown.contains("[secret key]"), "{shown}");
    drop(k);
}

/// Runs a command with `stdin` as its input.
trait OutputWith {
    fn output_with(&mut self, stdin: &[u8]) -> std::process::Output;
}

impl OutputWith for std::process::Command {
    fn output_with(&mut self, stdin: &[u8]) -> std::process::Output {
        super::common::output_with_input(self, stdin)
    }
}

/// A secret key that `gpg` makes for `uid` under `passphrase`, exported armored as gpg
/// protects it; with its fingerprint.
fn protected_key(gpg: &Gpg, uid: &str, passphrase: &str) -> (String, Vec<u8>) {
    let out = gpg
        .command()
        .args(["--passphrase", passphrase])
        .args(["--quick-gen-key", uid, "default", "default", "never"])
        .output()
        .expect("gpg");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let email = uid
        .rsplit_once('<')
        .and_then(|(_, rest)| rest.strip_suffix('>'))
        .unwrap_or(uid);
    let fpr = gpg.fingerprint(email);
    let protected = gpg
        .command()
        .args(["--passphrase", passphrase])
        .args(["--armor", "--export-secret-keys", &fpr])
        .output()
        .expect("gpg")
        .stdout;
    (fpr, protected)
}
