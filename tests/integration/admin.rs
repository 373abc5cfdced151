//! sealpost as an admin meets it: `check-config` refusing what `serve` refuses, in the same
//! words; the systemd recipe run as written (its install script in a staging root, its
//! ExecStart as an unprivileged user); the container recipes checked for what they
//! promise; TLS to an upstream with a pinned certificate, and its failures in words; and
//! `keys` commands that name the data directory they looked at.
//!
//! Running as another user needs root (CI and the development machines run the suite as
//! root); run as anyone else, those tests say so and pass without checking.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::common::{assert_success, bin, start, swaks_to, Sealpost};
use super::upstream::{free_port, ScriptedUpstream, UpstreamTlsMode};

const LONG: Duration = Duration::from_secs(30);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Whether this test can run programs as another user; says so when it cannot.
fn can_switch_users(test: &str) -> bool {
    let ok = is_root()
        && Command::new("setpriv")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("{test}: not run: needs root and setpriv (util-linux) to act as another user");
    }
    ok
}

/// `nobody` and its primary group, as /etc/passwd and /etc/group name them.
fn nobody() -> (u32, u32, String) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    let f: Vec<&str> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"nobody"))
        .expect("a user nobody");
    let gid: u32 = f[3].parse().expect("gid");
    let group = std::fs::read_to_string("/etc/group").expect("/etc/group");
    let group_name = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|g| g.get(2) == Some(&f[3]))
        .map(|g| g[0].to_string())
        .expect("nobody's group");
    (f[2].parse().expect("uid"), gid, group_name)
}

/// `setpriv` running what follows as `uid:gid` with no other group.
fn as_user(uid: u32, gid: u32) -> Command {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg("--");
    c
}

/// The binary under test where `uid:gid` can run it: in place when the user can reach
/// it, else a copy in a directory open to all (the checkout may sit in a private one).
fn binary_for(uid: u32, gid: u32) -> PathBuf {
    let reachable = as_user(uid, gid)
        .args(["test", "-x", bin()])
        .status()
        .is_ok_and(|s| s.success());
    if reachable {
        return PathBuf::from(bin());
    }
    static COPY: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = COPY.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let path = dir.path().join("sealpost");
        std::fs::copy(bin(), &path).expect("copy the binary");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        (dir, path)
    });
    path.clone()
}

/// A temporary directory that any user may enter (tempfile makes them 0700).
fn open_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// A certificate for `names` and its key (PEM), as a CA-less self-signed pair.
fn certificate(names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let made = rcgen::generate_simple_self_signed(names).expect("certificate");
    (made.cert.pem(), made.signing_key.serialize_pem())
}

