//! Deleted means gone, and one passphrase covers everything, through the real binary.
//!
//! sled keeps removed values in its files. These tests read those raw files the way an
//! attacker with a copy of the data directory would: with every key the directory holds
//! (the older `spool.key`, and each key an unsealed vault keeps), they decrypt whatever
//! looks like a sealed record and look for what was removed. Before the removal they find
//! it, so the search is known to work; after it, nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};

use super::common::{write, Sealpost};
use super::secrets::{secret_material, send_encrypted_body, Gateway};
use super::upstream::{wait_for, ScriptedUpstream};

const LONG: Duration = Duration::from_secs(60);
/// The vault's layout (see `keyring/src/vault.rs`): a header, then fixed-size slots whose
/// first byte says whether they are used; unsealed, bytes 2..34 are the key.
const VAULT_HEADER: usize = 128;
const VAULT_SLOT: usize = 80;

/// Every 32-byte key in `data`: the spool key file that older versions wrote, and the
/// keys of an unsealed vault's used slots.
fn keys_on_disk(data: &Path) -> Vec<[u8; 32]> {
    let mut keys = Vec::new();
    if let Ok(k) = std::fs::read(data.join("spool.key")) {
        keys.extend(<[u8; 32]>::try_from(k.as_slice()).ok());
    }
    if let Ok(v) = std::fs::read(data.join("vault")) {
        assert_eq!(v.get(16), Some(&0), "these tests read an unsealed vault");
        for slot in v[VAULT_HEADER..].chunks_exact(VAULT_SLOT) {
            if slot[0] != 0 {
                keys.extend(<[u8; 32]>::try_from(&slot[2..34]).ok());
            }
        }
    }
    keys
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read dir") {
        let e = e.expect("dir entry");
        let kind = e.file_type().expect("file type");
        if kind.is_dir() {
            out.extend(files_under(&e.path()));
        } else if kind.is_file() {
            // Not the admin socket.
            out.push(e.path());
        }
    }
    out
}

