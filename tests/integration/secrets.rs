//! Secrets at rest and in logs (security.md rule 9) through the real binary: verbose logs
//! never carry secret key material, decrypted mail and the spool are private whatever the
//! umask, the upstream's trust anchors are exactly `ca_file`, and a secret key leaves the
//! keyring encrypted unless the admin asks otherwise.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use sealpost_keyring::openpgp;

use super::common::{bin, swaks_to, Gpg, Sealpost};
use super::upstream::{wait_for, ScriptedUpstream, UpstreamTlsMode};

const LONG: Duration = Duration::from_secs(60);

/// `sealpost ARGS` for `s`, without the harness's `RUST_LOG`, so that `-v`/`-vv` decide
/// the log level, killed if it has not finished after `limit`.
fn run_verbose(s: &Sealpost, args: &[&str], limit: Duration) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.arg(limit.as_secs().to_string()).arg(bin());
    cmd.arg("--data-dir").arg(s.data_dir()).args(args);
    cmd.env_remove("RUST_LOG").env_remove("SEALPOST_DATA_DIR");
    match &s.passphrase_file {
        Some(f) => cmd.env("SEALPOST_PASSPHRASE_FILE", f),
        None => cmd.env_remove("SEALPOST_PASSPHRASE_FILE"),
    };
    let out = cmd.stdin(Stdio::null()).output().expect("spawn timeout");
    assert_ne!(
        out.status.code(),
        Some(124),
        "sealpost {} did not finish within {limit:?}; stderr: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The secret key material of every key in `armored` (a secret key in the clear), each as
/// the bytes that follow its packet's public part.
pub(super) fn secret_material(armored: &[u8]) -> Vec<Vec<u8>> {
    use openpgp::packet::key::SecretKeyMaterial;
    use openpgp::parse::Parse;
    use openpgp::serialize::MarshalInto;

    let cert = openpgp::Cert::from_bytes(armored).expect("an exported secret key");
    let mut all = Vec::new();
    for ka in cert.keys().secret() {
        match ka.key().optional_secret() {
            Some(SecretKeyMaterial::Unencrypted(u)) => {
                all.push(u.map(|m| m.to_vec().expect("serialize secret MPIs")))
            }
            other => panic!("expected unencrypted secret material, got {other:?}"),
        }
    }
    assert!(!all.is_empty(), "no secret keys in the export");
    all
}

/// Panics if `log` holds 16 consecutive bytes of any of `secrets` in any form a log line
/// might use: sled's decimal byte lists (`[12, 200, …]`), hex, or base64.
fn assert_no_secret_in(log: &str, secrets: &[Vec<u8>], what: &str) {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    for secret in secrets {
        // The last 16 bytes are the key itself, past the MPI's bit count.
        let window = &secret[secret.len().saturating_sub(16)..];
        assert_eq!(window.len(), 16, "secret material too short: {secret:?}");
        let decimal = window
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let hex: String = window.iter().map(|b| format!("{b:02x}")).collect();
        let mut forms = vec![decimal, hex.clone(), hex.to_uppercase()];
        // Base64 depends on where the bytes start modulo 3: one of these offsets aligns.
        for skip in 0..3 {
            forms.push(b64.encode(&window[skip..skip + 12]));
        }
        for form in forms {
            assert!(
                !log.contains(&form),
                "{what}: the log holds secret key material ({form})"
            );
        }
    }
}

#[test]
fn verbose_keys_generate_finishes_and_logs_no_secret() {
    let s = Sealpost::new();
    for flag in ["-v", "-vv"] {
        let email = format!("a{}@example.org", flag.len());
        let out = run_verbose(
            &s,
            &[flag, "keys", "generate", &email],
            Duration::from_secs(30),
        );
        assert!(out.status.success(), "{out:?}");
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        let export = s.ok(&["keys", "export", "--secret", "--unprotected", &email]);
        assert_no_secret_in(
            &log,
            &secret_material(export.as_bytes()),
            &format!("keys generate {flag}"),
        );
    }
}

/// A running `serve` started through `sh -c 'umask 000; exec …'`, its standard error in a
/// file; killed when dropped.
pub(super) struct Gateway {
    child: std::process::Child,
    pub(super) port: u16,
    stderr: PathBuf,
}

impl Gateway {
    pub(super) fn start(
        s: &Sealpost,
        config: &str,
        args: &[&str],
        env: &[(&str, &Path)],
    ) -> Gateway {
        let config_path = s.dir.path().join("secrets.toml");
        std::fs::write(&config_path, config).expect("write config");
        let stderr = s.dir.path().join("serve.stderr");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("umask 000; exec \"$0\" \"$@\"")
            .arg(bin())
            .arg("--data-dir")
            .arg(s.data_dir())
            .args(args)
            .arg("serve")
            .arg("--config")
            .arg(&config_path);
        cmd.env_remove("RUST_LOG").env_remove("SEALPOST_DATA_DIR");
        match &s.passphrase_file {
            Some(f) => cmd.env("SEALPOST_PASSPHRASE_FILE", f),
            None => cmd.env_remove("SEALPOST_PASSPHRASE_FILE"),
        };
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("spawn sealpost serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let mut port = None;
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| {
                    panic!(
                        "serve did not start: {}",
                        std::fs::read_to_string(&stderr).unwrap_or_default()
                    )
                });
            if let Some(rest) = line.split("listener on ").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or_default();
                port = addr.rsplit(':').next().and_then(|p| p.parse().ok());
            }
            if line.contains("outbound mail goes to") {
                break;
            }
        }
        Gateway {
            child,
            port: port.expect("serve printed a listener"),
            stderr,
        }
    }

    pub(super) fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An inbound listener delivering to the Maildir `maildir`.