fn write_mode(path: &Path, data: &str, mode: u32) {
    std::fs::write(path, data).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Runs a command that must stop on its own (a `serve` that refuses to start); its output.
fn exits(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + LONG;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "still running after {LONG:?}: it started; stdout: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

/// The `sealpost: error:` lines of a run.
fn errors(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("sealpost: error:"))
        .map(str::to_string)
        .collect()
}

#[test]
fn check_config_refuses_what_serve_refuses_in_the_same_words() {
    let s = Sealpost::new();
    let dir = s.dir.path();
    let (cert, key) = certificate(&["localhost"]);
    let cert_file = dir.join("cert.pem");
    let key_file = dir.join("key.pem");
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let missing = dir.join("missing.pem");
    let tls_listener = |cert: &Path, key: &Path| {
        format!(
            "[[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:0\"\ntls = \"tls\"\n\
             certificate = \"{}\"\nprivate_key = \"{}\"\n",
            cert.display(),
            key.display()
        )
    };
    let plain = "[[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n";
    let cases = [
        (
            "a missing certificate file",
            tls_listener(&missing, &key_file),
            format!("cannot read {}", missing.display()),
        ),
        (
            "a missing key file",
            tls_listener(&cert_file, &missing),
            format!("cannot read {}", missing.display()),
        ),
        (
            "a missing [upstream] ca_file",
            format!(
                "{plain}\n[upstream]\naddress = \"127.0.0.1:{}\"\ntls = \"starttls\"\n\
                 ca_file = \"{}\"\n",
                free_port(),
                missing.display()
            ),
            format!("[upstream] ca_file): cannot read {}", missing.display()),
        ),
        (
            "a missing [inbound] ca_file",
            format!(
                "{plain}\n[inbound]\ndeliver = \"lmtp:127.0.0.1:{}\"\ntls = \"starttls\"\n\
                 ca_file = \"{}\"\n",
                free_port(),
                missing.display()
            ),
            format!("[inbound] ca_file): cannot read {}", missing.display()),
        ),
        (
            "a missing [discovery] ca_file",
            format!(
                "{plain}\n[discovery]\nwkd = false\nca_file = \"{}\"\n",
                missing.display()
            ),
            format!("[discovery] ca_file): cannot read {}", missing.display()),
        ),
        (
            "a missing [imap] ca_file",
            format!(
                "{plain}\n[imap]\nlisten = \"127.0.0.1:0\"\nupstream = \"127.0.0.1:{}\"\n\
                 upstream_tls = \"tls\"\nca_file = \"{}\"\n",
                free_port(),
                missing.display()
            ),
            format!("[imap] ca_file): cannot read {}", missing.display()),
        ),
        (
            "a TLS listener off loopback without a certificate",
            "[[listener]]\nmode = \"outbound\"\naddress = \"0.0.0.0:0\"\ntls = \"starttls\"\n\
             allow = [\"10.0.0.0/8\"]\n"
                .to_string(),
            "a self-signed certificate is made only for loopback listeners".to_string(),
        ),
        (
            "a host name with a space",
            format!("hostname = \"mail gateway\"\n{plain}"),
            "line 1: `hostname`: \"mail gateway\" is not a host name (a space)".to_string(),
        ),
        (
            "a size with an unknown unit",
            format!("{plain}max_message_size = \"1 XB\"\n"),
            "`listener[0].max_message_size`: \"1 XB\" has an unknown unit".to_string(),
        ),
    ];
    let config = dir.join("case.toml");
    for (what, text, expected) in cases {
        std::fs::write(&config, &text).unwrap();
        let config_arg = config.to_str().unwrap();
        let check = s.run(&["check-config", "--config", config_arg]);
        let serve = exits(s.command().args(["serve", "--config", config_arg]));
        assert_eq!(check.status.code(), Some(1), "{what}: check-config passed");
        assert_eq!(serve.status.code(), Some(1), "{what}: serve");
        assert_eq!(errors(&check), errors(&serve), "{what}: the same words");
        let said = errors(&check).join("\n");
        assert!(said.contains(&expected), "{what}: {said}");
    }

    // A size that both read the same way: "1 MB" is a million bytes, for every size key.
    std::fs::write(&config, format!("{plain}max_message_size = \"1 MB\"\n")).unwrap();
    let out = s.ok(&["check-config", "--config", config.to_str().unwrap()]);
    assert!(out.contains("max_message_size = 1000000\n"), "{out}");
    let mut gw = s.serve(&format!("{plain}max_message_size = \"1 MB\"\n"), &[]);
    let mut raw = super::common::Raw::connect(gw.port());
    assert!(raw.cmd("EHLO client.example").contains("SIZE 1000000"));
    assert!(gw.terminate().success());
}

#[test]
fn check_config_prints_the_policy_and_every_limit() {
    let s = Sealpost::new();
    let config = s.dir.path().join("sealpost.toml");
    std::fs::write(
        &config,
        "hostname = \"gw.example.org\"\n\
         [[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:0\"\nspill_above = \"2MiB\"\n\
         [inbound]\nmax_plaintext = \"10MB\"\n\
         [policy]\nmode = \"require\"\nsender_mismatch = \"unsigned\"\n\
         [policy.domain.\"partner.example\"]\nmode = \"sign-only\"\n\
         [policy.address.\"ceo@example.org\"]\nencrypt_to_self = true\n",
    )
    .unwrap();
    let out = s.ok(&["check-config", "--config", config.to_str().unwrap()]);
    for line in [
        "\n[policy]\nmode = \"require\"\nencrypt_to_self = false  # built-in default\n\
         mixed = \"split\"  # built-in default\nsender_mismatch = \"unsigned\"\n",
        "[policy.domain.\"partner.example\"]\nmode = \"sign-only\"\n",
        "[policy.address.\"ceo@example.org\"]\nencrypt_to_self = true\n",
        "spill_above = 2097152\n",
        "max_plaintext = 10000000\n",
        "authserv_id = \"gw.example.org\"\n",
    ] {
        assert!(out.contains(line), "{line:?} in\n{out}");
    }
    let selfsigned = s.data_dir().join("tls/selfsigned.crt");
    assert!(
        out.contains(&format!(
            "# certificate: self-signed, {}",
            selfsigned.display()
        )),
        "{out}"
    );
}

#[test]
fn check_config_reports_the_files_the_service_user_cannot_read() {
    if !can_switch_users("check_config_reports_the_files_the_service_user_cannot_read") {
        return;
    }
    let (uid, gid, group) = nobody();
    let dir = open_tempdir();
    let (cert, key) = certificate(&["localhost"]);
    let cert_file = dir.path().join("fullchain.pem");
    let key_file = dir.path().join("privkey.pem");
    write_mode(&cert_file, &cert, 0o644);
    // As certbot leaves a key: root's alone.
    write_mode(&key_file, &key, 0o600);
    let data = dir.path().join("data");
    let config = dir.path().join("sealpost.toml");
    write_mode(
        &config,
        &format!(
            "hostname = \"gw.example.org\"\ndata_dir = \"{}\"\n\
             [[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:0\"\ntls = \"tls\"\n\
             certificate = \"{}\"\nprivate_key = \"{}\"\n",
            data.display(),
            cert_file.display(),
            key_file.display()
        ),
        0o644,
    );
    let check = |user: Option<&str>| {
        let mut c = Command::new(bin());
        c.env_remove("SEALPOST_DATA_DIR")
            .env_remove("SEALPOST_PASSPHRASE_FILE")
            .arg("check-config")
            .arg("--config")
            .arg(&config);
        if let Some(u) = user {
            c.args(["--user", u]);
        }
        c.output().expect("check-config")
    };

    // Root reads it all, and says that this proves nothing for the service.
    let out = check(None);
    assert_success(&out, "check-config as root");
    assert!(String::from_utf8_lossy(&out.stderr).contains("add --user"));

    // --user judges by the modes: the key is named, with its mode and owner.
    let out = check(Some("nobody"));
    assert_eq!(out.status.code(), Some(1));
    let said = errors(&out).join("\n");
    assert!(
        said.contains(&format!(
            "nobody cannot read {}: it is mode 0600, owner root:root",
            key_file.display()
        )),
        "{said}"
    );
    let notes = String::from_utf8_lossy(&out.stderr);
    assert!(
        notes.contains(&format!(
            "the data directory {} does not exist yet",
            data.display()
        )),
        "{notes}"
    );
    assert!(!said.contains("fullchain.pem"), "{said}");

    // Run as that user, check-config meets the same wall as serve would.
    let binary = binary_for(uid, gid);
    let out = as_user(uid, gid)
        .arg(&binary)
        .arg("check-config")
        .arg("--config")
        .arg(&config)
        .env_remove("SEALPOST_DATA_DIR")
        .output()
        .expect("check-config as nobody");
    assert_eq!(out.status.code(), Some(1));
    let said = errors(&out).join("\n");
    assert!(
        said.contains(&format!(
            "cannot read {}: Permission denied",
            key_file.display()
        )),
        "{said}"
    );

    // Group-readable by the service's group, and a data directory it owns: all good.
    let chgrp = Command::new("chgrp")
        .arg(&group)
        .arg(&key_file)
        .status()
        .expect("chgrp");
    assert!(chgrp.success());
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::create_dir(&data).unwrap();
    std::os::unix::fs::chown(&data, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = check(Some("nobody"));
    assert_success(&out, "check-config --user nobody");
    let out = as_user(uid, gid)
        .arg(&binary)
        .args(["check-config", "--config"])
        .arg(&config)
        .env_remove("SEALPOST_DATA_DIR")
        .output()
        .expect("check-config as nobody");
    assert_success(&out, "check-config as nobody");
}

/// The `[Service]` settings of a unit file, each key with its values in order.
fn unit_settings(text: &str) -> Vec<(String, String)> {
    let mut in_service = false;
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_service = line == "[Service]";
            continue;
        }
        if !in_service || line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            out.push((k.to_string(), v.to_string()));
        }
    }
    out
}

