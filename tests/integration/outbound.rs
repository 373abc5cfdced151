//! Outbound encryption through the real binary: swaks in, smtp-sink out, gpg and sq read
//! the result.

use std::time::Duration;

use super::common::{swaks, swaks_to, Gpg, Sealpost};
use super::upstream::SmtpSink;

const LONG: Duration = Duration::from_secs(30);

/// A gateway with Alice's secret key and the certificates of `recipients` (made by gpg,
/// as a gpg 2.2 user's would be), relaying to `sink`.
struct World {
    s: Sealpost,
    alice: Gpg,
    people: Vec<(String, Gpg)>,
}

impl World {
    fn new(recipients: &[&str]) -> World {
        let s = Sealpost::new();
        let alice = Gpg::new();
        alice.generate("Alice <alice@example.org>", "default", "default", "never");
        let tsk = alice.ok(&["--armor", "--export-secret-keys", "alice@example.org"]);
        assert!(s
            .run_with_input(&["keys", "import", "-"], &tsk)
            .status
            .success());
        let mut people = Vec::new();
        for r in recipients {
            let g = Gpg::new();
            g.generate(&format!("<{r}>"), "default", "default", "never");
            let cert = g.ok(&["--armor", "--export", r]);
            assert!(s
                .run_with_input(&["keys", "import", "-"], &cert)
                .status
                .success());
            // Each recipient knows Alice, to verify her signature.
            g.ok_with_input(
                &["--import"],
                &alice.ok(&["--armor", "--export", "alice@example.org"]),
            );
            people.push((r.to_string(), g));
        }
        World { s, alice, people }
    }

    fn gpg(&self, who: &str) -> &Gpg {
        &self
            .people
            .iter()
            .find(|(r, _)| r == who)
            .expect("recipient")
            .1
    }
}

pub(super) fn config(sink: &SmtpSink, policy: &str) -> String {
    format!(
        "[[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\n\
         [upstream]\naddress = \"{}\"\ntls = \"none\"\n\n{policy}",
        sink.address()
    )
}

/// The armored OpenPGP message of a PGP/MIME dump (smtp-sink writes LF line ends).
pub(super) fn armored(dump: &str) -> String {
    let start = dump
        .find("-----BEGIN PGP MESSAGE-----")
        .expect("an armored message");
    let end = dump.find("-----END PGP MESSAGE-----").expect("armor end") + 25;
    dump[start..end].to_string()
}

/// `protect_subject = false` for a domain whose mail server searches by Subject: its
/// copies keep the Subject in the clear outside (and inside), everything else stays
/// encrypted; other recipients keep the placeholder.
#[test]
fn protect_subject_false_keeps_the_subject_in_the_clear_for_its_recipients() {
    let w = World::new(&["bob@example.net", "carol@example.com"]);
    let sink = SmtpSink::start(&[]);
    let gw = w.s.serve(
        &config(
            &sink,
            "[policy.domain.\"example.net\"]\nprotect_subject = false\n",
        ),
        &[],
    );
    for to in ["bob@example.net", "carol@example.com"] {
        let (ok, out) = swaks_to(
            gw.port(),
            "alice@example.org",
            to,
            &[
                "--header",
                "From: Alice <alice@example.org>",
                "--header",
                "Subject: searchable numbers",
                "--body",
                "The numbers are 4, 8, 15, 16, 23 and 42.",
            ],
        );
        assert!(ok, "{out}");
    }
    let dumps: Vec<String> = sink
        .wait_messages(2, LONG)
        .iter()
        .map(|d| d.text())
        .collect();
    let to_bob = dumps
        .iter()
        .find(|d| d.contains("To: bob@example.net"))
        .expect("Bob's copy");
    assert!(to_bob.contains("multipart/encrypted"), "{to_bob}");
    assert!(to_bob.contains("\nSubject: searchable numbers"), "{to_bob}");
    assert!(!to_bob.contains("23 and 42"), "the body is still protected");
    let plain = w
        .gpg("bob@example.net")
        .run_with_input(&["--decrypt"], armored(to_bob).as_bytes());
    assert!(String::from_utf8_lossy(&plain.stdout).contains("Subject: searchable numbers"));
    let to_carol = dumps
        .iter()
        .find(|d| d.contains("To: carol@example.com"))
        .expect("Carol's copy");
    assert!(to_carol.contains("Subject: [...]"), "{to_carol}");
    assert!(!to_carol.contains("searchable"), "{to_carol}");
}