fn inbound_config(maildir: &Path) -> String {
    format!(
        "[[listener]]\nmode = \"inbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\n\
         [inbound]\ndeliver = \"maildir:{}\"\nlocal_domains = [\"example.org\"]\n",
        maildir.display()
    )
}

/// Files in `dir/new`, once at least one is there.
fn delivered_files(maildir: &Path) -> Vec<PathBuf> {
    wait_for(LONG, "a message in the Maildir", || {
        let files: Vec<PathBuf> = std::fs::read_dir(maildir.join("new"))
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        (!files.is_empty()).then_some(files)
    })
}

/// gpg encrypts a short message to `to` (whose certificate `s` exports) and sends it to
/// the inbound listener on `port`.
fn send_encrypted(s: &Sealpost, port: u16, to: &str) {
    send_encrypted_body(s, port, to, b"secret body\n");
}

/// As [`send_encrypted`], with `body` as the plaintext.
pub(super) fn send_encrypted_body(s: &Sealpost, port: u16, to: &str, body: &[u8]) {
    let gpg = Gpg::new();
    gpg.ok_with_input(&["--import"], s.ok(&["keys", "export", to]).as_bytes());
    let armored = gpg.ok_with_input(&["--armor", "--encrypt", "-r", to], body);
    let file = s.dir.path().join("message.asc");
    std::fs::write(&file, armored).expect("write message");
    let (ok, transcript) = swaks_to(
        port,
        "alice@example.net",
        to,
        &["--body", &format!("@{}", file.display())],
    );
    assert!(ok, "{transcript}");
}

#[test]
fn serve_vv_logs_no_secret_while_keys_are_made_and_used() {
    let s = Sealpost::new();
    let maildir = s.dir.path().join("Maildir");
    let gw = Gateway::start(&s, &inbound_config(&maildir), &["-vv"], &[]);
    // Generated through the admin socket: the server itself stores the secret key.
    s.generate("bob@example.org", &[]);
    send_encrypted(&s, gw.port, "bob@example.org");
    let files = delivered_files(&maildir);
    let copy = std::fs::read_to_string(&files[0]).expect("read the copy");
    assert!(copy.contains("encryption=decrypted"), "{copy}");
    let export = s.ok(&[
        "keys",
        "export",
        "--secret",
        "--unprotected",
        "bob@example.org",
    ]);
    let log = gw.log();
    assert_no_secret_in(&log, &secret_material(export.as_bytes()), "serve -vv");
}

/// The permission bits of `path`.
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o7777
}

/// Every directory and file under `root` (itself included), with its mode, sockets left
/// out (their mode is checked on its own).
fn tree_modes(root: &Path) -> Vec<(PathBuf, u32, bool)> {
    use std::os::unix::fs::FileTypeExt;
    let mut all = vec![(root.to_path_buf(), mode(root), true)];
    for entry in std::fs::read_dir(root).expect("read dir") {
        let entry = entry.expect("dir entry");
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            all.extend(tree_modes(&entry.path()));
        } else if !kind.is_socket() {
            all.push((entry.path(), mode(&entry.path()), false));
        }
    }
    all
}