fn setting<'a>(settings: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    settings
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[test]
fn the_systemd_recipe_starts_as_its_service_user() {
    if !can_switch_users("the_systemd_recipe_starts_as_its_service_user") {
        return;
    }
    // The unit's user is `sealpost`; here `nobody` stands in for it (no account is made on
    // this machine), with its group as the service group.
    let (uid, gid, group) = nobody();
    let stage = open_tempdir();
    let root = stage.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The certificate and key as certbot leaves them: root's alone.
    let (cert, key) = certificate(&["localhost"]);
    let cert_file = stage.path().join("fullchain.pem");
    let key_file = stage.path().join("privkey.pem");
    write_mode(&cert_file, &cert, 0o600);
    write_mode(&key_file, &key, 0o600);

    // The install steps, exactly as the unit's header and the README give them.
    let out = Command::new(repo().join("deploy/systemd/install.sh"))
        .arg(bin())
        .arg(&cert_file)
        .arg(&key_file)
        .env("SEALPOST_ROOT", &root)
        .env("SEALPOST_USER", "nobody")
        .env("SEALPOST_GROUP", &group)
        .output()
        .expect("run deploy/systemd/install.sh");
    assert_success(&out, "deploy/systemd/install.sh");
    let etc = root.join("etc/sealpost");
    for (path, mode, owner_gid) in [
        (etc.clone(), 0o750, gid),
        (etc.join("tls"), 0o750, gid),
        (etc.join("sealpost.toml"), 0o640, gid),
        (etc.join("tls/fullchain.pem"), 0o640, gid),
        (etc.join("tls/privkey.pem"), 0o640, gid),
        (etc.join("passphrase"), 0o600, 0),
    ] {
        let meta = std::fs::metadata(&path).expect("installed");
        assert_eq!(meta.mode() & 0o7777, mode, "{}", path.display());
        assert_eq!(
            (meta.uid(), meta.gid()),
            (0, owner_gid),
            "{}",
            path.display()
        );
    }

    // What systemd does for the unit, with every path under the staging root.
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/sealpost.service")).unwrap();
    let settings = unit_settings(&unit);
    assert_eq!(setting(&settings, "User"), ["sealpost"]);
    assert_eq!(setting(&settings, "Group"), ["sealpost"]);
    let staged = |p: &str| format!("{}{p}", root.display());
    // StateDirectory=: made for the service user, with StateDirectoryMode.
    let state_mode = u32::from_str_radix(setting(&settings, "StateDirectoryMode")[0], 8).unwrap();
    for name in setting(&settings, "StateDirectory") {
        let path = root.join("var/lib").join(name);
        std::fs::create_dir_all(&path).unwrap();
        std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(state_mode)).unwrap();
    }
    // LoadCredential=: read by systemd as root, handed to the service user.
    let credentials = "/run/credentials/sealpost.service";
    let cred_dir = PathBuf::from(staged(credentials));
    std::fs::create_dir_all(&cred_dir).unwrap();
    for spec in setting(&settings, "LoadCredential") {
        let (name, source) = spec.split_once(':').expect("NAME:PATH");
        let target = cred_dir.join(name);
        std::fs::copy(staged(source), &target).expect("the credential's source");
        std::os::unix::fs::chown(&target, Some(uid), Some(gid)).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o400)).unwrap();
    }
    std::os::unix::fs::chown(&cred_dir, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(&cred_dir, std::fs::Permissions::from_mode(0o500)).unwrap();
    let redirect = |v: &str| {
        let v = v.replace("%d", credentials);
        if v.starts_with('/') {
            staged(&v)
        } else {
            v
        }
    };
    let mut env: Vec<(String, String)> = setting(&settings, "Environment")
        .iter()
        .map(|e| {
            let (k, v) = e.split_once('=').expect("KEY=VALUE");
            (k.to_string(), redirect(v))
        })
        .collect();
    env.push(("RUST_LOG".into(), "warn".into()));
    env.push(("PATH".into(), "/usr/bin:/bin".into()));
    let exec: Vec<String> = setting(&settings, "ExecStart")[0]
        .split_whitespace()
        .map(redirect)
        .collect();

    // The installed example configuration, edited as an admin would for this machine:
    // every listener on 127.0.0.1 with a port chosen at start, every path under the
    // staging root, and an upstream that refuses connections (none is needed to start).
    let config_path = etc.join("sealpost.toml");
    let mut config = std::fs::read_to_string(&config_path).unwrap();
    for port in ["465", "10025", "25"] {
        config = config.replace(
            &format!("address = \"0.0.0.0:{port}\""),
            "address = \"127.0.0.1:0\"",
        );
    }
    config = config
        .replace("\"/etc/sealpost", &format!("\"{}", staged("/etc/sealpost")))
        .replace(
            "\"/var/lib/sealpost",
            &format!("\"{}", staged("/var/lib/sealpost")),
        )
        .replace("lmtp:unix:/run/", &format!("lmtp:unix:{}", staged("/run/")))
        .replace(
            "smtp.example.org:587",
            &format!("127.0.0.1:{}", free_port()),
        );
    assert!(!config.contains("\"0.0.0.0:"), "{config}");
    // Written in place: the file keeps the mode and group the install gave it.
    std::fs::write(&config_path, &config).unwrap();

    let mut cmd = as_user(uid, gid);
    cmd.args(&exec)
        .env_clear()
        .envs(env)
        .stderr(Stdio::inherit());
    let mut server = start(cmd);
    let printed = server.stdout.lock().unwrap().clone();
    assert_eq!(server.ports.len(), 3, "{printed}");
    assert!(printed.contains("(implicit TLS)"), "{printed}");
    // The TLS key was read: a handshake on the implicit TLS listener completes.
    assert!(
        tls_greeting(server.ports[0], &cert).starts_with("220 "),
        "{printed}"
    );
    // The keyring and the spool were made by the service user, under its passphrase.
    let keyring = root.join("var/lib/sealpost/keyring");
    assert_eq!(std::fs::metadata(&keyring).expect("keyring").uid(), uid);
    assert!(server.terminate().success());
}

