//! Upstreams for the tests: Postfix's `smtp-sink`, and a scripted server for exact replies
//! and faults (one recipient refused, temporary failures, a stall after DATA).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A port that was free a moment ago (for peers that cannot report the port they bound).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Polls `f` until it returns `Some`, or panics after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Postfix's smtp-sink, dumping every message it accepts into a directory.
pub struct SmtpSink {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl SmtpSink {
    /// `extra` are smtp-sink options such as `-8` (no 8BITMIME) or `-r rcpt` (soft-reject RCPT).
    pub fn start(extra: &[&str]) -> SmtpSink {
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("tempdir");
            // smtp-sink drops privileges to -u's user, which must be able to write the dumps.
            let mode = std::os::unix::fs::PermissionsExt::from_mode(0o777);
            std::fs::set_permissions(dir.path(), mode).expect("chmod dump dir");
            let port = free_port();
            let template = format!("{}/%H%M%S.", dir.path().display());
            let mut cmd = Command::new("smtp-sink");
            if is_root() {
                cmd.args(["-u", "nobody"]);
            }
            let child = cmd
                .args(["-d", &template])
                .args(extra)
                .arg(format!("127.0.0.1:{port}"))
                .arg("100")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn smtp-sink (package postfix)");
            let sink = SmtpSink { child, port, dir };
            let up = (0..100).any(|_| {
                std::thread::sleep(Duration::from_millis(20));
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
            if up {
                return sink;
            }
            // Dropping the sink kills it; another port is tried.
        }
        panic!("smtp-sink did not start");
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The dumps written so far, oldest first.
    pub fn messages(&self) -> Vec<Dump> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        files.iter().filter_map(|p| Dump::read(p)).collect()
    }

    /// Waits until `n` messages have been dumped.
    pub fn wait_messages(&self, n: usize, timeout: Duration) -> Vec<Dump> {
        wait_for(timeout, &format!("{n} message(s) at smtp-sink"), || {
            let m = self.messages();
            (m.len() >= n).then_some(m)
        })
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// One smtp-sink dump: the envelope lines it records, then the message.
#[derive(Debug, Clone)]
pub struct Dump {
    pub sender: String,
    pub recipients: Vec<String>,
    pub message: Vec<u8>,
}

impl Dump {
    fn read(path: &Path) -> Option<Dump> {
        let raw = std::fs::read(path).ok()?;
        // smtp-sink writes X-Client-Addr/X-Client-Proto/X-Helo-Args/X-Mail-Args/X-Rcpt-Args
        // lines before the message; it writes the file as the session goes, so accept it
        // only once the final "." has been recorded (the file is complete on QUIT/RSET).
        let text = String::from_utf8_lossy(&raw);
        let mut sender = String::new();
        let mut recipients = Vec::new();
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            let l = line.trim_end();
            let addr = |v: &str| {
                v.split_whitespace()
                    .next()
                    .unwrap_or("")
                    .trim_start_matches("FROM:")
                    .trim_start_matches("TO:")
                    .trim_matches(['<', '>'])
                    .to_string()
            };
            if let Some(v) = l.strip_prefix("X-Mail-Args: ") {
                sender = addr(v);
            } else if let Some(v) = l.strip_prefix("X-Rcpt-Args: ") {
                recipients.push(addr(v));
            } else if l.starts_with("X-Client-") || l.starts_with("X-Helo-Args") {
            } else {
                break;
            }
            offset += line.len();
        }
        Some(Dump {
            sender,
            recipients,
            message: raw[offset..].to_vec(),
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.message).into_owned()
    }

    /// The body: everything after the first empty line.
    pub fn body(&self) -> Vec<u8> {
        let m = &self.message;
        let at = m
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| i + 4)
            .or_else(|| m.windows(2).position(|w| w == b"\n\n").map(|i| i + 2))
            .unwrap_or(m.len());
        m[at..].to_vec()
    }
}

/// What the scripted upstream does with a recipient.
#[derive(Debug, Clone)]
pub enum RcptRule {
    Accept,
    /// 550 for this address.
    Reject,
    /// 451 for this address, the first `n` transactions; accepted after.
    DeferTimes(usize),
}

/// A transaction the scripted upstream accepted.
#[derive(Debug, Clone)]
pub struct Received {
    pub sender: String,
    pub recipients: Vec<String>,
    pub data: Vec<u8>,
    pub auth: Option<String>,
}

#[derive(Default)]
struct Script {
    rules: Vec<(String, RcptRule)>,
    /// Address → how many times it has been deferred.
    deferred: Vec<(String, usize)>,
    /// Stall this long after the final dot before answering, for the first `stall_times` messages.
    stall: Option<(Duration, usize)>,
    received: Vec<Received>,
    /// PLAIN credentials accepted ("user", "pass"); AUTH is offered only when set.
    login: Option<(String, String)>,
}

/// How the scripted upstream speaks TLS.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum UpstreamTlsMode {
    None,
    StartTls,
    Implicit,
}

/// A small SMTP server, scripted per recipient, that records what it accepts.
pub struct ScriptedUpstream {
    pub port: u16,
    script: Arc<Mutex<Script>>,
    /// The PEM of its self-signed certificate, for the gateway's `ca_file`.
    pub ca_pem: String,
}

impl ScriptedUpstream {
    pub fn start() -> ScriptedUpstream {
        ScriptedUpstream::start_tls(UpstreamTlsMode::None)
    }