#[test]
fn gpg_decrypts_and_verifies_what_a_mail_client_sent() {
    let w = World::new(&["bob@example.net"]);
    let sink = SmtpSink::start(&[]);
    let gw = w.s.serve(&config(&sink, ""), &[]);
    let (ok, out) = swaks_to(
        gw.port(),
        "alice@example.org",
        "bob@example.net",
        &[
            "--header",
            "From: Alice <alice@example.org>",
            "--header",
            "Subject: quarterly numbers",
            "--body",
            "The numbers are 4, 8, 15, 16, 23 and 42.",
        ],
    );
    assert!(ok, "{out}");
    let dump = sink.wait_messages(1, LONG)[0].text();
    assert!(
        dump.contains("Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\""),
        "{dump}"
    );
    assert!(dump.contains("Subject: [...]"), "{dump}");
    assert!(
        !dump.contains("quarterly"),
        "the subject is protected: {dump}"
    );
    assert!(!dump.contains("23 and 42"), "the body is protected");
    let bob = w.gpg("bob@example.net");
    let dec = bob.run_with_input(
        &["--status-fd", "2", "--decrypt"],
        armored(&dump).as_bytes(),
    );
    let status = String::from_utf8_lossy(&dec.stderr);
    assert!(dec.status.success(), "{status}");
    assert!(
        status.contains("DECRYPTION_OKAY") && status.contains("GOODSIG"),
        "{status}"
    );
    let payload = String::from_utf8_lossy(&dec.stdout);
    assert!(payload.contains("hp=\"cipher\""), "{payload}");
    assert!(payload.contains("Subject: quarterly numbers"), "{payload}");
    assert!(
        payload.contains("The numbers are 4, 8, 15, 16, 23 and 42."),
        "{payload}"
    );
    let _ = &w.alice;
}

#[test]
fn bcc_recipients_get_their_own_copy() {
    let w = World::new(&["bob@example.net", "carol@example.net"]);
    let sink = SmtpSink::start(&[]);
    let gw = w.s.serve(&config(&sink, ""), &[]);
    let (ok, out) = swaks_to(
        gw.port(),
        "alice@example.org",
        "bob@example.net,carol@example.net",
        &[
            "--header",
            "From: alice@example.org",
            "--header",
            "To: bob@example.net",
        ],
    );
    assert!(ok, "{out}");
    let dumps = sink.wait_messages(2, LONG);
    let to_bob = dumps
        .iter()
        .find(|d| d.recipients == ["bob@example.net"])
        .expect("bob's copy");
    let to_carol = dumps
        .iter()
        .find(|d| d.recipients == ["carol@example.net"])
        .expect("carol's copy");
    let keyids = |g: &Gpg, dump: &str| {
        let listing = g.run_with_input(&["--list-packets"], armored(dump).as_bytes());
        String::from_utf8_lossy(&listing.stdout).into_owned()
    };
    let carol_key = {
        let out =
            w.gpg("carol@example.net")
                .ok(&["--with-colons", "--list-keys", "carol@example.net"]);
        let text = String::from_utf8_lossy(&out).into_owned();
        text.lines()
            .filter(|l| l.starts_with("sub:"))
            .filter_map(|l| l.split(':').nth(4).map(str::to_string))
            .next()
            .expect("carol's subkey")
    };
    let bob_listing = keyids(w.gpg("bob@example.net"), &to_bob.text());
    assert!(
        !bob_listing.contains(&carol_key),
        "bob's copy names no key of the Bcc recipient: {bob_listing}"
    );
    let carol_listing = keyids(w.gpg("carol@example.net"), &to_carol.text());
    assert!(carol_listing.contains(&carol_key), "{carol_listing}");
    let dec = w
        .gpg("carol@example.net")
        .run_with_input(&["--decrypt"], armored(&to_carol.text()).as_bytes());
    assert!(dec.status.success());
}