/// The greeting of an implicit-TLS SMTP server on `port`, trusting `cert_pem` for localhost.
fn tls_greeting(port: u16, cert_pem: &str) -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut cert_pem.as_bytes()) {
        roots.add(cert.expect("PEM")).expect("root");
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).expect("client");
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(LONG)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut buf = [0u8; 512];
    let n = tls.read(&mut buf).expect("TLS handshake and greeting");
    let _ = tls.write_all(b"QUIT\r\n");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// `[...]` of a Containerfile's exec-form instruction, as strings.
fn exec_form(line: &str) -> Vec<String> {
    let inner = line
        .split_once('[')
        .and_then(|(_, r)| r.rsplit_once(']'))
        .map(|(i, _)| i)
        .expect("exec form");
    inner
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_string())
        .collect()
}

/// The port of each `[[listener]]` in a configuration's text.
fn listener_ports(config: &str) -> Vec<u16> {
    let value: toml::Value = toml::from_str(config).expect("TOML");
    value["listener"]
        .as_array()
        .expect("listeners")
        .iter()
        .map(|l| {
            let address = l["address"].as_str().expect("address");
            address.rsplit(':').next().unwrap().parse().expect("port")
        })
        .collect()
}

fn sorted(mut v: Vec<u16>) -> Vec<u16> {
    v.sort_unstable();
    v
}

