//! Attacks on addressing, policy and configuration, each sent to the real binary: RCPT
//! injection through quoted local parts, `require` bypasses by label, signing as someone
//! else, open relays by configuration, and user IDs that hide another address.

use std::time::Duration;

use base64::Engine;
use sealpost_keyring::openpgp;

use super::common::{Gpg, Raw, Sealpost};
use super::upstream::{wait_for, ScriptedUpstream};

const LONG: Duration = Duration::from_secs(30);

/// One loopback listener of `mode` without TLS, and `rest` (upstream, inbound, policy…).
fn listener(mode: &str, extra: &str, rest: &str) -> String {
    format!(
        "[[listener]]\nmode = \"{mode}\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n{extra}\n\n{rest}"
    )
}

fn upstream(up: &ScriptedUpstream) -> String {
    format!(
        "[upstream]\naddress = \"{}\"\ntls = \"none\"\n",
        up.address()
    )
}

/// EHLO and MAIL on a fresh connection.
fn open(port: u16, from: &str) -> Raw {
    let mut raw = Raw::connect(port);
    assert!(raw.cmd("EHLO client.test").starts_with("250"));
    let r = raw.cmd(&format!("MAIL FROM:<{from}>"));
    assert!(r.starts_with("250"), "{r}");
    raw
}

/// DATA with `message` (CRLF, no line starting with a dot); the final reply.
fn data(raw: &mut Raw, message: &str) -> String {
    let r = raw.cmd("DATA");
    assert!(r.starts_with("354"), "{r}");
    raw.send(message.as_bytes());
    raw.send(b".\r\n");
    raw.reply()
}

fn crlf(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\n', "\r\n")
}

#[test]
fn a_quoted_local_part_cannot_inject_parameters_or_recipients_upstream() {
    let up = ScriptedUpstream::start();
    let s = Sealpost::new();
    let gw = s.serve(&listener("outbound", "", &upstream(&up)), &[]);
    let mut raw = open(gw.port(), "alice@example.org");
    // Unquoted upstream, this was `RCPT TO:<carol@remote.test> ORCPT=rfc822;x@evil.test>`.
    let r = raw.cmd("RCPT TO:<\"carol@remote.test> ORCPT=rfc822;x\"@evil.test>");
    assert!(r.starts_with("553 5.1.3"), "{r}");
    let r = raw.cmd("RCPT TO:<\"carol@remote.test\r\"@evil.test>");
    assert!(r.starts_with("5"), "{r}");
    // A legitimate quoted local part is kept, and leaves quoted.
    let r = raw.cmd("RCPT TO:<\"john doe\"@remote.test>");
    assert!(r.starts_with("250"), "{r}");
    let r = raw.cmd("RCPT TO:<\"dave@remote.test\"@other.test>");
    assert!(r.starts_with("250"), "{r}");
    let r = data(
        &mut raw,
        "From: alice@example.org\r\nSubject: quoted\r\n\r\nhello\r\n",
    );
    assert!(r.starts_with("250"), "{r}");
    let got = up.wait_received(1, LONG);
    let mut rcpts = got[0].recipients.clone();
    rcpts.sort();
    assert_eq!(
        rcpts,
        [
            "\"dave@remote.test\"@other.test",
            "\"john doe\"@remote.test"
        ]
    );
    assert!(got[0].sender == "alice@example.org", "{:?}", got[0].sender);
}

#[test]
fn the_inbound_listener_is_no_relay_through_a_quoted_local_part() {
    let next_hop = ScriptedUpstream::start();
    let s = Sealpost::new();
    let gw = s.serve(
        &listener(
            "inbound",
            "",
            &format!(
                "[inbound]\ndeliver = \"{}\"\nlocal_domains = [\"local.test\"]\n",
                next_hop.address()
            ),
        ),
        &[],
    );
    let mut raw = open(gw.port(), "attacker@evil.test");
    let r = raw.cmd("RCPT TO:<victim@evil.test>");
    assert!(r.starts_with("550 5.7.1"), "{r}");
    // Passed the local-domain check, and was relayed to victim@evil.test, before.
    let r = raw.cmd("RCPT TO:<\"victim@evil.test> x\"@local.test>");
    assert!(r.starts_with("553 5.1.3"), "{r}");
    // Its domain really is local.test: it goes there, quoted, never to evil.test.
    let r = raw.cmd("RCPT TO:<\"victim@evil.test\"@local.test>");
    assert!(r.starts_with("250"), "{r}");
    let r = data(
        &mut raw,
        "From: attacker@evil.test\r\nSubject: relay?\r\n\r\nhello\r\n",
    );
    assert!(r.starts_with("250"), "{r}");
    let got = next_hop.wait_received(1, LONG);
    assert_eq!(got[0].recipients, ["\"victim@evil.test\"@local.test"]);
}