/// Where in `data`'s files a sealed record opens, with one of `keys`, to bytes that
/// `found` recognises. A record is a format byte (1: older, nonce next; 2: vault, slot
/// number then nonce), a 24-byte nonce and XChaCha20-Poly1305 ciphertext; the key stream
/// alone decrypts it (the tag is not needed to read it), from block 1.
fn readable(data: &Path, keys: &[[u8; 32]], found: impl Fn(&[u8]) -> bool) -> Vec<String> {
    let mut hits = Vec::new();
    for file in files_under(data) {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name == "vault" || name == "spool.key" {
            continue;
        }
        let raw = std::fs::read(&file).expect("read raw file");
        for j in 0..raw.len() {
            let nonce_at = match raw[j] {
                1 => j + 1,
                2 => j + 5,
                _ => continue,
            };
            let start = nonce_at + 24;
            if start + 16 >= raw.len() {
                continue;
            }
            let nonce = &raw[nonce_at..start];
            let end = raw.len().min(start + 4096);
            for key in keys {
                let mut window = raw[start..end].to_vec();
                let mut cipher = chacha20::XChaCha20::new(key.into(), nonce.into());
                cipher.seek(64u64);
                cipher.apply_keystream(&mut window);
                if found(&window) {
                    hits.push(format!("{} at {j}", file.display()));
                }
            }
        }
    }
    hits
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A copy of `from` (a data directory in use) at `to`, as an attacker's backup would be.
fn snapshot(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp");
    assert!(status.success());
}

fn inbound_to(target: &str, extra: &str) -> String {
    format!(
        "[[listener]]\nmode = \"inbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\n\
         [inbound]\ndeliver = \"{target}\"\nlocal_domains = [\"example.org\"]\n\n\
         [delivery]\nbudget = \"1s\"\nretry = \"1s\"\n{extra}"
    )
}

/// An entry is opened while it is spooled, and not at all once it is delivered: its record
/// is still in sled's files, but its key is gone.
#[test]
fn a_delivered_spool_entry_cannot_be_opened_from_the_raw_files() {
    let s = Sealpost::new();
    s.generate("bob@example.org", &[]);
    // It stalls after the data of the first attempt: the budget runs out and the copy is
    // spooled; a later attempt delivers it.
    let upstream = ScriptedUpstream::start();
    upstream.stall_after_data(Duration::from_secs(5), 1);
    let gw = Gateway::start(&s, &inbound_to(&upstream.address(), ""), &[], &[]);
    send_encrypted_body(&s, gw.port, "bob@example.org", b"shredding marker text\n");
    let queue = s.ok(&["queue", "list"]);
    assert!(queue.contains("bob@example.org"), "{queue}");
    let copy = s.dir.path().join("while-spooled");
    snapshot(&s.data_dir(), &copy);

    let got = upstream.wait_received(1, LONG);
    assert!(contains(&got[0].data, b"shredding marker text"));
    wait_for(LONG, "an empty spool", || {
        (!s.ok(&["queue", "list"]).contains("bob@example.org")).then_some(())
    });
    drop(gw);

    let entry = |w: &[u8]| w.starts_with(b"{\"id\":\"");
    let before = readable(&copy, &keys_on_disk(&copy), entry);
    assert!(
        !before.is_empty(),
        "the spooled entry should open from the copy"
    );
    let after = readable(&s.data_dir(), &keys_on_disk(&s.data_dir()), entry);
    assert!(
        after.is_empty(),
        "a delivered entry still opens from the raw files: {after:?}"
    );
}

/// `keys remove` leaves nothing of the secret key that any key on disk opens.
#[test]
fn a_removed_secret_key_cannot_be_read_from_the_raw_files() {
    let s = Sealpost::new();
    let fpr = s.generate("carol@example.org", &[]);
    let export = s.ok(&[
        "keys",
        "export",
        "--secret",
        "--unprotected",
        "carol@example.org",
    ]);
    let secrets = secret_material(export.as_bytes());
    let needle = |w: &[u8]| {
        secrets
            .iter()
            .any(|m| contains(w, &m[m.len().saturating_sub(16)..]))
    };
    let in_the_clear = |dir: &Path| {
        files_under(dir)
            .into_iter()
            .filter(|f| needle(&std::fs::read(f).expect("read")))
            .count()
    };
    let data = s.data_dir();
    let before = readable(&data, &keys_on_disk(&data), needle).len() + in_the_clear(&data);
    assert!(before > 0, "the secret key should open while it is there");
    s.ok(&["keys", "remove", &fpr]);
    let after = readable(&data, &keys_on_disk(&data), needle);
    assert!(
        after.is_empty(),
        "the removed secret key still opens: {after:?}"
    );
    assert_eq!(
        in_the_clear(&data),
        0,
        "the removed secret key is in the clear"
    );
}

/// A data directory used without a passphrase is sealed by `keyring passphrase set`, with
/// mail in its spool; each mismatch after that has its own message; `change` moves
/// everything to a new passphrase; and the spooled mail is delivered afterwards.
#[test]
fn passphrase_set_and_change_seal_everything_and_strand_nothing() {
    let mut s = Sealpost::new();
    s.generate("bob@example.org", &[]);
    let stuck = ScriptedUpstream::start();
    stuck.stall_after_data(Duration::from_secs(600), 10);
    {
        let gw = Gateway::start(&s, &inbound_to(&stuck.address(), ""), &[], &[]);
        send_encrypted_body(&s, gw.port, "bob@example.org", b"spooled across a rekey\n");
        assert!(s.ok(&["queue", "list"]).contains("bob@example.org"));
    }
    let one = write(s.dir.path(), "one.pass", b"first passphrase\n");
    let two = write(s.dir.path(), "two.pass", b"second passphrase\n");

    // A passphrase added by itself would cover only what comes after: refused, with the
    // command that fixes it.
    s.passphrase_file = Some(one.clone());
    let err = s.fails(&["keys", "list"], 1);
    assert!(err.contains("keyring passphrase set"), "{err}");
    assert!(!err.contains("wrong"), "{err}");

    s.passphrase_file = None;
    let out = s.ok(&[
        "keyring",
        "passphrase",
        "set",
        "--new-passphrase-file",
        one.to_str().expect("path"),
    ]);
    assert!(out.contains("1 secret key(s) and 1 spooled copy"), "{out}");
    // Without the passphrase nothing opens: no command, no unsealed key added beside the
    // sealed ones, and no server that would send mail unsigned.
    for args in [
        &["keys", "list"][..],
        &["queue", "list"],
        &["keys", "generate", "eve@example.org"],
        &["serve", "--listen", "127.0.0.1:0"],
    ] {
        let err = s.fails(args, 1);
        assert!(
            err.contains("set SEALPOST_PASSPHRASE_FILE"),
            "{}: {err}",
            args.join(" ")
        );
    }
    s.passphrase_file = Some(two.clone());
    let err = s.fails(&["keys", "list"], 1);
    assert!(err.contains("is wrong"), "{err}");
    let err = s.fails(
        &[
            "keyring",
            "passphrase",
            "set",
            "--new-passphrase-file",
            two.to_str().expect("path"),
        ],
        1,
    );
    assert!(err.contains("passphrase change"), "{err}");

    s.passphrase_file = None;
    s.ok(&[
        "keyring",
        "passphrase",
        "change",
        "--old-passphrase-file",
        one.to_str().expect("path"),
        "--new-passphrase-file",
        two.to_str().expect("path"),
    ]);
    s.passphrase_file = Some(one);
    assert!(s.fails(&["keys", "list"], 1).contains("is wrong"));
    s.passphrase_file = Some(two);
    assert!(s.ok(&["keys", "list"]).contains("bob@example.org"));
    assert!(s.ok(&["queue", "list"]).contains("bob@example.org"));
    let secret = s.ok(&[
        "keys",
        "export",
        "--secret",
        "--unprotected",
        "bob@example.org",
    ]);
    assert!(secret.contains("PRIVATE KEY BLOCK"));

    // The spooled copy, sealed before both changes, is delivered under the new one.
    let open = ScriptedUpstream::start();
    let gw = Gateway::start(&s, &inbound_to(&open.address(), ""), &[], &[]);
    let got = open.wait_received(1, LONG);
    assert!(contains(&got[0].data, b"spooled across a rekey"));
    assert!(!gw.log().contains("ERROR"), "{}", gw.log());
}