    pub fn start_tls(mode: UpstreamTlsMode) -> ScriptedUpstream {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
        let key = rustls::pki_types::PrivateKeyDer::try_from(made.signing_key.serialize_der())
            .expect("key");
        ScriptedUpstream::start_tls_with(mode, vec![made.cert.der().clone()], key, made.cert.pem())
    }

    /// An upstream presenting `chain` (its own certificate first) with `key`; `ca_pem` is
    /// what [`ScriptedUpstream::ca_pem`] reports.
    pub fn start_tls_with(
        mode: UpstreamTlsMode,
        chain: Vec<rustls::pki_types::CertificateDer<'static>>,
        key: rustls::pki_types::PrivateKeyDer<'static>,
        ca_pem: String,
    ) -> ScriptedUpstream {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = Arc::new(
            rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .expect("tls config"),
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let script = Arc::new(Mutex::new(Script::default()));
        let s = script.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let s = s.clone();
                let tls = tls.clone();
                std::thread::spawn(move || {
                    let _ = serve_connection(stream, &s, mode, tls);
                });
            }
        });
        ScriptedUpstream {
            port,
            script,
            ca_pem,
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn rule(&self, address: &str, rule: RcptRule) {
        self.script
            .lock()
            .unwrap()
            .rules
            .push((address.to_lowercase(), rule));
    }

    pub fn stall_after_data(&self, d: Duration, times: usize) {
        self.script.lock().unwrap().stall = Some((d, times));
    }

    pub fn require_login(&self, user: &str, pass: &str) {
        self.script.lock().unwrap().login = Some((user.into(), pass.into()));
    }

    pub fn received(&self) -> Vec<Received> {
        self.script.lock().unwrap().received.clone()
    }

    pub fn wait_received(&self, n: usize, timeout: Duration) -> Vec<Received> {
        wait_for(
            timeout,
            &format!("{n} message(s) at the scripted upstream"),
            || {
                let r = self.received();
                (r.len() >= n).then_some(r)
            },
        )
    }
}

trait Stream: std::io::Read + Write + Send {}
impl<T: std::io::Read + Write + Send> Stream for T {}

/// A reader/writer pair over one stream, buffered for reading lines.
struct Io<S: Stream> {
    inner: BufReader<S>,
}

impl<S: Stream> Io<S> {
    fn read_line(&mut self, buf: &mut String) -> std::io::Result<usize> {
        self.inner.read_line(buf)
    }
    fn read_until(&mut self, b: u8, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        self.inner.read_until(b, buf)
    }
    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.inner.get_mut().write_all(data)?;
        self.inner.get_mut().flush()
    }
}

fn serve_connection(
    stream: TcpStream,
    script: &Mutex<Script>,
    mode: UpstreamTlsMode,
    tls: Arc<rustls::ServerConfig>,
) -> std::io::Result<()> {
    let wrap = |s: TcpStream| -> std::io::Result<rustls::StreamOwned<rustls::ServerConnection, TcpStream>> {
        let conn = rustls::ServerConnection::new(tls.clone()).map_err(std::io::Error::other)?;
        Ok(rustls::StreamOwned::new(conn, s))
    };
    match mode {
        UpstreamTlsMode::Implicit => session(
            Io {
                inner: BufReader::new(wrap(stream)?),
            },
            script,
            false,
            true,
        )
        .map(|_| ()),
        UpstreamTlsMode::None => session(
            Io {
                inner: BufReader::new(stream),
            },
            script,
            false,
            true,
        )
        .map(|_| ()),
        UpstreamTlsMode::StartTls => {
            let raw = stream.try_clone()?;
            if session(
                Io {
                    inner: BufReader::new(stream),
                },
                script,
                true,
                true,
            )? {
                session(
                    Io {
                        inner: BufReader::new(wrap(raw)?),
                    },
                    script,
                    false,
                    false,
                )?;
            }
            Ok(())
        }
    }
}

/// Runs one SMTP session; returns `true` when the client asked for STARTTLS.
fn session<S: Stream>(
    mut io: Io<S>,
    script: &Mutex<Script>,
    offer_starttls: bool,
    greet: bool,
) -> std::io::Result<bool> {
    use base64::Engine;
    let input = &mut io;
    if greet {
        input.write_all(b"220 scripted.test ESMTP\r\n")?;
    }
    let mut sender = String::new();
    let mut rcpts: Vec<String> = Vec::new();
    let mut auth = None;
    let mut line = String::new();
    loop {
        line.clear();
        if input.read_line(&mut line)? == 0 {
            return Ok(false);
        }
        let upper = line.to_ascii_uppercase();
        let verb = upper.split_whitespace().next().unwrap_or("").to_string();
        match verb.as_str() {
            "EHLO" => {
                let login = script.lock().unwrap().login.is_some();
                let mut reply = String::from(
                    "250-scripted.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE 100000000\r\n",
                );
                if login {
                    reply.push_str("250-AUTH PLAIN LOGIN\r\n");
                }
                if offer_starttls {
                    reply.push_str("250-STARTTLS\r\n");
                }
                reply.push_str("250 ENHANCEDSTATUSCODES\r\n");
                input.write_all(reply.as_bytes())?;
            }
            "HELO" => input.write_all(b"250 scripted.test\r\n")?,
            "AUTH" => {
                let parts: Vec<&str> = line.split_whitespace().collect();
                let expected = script.lock().unwrap().login.clone();
                let decoded = parts
                    .get(2)
                    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                    .unwrap_or_default();
                let fields: Vec<&[u8]> = decoded.split(|&b| b == 0).collect();
                let ok = match (&expected, fields.as_slice()) {
                    (Some((u, p)), [_, user, pass]) => {
                        user == &u.as_bytes() && pass == &p.as_bytes()
                    }
                    _ => false,
                };
                if ok {
                    auth = fields
                        .get(1)
                        .map(|u| String::from_utf8_lossy(u).into_owned());
                    input.write_all(b"235 2.7.0 Authentication successful\r\n")?;
                } else {
                    input.write_all(b"535 5.7.8 Authentication credentials invalid\r\n")?;
                }
            }
            "MAIL" => {
                let needs_login = script.lock().unwrap().login.is_some();
                if needs_login && auth.is_none() {
                    input.write_all(b"530 5.7.0 Authentication required\r\n")?;
                    continue;
                }
                sender = between(&line, '<', '>');
                rcpts.clear();
                input.write_all(b"250 2.1.0 Sender ok\r\n")?;
            }
            "RCPT" => {
                let addr = between(&line, '<', '>').to_lowercase();
                let reply = {
                    let mut s = script.lock().unwrap();
                    let rule = s
                        .rules
                        .iter()
                        .find(|(a, _)| *a == addr)
                        .map(|(_, r)| r.clone())
                        .unwrap_or(RcptRule::Accept);
                    match rule {
                        RcptRule::Accept => None,
                        RcptRule::Reject => {
                            Some("550 5.1.1 <".to_string() + &addr + ">: no such user here\r\n")
                        }
                        RcptRule::DeferTimes(n) => {
                            let count = match s.deferred.iter_mut().find(|(a, _)| *a == addr) {
                                Some((_, c)) => c,
                                None => {
                                    s.deferred.push((addr.clone(), 0));
                                    &mut s.deferred.last_mut().unwrap().1
                                }
                            };
                            if *count < n {
                                *count += 1;
                                Some("451 4.3.0 <".to_string() + &addr + ">: try again later\r\n")
                            } else {
                                None
                            }
                        }
                    }
                };
                match reply {
                    Some(r) => input.write_all(r.as_bytes())?,
                    None => {
                        rcpts.push(addr);
                        input.write_all(b"250 2.1.5 Recipient ok\r\n")?;
                    }
                }
            }
            "DATA" => {
                if rcpts.is_empty() {
                    input.write_all(b"554 5.5.1 No valid recipients\r\n")?;
                    continue;
                }
                input.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")?;
                let mut data = Vec::new();
                loop {
                    let mut l = Vec::new();
                    if input.read_until(b'\n', &mut l)? == 0 {
                        return Ok(false);
                    }
                    if l == b".\r\n" {
                        break;
                    }
                    let body = if l.starts_with(b"..") {
                        &l[1..]
                    } else {
                        &l[..]
                    };
                    data.extend_from_slice(body);
                }
                let stall = {
                    let mut s = script.lock().unwrap();
                    match &mut s.stall {
                        Some((d, n)) if *n > 0 => {
                            *n -= 1;
                            Some(*d)
                        }
                        _ => None,
                    }
                };
                if let Some(d) = stall {
                    std::thread::sleep(d);
                    // The gateway has given up on this connection; nothing is recorded.
                    return Ok(false);
                }
                script.lock().unwrap().received.push(Received {
                    sender: sender.clone(),
                    recipients: rcpts.clone(),
                    data,
                    auth: auth.clone(),
                });
                input.write_all(b"250 2.0.0 Ok: queued\r\n")?;
            }
            "STARTTLS" if offer_starttls => {
                input.write_all(b"220 2.0.0 Ready to start TLS\r\n")?;
                return Ok(true);
            }
            "RSET" => {
                rcpts.clear();
                input.write_all(b"250 2.0.0 Ok\r\n")?;
            }
            "NOOP" => input.write_all(b"250 2.0.0 Ok\r\n")?,
            "QUIT" => {
                input.write_all(b"221 2.0.0 Bye\r\n")?;
                return Ok(false);
            }
            _ => input.write_all(b"502 5.5.2 Command not recognized\r\n")?,
        }
    }
}

fn between(s: &str, a: char, b: char) -> String {
    match (s.find(a), s.rfind(b)) {
        (Some(i), Some(j)) if j > i => s[i + 1..j].to_string(),
        _ => String::new(),
    }
}

impl SmtpSink {
    /// The `MAIL FROM` arguments of each dump, oldest first (`<a@example.org> BODY=8BITMIME`).
    pub fn mail_args(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .filter_map(|p| std::fs::read(p).ok())
            .filter_map(|raw| {
                String::from_utf8_lossy(&raw)
                    .lines()
                    .find_map(|l| l.strip_prefix("X-Mail-Args: ").map(str::to_string))
            })
            .collect()
    }
}

/// One LMTP transaction: one DATA, its recipients, and the reply each got.
#[derive(Debug, Clone)]
pub struct LmtpTransaction {
    /// The LHLO argument.
    pub lhlo: String,
    /// The whole MAIL command line, parameters included.
    pub mail: String,
    pub recipients: Vec<String>,
    /// The message, dot-unstuffed.
    pub data: Vec<u8>,
    /// The reply line each recipient got after the final dot, in RCPT order.
    pub replies: Vec<String>,
}

#[derive(Default)]
struct LmtpScript {
    eight_bit_mime: bool,
    /// Replies after the final dot, per address, one per transaction; then 250.
    after_data: Vec<(String, std::collections::VecDeque<String>)>,
    transactions: Vec<LmtpTransaction>,
}

/// An LMTP server (RFC 2033), on TCP or on a Unix socket, that answers each recipient
/// after the final dot from a script and records every transaction.
pub struct LmtpServer {
    script: Arc<Mutex<LmtpScript>>,
    target: String,
    /// Holds the Unix socket's directory.
    _dir: Option<tempfile::TempDir>,
}

impl LmtpServer {
    /// On 127.0.0.1, a port chosen by the system; `eight_bit_mime`: offer 8BITMIME.
    pub fn tcp(eight_bit_mime: bool) -> LmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let script = LmtpServer::script(eight_bit_mime);
        let s = script.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || lmtp_session(stream, &s));
            }
        });
        LmtpServer {
            script,
            target: format!("lmtp:127.0.0.1:{port}"),
            _dir: None,
        }
    }

    /// On a Unix socket in a temporary directory, as Dovecot listens by default.
    pub fn unix(eight_bit_mime: bool) -> LmtpServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lmtp");
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind unix");
        let script = LmtpServer::script(eight_bit_mime);
        let s = script.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || lmtp_session(stream, &s));
            }
        });
        LmtpServer {
            script,
            target: format!("lmtp:unix:{}", path.display()),
            _dir: Some(dir),
        }
    }

    fn script(eight_bit_mime: bool) -> Arc<Mutex<LmtpScript>> {
        Arc::new(Mutex::new(LmtpScript {
            eight_bit_mime,
            ..LmtpScript::default()
        }))
    }

    /// The delivery target for sealpost: `lmtp:127.0.0.1:PORT` or `lmtp:unix:PATH`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// `address` gets these replies after the final dot, one per transaction, then 250.
    pub fn after_data(&self, address: &str, replies: &[&str]) {
        self.script.lock().unwrap().after_data.push((
            address.to_lowercase(),
            replies.iter().map(|r| r.to_string()).collect(),
        ));
    }

    pub fn transactions(&self) -> Vec<LmtpTransaction> {
        self.script.lock().unwrap().transactions.clone()
    }

    pub fn wait_transactions(&self, n: usize, timeout: Duration) -> Vec<LmtpTransaction> {
        wait_for(timeout, &format!("{n} LMTP transaction(s)"), || {
            let t = self.transactions();
            (t.len() >= n).then_some(t)
        })
    }
}

