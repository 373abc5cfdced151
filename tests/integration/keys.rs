//! `sealpost keys …` against gpg 2.2 and sq 0.27: import, export, generate, validity, and
//! bad input that must leave the keyring unchanged.

use std::process::Stdio;
use std::time::Duration;

use super::common::{sq, write, Gpg, Sealpost};

fn statuses(s: &Sealpost) -> Vec<(String, String)> {
    let list = s.list_json();
    list.as_array()
        .expect("array")
        .iter()
        .map(|k| {
            (
                k["fingerprint"].as_str().expect("fpr").to_string(),
                k["validity"]["status"]
                    .as_str()
                    .expect("status")
                    .to_string(),
            )
        })
        .collect()
}

#[test]
fn gpg_public_and_secret_round_trip() {
    let gpg = Gpg::new();
    let fpr = gpg.generate("Alice <alice@example.org>", "default", "default", "never");
    let public = gpg.ok(&["--armor", "--export", &fpr]);
    let secret = gpg.ok(&["--armor", "--export-secret-keys", &fpr]);
    let s = Sealpost::new();

    let out = s.run_with_input(&["keys", "import", "-"], &public);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("new"), "{text}");
    assert!(text.contains(&fpr), "{text}");
    assert!(text.contains("Alice <alice@example.org>"), "{text}");

    // The secret key attaches to the certificate imported before it.
    let out = s.run_with_input(&["keys", "import", "-"], &secret);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("[secret key]"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no keyring passphrase"));
    let list = s.list_json();
    assert_eq!(list[0]["has_secret"], true);
    assert_eq!(list[0]["validity"]["status"], "usable");

    // Importing the same certificate again changes nothing.
    let out = s.run_with_input(&["keys", "import", "-"], &public);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("unchanged"));

    // What sealpost exports, gpg imports back with the same fingerprint.
    for secret in [false, true] {
        let mut args = vec!["keys", "export", "alice@example.org"];
        if secret {
            args.extend(["--secret", "--unprotected"]);
        }
        let exported = s.ok(&args);
        assert!(exported.starts_with("-----BEGIN PGP"));
        let other = Gpg::new();
        other.ok_with_input(&["--import"], exported.as_bytes());
        assert_eq!(other.fingerprint("alice@example.org"), fpr);
        if secret {
            let listing = other.ok(&["--list-secret-keys", "--with-colons"]);
            assert!(String::from_utf8_lossy(&listing).contains(&fpr));
        }
    }
}

#[test]
fn sq_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("bob.key");
    sq(&[
        "key",
        "generate",
        "--userid",
        "Bob <bob@example.net>",
        "--export",
        key.to_str().unwrap(),
    ]);
    let s = Sealpost::new();
    let out = s.ok(&["keys", "import", key.to_str().unwrap()]);
    assert!(out.contains("[secret key]"), "{out}");
    let fpr = out.split_whitespace().nth(1).unwrap().to_string();

    let exported = s.ok(&["keys", "export", "bob@example.net"]);
    let cert = write(tmp.path(), "bob.cert", exported.as_bytes());
    let inspect = String::from_utf8(sq(&["inspect", cert.to_str().unwrap()])).unwrap();
    assert!(inspect.contains(&fpr), "{inspect}");
    assert!(inspect.contains("OpenPGP Certificate"), "{inspect}");

    let exported = s.ok(&["keys", "export", "--secret", "--unprotected", &fpr]);
    let tsk = write(tmp.path(), "bob.tsk", exported.as_bytes());
    let inspect = String::from_utf8(sq(&["inspect", tsk.to_str().unwrap()])).unwrap();
    assert!(inspect.contains(&fpr), "{inspect}");
    assert!(inspect.contains("Transferable Secret Key"), "{inspect}");

    // sq can encrypt to the exported certificate, and decrypt with the exported key.
    let msg = write(tmp.path(), "msg.txt", b"hello from sq\n");
    let enc = tmp.path().join("msg.pgp");
    sq(&[
        "encrypt",
        "--recipient-cert",
        cert.to_str().unwrap(),
        "--output",
        enc.to_str().unwrap(),
        msg.to_str().unwrap(),
    ]);
    let plain = sq(&[
        "decrypt",
        "--recipient-key",
        tsk.to_str().unwrap(),
        enc.to_str().unwrap(),
    ]);
    assert_eq!(plain, b"hello from sq\n");
}

