//! What the load benchmarks share: smtp-sink, a `sealpost serve` child, its memory, and
//! the SMTP reply reader.
#![allow(dead_code)]

pub mod postgres;

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Postfix's smtp-sink on a free loopback port, discarding what it gets.
pub struct Sink {
    child: Child,
    pub port: u16,
}

impl Sink {
    pub fn start() -> Sink {
        let port = free_port();
        let mut cmd = Command::new("smtp-sink");
        if is_root() {
            cmd.args(["-u", "nobody"]);
        }
        let child = cmd
            .arg(format!("127.0.0.1:{port}"))
            .arg("1024")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("smtp-sink (package postfix)");
        wait_port(port);
        Sink { child, port }
    }
}

impl Sink {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `sealpost serve` with `config` on `data_dir`.
pub struct Gateway {
    child: Child,
    pub port: u16,
}

impl Gateway {
    pub fn start(data_dir: &Path, config: &str) -> Gateway {
        Gateway::start_with_env(data_dir, config, &[])
    }

    /// [`Gateway::start`] with more environment variables (a passphrase file).
    pub fn start_with_env(data_dir: &Path, config: &str, env: &[(&str, &Path)]) -> Gateway {
        Gateway::start_bin(
            Path::new(env!("CARGO_BIN_EXE_sealpost")),
            data_dir,
            config,
            env,
        )
    }

    /// [`Gateway::start_with_env`] with another build of sealpost, `bin` (to compare two
    /// builds in one run).
    pub fn start_bin(bin: &Path, data_dir: &Path, config: &str, env: &[(&str, &Path)]) -> Gateway {
        let path = data_dir.with_extension("toml");
        std::fs::write(&path, config).expect("write config");
        let mut child = Command::new(bin)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["serve", "--config"])
            .arg(&path)
            .env("RUST_LOG", "warn")
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sealpost");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("sealpost exited before listening")
                .expect("read");
            if let Some(rest) = line.split("listener on ").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or_default();
                break addr
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .expect("port");
            }
        };
        // Keep draining stdout so that the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Gateway { child, port }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A field of /proc/PID/status, in MB.
    pub fn status(&self, field: &str) -> f64 {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        text.lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sealpost --data-dir DIR ARGS`, which must succeed; returns stdout.
pub fn sealpost(data_dir: &Path, args: &[&str]) -> Vec<u8> {
    sealpost_with_env(data_dir, args, &[])
}

/// [`sealpost`] with more environment variables (a keyring URL, a passphrase file).
pub fn sealpost_with_env(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Vec<u8> {
    let out = Command::new(env!("CARGO_BIN_EXE_sealpost"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .stderr(Stdio::null())
        .output()
        .expect("run sealpost");
    assert!(out.status.success(), "sealpost {args:?} failed");
    out.stdout
}

/// Reads one reply, which must have `code`.
/// A session on `port` up to DATA's 354 for one envelope: the writer and the reader.
pub fn open_data(
    port: u16,
    from: &str,
    to: &str,
    timeout: std::time::Duration,
) -> (std::net::TcpStream, std::io::BufReader<std::net::TcpStream>) {
    use std::io::Write;
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(timeout)).expect("timeout");
    let mut w = stream.try_clone().expect("clone");
    let mut r = std::io::BufReader::new(stream);
    expect(&mut r, "220");
    w.write_all(
        format!("EHLO bench.example\r\nMAIL FROM:<{from}>\r\nRCPT TO:<{to}>\r\nDATA\r\n")
            .as_bytes(),
    )
    .expect("write");
    for code in ["250 ", "250", "250", "354"] {
        expect(&mut r, code);
    }
    (w, r)
}

pub fn expect(r: &mut impl BufRead, code: &str) {
    loop {
        let mut line = String::new();
        r.read_line(&mut line).expect("read reply");
        assert!(
            line.starts_with(&code[..3]),
            "expected {code}, got {line:?}"
        );
        if line.as_bytes().get(3) != Some(&b'-') {
            return;
        }
    }
}

/// The 50th and 99th percentiles.
pub fn percentiles(v: &[f64]) -> (f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let at = |p: f64| s[((s.len() as f64 - 1.0) * p).round() as usize];
    (at(0.50), at(0.99))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn wait_port(port: u16) {
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("port {port} never opened");
}

/// Messages per second that Postfix's smtp-source sends to 127.0.0.1:`port`: `messages`
/// over `sessions` sessions, the message and envelope given by `args`.
pub fn smtp_source(port: u16, sessions: usize, messages: usize, args: &[&str]) -> f64 {
    let start = std::time::Instant::now();
    let status = Command::new("smtp-source")
        .args(["-s", &sessions.to_string()])
        .args(["-m", &messages.to_string()])
        .args(args)
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .status()
        .expect("smtp-source (package postfix)");
    assert!(status.success(), "smtp-source failed");
    messages as f64 / start.elapsed().as_secs_f64()
}

/// CPU seconds (user + system) that process `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    stat_seconds(&format!("/proc/{pid}/stat"), 11)
}

/// CPU seconds (user + system) used so far by this process's children that have been
/// waited for: read before and after a load tool runs, the tool's own CPU time.
pub fn children_cpu_seconds() -> f64 {
    stat_seconds("/proc/self/stat", 13)
}

/// The sum of two adjacent clock-tick fields of a `/proc/.../stat` file, in seconds;
/// `index` counts from the field after the command name (which may hold spaces).
fn stat_seconds(path: &str, index: usize) -> f64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let fields: Vec<f64> = text
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .map(|f| f.parse().unwrap_or(f64::NAN))
                .collect()
        })
        .unwrap_or_default();
    match (fields.get(index), fields.get(index + 1)) {
        (Some(user), Some(system)) => (user + system) / clock_ticks(),
        _ => f64::NAN,
    }
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Runs the gateways as deployed (the systemd unit and the container set neither
/// variable): with RUST_BACKTRACE=1 inherited from a developer's shell, every encrypted
/// message pays a backtrace capture inside sequoia (an error made and dropped as its
/// encryptor is dropped after finalize), most of the quarter of encrypt+sign throughput
/// that one A/B run lost.
pub fn as_deployed() {
    std::env::remove_var("RUST_BACKTRACE");
    std::env::remove_var("RUST_LIB_BACKTRACE");
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// The number of messages a load run sends (`var`, else `default`), or `None` when cargo
/// did not run this as a bench: `cargo test --benches` passes no `--bench` flag and must
/// not start a load run.
pub fn load_run(var: &str, default: usize) -> Option<usize> {
    if !std::env::args().any(|a| a == "--bench") {
        return None;
    }
    Some(
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}