#[test]
fn require_refuses_at_rcpt_and_opportunistic_sends_plain() {
    let w = World::new(&["bob@example.net"]);
    let sink = SmtpSink::start(&[]);
    let policy = "[policy]\nmode = \"opportunistic\"\n\n[policy.domain.\"strict.example\"]\nmode = \"require\"\n";
    let gw = w.s.serve(&config(&sink, policy), &[]);
    let (ok, out) = swaks_to(gw.port(), "alice@example.org", "dave@strict.example", &[]);
    assert!(!ok);
    assert!(
        out.contains("<** 550 5.7.1 <dave@strict.example>: no valid OpenPGP key for this recipient (policy: require)"),
        "{out}"
    );
    let (ok, out) = swaks_to(
        gw.port(),
        "alice@example.org",
        "erin@elsewhere.example",
        &[
            "--header",
            "From: alice@example.org",
            "--body",
            "plain hello",
        ],
    );
    assert!(ok, "{out}");
    let dump = sink.wait_messages(1, LONG)[0].text();
    assert!(
        dump.contains("plain hello"),
        "no key, opportunistic: sent as it is: {dump}"
    );
    assert!(!dump.contains("multipart/encrypted"));
}

#[test]
fn mixed_recipients_follow_the_policy() {
    let w = World::new(&["bob@example.net"]);
    let sink = SmtpSink::start(&[]);
    let gw =
        w.s.serve(&config(&sink, "[policy]\nmixed = \"split\"\n"), &[]);
    let args = [
        "--from",
        "alice@example.org",
        "--to",
        "bob@example.net,frank@keyless.example",
        "--header",
        "From: alice@example.org",
        "--header",
        "To: bob@example.net, frank@keyless.example",
        "--body",
        "for both",
    ];
    let (ok, out) = swaks(gw.port(), &args);
    assert!(ok, "{out}");
    let dumps = sink.wait_messages(2, LONG);
    let bob = dumps
        .iter()
        .find(|d| d.recipients == ["bob@example.net"])
        .expect("bob's copy");
    let frank = dumps
        .iter()
        .find(|d| d.recipients == ["frank@keyless.example"])
        .expect("frank's copy");
    assert!(bob.text().contains("multipart/encrypted"));
    assert!(frank.text().contains("for both"));
    drop(gw);

    let s2 = w.s.serve(
        &config(&sink, "[policy]\nmixed = \"refuse-unencrypted\"\n"),
        &[],
    );
    let (ok, out) = swaks(s2.port(), &args);
    assert!(!ok);
    assert!(out.contains("550 5.7.1 <frank@keyless.example>"), "{out}");
}