fn lmtp_session<S: Stream>(stream: S, script: &Mutex<LmtpScript>) {
    let mut io = Io {
        inner: BufReader::new(stream),
    };
    let _ = lmtp_commands(&mut io, script);
}

fn lmtp_commands<S: Stream>(io: &mut Io<S>, script: &Mutex<LmtpScript>) -> std::io::Result<()> {
    io.write_all(b"220 lmtp.test LMTP ready\r\n")?;
    let mut lhlo = None;
    let mut mail = None;
    let mut rcpts: Vec<String> = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if io.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_string();
        let verb = command
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        match verb.as_str() {
            "LHLO" => {
                lhlo = Some(command[4..].trim().to_string());
                let mut reply = String::from("250-lmtp.test\r\n250-PIPELINING\r\n");
                if script.lock().unwrap().eight_bit_mime {
                    reply.push_str("250-8BITMIME\r\n");
                }
                reply.push_str("250-ENHANCEDSTATUSCODES\r\n250 SIZE\r\n");
                io.write_all(reply.as_bytes())?;
            }
            "EHLO" | "HELO" => {
                io.write_all(b"500 5.5.1 This is an LMTP server; say LHLO\r\n")?;
            }
            "MAIL" if lhlo.is_none() => io.write_all(b"503 5.5.1 LHLO first\r\n")?,
            "MAIL" => {
                mail = Some(command.clone());
                rcpts.clear();
                io.write_all(b"250 2.1.0 Ok\r\n")?;
            }
            "RCPT" if mail.is_none() => io.write_all(b"503 5.5.1 MAIL first\r\n")?,
            "RCPT" => {
                rcpts.push(between(&command, '<', '>').to_lowercase());
                io.write_all(b"250 2.1.5 Ok\r\n")?;
            }
            "DATA" if rcpts.is_empty() => io.write_all(b"503 5.5.1 No valid recipients\r\n")?,
            "DATA" => {
                io.write_all(b"354 Start mail input; end with <CRLF>.<CRLF>\r\n")?;
                let mut data = Vec::new();
                loop {
                    let mut l = Vec::new();
                    if io.read_until(b'\n', &mut l)? == 0 {
                        return Ok(());
                    }
                    if l == b".\r\n" {
                        break;
                    }
                    data.extend_from_slice(l.strip_prefix(b".").unwrap_or(&l));
                }
                let mut s = script.lock().unwrap();
                let replies: Vec<String> = rcpts
                    .iter()
                    .map(|r| {
                        s.after_data
                            .iter_mut()
                            .find(|(a, _)| a == r)
                            .and_then(|(_, q)| q.pop_front())
                            .unwrap_or_else(|| format!("250 2.0.0 <{r}> Saved"))
                    })
                    .collect();
                s.transactions.push(LmtpTransaction {
                    lhlo: lhlo.clone().unwrap_or_default(),
                    mail: mail.take().unwrap_or_default(),
                    recipients: std::mem::take(&mut rcpts),
                    data,
                    replies: replies.clone(),
                });
                drop(s);
                // All replies in one write, as a server that has them at once sends them.
                let all: String = replies.iter().map(|r| format!("{r}\r\n")).collect();
                io.write_all(all.as_bytes())?;
            }
            "RSET" => {
                mail = None;
                rcpts.clear();
                io.write_all(b"250 2.0.0 Ok\r\n")?;
            }
            "NOOP" => io.write_all(b"250 2.0.0 Ok\r\n")?,
            "QUIT" => {
                io.write_all(b"221 2.0.0 Bye\r\n")?;
                return Ok(());
            }
            _ => io.write_all(b"502 5.5.2 Command not recognized\r\n")?,
        }
    }
}