#[test]
fn the_container_recipes_agree_with_their_image_and_its_user() {
    let deploy = repo().join("deploy");
    let containerfile = std::fs::read_to_string(deploy.join("container/Containerfile")).unwrap();
    let compose = std::fs::read_to_string(deploy.join("compose.yaml")).unwrap();
    let kube = std::fs::read_to_string(deploy.join("kubernetes/sealpost.yaml")).unwrap();

    // The image: its CMD names a configuration the image contains.
    let final_stage = containerfile
        .rsplit_once("\nFROM ")
        .map(|(_, s)| s)
        .expect("stages");
    let cmd = final_stage
        .lines()
        .find(|l| l.starts_with("CMD "))
        .map(exec_form)
        .expect("CMD");
    let config_at = cmd
        .iter()
        .position(|a| a == "--config")
        .map(|i| cmd[i + 1].clone())
        .expect("CMD names --config");
    let copied = final_stage
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.last() == Some(&config_at.as_str()))
        .expect("the configuration CMD names is copied into the image");
    let source = repo().join(copied[copied.len() - 2]);
    let config = std::fs::read_to_string(&source).expect("the copied configuration exists");
    let ports = sorted(listener_ports(&config));
    assert!(
        ports.iter().all(|p| *p >= 1024),
        "a non-root container cannot bind {ports:?}"
    );
    let user = final_stage
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER");
    assert_eq!(
        user.trim(),
        "10025:10025",
        "the image runs as uid and gid 10025"
    );
    let exposed: Vec<u16> = final_stage
        .lines()
        .find_map(|l| l.strip_prefix("EXPOSE "))
        .expect("EXPOSE")
        .split_whitespace()
        .map(|p| p.parse().expect("port"))
        .collect();
    assert_eq!(sorted(exposed), ports, "EXPOSE lists the listeners' ports");
    // The run line in the header maps the public ports onto them.
    for mapping in ["-p 465:4465", "-p 25:2525", "-p 10025:10025"] {
        assert!(containerfile.contains(mapping), "{mapping}");
    }

    // Compose: the same user, the public ports onto the listeners', and the same config.
    assert!(compose.contains("user: \"10025:10025\""));
    let mapped: Vec<(u16, u16)> = compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter_map(|l| l.split_once(':'))
        .filter_map(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .collect();
    assert_eq!(sorted(mapped.iter().map(|m| m.1).collect()), ports);
    assert!(
        mapped.contains(&(465, 4465)) && mapped.contains(&(25, 2525)),
        "{mapped:?}"
    );
    assert!(compose.contains(&format!("./container/sealpost.toml:{config_at}:ro")));

    // Kubernetes: the pod listens where the configuration says, the Service maps the
    // public ports to it, and nothing relies on binding a privileged port.
    let container_ports: Vec<u16> = kube
        .lines()
        .filter_map(|l| l.split("containerPort: ").nth(1))
        .map(|r| r.trim_end_matches([' ', '}']).parse().expect("port"))
        .collect();
    assert_eq!(sorted(container_ports), ports);
    let service: Vec<(u16, u16)> = kube
        .lines()
        .filter(|l| l.contains("targetPort:"))
        .map(|l| {
            let num = |key: &str| -> u16 {
                l.split(key)
                    .nth(1)
                    .and_then(|r| r.split([',', ' ', '}']).find(|w| !w.is_empty()))
                    .and_then(|w| w.parse().ok())
                    .expect("port")
            };
            (num(" port: "), num("targetPort: "))
        })
        .collect();
    assert_eq!(
        sorted(service.iter().map(|s| s.1).collect()),
        ports,
        "{service:?}"
    );
    assert!(
        service.contains(&(465, 4465)) && service.contains(&(25, 2525)),
        "{service:?}"
    );
    let caps = kube
        .lines()
        .find(|l| l.trim_start().starts_with("capabilities:"))
        .expect("capabilities");
    assert!(
        caps.contains("drop: [\"ALL\"]") && !caps.contains("add"),
        "{caps}"
    );
    assert!(kube.contains("runAsUser: 10025") && kube.contains("fsGroup: 10025"));
    assert!(kube.contains("--from-file=sealpost.toml=deploy/container/sealpost.toml"));

    if !can_switch_users("the_container_recipes_agree_with_their_image_and_its_user") {
        return;
    }
    // The files compose mounts, made as its header says, are readable by the container's
    // user; and with them the configuration passes check-config run as that user.
    let stage = open_tempdir();
    let (cert, key) = certificate(&["gateway.example.org"]);
    let cert_file = stage.path().join("fullchain.pem");
    let key_file = stage.path().join("privkey.pem");
    write_mode(&cert_file, &cert, 0o600);
    write_mode(&key_file, &key, 0o600);
    let secrets = stage.path().join("secrets");
    let out = Command::new(deploy.join("container/secrets.sh"))
        .arg(&cert_file)
        .arg(&key_file)
        .env("SEALPOST_SECRETS", &secrets)
        .output()
        .expect("run deploy/container/secrets.sh");
    assert_success(&out, "deploy/container/secrets.sh");
    let mounts: Vec<&str> = compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- ./"))
        .chain(
            compose
                .lines()
                .filter_map(|l| l.trim().strip_prefix("file: ./")),
        )
        .map(|l| l.split(':').next().unwrap_or(l))
        .collect();
    assert!(mounts.len() >= 3, "{mounts:?}");
    for mount in mounts {
        let host = match mount.strip_prefix("container/secrets") {
            Some(rest) => PathBuf::from(format!("{}{rest}", secrets.display())),
            None => deploy.join(mount),
        };
        let read = if host.is_dir() {
            vec!["ls".to_string(), host.display().to_string()]
        } else {
            vec!["cat".to_string(), host.display().to_string()]
        };
        let out = as_user(10025, 10025).args(&read).output().expect("setpriv");
        assert_success(&out, &format!("uid 10025 reading {}", host.display()));
    }
    let data = stage.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::os::unix::fs::chown(&data, Some(10025), Some(10025)).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    let staged_config = stage.path().join("sealpost.toml");
    write_mode(
        &staged_config,
        &config.replace(
            "/etc/sealpost/tls",
            &secrets.join("tls").display().to_string(),
        ),
        0o644,
    );
    let out = as_user(10025, 10025)
        .arg(binary_for(10025, 10025))
        .arg("--data-dir")
        .arg(&data)
        .arg("check-config")
        .arg("--config")
        .arg(&staged_config)
        .env("SEALPOST_PASSPHRASE_FILE", secrets.join("passphrase"))
        .output()
        .expect("check-config as uid 10025");
    assert_success(
        &out,
        "check-config of the container's configuration as uid 10025",
    );
}