#[test]
fn generated_key_works_in_gpg() {
    let s = Sealpost::new();
    let fpr = s.generate("carol@example.com", &["--name", "Carol Example"]);
    assert_eq!(fpr.len(), 40, "a v4 fingerprint by default: {fpr}");
    let shown = s.ok(&["keys", "show", "carol@example.com"]);
    assert!(
        shown.contains("Carol Example <carol@example.com>"),
        "{shown}"
    );
    assert!(shown.contains("[secret key]"), "{shown}");

    let gpg = Gpg::new();
    let cert = s.ok(&["keys", "export", "carol@example.com"]);
    gpg.ok_with_input(&["--import"], cert.as_bytes());
    assert_eq!(gpg.fingerprint("carol@example.com"), fpr);
    let ciphertext = gpg.ok_with_input(
        &["--armor", "--encrypt", "--recipient", "carol@example.com"],
        b"to carol",
    );
    assert!(ciphertext.starts_with(b"-----BEGIN PGP MESSAGE-----"));

    // And the secret key decrypts what gpg encrypted, once imported into gpg.
    let tsk = s.ok(&["keys", "export", "--secret", "--unprotected", &fpr]);
    gpg.ok_with_input(&["--import"], tsk.as_bytes());
    let plain = gpg.ok_with_input(&["--decrypt"], &ciphertext);
    assert_eq!(plain, b"to carol");
}

#[test]
fn rfc9580_and_rsa_profiles() {
    let s = Sealpost::new();
    let v6 = s.generate("dave@example.com", &["--profile", "rfc9580"]);
    assert_eq!(v6.len(), 64, "v6 fingerprints are 32 bytes: {v6}");
    let rsa = s.generate("erin@example.com", &["--cipher", "rsa3k"]);
    let info = s.ok(&["keys", "show", &rsa]);
    assert!(info.contains("RSA"), "{info}");
    for (_, status) in statuses(&s) {
        assert_eq!(status, "usable");
    }
}

#[test]
fn expired_revoked_and_sign_only_keys_are_reported_and_not_usable() {
    let gpg = Gpg::new();
    // Made in 2020 with a one-year lifetime: long expired now.
    gpg.ok(&[
        "--faked-system-time",
        "20200101T000000",
        "--quick-gen-key",
        "<expired@example.org>",
        "default",
        "default",
        "1y",
    ]);
    let expired = gpg.fingerprint("expired@example.org");
    let revoked = gpg.generate("<revoked@example.org>", "default", "default", "never");
    let sign_only = gpg.generate("<signonly@example.org>", "ed25519", "sign", "never");

    let s = Sealpost::new();
    let all = gpg.ok(&["--armor", "--export"]);
    s.run_with_input(&["keys", "import", "-"], &all);
    let before = statuses(&s);
    assert_eq!(before.len(), 3, "{before:?}");

    // The revocation certificate arrives later and revokes.
    let rev = gpg.revocation_cert(&revoked);
    let out = s.run_with_input(&["keys", "import", "-"], &rev);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("updated"));

    let status_of = |fpr: &str| {
        statuses(&s)
            .into_iter()
            .find(|(f, _)| f == fpr)
            .map(|(_, st)| st)
            .expect("listed")
    };
    assert_eq!(status_of(&expired), "expired");
    assert_eq!(status_of(&revoked), "revoked");
    assert_eq!(status_of(&sign_only), "no-encryption-subkey");

    let text = s.ok(&["keys", "list"]);
    assert!(text.contains("expired on 2020-12-31"), "{text}");
    assert!(text.to_lowercase().contains("revoked"), "{text}");
    assert!(text.contains("no encryption"), "{text}");
}

#[test]
fn bad_input_changes_nothing_and_says_why() {
    let s = Sealpost::new();
    s.generate("frank@example.com", &[]);
    let before = s.ok(&["keys", "list", "--json"]);
    let tmp = tempfile::tempdir().unwrap();

    let gpg = Gpg::new();
    let fpr = gpg.generate("<gina@example.org>", "default", "default", "never");
    let cert = gpg.ok(&["--export", &fpr]);
    let truncated = cert[..cert.len() / 2].to_vec();
    let mut random = vec![0u8; 50 * 1024 * 1024];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in random.chunks_mut(8) {
        // xorshift: cheap, deterministic noise.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage.asc", b"this is not a key\n".to_vec()),
        ("empty.asc", Vec::new()),
        ("truncated.pgp", truncated),
        ("random.bin", random),
    ];
    for (name, data) in cases {
        let path = write(tmp.path(), name, &data);
        let err = s.fails(&["keys", "import", path.to_str().unwrap()], 1);
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "one line for {name}: {err}"
        );
        assert!(err.contains(name), "the error names the file: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(
            s.ok(&["keys", "list", "--json"]),
            before,
            "{name} changed the keyring"
        );
    }
    // Several files are one change: a good file next to a bad one is not imported either.
    let good = write(
        tmp.path(),
        "good.asc",
        &gpg.ok(&["--armor", "--export", &fpr]),
    );
    let bad = write(tmp.path(), "bad.asc", b"not a key");
    let err = s.fails(
        &[
            "keys",
            "import",
            good.to_str().unwrap(),
            bad.to_str().unwrap(),
        ],
        1,
    );
    assert!(err.contains("bad.asc"), "{err}");
    assert_eq!(s.ok(&["keys", "list", "--json"]), before);
    // A file that does not exist, and usage errors.
    let err = s.fails(&["keys", "import", "/nonexistent/key.asc"], 1);
    assert!(err.contains("/nonexistent/key.asc"), "{err}");
    s.fails(&["keys", "frobnicate"], 2);
    s.fails(&["keys", "generate"], 2);
    s.fails(&["keys", "show", "nobody@example.org"], 1);
    s.fails(&["keys", "remove", "ABCD"], 1);
    assert_eq!(s.ok(&["keys", "list", "--json"]), before);
}

