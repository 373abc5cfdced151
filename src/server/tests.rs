//! The real listener on 127.0.0.1:0, driven by swaks and by a raw socket.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::listener::{run, ConnectionLimits, Serving};
use crate::smtp::backend::Backend;
use crate::smtp::config::{AuthMode, SessionConfig};
use crate::smtp::envelope::{Recipient, Sender};
use crate::smtp::reply::{Enhanced, Reply};
use crate::smtp::transaction::{Client, Credentials, Transaction};

/// Records what it is given; refuses recipients starting with "refuse".
#[derive(Default)]
struct Recorder {
    txs: Mutex<Vec<Transaction>>,
}

impl Backend for Recorder {
    async fn check_recipient(&self, _: &Sender, rcpt: &Recipient, _: &Client) -> Result<(), Reply> {
        if rcpt.address.starts_with("refuse") {
            Err(Reply::new(550, Enhanced(5, 7, 1), "refused by policy"))
        } else {
            Ok(())
        }
    }

    async fn deliver(&self, tx: Transaction) -> Reply {
        self.txs.lock().unwrap().push(tx);
        Reply::new(250, Enhanced(2, 0, 0), "queued")
    }

    async fn authenticate(&self, _: &Credentials) -> Result<(), Reply> {
        Err(crate::smtp::command::auth::failed())
    }
}

struct Server {
    addr: SocketAddr,
    backend: Arc<Recorder>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Server {
    fn delivered(&self) -> Vec<Transaction> {
        self.backend.txs.lock().unwrap().clone()
    }
}

async fn start(cfg: SessionConfig, limits: ConnectionLimits) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let backend = Arc::new(Recorder::default());
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let (_, serving) = tokio::sync::watch::channel(Serving {
        cfg: Arc::new(cfg),
        backend: backend.clone(),
    });
    tokio::spawn(run(
        listener,
        serving,
        limits,
        shutdown.clone(),
        tracker.clone(),
    ));
    Server {
        addr,
        backend,
        shutdown,
        tracker,
    }
}

const LIMITS: ConnectionLimits = ConnectionLimits {
    max: 16,
    per_ip: 16,
};

fn tls_cfg(dir: &std::path::Path) -> SessionConfig {
    let acceptor = crate::tls::self_signed(dir, "localhost").unwrap().acceptor;
    let mut cfg = SessionConfig::new("gw.test");
    cfg.tls = Some(acceptor);
    cfg
}

async fn swaks(server: &Server, extra: &[&str]) -> String {
    let out = tokio::process::Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port"])
        .arg(server.addr.port().to_string())
        .args(["--from", "a@x.test", "--to", "b@y.test", "--timeout", "10"])
        .args(extra)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "swaks {extra:?} failed:\n{text}");
    text
}

#[tokio::test]
async fn swaks_plain_and_pipelined() {
    let server = start(SessionConfig::new("gw.test"), LIMITS).await;
    swaks(&server, &[]).await;
    let out = swaks(&server, &["--pipeline"]).await;
    assert!(out.contains("PIPELINING"), "{out}");
    let txs = server.delivered();
    assert_eq!(txs.len(), 2);
    assert_eq!(txs[1].envelope.recipients[0].address, "b@y.test");
    assert!(
        String::from_utf8_lossy(&txs[1].message.to_vec().unwrap()).starts_with("Received: from ")
    );
}

#[tokio::test]
async fn swaks_starttls_and_implicit_tls() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(tls_cfg(dir.path()), LIMITS).await;
    swaks(&server, &["-tls"]).await;
    let txs = server.delivered();
    assert_eq!(txs.len(), 1);
    assert!(txs[0].client.tls);
    assert!(String::from_utf8_lossy(&txs[0].message.to_vec().unwrap()).contains("with ESMTPS id"));

    let mut cfg = tls_cfg(dir.path());
    cfg.implicit_tls = true;
    let server = start(cfg, LIMITS).await;
    swaks(&server, &["-tlsc"]).await;
    assert!(server.delivered()[0].client.tls);
}