/// A self-signed certificate with `CA:TRUE` for `localhost`, as `openssl req -x509`
/// makes: its PEM, DER and key.
fn self_signed_ca() -> (
    String,
    rustls::pki_types::CertificateDer<'static>,
    rustls::pki_types::PrivateKeyDer<'static>,
) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).expect("certificate");
    let der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key");
    (cert.pem(), cert.der().clone(), der)
}

static CAS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
use std::sync::atomic::Ordering::SeqCst;

/// A CA (its PEM) and an upstream presenting a certificate it issued for `names`, valid
/// until `not_after` when given.
fn issued_upstream(names: &[&str], not_after: Option<(i32, u8, u8)>) -> (String, ScriptedUpstream) {
    let issued = super::common::issue_until(
        &format!("admin test CA {}", CAS.fetch_add(1, SeqCst)),
        names,
        not_after,
    );
    let der = rustls::pki_types::PrivateKeyDer::try_from(issued.key_der).expect("key");
    let up = ScriptedUpstream::start_tls_with(
        UpstreamTlsMode::Implicit,
        vec![issued.cert_der],
        der,
        issued.ca_pem.clone(),
    );
    (issued.ca_pem, up)
}

fn upstream_config(port: u16, extra: &str) -> String {
    format!(
        "[[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\n\
         [upstream]\naddress = \"localhost:{port}\"\ntls = \"tls\"\n{extra}"
    )
}