#[test]
fn remove_and_persistence() {
    let s = Sealpost::new();
    let a = s.generate("henry@example.com", &[]);
    let b = s.generate("iris@example.com", &[]);
    // Every command is a new process: the keyring survives restarts.
    assert_eq!(statuses(&s).len(), 2);
    let out = s.ok(&["keys", "remove", &a]);
    assert!(out.contains("secret key"), "{out}");
    let left = statuses(&s);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].0, b);
    s.fails(&["keys", "show", "henry@example.com"], 1);
}

#[test]
fn secret_keys_are_encrypted_at_rest_with_a_passphrase() {
    let s = Sealpost::with_passphrase("correct horse battery staple");
    let fpr = s.generate("judy@example.com", &[]);
    let out = s.run(&["keys", "list"]);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("no keyring passphrase"),
        "no warning when a passphrase is set"
    );
    // The export is usable (decrypted with the keyring passphrase) ...
    let tsk = s.ok(&["keys", "export", "--secret", "--unprotected", &fpr]);
    let gpg = Gpg::new();
    gpg.ok_with_input(&["--import"], tsk.as_bytes());
    // ... while no file in the data directory holds the unencrypted secret key.
    let secret_mpi = secret_material(&tsk);
    for entry in walk(&s.data_dir()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !contains(&bytes, &secret_mpi),
            "{} holds the secret key in the clear",
            entry.display()
        );
    }
}