#[tokio::test]
async fn swaks_auth_local_plain_and_login() {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let hash = argon2::Argon2::default()
        .hash_password(b"secret", &SaltString::generate(&mut OsRng))
        .unwrap()
        .to_string();
    let mut cfg = SessionConfig::new("gw.test");
    cfg.auth = AuthMode::Local(Arc::new(vec![("alice".into(), hash)]));
    cfg.require_auth = true;
    let server = start(cfg, LIMITS).await;
    for mech in ["PLAIN", "LOGIN"] {
        swaks(
            &server,
            &[
                "--auth",
                mech,
                "--auth-user",
                "alice",
                "--auth-password",
                "secret",
            ],
        )
        .await;
    }
    let txs = server.delivered();
    assert_eq!(txs.len(), 2);
    for tx in &txs {
        let auth = tx.client.auth.as_ref().unwrap();
        assert_eq!(auth.username, "alice");
        assert_eq!(auth.secret, None, "local mode drops the password");
    }

    let mut c = Raw::connect(&server).await;
    c.expect("EHLO c.test\r\n", "250").await;
    c.expect("AUTH PLAIN AGFsaWNlAHdyb25n\r\n", "535 5.7.8")
        .await;
    c.expect("MAIL FROM:<a@x.test>\r\n", "530 5.7.0").await;
}

/// A raw client that reads one (possibly multi-line) reply per command.
struct Raw {
    read: BufReader<OwnedReadHalf>,
    write: OwnedWriteHalf,
}

impl Raw {
    async fn connect(server: &Server) -> Raw {
        let (r, w) = TcpStream::connect(server.addr).await.unwrap().into_split();
        let mut raw = Raw {
            read: BufReader::new(r),
            write: w,
        };
        let greeting = raw.reply().await;
        assert!(greeting.starts_with("220 "), "{greeting}");
        raw
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.write.write_all(bytes).await.unwrap();
    }

    /// The next reply, all lines; empty at end of stream.
    async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(5), self.read.read_line(&mut line))
                .await
                .expect("reply in time")
                .unwrap();
            all.push_str(&line);
            if n == 0 || line.as_bytes().get(3) == Some(&b' ') {
                return all;
            }
        }
    }

    async fn expect(&mut self, command: &str, want: &str) -> String {
        self.send(command.as_bytes()).await;
        let got = self.reply().await;
        assert!(got.starts_with(want), "{command:?}: want {want}, got {got}");
        got
    }
}

#[tokio::test]
async fn raw_bad_input_keeps_or_ends_the_session_as_it_should() {
    let mut cfg = SessionConfig::new("gw.test");
    cfg.max_message_size = 1000;
    let server = start(cfg, LIMITS).await;
    let mut c = Raw::connect(&server).await;
    c.expect("EHLO c.test\r\n", "250").await;
    c.send(b"\x00\x01garbage\xff\xfe\r\n").await;
    let got = c.reply().await;
    assert!(got.starts_with("500 5.5"), "{got}");
    c.expect(&format!("{}\r\n", "A".repeat(2000)), "500 5.5.2")
        .await;
    c.expect("NOOP\r\n", "250 2.0.0").await;
    c.expect("MAIL FROM:<a@x.test> SIZE=5000\r\n", "552 5.3.4")
        .await;
    c.expect("MAIL FROM:<a@x.test>\r\n", "250").await;
    c.expect("RCPT TO:<b@y.test>\r\n", "250").await;
    c.expect("DATA\r\n", "354").await;
    let big = "0123456789012345678901234567890123456789\r\n".repeat(100);
    c.expect(&format!("Subject: big\r\n\r\n{big}.\r\n"), "552 5.3.4")
        .await;
    c.expect("MAIL FROM:<a@x.test>\r\n", "250").await;
    c.expect("RCPT TO:<b@y.test>\r\n", "250").await;
    c.expect("DATA\r\n", "354").await;
    c.expect("body\n.\nMAIL FROM:<evil@x.test>\r\n.\r\n", "554 5.6.0")
        .await;
    c.expect("QUIT\r\n", "221").await;
    assert!(server.delivered().is_empty());
}

