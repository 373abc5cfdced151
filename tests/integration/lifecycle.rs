//! Keys found, reviewed and kept, through the real binary: trust in `policy explain`, the
//! review queue, and the key lifecycle (generate, extend, backup and restore, protected
//! imports), with gpg as the peer.

use std::time::{Duration, SystemTime};

use sealpost_keyring::openpgp::parse::Parse;
use sealpost_keyring::openpgp::Cert;
use sealpost_keyring::{Keyring, Offer, OpenOptions, Source};

use super::common::{swaks_to, Gpg, Sealpost};
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

fn config(sink: &SmtpSink, policy: &str) -> String {
    format!(
        "[[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\n\
         [upstream]\naddress = \"{}\"\ntls = \"none\"\n\n{policy}",
        sink.address()
    )
}

/// The armored OpenPGP message of a PGP/MIME dump.
fn armored(dump: &str) -> String {
    let start = dump
        .find("-----BEGIN PGP MESSAGE-----")
        .expect("an armored message");
    let end = dump.find("-----END PGP MESSAGE-----").expect("armor end") + 25;
    dump[start..end].to_string()
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
    s.run_with_input(
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

    let listed = s.ok(&["keys", "review", "list"]);
    assert!(
        listed.contains(&format!("bob@example.net  {new_fpr}")),
        "{listed}"
    );
    assert!(listed.contains("found by wkd"), "{listed}");
    assert!(listed.contains(&format!("current: {old_fpr}")), "{listed}");
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