/// The raw secret key material of the first secret key in an armored TSK, read from the
/// hex dump that `sq packet dump --mpis` prints under "Unencrypted".
fn secret_material(tsk: &str) -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let f = write(tmp.path(), "k.asc", tsk.as_bytes());
    let dump = String::from_utf8(sq(&["packet", "dump", "--mpis", f.to_str().unwrap()])).unwrap();
    let mut bytes = Vec::new();
    let mut in_secret = false;
    for line in dump.lines() {
        let t = line.trim();
        if t == "Unencrypted" {
            in_secret = true;
            continue;
        }
        if !in_secret {
            continue;
        }
        let is_hex_row =
            t.len() > 10 && t[..8].chars().all(|c| c.is_ascii_hexdigit()) && &t[8..10] == "  ";
        if is_hex_row {
            // "00000000  f7 8a 86 ...  label": up to 16 two-digit groups after the offset.
            for group in t[10..].split_whitespace().take(16) {
                match u8::from_str_radix(group, 16) {
                    Ok(b) if group.len() == 2 => bytes.push(b),
                    _ => break,
                }
            }
        } else if !bytes.is_empty() {
            break;
        }
    }
    assert!(bytes.len() >= 16, "no secret key material in dump: {dump}");
    bytes
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.len() >= 16 && hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn killed_import_leaves_a_consistent_store() {
    // A keyring of many certificates, so that the import takes a while.
    let source = Sealpost::new();
    for i in 0..40 {
        source.generate(&format!("user{i}@example.com"), &[]);
    }
    let mut all = Vec::new();
    for i in 0..40 {
        all.extend_from_slice(
            source
                .ok(&["keys", "export", &format!("user{i}@example.com")])
                .as_bytes(),
        );
    }
    let s = Sealpost::new();
    let tmp = tempfile::tempdir().unwrap();
    let file = write(tmp.path(), "all.asc", &all);
    for delay_ms in [5u64, 20, 60] {
        let mut child = s
            .command()
            .args(["keys", "import", file.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        // Whatever the moment of the kill: the store opens, and holds all or none.
        let n = statuses(&s).len();
        assert!(
            n == 0 || n == 40,
            "partial import after kill at {delay_ms} ms: {n}"
        );
    }
    s.ok(&["keys", "import", file.to_str().unwrap()]);
    assert_eq!(statuses(&s).len(), 40);
}

/// `keyring copy` carries what `keys backup` does, not only certificates: a key found by
/// Autocrypt keeps its trust, the key queued for review still waits, and the database
/// ends up with every record of the data directory's keyring. A second run reports the
/// certificates unchanged.
#[test]
fn keyring_copy_keeps_trust_the_review_queue_and_autocrypt_state() {
    use base64::Engine;

    use super::common::swaks_to;
    use super::upstream::{free_port, SmtpSink};

    let old = Sealpost::with_passphrase("the fleet's passphrase");
    old.generate("henry@example.org", &[]);
    let [carol, carol2] = std::array::from_fn(|_| Gpg::new());
    carol.generate("<carol@example.net>", "default", "default", "never");
    carol2.generate("<carol@example.net>", "default", "default", "never");
    let (first, second) = (
        carol.fingerprint("carol@example.net"),
        carol2.fingerprint("carol@example.net"),
    );
    let sink = SmtpSink::start(&[]);
    let inbound = free_port();
    let config = format!(
        "hostname = \"mx.example.org\"\n\n\
         [[listener]]\nmode = \"inbound\"\naddress = \"127.0.0.1:{inbound}\"\ntls = \"none\"\n\n\
         [inbound]\ndeliver = \"{}\"\nlocal_domains = [\"example.org\"]\n",
        sink.address()
    );
    let mut gw = old.serve(&config, &[]);
    for (n, g) in [&carol, &carol2].into_iter().enumerate() {
        let keydata = base64::engine::general_purpose::STANDARD
            .encode(g.ok(&["--export", "carol@example.net"]));
        let (ok, out) = swaks_to(
            inbound,
            "carol@example.net",
            "henry@example.org",
            &[
                "--header",
                "From: <carol@example.net>",
                "--header",
                &format!("Autocrypt: addr=carol@example.net; keydata={keydata}"),
                "--body",
                "hi",
            ],
        );
        assert!(ok, "{out}");
        sink.wait_messages(n + 1, Duration::from_secs(30));
    }
    assert!(gw.terminate().success());
    let review = old.ok(&["keys", "review", "list"]);
    assert!(review.contains(&second), "{review}");

    let backup = old.dir.path().join("backup.pgp");
    let pass = old.dir.path().join("passphrase");
    let backed_up = old.run(&[
        "keys",
        "backup",
        backup.to_str().unwrap(),
        "--passphrase-file",
        pass.to_str().unwrap(),
    ]);
    let records = |text: &str| -> usize {
        let before = text
            .split(" other records")
            .next()
            .unwrap_or_else(|| panic!("no record count in {text}"));
        before
            .rsplit(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no record count in {text}"))
    };
    let in_source = records(&String::from_utf8_lossy(&backed_up.stdout));
    // Carol's trust record, the queued key, Carol's Autocrypt state and Henry's
    // revocation certificate at least.
    assert!(in_source >= 4, "{in_source}");

    let pg = super::postgres::Postgres::start();
    let url = pg.database("copied");
    let from = old.data_dir();
    let args = [
        "keyring",
        "copy",
        "--from",
        from.to_str().unwrap(),
        "--to",
        url.as_str(),
    ];
    let out = old.ok(&args);
    assert!(
        out.contains("2 new, 0 updated, 0 unchanged; 1 with a secret key"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{in_source} trust, review, Autocrypt and revocation record(s)"
        )),
        "{out}"
    );
    let out = old.ok(&args);
    assert!(out.contains("0 new, 0 updated, 2 unchanged"), "{out}");

    // The database's keyring, as a gateway on it sees it.
    let fresh = Sealpost::with_passphrase("the fleet's passphrase");
    let on_db = |args: &[&str]| {
        let mut c = fresh.command();
        let out = c
            .env("SEALPOST_KEYRING_URL", &url)
            .args(args)
            .output()
            .expect("sealpost");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    let shown = String::from_utf8_lossy(&on_db(&["keys", "show", &first]).stdout).into_owned();
    assert!(
        shown.contains("trust:   autocrypt (found by autocrypt"),
        "{shown}"
    );
    let review = String::from_utf8_lossy(&on_db(&["keys", "review", "list"]).stdout).into_owned();
    assert!(review.contains(&second), "{review}");
    let copied_backup = fresh.dir.path().join("copied.pgp");
    let pass = fresh.dir.path().join("passphrase");
    let backed_up = on_db(&[
        "keys",
        "backup",
        copied_backup.to_str().unwrap(),
        "--passphrase-file",
        pass.to_str().unwrap(),
    ]);
    assert_eq!(
        records(&String::from_utf8_lossy(&backed_up.stdout)),
        in_source
    );
}