#[test]
fn protected_input_passes_byte_exact_and_bad_from_is_refused() {
    let w = World::new(&["bob@example.net"]);
    let sink = SmtpSink::start(&[]);
    let gw = w.s.serve(&config(&sink, ""), &[]);
    let bob = w.gpg("bob@example.net");
    let ciphertext = String::from_utf8(bob.ok_with_input(
        &["--armor", "--encrypt", "-r", "bob@example.net"],
        b"already sealed",
    ))
    .unwrap();
    let body = ciphertext.replace('\n', "\r\n");
    let body_file = w.s.dir.path().join("sealed.txt");
    std::fs::write(&body_file, body.trim_end()).unwrap();
    let (ok, out) = swaks_to(
        gw.port(),
        "alice@example.org",
        "bob@example.net",
        &[
            "--header",
            "From: alice@example.org",
            "--body",
            body_file.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}");
    let dump = &sink.wait_messages(1, LONG)[0];
    assert!(
        !dump.text().contains("multipart/encrypted"),
        "not encrypted twice"
    );
    assert_eq!(
        String::from_utf8_lossy(&dump.body())
            .replace('\n', "\r\n")
            .trim_end(),
        body.trim_end(),
        "the body arrives as sent"
    );
    // Two From addresses: refused rather than half-protected.
    let (ok, out) = swaks_to(
        gw.port(),
        "alice@example.org",
        "bob@example.net",
        &["--header", "From: alice@example.org, mallory@example.org"],
    );
    assert!(!ok);
    assert!(out.contains("554 5.6.0"), "{out}");
}

#[test]
fn expired_and_revoked_keys_are_never_used() {
    let s = Sealpost::new();
    let g = Gpg::new();
    g.ok(&[
        "--faked-system-time",
        "20200101T000000",
        "--quick-gen-key",
        "<old@example.net>",
        "default",
        "default",
        "1y",
    ]);
    let gone = g.generate("<gone@example.net>", "default", "default", "never");
    assert!(s
        .run_with_input(&["keys", "import", "-"], &g.ok(&["--armor", "--export"]))
        .status
        .success());
    // The revocation arrives after the certificate, as an admin would import it.
    assert!(s
        .run_with_input(&["keys", "import", "-"], &g.revocation_cert(&gone))
        .status
        .success());
    let sink = SmtpSink::start(&[]);
    let gw = s.serve(
        &config(
            &sink,
            "[policy.address.\"old@example.net\"]\nmode = \"require\"\n\n\
             [policy.address.\"gone@example.net\"]\nmode = \"require\"\n",
        ),
        &[],
    );
    for who in ["old@example.net", "gone@example.net"] {
        let (ok, out) = swaks_to(gw.port(), "alice@example.org", who, &[]);
        assert!(!ok, "{who}: {out}");
        assert!(out.contains(&format!("550 5.7.1 <{who}>")), "{out}");
    }
    // Opportunistic (the default): the revoked key is not used, the copy goes in the clear.
    drop(gw);
    let gw = s.serve(&config(&sink, ""), &[]);
    let (ok, out) = swaks_to(
        gw.port(),
        "alice@example.org",
        "gone@example.net",
        &["--body", "not for a revoked key"],
    );
    assert!(ok, "{out}");
    let dump = sink.wait_messages(1, LONG)[0].text();
    assert!(!dump.contains("multipart/encrypted"), "{dump}");
    assert!(dump.contains("not for a revoked key"), "{dump}");
}

#[test]
fn policy_explain_names_rule_key_and_copy() {
    let w = World::new(&["bob@example.net"]);
    let policy = "[policy]\nmode = \"opportunistic\"\n\n[policy.domain.\"strict.example\"]\nmode = \"require\"\n";
    let file = w.s.dir.path().join("explain.toml");
    std::fs::write(&file, policy).unwrap();
    let args = [
        "--config",
        file.to_str().unwrap(),
        "policy",
        "explain",
        "--from",
        "alice@example.org",
        "--to",
        "bob@example.net",
        "--to",
        "dave@strict.example",
        "--bcc",
        "erin@elsewhere.example",
    ];
    let out = w.s.ok(&args);
    let bob_fpr = w.gpg("bob@example.net").fingerprint("bob@example.net");
    assert!(out.contains("signs with"), "{out}");
    assert!(
        out.contains(&format!("key:   {bob_fpr} (keyring)")),
        "{out}"
    );
    assert!(
        out.contains("encrypted, in the copy shared by the To/Cc recipients"),
        "{out}"
    );
    assert!(
        out.contains("mode = require ([policy.domain.\"strict.example\"])"),
        "{out}"
    );
    assert!(out.contains("refused at RCPT: 550 5.7.1"), "{out}");
    assert!(out.contains("erin@elsewhere.example (Bcc)"), "{out}");
    assert!(
        out.contains("signed, not encrypted (multipart/signed)"),
        "{out}"
    );
    // The same through the running server.
    let sink = SmtpSink::start(&[]);
    let _gw = w.s.serve(&config(&sink, policy), &[]);
    let via = w.s.ok(&args);
    assert_eq!(via, out);
}

#[test]
fn bad_input_is_refused_or_passed_unchanged_never_half_encrypted() {
    let w = World::new(&["bob@example.net"]);
    let sink = SmtpSink::start(&[]);
    let strict =
        w.s.serve(&config(&sink, "[policy]\nmode = \"require\"\n"), &[]);
    let send = |port: u16, name: &str, message: &[u8]| {
        let file = w.s.dir.path().join(name);
        std::fs::write(&file, message).unwrap();
        swaks_to(
            port,
            "alice@example.org",
            "bob@example.net",
            &["--data", file.to_str().unwrap()],
        )
    };
    // No From, several From: nothing to sign for; refused.
    let (ok, out) = send(
        strict.port(),
        "nofrom.eml",
        b"To: bob@example.net\r\nSubject: anonymous\r\n\r\nwho am I\r\n",
    );
    assert!(!ok && out.contains("554 5.6.0"), "{out}");
    let (ok, out) = send(
        strict.port(),
        "twofrom.eml",
        b"From: alice@example.org\r\nFrom: eve@example.org\r\n\r\nx\r\n",
    );
    assert!(!ok && out.contains("554 5.6.0"), "{out}");
    // Malformed: a 100 KB header line, MIME nested 200 deep, NUL bytes, an invalid charset.
    let mut long = String::from("From: alice@example.org\r\nTo: bob@example.net\r\nX-Long: ");
    long.push_str(&"a".repeat(100 * 1024));
    long.push_str("\r\n\r\nbody\r\n");
    let mut nested = String::from("From: alice@example.org\r\nTo: bob@example.net\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n");
    for i in 0..200 {
        nested.push_str(&format!(
            "--b{i}\r\nContent-Type: multipart/mixed; boundary=b{}\r\n\r\n",
            i + 1
        ));
    }
    nested.push_str("--b200\r\nContent-Type: text/plain\r\n\r\ndeep inside\r\n--b200--\r\n");
    for i in (0..200).rev() {
        nested.push_str(&format!("--b{i}--\r\n"));
    }
    let nul = b"From: alice@example.org\r\nTo: bob@example.net\r\n\r\nnul\x00here\r\n".to_vec();
    let charset = b"From: alice@example.org\r\nTo: bob@example.net\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\xff\xfe not utf-8\r\n".to_vec();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("long.eml", long.into_bytes()),
        ("nested.eml", nested.into_bytes()),
        ("nul.eml", nul),
        ("charset.eml", charset),
    ];
    // A recipient whose policy is `require` never gets them in the clear: refused.
    for (name, message) in &cases {
        let (ok, out) = send(strict.port(), name, message);
        assert!(!ok, "{name}");
        assert!(
            out.contains("554 5.6.0 Message refused"),
            "{name}: {}",
            &out[out.len().saturating_sub(800)..]
        );
    }
    assert!(sink.messages().is_empty(), "nothing was sent");
    drop(strict);
    // When every recipient may receive plaintext, they go on unchanged (the reason is logged).
    let open = w.s.serve(&config(&sink, ""), &[]);
    for (name, message) in &cases {
        let (ok, out) = send(open.port(), name, message);
        assert!(ok, "{name}: {}", &out[out.len().saturating_sub(800)..]);
    }
    let dumps = sink.wait_messages(cases.len(), LONG);
    assert!(
        dumps
            .iter()
            .all(|d| !d.text().contains("multipart/encrypted")),
        "never half-encrypted"
    );
}