#[test]
fn a_self_signed_upstream_certificate_in_ca_file_is_pinned() {
    let (pem, der, key) = self_signed_ca();
    let up = ScriptedUpstream::start_tls_with(UpstreamTlsMode::Implicit, vec![der], key, pem);
    let s = Sealpost::new();
    let pinned = s.dir.path().join("upstream.pem");
    std::fs::write(&pinned, &up.ca_pem).unwrap();
    let with_ca = format!("ca_file = \"{}\"\n", pinned.display());

    // In the file.
    let gw = s.serve(&upstream_config(up.port, &with_ca), &[]);
    let (ok, out) = swaks_to(gw.port(), "a@example.org", "b@example.net", &[]);
    assert!(ok, "{out}");
    assert_eq!(up.wait_received(1, LONG).len(), 1);
    drop(gw);

    // On the command line, with the upstream and its TLS given there too.
    let plain = "[[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n";
    let target = format!("127.0.0.1:{}", up.port);
    let flags = [
        "--upstream",
        target.as_str(),
        "--upstream-tls",
        "tls",
        "--upstream-ca-file",
        pinned.to_str().unwrap(),
    ];
    let gw = s.serve(plain, &flags);
    let (ok, out) = swaks_to(gw.port(), "a@example.org", "c@example.net", &[]);
    assert!(ok, "{out}");
    assert_eq!(up.wait_received(2, LONG).len(), 2);
    drop(gw);
    let config = s.dir.path().join("sealpost.toml");
    let mut check = vec!["check-config", "--config", config.to_str().unwrap()];
    check.extend_from_slice(&flags);
    let out = s.ok(&check);
    assert!(
        out.contains(&format!("ca_file = \"{}\"", pinned.display())),
        "{out}"
    );
    let err = s.fails(
        &[
            "check-config",
            "--config",
            config.to_str().unwrap(),
            "--upstream-ca-file",
            "x.pem",
        ],
        1,
    );
    assert!(
        err.contains("--upstream-ca-file: there is no upstream"),
        "{err}"
    );

    // Another self-signed certificate in ca_file: refused, in words.
    let (other, _, _) = self_signed_ca();
    std::fs::write(&pinned, other).unwrap();
    let gw = s.serve(&upstream_config(up.port, &with_ca), &[]);
    let (ok, out) = swaks_to(gw.port(), "a@example.org", "d@example.net", &[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(
            "TLS handshake failed: localhost presented a CA certificate (CA:TRUE) as its own; \
             to trust exactly this certificate, put it in ca_file"
        ),
        "{out}"
    );
    assert!(!out.contains("CaUsedAsEndEntity"), "{out}");
}

#[test]
fn upstream_tls_failures_are_worded_for_a_person() {
    let s = Sealpost::new();
    let ca_file = s.dir.path().join("ca.pem");
    let with_ca = format!("ca_file = \"{}\"\n", ca_file.display());
    let attempt = |ca_pem: &str, up: &ScriptedUpstream| {
        std::fs::write(&ca_file, ca_pem).unwrap();
        let gw = s.serve(&upstream_config(up.port, &with_ca), &[]);
        let (ok, out) = swaks_to(gw.port(), "a@example.org", "b@example.net", &[]);
        assert!(!ok, "{out}");
        assert!(out.contains("<** 451 4.4.1"), "{out}");
        assert!(
            !out.contains("InvalidCertificate") && !out.contains("Context {"),
            "debug text: {out}"
        );
        out
    };
    let (ca, for_another_name) = issued_upstream(&["mail.example.org"], None);
    let out = attempt(&ca, &for_another_name);
    assert!(
        out.contains("the certificate is for mail.example.org, not localhost"),
        "{out}"
    );
    let (ca, expired) = issued_upstream(&["localhost"], Some((2020, 1, 2)));
    let out = attempt(&ca, &expired);
    assert!(
        out.contains("the certificate of localhost expired on 2020-01-02 00:00 UTC"),
        "{out}"
    );
    let (other_ca, _) = issued_upstream(&["localhost"], None);
    let (_, unknown) = issued_upstream(&["localhost"], None);
    let out = attempt(&other_ca, &unknown);
    assert!(
        out.contains(&format!(
            "the certificate localhost presented is not signed by a CA in ca_file {}",
            ca_file.display()
        )),
        "{out}"
    );
}

#[test]
fn the_self_signed_certificate_is_named_for_the_host_and_printed_with_its_path() {
    let s = Sealpost::new();
    let config = "hostname = \"gw.example.org\"\n\
                  [[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:0\"\ntls = \"starttls\"\n";
    let mut gw = s.serve(config, &[]);
    let printed = gw.stdout.lock().unwrap().clone();
    let path = s.data_dir().join("tls/selfsigned.crt");
    assert!(
        printed.contains(&format!(", in {})", path.display())),
        "{printed}"
    );
    assert!(
        printed.contains("self-signed certificate SHA-256 "),
        "{printed}"
    );
    let pem = std::fs::read_to_string(&path).expect("the certificate");
    let der = rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .expect("a certificate")
        .expect("PEM");
    let has = |needle: &[u8]| der.windows(needle.len()).any(|w| w == needle);
    assert!(has(b"gw.example.org") && has(b"localhost"));
    assert!(!has(b"rcgen self signed cert"));
    // GeneralizedTime is used from 2050 on: a validity to 4096 would show as "4096".
    assert!(!has(b"40960101"), "valid for a few years, not to 4096");
    assert!(gw.terminate().success());
}

#[test]
fn keys_commands_name_the_data_directory_and_never_create_an_empty_keyring() {
    let s = Sealpost::new();
    let out = s.run(&["keys", "list"]);
    assert_success(&out, "keys list");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!(
            "there is no keyring in {} (from --data-dir)",
            s.data_dir().display()
        )),
        "{said}"
    );
    assert_eq!(s.ok(&["keys", "list", "--json"]).trim(), "[]");
    assert!(
        !s.data_dir().exists(),
        "keys list created the data directory"
    );
    let err = s.fails(&["keys", "show", "bob@example.org"], 1);
    assert!(err.contains("there is no keyring in"), "{err}");
    assert!(!s.data_dir().exists());

    // Without --data-dir: the default one, named as such.
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["keys", "list"])
        .env_remove("SEALPOST_DATA_DIR")
        .env_remove("XDG_DATA_HOME")
        .env_remove("SEALPOST_CONFIG")
        .env("HOME", home.path())
        .output()
        .expect("keys list");
    assert_success(&out, "keys list");
    let said = String::from_utf8_lossy(&out.stderr);
    let default = home.path().join(".local/share/sealpost");
    assert!(
        said.contains(&format!(
            "no keyring in {} (the default data directory",
            default.display()
        )),
        "{said}"
    );
    assert!(!default.exists());

    // A command that writes says where it made the keyring.
    let err = String::from_utf8_lossy(&s.run(&["keys", "generate", "alice@example.org"]).stderr)
        .into_owned();
    assert!(
        err.contains(&format!("a new keyring in {}", s.data_dir().display())),
        "{err}"
    );
    assert!(s.ok(&["keys", "list"]).contains("alice@example.org"));
}

