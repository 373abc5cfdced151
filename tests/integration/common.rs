//! The test harness: a temporary data directory per gateway, one helper per command, and
//! gpg/sq homes, in the manner of sq's `Sq::new()`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

/// The binary under test, built by cargo for this test target.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sealpost")
}

/// One sealpost installation: its own data directory.
pub struct Sealpost {
    pub dir: TempDir,
    pub passphrase_file: Option<PathBuf>,
}

impl Sealpost {
    pub fn new() -> Sealpost {
        Sealpost {
            dir: tempfile::tempdir().expect("tempdir"),
            passphrase_file: None,
        }
    }

    /// A gateway whose keyring encrypts secret keys with `passphrase`.
    pub fn with_passphrase(passphrase: &str) -> Sealpost {
        let mut s = Sealpost::new();
        let file = s.dir.path().join("passphrase");
        std::fs::write(&file, format!("{passphrase}\n")).expect("write passphrase");
        s.passphrase_file = Some(file);
        s
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(bin());
        c.arg("--data-dir").arg(self.data_dir());
        c.env_remove("SEALPOST_DATA_DIR");
        c.env("RUST_LOG", "warn");
        match &self.passphrase_file {
            Some(f) => c.env("SEALPOST_PASSPHRASE_FILE", f),
            None => c.env_remove("SEALPOST_PASSPHRASE_FILE"),
        };
        c
    }

    /// Runs `sealpost ARGS`, with `stdin` as input.
    pub fn run_with_input(&self, args: &[&str], stdin: &[u8]) -> Output {
        output_with_input(self.command().args(args), stdin)
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with_input(args, b"")
    }

    /// Runs `sealpost ARGS` and returns stdout, failing the test on a non-zero exit.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_success(&out, &format!("sealpost {}", args.join(" ")));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `sealpost ARGS`, expects failure with `code`, and returns stderr.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "sealpost {} should exit {code}; stdout: {} stderr: {stderr}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        stderr
    }

    /// `keys list --json`, parsed.
    pub fn list_json(&self) -> serde_json::Value {
        let out = self.ok(&["keys", "list", "--json"]);
        serde_json::from_str(&out).expect("keys list --json is JSON")
    }

    /// Generates a key and returns its fingerprint.
    pub fn generate(&self, email: &str, extra: &[&str]) -> String {
        let mut args = vec!["keys", "generate", email];
        args.extend_from_slice(extra);
        let out = self.ok(&args);
        out.split_whitespace()
            .nth(1)
            .expect("generate prints the fingerprint")
            .to_string()
    }
}

pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({:?}); stdout: {} stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throw-away GnuPG home, driven in batch mode with no passphrases.
pub struct Gpg {
    pub home: TempDir,
}

impl Gpg {
    pub fn new() -> Gpg {
        let home = tempfile::tempdir().expect("tempdir");
        Gpg { home }
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", self.home.path())
            .args(["--batch", "--no-tty", "--quiet"])
            .args(["--pinentry-mode", "loopback", "--passphrase", ""])
            .args(["--trust-model", "always"]);
        c
    }

    pub fn run_with_input(&self, args: &[&str], stdin: &[u8]) -> Output {
        output_with_input(self.command().args(args), stdin)
    }

    pub fn ok(&self, args: &[&str]) -> Vec<u8> {
        self.ok_with_input(args, b"")
    }

    pub fn ok_with_input(&self, args: &[&str], stdin: &[u8]) -> Vec<u8> {
        let out = self.run_with_input(args, stdin);
        assert_success(&out, &format!("gpg {}", args.join(" ")));
        out.stdout
    }

    /// Generates a key with `gpg --quick-gen-key` and returns its fingerprint.
    pub fn generate(&self, uid: &str, algo: &str, usage: &str, expire: &str) -> String {
        self.ok(&["--quick-gen-key", uid, algo, usage, expire]);
        self.fingerprint(uid)
    }