#[test]
fn a_20_mb_attachment_is_encrypted_and_sq_reads_it() {
    let w = World::new(&["bob@example.net"]);
    let sink = SmtpSink::start(&[]);
    let gw = w.s.serve(&config(&sink, ""), &[]);
    let attachment = w.s.dir.path().join("big.bin");
    let mut data = vec![0u8; 20 * 1024 * 1024];
    let mut x: u32 = 7;
    for b in data.iter_mut() {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        *b = (x >> 24) as u8;
    }
    std::fs::write(&attachment, &data).unwrap();
    let (ok, out) = swaks_to(
        gw.port(),
        "alice@example.org",
        "bob@example.net",
        &[
            "--header",
            "From: alice@example.org",
            "--header",
            "Subject: the big one",
            "--attach",
            attachment.to_str().unwrap(),
        ],
    );
    assert!(ok, "{}", &out[out.len().saturating_sub(2000)..]);
    let dump = sink.wait_messages(1, LONG)[0].text();
    assert!(dump.contains("multipart/encrypted"));
    // sq decrypts and verifies it with Bob's key and Alice's certificate.
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("bob.key");
    let cert = dir.path().join("alice.cert");
    let msg = dir.path().join("msg.asc");
    std::fs::write(
        &key,
        w.gpg("bob@example.net")
            .ok(&["--export-secret-keys", "bob@example.net"]),
    )
    .unwrap();
    std::fs::write(&cert, w.alice.ok(&["--export", "alice@example.org"])).unwrap();
    std::fs::write(&msg, armored(&dump)).unwrap();
    let out = std::process::Command::new("sq")
        .args([
            "decrypt",
            "--recipient-key",
            key.to_str().unwrap(),
            "--signer-cert",
            cert.to_str().unwrap(),
            msg.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let payload = String::from_utf8_lossy(&out.stdout);
    assert!(payload.contains("Subject: the big one"));
    assert!(
        payload.len() > 20 * 1024 * 1024,
        "the whole attachment is inside"
    );
}

#[test]
fn html_attachments_and_utf8_arrive_intact_inside() {
    let w = World::new(&["bob@example.net"]);
    let sink = SmtpSink::start(&[]);
    let gw = w.s.serve(&config(&sink, ""), &[]);
    let body = "--alt\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln — ünïcødé\r\n--alt\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n<p>Grüße <b>aus</b> Köln</p>\r\n--alt--\r\n";
    let mut message = String::from(
        "From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: =?UTF-8?B?R3LDvMOfZQ==?=\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=mix\r\n\r\n--mix\r\nContent-Type: multipart/alternative; boundary=alt\r\n\r\n",
    );
    message.push_str(body);
    message.push_str("--mix\r\nContent-Type: application/pdf; name=report.pdf\r\nContent-Disposition: attachment; filename=report.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJcfsj6IKMSAwIG9iago8PC9UeXBlL0NhdGFsb2c+PgplbmRvYmoK\r\n--mix--\r\n");
    let file = w.s.dir.path().join("rich.eml");
    std::fs::write(&file, &message).unwrap();
    let (ok, out) = swaks_to(
        gw.port(),
        "alice@example.org",
        "bob@example.net",
        &["--data", file.to_str().unwrap()],
    );
    assert!(ok, "{out}");
    let dump = sink.wait_messages(1, LONG)[0].text();
    let dec = w.gpg("bob@example.net").run_with_input(
        &["--status-fd", "2", "--decrypt"],
        armored(&dump).as_bytes(),
    );
    assert!(dec.status.success());
    let payload = String::from_utf8(dec.stdout).unwrap();
    let original_body = &message[message.find("\r\n\r\n").unwrap() + 4..];
    // swaks ends the data with one more CRLF than the file has.
    assert!(
        payload
            .trim_end_matches("\r\n")
            .ends_with(original_body.trim_end_matches("\r\n")),
        "the body inside is the original, byte for byte:\n{payload}"
    );
    assert!(
        payload.starts_with("Content-Type: multipart/mixed; boundary=mix; hp=\"cipher\"\r\n"),
        "{payload}"
    );
    assert!(payload.contains("Subject: =?UTF-8?B?R3LDvMOfZQ==?=\r\n"));
}

#[test]
fn a_v6_and_a_gpg_recipient_in_one_message() {
    use openpgp::parse::stream::{
        DecryptionHelper, DecryptorBuilder, MessageStructure, VerificationHelper,
    };
    use openpgp::parse::Parse;
    use sealpost_keyring::openpgp;

    let w = World::new(&["old@example.net"]);
    let v6_fpr = w.s.generate("new@example.net", &["--profile", "rfc9580"]);
    let v6_tsk =
        w.s.ok(&["keys", "export", "--secret", "--unprotected", &v6_fpr]);
    let sink = SmtpSink::start(&[]);
    let gw = w.s.serve(&config(&sink, ""), &[]);
    let (ok, out) = swaks_to(
        gw.port(),
        "alice@example.org",
        "old@example.net,new@example.net",
        &[
            "--header",
            "From: alice@example.org",
            "--header",
            "To: old@example.net, new@example.net",
            "--body",
            "to the old and the new",
        ],
    );
    assert!(ok, "{out}");
    let dump = sink.wait_messages(1, LONG)[0].text();
    let message = armored(&dump);
    // gpg 2.2 reads it: SEIPDv1, since one recipient's key does not advertise SEIPDv2.
    let dec = w
        .gpg("old@example.net")
        .run_with_input(&["--decrypt"], message.as_bytes());
    assert!(
        dec.status.success(),
        "{}",
        String::from_utf8_lossy(&dec.stderr)
    );
    assert!(String::from_utf8_lossy(&dec.stdout).contains("to the old and the new"));

    // The v6 recipient reads it with its own key.
    struct H(openpgp::Cert);
    impl VerificationHelper for H {
        fn get_certs(&mut self, _: &[openpgp::KeyHandle]) -> openpgp::Result<Vec<openpgp::Cert>> {
            Ok(vec![])
        }
        fn check(&mut self, _: MessageStructure) -> openpgp::Result<()> {
            Ok(())
        }
    }
    impl DecryptionHelper for H {
        fn decrypt(
            &mut self,
            pkesks: &[openpgp::packet::PKESK],
            _: &[openpgp::packet::SKESK],
            sym: Option<openpgp::types::SymmetricAlgorithm>,
            decrypt: &mut dyn FnMut(
                Option<openpgp::types::SymmetricAlgorithm>,
                &openpgp::crypto::SessionKey,
            ) -> bool,
        ) -> openpgp::Result<Option<openpgp::Cert>> {
            let p = openpgp::policy::StandardPolicy::new();
            for ka in self
                .0
                .keys()
                .with_policy(&p, None)
                .for_transport_encryption()
                .secret()
            {
                let mut pair = ka.key().clone().into_keypair()?;
                for pkesk in pkesks {
                    if let Some((algo, sk)) = pkesk.decrypt(&mut pair, sym) {
                        if decrypt(algo, &sk) {
                            return Ok(Some(self.0.clone()));
                        }
                    }
                }
            }
            Ok(None)
        }
    }
    let p = openpgp::policy::StandardPolicy::new();
    let tsk = openpgp::Cert::from_bytes(v6_tsk.as_bytes()).unwrap();
    let mut d = DecryptorBuilder::from_bytes(message.as_bytes())
        .unwrap()
        .with_policy(&p, None, H(tsk))
        .unwrap();
    let mut plain = Vec::new();
    std::io::copy(&mut d, &mut plain).unwrap();
    assert!(String::from_utf8_lossy(&plain).contains("to the old and the new"));
}

#[test]
fn encrypt_to_self_adds_the_senders_key() {
    let w = World::new(&["bob@example.net"]);
    let sink = SmtpSink::start(&[]);
    let subkey = |g: &Gpg, who: &str| {
        let out = g.ok(&["--with-colons", "--list-keys", who]);
        String::from_utf8_lossy(&out)
            .lines()
            .filter(|l| l.starts_with("sub:"))
            .filter_map(|l| l.split(':').nth(4).map(str::to_string))
            .next()
            .expect("an encryption subkey")
    };
    let alice_key = subkey(&w.alice, "alice@example.org");
    let send = |policy: &str| {
        let gw = w.s.serve(&config(&sink, policy), &[]);
        let (ok, out) = swaks_to(
            gw.port(),
            "alice@example.org",
            "bob@example.net",
            &["--header", "From: alice@example.org"],
        );
        assert!(ok, "{out}");
    };
    send("");
    send("[policy]\nencrypt_to_self = true\n");
    let dumps = sink.wait_messages(2, LONG);
    let listing = |d: &str| {
        let out = w
            .gpg("bob@example.net")
            .run_with_input(&["--list-packets"], armored(d).as_bytes());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (without, with): (Vec<_>, Vec<_>) = dumps
        .iter()
        .map(|d| listing(&d.text()))
        .partition(|l| !l.contains(&alice_key));
    assert_eq!(without.len(), 1, "by default only the recipient's key");
    assert_eq!(with.len(), 1, "encrypt_to_self adds the sender's own key");
    // And Alice can read her own copy.
    let mine = dumps
        .iter()
        .find(|d| listing(&d.text()).contains(&alice_key))
        .unwrap();
    let dec = w
        .alice
        .run_with_input(&["--decrypt"], armored(&mine.text()).as_bytes());
    assert!(dec.status.success());
}