#[tokio::test]
async fn raw_starttls_with_pipelined_plaintext_is_not_executed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(tls_cfg(dir.path()), LIMITS).await;
    let mut c = Raw::connect(&server).await;
    c.expect("EHLO c.test\r\n", "250").await;
    c.send(b"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\n").await;
    let got = c.reply().await;
    assert!(got.starts_with("220 2.0.0"), "{got}");
    // The plaintext MAIL is dropped: no reply to it arrives before the handshake.
    let mut extra = String::new();
    let late = tokio::time::timeout(Duration::from_millis(300), c.read.read_line(&mut extra)).await;
    assert!(late.is_err() || extra.is_empty(), "answered: {extra}");
}

#[tokio::test]
async fn slow_drip_is_cut_off() {
    let mut cfg = SessionConfig::new("gw.test");
    cfg.command_timeout = Duration::from_millis(400);
    let server = start(cfg, LIMITS).await;
    let mut c = Raw::connect(&server).await;
    let started = tokio::time::Instant::now();
    let drip = async {
        for b in b"EHLO client.example.test and more and more\r\n" {
            if c.write.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(1), drip)
        .await
        .ok();
    let got = c.reply().await;
    assert!(got.starts_with("421 4.4.2"), "{got}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// Timeouts too large to add to the clock: the session, the TLS handshake and the
/// refusal of a connection over the limit all go on without a panic.
#[tokio::test]
async fn huge_timeouts_do_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tls_cfg(dir.path());
    cfg.command_timeout = Duration::MAX;
    cfg.data_timeout = Duration::MAX;
    let server = start(cfg, ConnectionLimits { max: 1, per_ip: 1 }).await;
    swaks(&server, &["-tls"]).await;
    let mut first = Raw::connect(&server).await;
    first.expect("EHLO c.test\r\n", "250").await;
    let (r, _w) = TcpStream::connect(server.addr).await.unwrap().into_split();
    let mut second = String::new();
    BufReader::new(r).read_line(&mut second).await.unwrap();
    assert!(second.starts_with("421 4.3.2"), "{second}");
    first.expect("QUIT\r\n", "221").await;
    assert_eq!(server.delivered().len(), 1);
}

#[tokio::test]
async fn connection_limit_and_shutdown() {
    let limits = ConnectionLimits { max: 1, per_ip: 1 };
    let server = start(SessionConfig::new("gw.test"), limits).await;
    let mut first = Raw::connect(&server).await;
    first.expect("EHLO c.test\r\n", "250").await;
    let (r, _w) = TcpStream::connect(server.addr).await.unwrap().into_split();
    let mut second = String::new();
    BufReader::new(r).read_line(&mut second).await.unwrap();
    assert!(second.starts_with("421 4.3.2"), "{second}");

    server.shutdown.cancel();
    let got = first.reply().await;
    assert!(got.starts_with("421 4.3.2"), "{got}");
    assert!(super::shutdown::drain(&server.tracker, Duration::from_secs(2)).await);
}

#[tokio::test]
async fn shutdown_lets_a_transaction_in_flight_finish() {
    let server = start(SessionConfig::new("gw.test"), LIMITS).await;
    let mut c = Raw::connect(&server).await;
    c.expect("EHLO c.test\r\n", "250").await;
    c.expect("MAIL FROM:<a@x.test>\r\n", "250").await;
    c.expect("RCPT TO:<b@y.test>\r\n", "250").await;
    c.expect("DATA\r\n", "354").await;
    c.send(b"Subject: in flight\r\n\r\n").await;
    server.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        TcpStream::connect(server.addr).await.is_err(),
        "the listening socket is closed"
    );
    c.expect("body\r\n.\r\n", "250 2.0.0").await;
    let got = c.reply().await;
    assert!(got.starts_with("421 4.3.2"), "{got}");
    assert_eq!(server.delivered().len(), 1);
    assert!(super::shutdown::drain(&server.tracker, Duration::from_secs(2)).await);
}