    pub fn fingerprint(&self, query: &str) -> String {
        let out = self.ok(&["--with-colons", "--list-keys", query]);
        let text = String::from_utf8_lossy(&out);
        text.lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .expect("gpg lists a fingerprint")
            .to_string()
    }

    /// gpg's stored revocation certificate for `fpr`, made importable (gpg prefixes the
    /// armor line with ':' so that it is not imported by accident).
    pub fn revocation_cert(&self, fpr: &str) -> Vec<u8> {
        let path = self
            .home
            .path()
            .join("openpgp-revocs.d")
            .join(format!("{fpr}.rev"));
        let text = std::fs::read_to_string(path).expect("gpg revocation certificate");
        text.replace(
            ":-----BEGIN PGP PUBLIC KEY BLOCK-----",
            "-----BEGIN PGP PUBLIC KEY BLOCK-----",
        )
        .into_bytes()
    }
}

/// Runs `sq ARGS` (stateless) and returns stdout.
pub fn sq(args: &[&str]) -> Vec<u8> {
    let out = Command::new("sq").args(args).output().expect("spawn sq");
    assert_success(&out, &format!("sq {}", args.join(" ")));
    out.stdout
}

pub fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).expect("write file");
    p
}

/// A running `sealpost serve`, killed when dropped.
pub struct Server {
    pub child: std::process::Child,
    /// Listener ports in the order `serve` printed them.
    pub ports: Vec<u16>,
    pub stdout: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Sealpost {
    /// Writes `config` (TOML) next to the data directory and starts `serve` with it and
    /// `args`; returns once every listener is up.
    pub fn serve(&self, config: &str, args: &[&str]) -> Server {
        let mut cmd = self.serve_command(config);
        cmd.args(args).stderr(Stdio::inherit());
        start(cmd)
    }

    /// `sealpost serve --config FILE`, with `config` written to FILE next to the data
    /// directory; for a test that sets more of the command before [`start`].
    pub fn serve_command(&self, config: &str) -> Command {
        let path = self.dir.path().join("sealpost.toml");
        // Tests stay on loopback: a recipient without a key is not looked up in its
        // domain's WKD (DNS and HTTPS off the machine) unless the test says so.
        let config = if config.contains("[discovery]") {
            config.to_string()
        } else {
            format!("{config}\n[discovery]\nwkd = false\n")
        };
        std::fs::write(&path, config).expect("write config");
        let mut cmd = self.command();
        cmd.arg("serve").arg("--config").arg(&path);
        cmd
    }
}

/// Starts a `serve` command and returns once every listener it prints is up.
pub fn start(mut cmd: Command) -> Server {
    use std::io::BufRead;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn sealpost serve");
    let stdout = child.stdout.take().expect("stdout");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let keep = seen.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            keep.lock().unwrap().push_str(&line);
            keep.lock().unwrap().push('\n');
            let _ = tx.send(line);
        }
    });
    let mut ports = Vec::new();
    loop {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("serve did not start; output: {}", seen.lock().unwrap()));
        if let Some(rest) = line.split("listener on ").nth(1) {
            let addr = rest.split_whitespace().next().unwrap_or_default();
            ports.push(addr.rsplit(':').next().unwrap().parse().unwrap());
        }
        if line.contains("outbound mail goes to") {
            break;
        }
    }
    Server {
        child,
        ports,
        stdout: seen,
    }
}