#[test]
fn decrypted_mail_is_private_under_umask_000_and_shared_secrets_are_reported() {
    use std::os::unix::fs::PermissionsExt;
    let s = Sealpost::with_passphrase("correct horse");
    let passphrase = s.passphrase_file.clone().expect("passphrase file");
    std::fs::set_permissions(&passphrase, std::fs::Permissions::from_mode(0o644))
        .expect("chmod passphrase");
    std::fs::create_dir(s.data_dir()).expect("data dir");
    std::fs::set_permissions(s.data_dir(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod data dir");
    s.generate("bob@example.org", &[]);
    let maildir = s.dir.path().join("mail").join("Maildir");
    let gw = Gateway::start(&s, &inbound_config(&maildir), &[], &[]);
    send_encrypted(&s, gw.port, "bob@example.org");
    let files = delivered_files(&maildir);
    let copy = std::fs::read_to_string(&files[0]).expect("read the copy");
    assert!(copy.contains("encryption=decrypted"), "{copy}");
    for (path, m, is_dir) in tree_modes(&maildir) {
        let want = if is_dir { 0o700 } else { 0o600 };
        assert_eq!(m, want, "{} is mode {m:04o}", path.display());
    }
    // Reported, and left as the admin made them.
    let log = gw.log();
    for (path, m) in [(s.data_dir(), "0755"), (passphrase, "0644")] {
        let line = log
            .lines()
            .find(|l| l.contains(&path.display().to_string()) && l.contains("WARN"))
            .unwrap_or_else(|| panic!("no warning about {}: {log}", path.display()));
        assert!(line.contains(&format!("mode {m}")), "{line}");
    }
    assert_eq!(mode(&s.data_dir()), 0o755);
}

#[test]
fn the_spool_is_private_under_umask_000() {
    let s = Sealpost::new();
    s.generate("bob@example.org", &[]);
    // A next hop that stalls after the data: the budget runs out and the copy is spooled.
    let upstream = ScriptedUpstream::start();
    upstream.stall_after_data(Duration::from_secs(20), 1);
    let target = upstream.address();
    let config = format!(
        "[[listener]]\nmode = \"inbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\n\
         [inbound]\ndeliver = \"{target}\"\nlocal_domains = [\"example.org\"]\n\n\
         [delivery]\nbudget = \"1s\"\n"
    );
    let gw = Gateway::start(&s, &config, &[], &[]);
    send_encrypted(&s, gw.port, "bob@example.org");
    let queue = s.ok(&["queue", "list"]);
    assert!(queue.contains("bob@example.org"), "{queue}");
    let spool = s.data_dir().join("spool");
    assert!(spool.is_dir(), "no spool database in {}", spool.display());
    for (path, m, is_dir) in tree_modes(&s.data_dir()) {
        let want = if is_dir { 0o700 } else { 0o600 };
        assert_eq!(m, want, "{} is mode {m:04o}", path.display());
    }
    assert!(
        !gw.log().contains("open to group or others"),
        "{}",
        gw.log()
    );
}

#[test]
fn ca_file_replaces_the_system_roots() {
    let up = ScriptedUpstream::start_tls(UpstreamTlsMode::Implicit);
    let other = ScriptedUpstream::start_tls(UpstreamTlsMode::Implicit);
    let s = Sealpost::new();
    // The "system" store (rustls-native-certs reads SSL_CERT_FILE instead of /etc/ssl)
    // trusts the upstream's own CA; `ca_file` names another CA.
    let system = s.dir.path().join("system-roots.pem");
    std::fs::write(&system, &up.ca_pem).expect("write system roots");
    let ca = s.dir.path().join("internal-ca.pem");
    std::fs::write(&ca, &other.ca_pem).expect("write ca_file");
    let config = format!(
        "[[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\n\
         [upstream]\naddress = \"localhost:{}\"\ntls = \"tls\"\n",
        up.port
    );
    let env = [("SSL_CERT_FILE", system.as_path())];
    {
        // Without ca_file the system store applies: the upstream is trusted.
        let gw = Gateway::start(&s, &config, &[], &env);
        let (ok, out) = swaks_to(gw.port, "a@example.org", "b@example.net", &[]);
        assert!(ok, "{out}");
        assert_eq!(up.wait_received(1, LONG).len(), 1);
    }
    let with_ca = format!("{config}ca_file = \"{}\"\n", ca.display());
    let gw = Gateway::start(&s, &with_ca, &[], &env);
    let (ok, out) = swaks_to(gw.port, "a@example.org", "c@example.net", &[]);
    assert!(!ok, "an upstream outside ca_file was trusted: {out}");
    assert!(out.contains("<** 451 4.4"), "{out}");
    assert_eq!(up.received().len(), 1, "nothing more reached the upstream");
}

/// gpg in `home`, with the passphrase read from `passphrase_file`.
fn gpg_with_passphrase(home: &Path, passphrase_file: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut cmd = Command::new("gpg");
    cmd.env("GNUPGHOME", home)
        .args([
            "--batch",
            "--no-tty",
            "--quiet",
            "--pinentry-mode",
            "loopback",
        ])
        .arg("--passphrase-file")
        .arg(passphrase_file)
        .args(["--trust-model", "always"])
        .args(args);
    super::common::output_with_input(&mut cmd, stdin)
}

/// The three ways to ask for a secret key, checked on `s` (directly, or through the
/// admin socket while a server runs): with a passphrase file, `--unprotected`, neither.
fn check_secret_exports(s: &Sealpost, who: &str, context: &str) {
    use openpgp::packet::key::SecretKeyMaterial;
    use openpgp::parse::Parse;

    let pass = s.dir.path().join("export-passphrase");
    std::fs::write(&pass, "a long export passphrase\n").expect("write passphrase");
    let wrong = s.dir.path().join("wrong-passphrase");
    std::fs::write(&wrong, "not it\n").expect("write passphrase");

    // Encrypted to the passphrase: every secret key is protected, and gpg takes it.
    let args = ["keys", "export", "--secret", "--passphrase-file"];
    let protected = s.ok(&[&args[..], &[pass.to_str().expect("UTF-8 path"), who]].concat());
    let cert = openpgp::Cert::from_bytes(protected.as_bytes()).expect("a secret key");
    let mut keys = 0;
    for ka in cert.keys().secret() {
        keys += 1;
        assert!(
            matches!(
                ka.key().optional_secret(),
                Some(SecretKeyMaterial::Encrypted(_))
            ),
            "{context}: a secret key is exported unencrypted"
        );
    }
    assert!(keys >= 2, "{context}: {keys} secret keys exported");
    let home = tempfile::tempdir().expect("gpg home");
    let out = gpg_with_passphrase(home.path(), &pass, &["--import"], protected.as_bytes());
    assert!(out.status.success(), "{context}: gpg --import: {out:?}");
    let out = gpg_with_passphrase(home.path(), &wrong, &["-u", who, "--sign"], b"text");
    assert!(
        !out.status.success(),
        "{context}: signed with the wrong passphrase"
    );
    let out = gpg_with_passphrase(home.path(), &pass, &["-u", who, "--sign"], b"text");
    assert!(out.status.success(), "{context}: gpg --sign: {out:?}");
    assert!(!out.stdout.is_empty(), "{context}: no signature");

    // In the clear only on request, and never without a word.
    let out = s.run(&["keys", "export", "--secret", "--unprotected", who]);
    assert!(out.status.success(), "{context}: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning") && stderr.contains("unencrypted"),
        "{context}: no warning: {stderr}"
    );
    secret_material(&out.stdout);

    // Neither: a usage error that says what to add, and no key on stdout.
    let out = s.run(&["keys", "export", "--secret", who]);
    assert_eq!(out.status.code(), Some(2), "{context}: {out:?}");
    assert!(out.stdout.is_empty(), "{context}: something was exported");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--passphrase-file") && stderr.contains("--unprotected"),
        "{context}: {stderr}"
    );
}

#[test]
fn secret_export_needs_a_passphrase_or_unprotected() {
    let s = Sealpost::new();
    s.generate("alice@example.org", &[]);
    check_secret_exports(&s, "alice@example.org", "directly");
    let _gw = Gateway::start(&s, &inbound_config(&s.dir.path().join("Maildir")), &[], &[]);
    check_secret_exports(&s, "alice@example.org", "through the admin socket");
}