/// A gateway whose policy requires encryption for Bob (who has a gpg key) relaying to a
/// scripted upstream; Alice's secret key signs.
struct Require {
    s: Sealpost,
    bob: Gpg,
    alice: Gpg,
}

impl Require {
    fn new() -> Require {
        let s = Sealpost::new();
        let alice = Gpg::new();
        alice.generate("Alice <alice@example.org>", "default", "default", "never");
        let tsk = alice.ok(&["--armor", "--export-secret-keys", "alice@example.org"]);
        assert!(s
            .run_with_input(&["keys", "import", "-"], &tsk)
            .status
            .success());
        let bob = Gpg::new();
        bob.generate("<bob@partner.example>", "default", "default", "never");
        let cert = bob.ok(&["--armor", "--export", "bob@partner.example"]);
        assert!(s
            .run_with_input(&["keys", "import", "-"], &cert)
            .status
            .success());
        bob.ok_with_input(
            &["--import"],
            &alice.ok(&["--armor", "--export", "alice@example.org"]),
        );
        Require { s, bob, alice }
    }
}

#[test]
fn require_means_encrypted_whatever_the_message_is_labelled() {
    let w = Require::new();
    let up = ScriptedUpstream::start();
    let policy = "[policy.address.\"bob@partner.example\"]\nmode = \"require\"\n";
    let gw = w.s.serve(
        &listener("outbound", "", &format!("{}\n{policy}", upstream(&up))),
        &[],
    );
    let secret = "SECRET-PLANS-4815162342";
    let head = "From: alice@example.org\nTo: bob@partner.example\nSubject: labels\n";
    // A real gpg signature is still not encryption.
    let clearsigned = w.alice.ok_with_input(
        &["--clearsign", "--local-user", "alice@example.org"],
        format!("{secret}\n").as_bytes(),
    );
    let signed_armor = w.alice.ok_with_input(
        &["--sign", "--armor", "--local-user", "alice@example.org"],
        format!("{secret}\n").as_bytes(),
    );
    let labelled = [
        format!("{head}Content-Type: multipart/signed; micalg=pgp-sha256; protocol=\"application/pgp-signature\"; boundary=b\n\n--b\nContent-Type: text/plain\n\n{secret}\n--b\nContent-Type: application/pgp-signature\n\nnot really\n--b--\n"),
        format!("{head}Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\n\n--b\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n\n--b\nContent-Type: application/octet-stream\n\n{secret}\n--b--\n"),
        format!("{head}\n{}", String::from_utf8_lossy(&clearsigned)),
        format!("{head}\n{}", String::from_utf8_lossy(&signed_armor)),
        format!("{head}Content-Type: application/pkcs7-mime; smime-type=enveloped-data\n\n{secret}\n"),
    ];
    for (i, m) in labelled.iter().enumerate() {
        let mut raw = open(gw.port(), "alice@example.org");
        assert!(raw.cmd("RCPT TO:<bob@partner.example>").starts_with("250"));
        let r = data(&mut raw, &crlf(m));
        assert!(r.starts_with("250"), "case {i}: {r}");
        let got = up.wait_received(i + 1, LONG);
        let out = String::from_utf8_lossy(&got[i].data).into_owned();
        assert!(!out.contains(secret), "case {i} left in the clear:\n{out}");
        assert!(out.contains("multipart/encrypted"), "case {i}: {out}");
        let start = out.find("-----BEGIN PGP MESSAGE-----").expect("armor");
        let end = out.find("-----END PGP MESSAGE-----").expect("armor end") + 25;
        let dec = w
            .bob
            .run_with_input(&["--decrypt"], &out.as_bytes()[start..end]);
        assert!(dec.status.success(), "case {i}: bob cannot decrypt");
        assert!(String::from_utf8_lossy(&dec.stdout).contains(secret) || i == 3);
    }
    // Real ciphertext, made by gpg for Bob, passes through unchanged.
    w.alice.ok_with_input(
        &["--import"],
        &w.bob.ok(&["--armor", "--export", "bob@partner.example"]),
    );
    let ciphertext = w.alice.ok_with_input(
        &[
            "--encrypt",
            "--armor",
            "--trust-model",
            "always",
            "--recipient",
            "bob@partner.example",
        ],
        format!("{secret}\n").as_bytes(),
    );
    let body = format!("{head}Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\n\n--b\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n\n--b\nContent-Type: application/octet-stream\n\n{}\n--b--\n", String::from_utf8_lossy(&ciphertext).trim_end());
    let mut raw = open(gw.port(), "alice@example.org");
    assert!(raw.cmd("RCPT TO:<bob@partner.example>").starts_with("250"));
    let r = data(&mut raw, &crlf(&body));
    assert!(r.starts_with("250"), "{r}");
    let got = up.wait_received(labelled.len() + 1, LONG);
    let out = got.last().expect("one more").data.clone();
    let sent = crlf(&body);
    assert!(
        out.ends_with(sent.as_bytes()),
        "real ciphertext is passed on byte for byte"
    );
}