impl Server {
    pub fn port(&self) -> u16 {
        self.ports[0]
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("wait serve")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs swaks against `port` with `args`; returns its transcript (stdout).
pub fn swaks(port: u16, args: &[&str]) -> (bool, String) {
    let out = Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &port.to_string()])
        .args(["--timeout", "30"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("swaks (package swaks)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// [`swaks`] with an envelope: `--from`, `--to` (comma-separated recipients), then `args`.
pub fn swaks_to(port: u16, from: &str, to: &str, args: &[&str]) -> (bool, String) {
    let mut all = vec!["--from", from, "--to", to];
    all.extend_from_slice(args);
    swaks(port, &all)
}

/// A config for one loopback outbound listener (no TLS unless asked) and an upstream.
pub fn relay_config(upstream: &str, extra: &str) -> String {
    format!(
        "[[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:0\"\ntls = \"starttls\"\n\n\
         [upstream]\naddress = \"{upstream}\"\ntls = \"none\"\n\n{extra}"
    )
}

/// A raw SMTP client for byte-level tests.
pub struct Raw {
    pub stream: std::net::TcpStream,
    reader: std::io::BufReader<std::net::TcpStream>,
}

impl Raw {
    pub fn connect(port: u16) -> Raw {
        let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let reader = std::io::BufReader::new(stream.try_clone().unwrap());
        let mut raw = Raw { stream, reader };
        raw.reply();
        raw
    }

    pub fn send(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.stream.write_all(bytes).expect("write");
    }

    /// Reads one (possibly multi-line) reply; returns it whole.
    pub fn reply(&mut self) -> String {
        use std::io::BufRead;
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).unwrap_or(0) == 0 {
                return all;
            }
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }
}

/// Runs `command` with `stdin` as its input and collects its output.
pub fn output_with_input(command: &mut Command, stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", command.get_program()));
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    // A writer thread, so that a large input cannot deadlock against a full stdout pipe.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait for the child");
    let _ = writer.join();
    out
}

/// Runs `dovecot -F -c CONF` (a private Dovecot whose files are all under `dir`) under a
/// shell that stops it and removes `dir` once its stdin closes, when the returned child
/// is dropped or the test process ends; returns once every one of `ports` accepts.
///
/// # Panics
/// When Dovecot does not start, with its log and the packages it needs.
pub fn dovecot(conf: &Path, dir: &Path, ports: &[u16], packages: &str) -> std::process::Child {
    let stderr = std::fs::File::create(dir.join("stderr")).expect("stderr file");
    let mut shell = Command::new("sh")
        .arg("-c")
        .arg(r#"dovecot -F -c "$1" & pid=$!; read -r _ignored; kill "$pid"; wait "$pid"; rm -rf "$2""#)
        .arg("sh")
        .arg(conf)
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("sh");
    let up = |port: &u16| std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok();
    let started = (0..400).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(25));
        ports.iter().all(up)
    });
    if !started {
        let why = format!(
            "{} {}",
            std::fs::read_to_string(dir.join("stderr")).unwrap_or_default(),
            std::fs::read_to_string(dir.join("dovecot.log")).unwrap_or_default()
        );
        // Closing the pipe stops what did start and removes the directory.
        drop(shell.stdin.take());
        let _ = shell.wait();
        panic!("Dovecot did not start (packages {packages}): {why}");
    }
    shell
}

/// A test CA, and a certificate it issued with its private key.
pub struct Issued {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: rustls::pki_types::CertificateDer<'static>,
    pub key_der: Vec<u8>,
}

/// A new CA named `ca_name`, and a certificate it issued for `names`.
pub fn issue(ca_name: &str, names: &[&str]) -> Issued {
    issue_until(ca_name, names, None)
}

/// [`issue`], the certificate valid for the year before `not_after` (year, month, day)
/// when given.
pub fn issue_until(ca_name: &str, names: &[&str], not_after: Option<(i32, u8, u8)>) -> Issued {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA");
    let key = rcgen::KeyPair::generate().expect("key");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = rcgen::CertificateParams::new(names).expect("params");
    if let Some((y, m, d)) = not_after {
        params.not_before = rcgen::date_time_ymd(y - 1, m, d);
        params.not_after = rcgen::date_time_ymd(y, m, d);
    }
    let cert = params.signed_by(&key, &ca).expect("certificate");
    Issued {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        cert_der: cert.der().clone(),
        key_der: key.serialize_der(),
    }
}