/// Root leaves no files in the service account's data directory: without a server, its
/// commands are refused naming the owner; with one, they run in the server, as the owner.
#[test]
fn root_makes_no_files_in_the_service_accounts_data_directory() {
    if !can_switch_users("root_makes_no_files_in_the_service_accounts_data_directory") {
        return;
    }
    let (uid, gid, _) = nobody();
    let top = open_tempdir();
    let data = top.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    std::os::unix::fs::chown(&data, Some(uid), Some(gid)).expect("chown");
    let root_cmd = |args: &[&str]| {
        let mut c = Command::new(bin());
        c.arg("--data-dir").arg(&data).args(args);
        c.env_remove("SEALPOST_DATA_DIR")
            .env_remove("SEALPOST_PASSPHRASE_FILE")
            .env("RUST_LOG", "warn");
        c.output().expect("run sealpost as root")
    };
    for args in [
        &["keys", "generate", "root@example.org"][..],
        &["queue", "list"],
        &["serve", "--listen", "127.0.0.1:0"],
    ] {
        let out = root_cmd(args);
        assert!(!out.status.success(), "{args:?} ran as root");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("belongs to nobody"), "{args:?}: {err}");
        assert!(err.contains("runuser -u nobody"), "{args:?}: {err}");
    }
    assert_eq!(
        std::fs::read_dir(&data).expect("read data dir").count(),
        0,
        "root made files in the data directory"
    );

    // With the server running as nobody, root's command runs in it.
    let mut cmd = as_user(uid, gid);
    cmd.arg(binary_for(uid, gid))
        .arg("--data-dir")
        .arg(&data)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("SEALPOST_DATA_DIR")
        .env_remove("SEALPOST_PASSPHRASE_FILE")
        .env("RUST_LOG", "warn");
    let _server = start(cmd);
    // The admin socket comes up just after the listeners.
    super::upstream::wait_for(LONG, "the admin socket", || {
        data.join("admin.sock").exists().then_some(())
    });
    let out = root_cmd(&["keys", "generate", "root@example.org"]);
    assert_success(&out, "keys generate through the server");
    fn owners(dir: &Path, out: &mut Vec<(PathBuf, u32)>) {
        for e in std::fs::read_dir(dir).expect("read dir") {
            let p = e.expect("entry").path();
            let meta = std::fs::symlink_metadata(&p).expect("stat");
            out.push((p.clone(), meta.uid()));
            if meta.is_dir() {
                owners(&p, out);
            }
        }
    }
    let mut all = Vec::new();
    owners(&data, &mut all);
    let roots: Vec<_> = all.iter().filter(|(_, u)| *u != uid).collect();
    assert!(
        roots.is_empty(),
        "files not owned by the service account: {roots:?}"
    );
}