/// The argon2 hash of `password`, from `sealpost hash-password`.
fn hash(s: &Sealpost, password: &str) -> String {
    let out = s.run_with_input(&["hash-password"], format!("{password}\n").as_bytes());
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn auth_plain(raw: &mut Raw, user: &str, pass: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"));
    raw.cmd(&format!("AUTH PLAIN {token}"))
}

#[test]
fn a_login_signs_only_for_the_addresses_bound_to_it() {
    let w = Require::new();
    let up = ScriptedUpstream::start();
    let h = hash(&w.s, "pw");
    let users = format!(
        "[[user]]\nname = \"alice\"\npassword_hash = \"{h}\"\naddresses = [\"alice@example.org\"]\n\n\
         [[user]]\nname = \"mallory@example.org\"\npassword_hash = \"{h}\"\n"
    );
    let send = |port: u16, user: &str| -> String {
        let mut raw = Raw::connect(port);
        assert!(raw.cmd("EHLO client.test").starts_with("250"));
        let r = auth_plain(&mut raw, user, "pw");
        assert!(r.starts_with("235"), "{r}");
        assert!(raw.cmd("MAIL FROM:<alice@example.org>").starts_with("250"));
        assert!(raw.cmd("RCPT TO:<carol@remote.test>").starts_with("250"));
        data(
            &mut raw,
            "From: Alice <alice@example.org>\r\nSubject: pay\r\n\r\nPay Mallory.\r\n",
        )
    };
    for (mismatch, want) in [("refuse", "553 5.7.1"), ("unsigned", "250")] {
        let config = listener(
            "outbound",
            "auth = \"local\"\nrequire_auth = true",
            &format!(
                "{users}\n{}\n[policy]\nsender_mismatch = \"{mismatch}\"\n",
                upstream(&up)
            ),
        );
        let gw = w.s.serve(&config, &[]);
        let before = up.received().len();
        // Mallory may log in, but not sign as Alice.
        let r = send(gw.port(), "mallory@example.org");
        assert!(r.starts_with(want), "{mismatch}: {r}");
        if mismatch == "unsigned" {
            let got = up.wait_received(before + 1, LONG);
            let out = String::from_utf8_lossy(&got[before].data).into_owned();
            assert!(!out.contains("multipart/signed"), "{out}");
            assert!(!out.contains("BEGIN PGP SIGNATURE"), "{out}");
        } else {
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(up.received().len(), before, "nothing was sent");
        }
        // Alice's own login signs as before.
        let r = send(gw.port(), "alice");
        assert!(r.starts_with("250"), "{r}");
        let got = wait_for(LONG, "alice's signed copy", || {
            let all = up.received();
            all.iter()
                .skip(before)
                .find(|m| String::from_utf8_lossy(&m.data).contains("multipart/signed"))
                .cloned()
        });
        assert!(String::from_utf8_lossy(&got.data).contains("Pay Mallory."));
    }
}

#[test]
fn an_open_outbound_listener_is_refused_after_every_override() {
    let s = Sealpost::new();
    // 192.0.2.1 (TEST-NET-1) is never an address of this machine: a gateway that did not
    // refuse would fail to bind it, with another message.
    let cases: [(&str, &[&str], &str); 4] = [
        ("", &["--listen", "192.0.2.1:2587"], "requires AUTH"),
        (
            "[[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:2587\"\nrequire_auth = false\n",
            &["--listen", "192.0.2.1:2587"],
            "open relay",
        ),
        (
            "[[listener]]\nmode = \"outbound\"\naddress = \"192.0.2.1:587\"\nallow = [\"0.0.0.0/0\"]\n",
            &[],
            "open relay",
        ),
        (
            "[[listener]]\nmode = \"outbound\"\naddress = \"192.0.2.1:587\"\nauth = \"none\"\nrequire_auth = false\n",
            &[],
            "open relay",
        ),
    ];
    for (config, args, why) in cases {
        let path = s.data_dir().with_file_name("open.toml");
        std::fs::write(&path, config).unwrap();
        let mut cmd = s.command();
        cmd.arg("serve").arg("--config").arg(&path).args(args);
        let out = super::common::output_with_input(&mut cmd, b"");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{config} {args:?}: {err}");
        assert!(err.contains(why), "{config} {args:?}: {err}");
        let check = s.run(&["--config", path.to_str().unwrap(), "check-config"]);
        if args.is_empty() {
            assert!(
                !check.status.success(),
                "check-config passes what serve refuses"
            );
        }
    }
}

#[test]
fn a_user_id_with_a_newline_does_not_become_anothers_key() {
    use openpgp::cert::CertBuilder;
    use openpgp::serialize::SerializeInto;
    let s = Sealpost::new();
    for uid in [
        &b"Mallory\n<alice@example.org>"[..],
        b"Mallory\0<alice@example.org>",
    ] {
        let (cert, _) = CertBuilder::general_purpose(Some(openpgp::packet::UserID::from(uid)))
            .generate()
            .unwrap();
        let armored = cert.armored().to_vec().unwrap();
        let out = s.run_with_input(&["keys", "import", "-"], &armored);
        assert!(out.status.success());
    }
    let out = s.ok(&[
        "policy",
        "explain",
        "--from",
        "x@example.net",
        "--to",
        "alice@example.org",
    ]);
    assert!(out.contains("key:   none usable"), "{out}");
}

#[test]
fn a_decrypted_payload_that_cannot_be_made_safe_is_delivered_as_ciphertext() {
    let s = Sealpost::new();
    s.generate("bob@example.org", &[]);
    let alice = Gpg::new();
    alice.ok_with_input(
        &["--import"],
        s.ok(&["keys", "export", "bob@example.org"]).as_bytes(),
    );
    // A preamble with 8-bit bytes, a bare CR and a dot: written to the next hop as it is,
    // a lenient hop would read the end of the data and a second transaction.
    let payload: &[u8] = b"Content-Type: multipart/mixed; boundary=b\r\n\r\npr\xe9ambule\r.\r\nMAIL FROM:<x@evil.test>\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b--\r\n";
    let armored = alice.ok_with_input(
        &[
            "--armor",
            "--encrypt",
            "--trust-model",
            "always",
            "-r",
            "bob@example.org",
        ],
        payload,
    );
    let message = crlf(&format!(
        "From: alice@example.net\nTo: bob@example.org\nSubject: [...]\nMIME-Version: 1.0\n\
         Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=enc\n\n\
         --enc\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n\n\
         --enc\nContent-Type: application/octet-stream\n\n{}\n--enc--\n",
        String::from_utf8_lossy(&armored).trim_end()
    ));
    let next_hop = ScriptedUpstream::start();
    let gw = s.serve(
        &listener(
            "inbound",
            "",
            &format!(
                "[inbound]\ndeliver = \"{}\"\nlocal_domains = [\"example.org\"]\n",
                next_hop.address()
            ),
        ),
        &[],
    );
    let mut raw = open(gw.port(), "alice@example.net");
    assert!(raw.cmd("RCPT TO:<bob@example.org>").starts_with("250"));
    let r = data(&mut raw, &message);
    assert!(r.starts_with("250"), "{r}");
    let got = next_hop.wait_received(1, LONG);
    let out = String::from_utf8_lossy(&got[0].data).into_owned();
    assert!(out.contains("encryption=unencodable"), "{out}");
    assert!(out.contains("-----BEGIN PGP MESSAGE-----"), "{out}");
    assert!(!out.contains("MAIL FROM:<x@evil.test>"), "{out}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(next_hop.received().len(), 1, "one transaction, no second");
}
