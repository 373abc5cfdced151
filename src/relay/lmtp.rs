//! LMTP delivery (RFC 2033) to a mailbox server such as Dovecot, over TCP or a Unix
//! socket: LHLO, MAIL, one RCPT per recipient, DATA, then one reply per accepted
//! recipient, each mapped to that recipient's outcome as an SMTP reply would be.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::blob::{sealed::CHUNK, Blob};
use crate::smtp::reply::{Class, Enhanced, Reply};

use super::commands::{self, MailParams};
use super::{downgrade, wire, Copy, Escaped, Outcome};

/// Where the LMTP server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LmtpAddress {
    Tcp {
        host: String,
        port: u16,
    },
    /// A Unix socket, Dovecot's default (`/run/dovecot/lmtp`).
    Unix(PathBuf),
}

impl fmt::Display for LmtpAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LmtpAddress::Tcp { host, port } => write!(f, "lmtp:{host}:{port}"),
            LmtpAddress::Unix(p) => write!(f, "lmtp:unix:{}", p.display()),
        }
    }
}

/// How to reach the LMTP server.
#[derive(Debug, Clone)]
pub struct LmtpConfig {
    pub address: LmtpAddress,
    /// Our name in LHLO.
    pub lhlo: String,
    /// Connect and command timeout.
    pub timeout: Duration,
    /// How long to wait for each recipient's reply after the final dot (RFC 5321's
    /// 10 minutes: the server may be writing to a slow mailbox).
    pub data_timeout: Duration,
}

/// What went wrong on the connection itself (not a refusal by the server).
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server closed the connection")]
    Closed,
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("unreadable reply: {0}")]
    Wire(#[from] wire::Error),
}

impl Error {
    /// Temporary: the copy is retried, as for an unreachable SMTP upstream.
    fn reply(&self, cfg: &LmtpConfig) -> Reply {
        tracing::warn!(server = %cfg.address, error = %Escaped(&self.to_string()), "LMTP delivery failed");
        let enhanced = match self {
            Error::Connect(_) => Enhanced(4, 4, 1),
            Error::Wire(_) => Enhanced(4, 5, 0),
            _ => Enhanced(4, 4, 2),
        };
        Reply::new(
            451,
            enhanced,
            format!(
                "LMTP server {} failed ({self}); try again later",
                cfg.address
            ),
        )
    }
}

/// A byte stream to the server: TCP, a Unix socket, or in tests an in-memory pipe.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// The socket and the bytes read but not yet parsed, so that a reply that arrives with
/// the next one (LMTP's per-recipient replies often do) is kept for the next read.
struct Connection {
    stream: Box<dyn Stream>,
    buf: Vec<u8>,
}

impl Connection {
    fn new(stream: Box<dyn Stream>) -> Connection {
        Connection {
            stream,
            buf: Vec::with_capacity(1024),
        }
    }

    async fn reply(
        &mut self,
        timeout: Duration,
        waiting_for: &'static str,
    ) -> Result<Reply, Error> {
        let read = async {
            let mut chunk = [0u8; 4096];
            loop {
                if let Some((reply, used)) = wire::parse(&self.buf)? {
                    self.buf.drain(..used.min(self.buf.len()));
                    return Ok(reply);
                }
                let n = self.stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(Error::Closed);
                }
                self.buf
                    .extend_from_slice(chunk.get(..n).unwrap_or_default());
            }
        };
        tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| Error::Timeout(waiting_for))?
    }

    async fn write(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), Error> {
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        tokio::time::timeout(timeout, write)
            .await
            .map_err(|_| Error::Timeout("the server to take our data"))?
            .map_err(Error::Io)
    }

    async fn command(
        &mut self,
        line: &str,
        timeout: Duration,
        waiting_for: &'static str,
    ) -> Result<Reply, Error> {
        self.write(line.as_bytes(), timeout).await?;
        self.reply(timeout, waiting_for).await
    }

    /// Ends the session politely; a server that has gone away by now changes nothing.
    async fn quit(&mut self, timeout: Duration) {
        let _ = self.command("QUIT\r\n", timeout, "the QUIT reply").await;
    }
}

/// The extensions the LHLO reply lists that matter here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Capabilities {
    eight_bit_mime: bool,
    smtputf8: bool,
    size: bool,
    dsn: bool,
}

impl Capabilities {
    fn of(lhlo: &Reply) -> Capabilities {
        let mut c = Capabilities::default();
        // The first line is the server's name; each further line starts with a keyword.
        for line in lhlo.lines.iter().skip(1) {
            let keyword = line.split_whitespace().next().unwrap_or_default();
            match keyword.to_ascii_uppercase().as_str() {
                "8BITMIME" => c.eight_bit_mime = true,
                "SMTPUTF8" => c.smtputf8 = true,
                "SIZE" => c.size = true,
                "DSN" => c.dsn = true,
                _ => {}
            }
        }
        c
    }
}

/// One attempt at one copy: an outcome per recipient, in envelope order.
pub async fn attempt(cfg: &LmtpConfig, copy: &Copy) -> Vec<Outcome> {
    let mut conn = match connect(cfg).await {
        Ok(c) => c,
        Err(e) => {
            let reply = e.reply(cfg);
            return copy
                .envelope
                .recipients
                .iter()
                .map(|_| Outcome::Failed(reply.clone()))
                .collect();
        }
    };
    transaction(&mut conn, cfg, copy).await
}

/// Whether the LMTP server offers SMTPUTF8 (so that the inbound listener may offer it).
pub async fn offers_smtputf8(cfg: &LmtpConfig) -> bool {
    let Ok(mut conn) = connect(cfg).await else {
        return false;
    };
    let caps = hello(&mut conn, cfg).await;
    conn.quit(cfg.timeout).await;
    caps.is_ok_and(|c| c.smtputf8)
}

async fn connect(cfg: &LmtpConfig) -> Result<Connection, Error> {
    let stream: Box<dyn Stream> = match &cfg.address {
        LmtpAddress::Tcp { host, port } => {
            let connecting = tokio::net::TcpStream::connect((host.as_str(), *port));
            let tcp = tokio::time::timeout(cfg.timeout, connecting)
                .await
                .map_err(|_| Error::Timeout("the connection"))?
                .map_err(Error::Connect)?;
            // Commands are small writes answered one by one: no Nagle delay.
            let _ = tcp.set_nodelay(true);
            Box::new(tcp)
        }
        LmtpAddress::Unix(path) => {
            let connecting = tokio::net::UnixStream::connect(path);
            Box::new(
                tokio::time::timeout(cfg.timeout, connecting)
                    .await
                    .map_err(|_| Error::Timeout("the connection"))?
                    .map_err(Error::Connect)?,
            )
        }
    };
    Ok(Connection::new(stream))
}

/// The greeting and LHLO; the server's capabilities, or the reply every recipient gets.
async fn hello(conn: &mut Connection, cfg: &LmtpConfig) -> Result<Capabilities, Reply> {
    let greeting = conn
        .reply(cfg.timeout, "the greeting")
        .await
        .map_err(|e| e.reply(cfg))?;
    if !greeting.is_success() {
        return Err(refusal(greeting));
    }
    let lhlo = conn
        .command(
            &format!("LHLO {}\r\n", cfg.lhlo),
            cfg.timeout,
            "the LHLO reply",
        )
        .await
        .map_err(|e| e.reply(cfg))?;
    match lhlo.class() {
        Class::Success => Ok(Capabilities::of(&lhlo)),
        // An SMTP server answers LHLO with 500 or 502: the target is misconfigured, which
        // an administrator fixes; the mail waits in the spool meanwhile.
        Class::Permanent => {
            tracing::error!(server = %cfg.address, reply = %Escaped(&lhlo.to_string()), "the delivery target does not speak LMTP");
            Err(Reply::new(
                451,
                Enhanced(4, 3, 5),
                format!(
                    "The delivery server {} is not an LMTP server (LHLO answered: {lhlo}); try again later",
                    cfg.address
                ),
            ))
        }
        _ => Err(refusal(lhlo)),
    }
}

/// The rest of the session on an open connection.
async fn transaction(conn: &mut Connection, cfg: &LmtpConfig, copy: &Copy) -> Vec<Outcome> {
    let rcpts = &copy.envelope.recipients;
    let mut outcomes: Vec<Option<Outcome>> = vec![None; rcpts.len()];
    // Every recipient without an outcome yet gets `reply`.
    let fill = |outcomes: Vec<Option<Outcome>>, reply: Reply| -> Vec<Outcome> {
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::Failed(reply.clone())))
            .collect()
    };
    let caps = match hello(conn, cfg).await {
        Ok(c) => c,
        Err(reply) => {
            conn.quit(cfg.timeout).await;
            return fill(outcomes, reply);
        }
    };
    let prepared = match downgrade::prepare(&copy.data, caps.eight_bit_mime).await {
        Ok(p) => p,
        Err(reply) => {
            conn.quit(cfg.timeout).await;
            return fill(outcomes, reply);
        }
    };
    let sender = &copy.envelope.sender;
    let params = MailParams {
        size: caps.size.then_some(prepared.data.len()),
        body_8bit: prepared.body_8bit,
        smtputf8: sender.smtputf8 && caps.smtputf8,
        dsn: caps.dsn,
    };
    match conn
        .command(
            &commands::mail(sender, params),
            cfg.timeout,
            "the MAIL reply",
        )
        .await
    {
        Ok(r) if r.is_success() => {}
        Ok(r) => {
            conn.quit(cfg.timeout).await;
            return fill(outcomes, refusal(r));
        }
        Err(e) => return fill(outcomes, e.reply(cfg)),
    }

    let mut accepted = Vec::new();
    for (i, rcpt) in rcpts.iter().enumerate() {
        match conn
            .command(&commands::rcpt(rcpt, caps.dsn), cfg.timeout, "a RCPT reply")
            .await
        {
            Ok(r) if r.is_success() => accepted.push(i),
            Ok(r) => {
                let o = Outcome::Failed(refusal(r));
                log(cfg, &rcpt.address, "at RCPT", &o);
                set(&mut outcomes, i, o);
            }
            Err(e) => return fill(outcomes, e.reply(cfg)),
        }
    }
    if accepted.is_empty() {
        conn.quit(cfg.timeout).await;
        return fill(outcomes, Reply::new(451, Enhanced(4, 0, 0), "no recipient"));
    }

    match conn
        .command("DATA\r\n", cfg.timeout, "the DATA reply")
        .await
    {
        Ok(r) if r.code == 354 => {}
        Ok(r) => {
            conn.quit(cfg.timeout).await;
            return fill(outcomes, refusal(r));
        }
        Err(e) => return fill(outcomes, e.reply(cfg)),
    }
    if let Err(e) = send_data(conn, cfg, &prepared.data).await {
        // No final dot went out: the server discards the transaction when the connection
        // drops (no QUIT: it would be taken for message data).
        return fill(outcomes, e);
    }
    // RFC 2033 §4.2: one reply per accepted recipient, in RCPT order.
    for &i in &accepted {
        let o = match conn
            .reply(cfg.data_timeout, "a recipient's reply after the final dot")
            .await
        {
            Ok(r) if r.is_success() => Outcome::Delivered(r),
            Ok(r) => Outcome::Failed(refusal(r)),
            Err(e) => return fill(outcomes, e.reply(cfg)),
        };
        if let Some(rcpt) = rcpts.get(i) {
            log(cfg, &rcpt.address, "after DATA", &o);
        }
        set(&mut outcomes, i, o);
    }
    conn.quit(cfg.timeout).await;
    fill(outcomes, Reply::new(451, Enhanced(4, 0, 0), "no reply"))
}

/// The message, dot-stuffed, and the final dot, written piece by piece straight from
/// where it is kept: a spilled message is never held whole in memory.
///
/// A spilled piece is read and decrypted here, on the async thread: one 64 KiB chunk
/// (a positioned read, usually from the page cache, and a ChaCha20-Poly1305 pass of well
/// under a millisecond) between two awaited socket writes, which is cheaper than a
/// hand-off to the blocking pool per chunk and never holds the thread for long.
///
/// # Errors
/// The reply every recipient gets when the data cannot be read or sent; the final dot
/// is then not sent, so the server never takes a truncated message.
async fn send_data(conn: &mut Connection, cfg: &LmtpConfig, data: &Blob) -> Result<(), Reply> {
    let mut stuffer = wire::DotStuffer::new();
    // One buffer for the whole message; a small message is one write.
    let mut out = Vec::with_capacity(data.len().min(CHUNK) + 64);
    for piece in data.pieces() {
        let piece = piece.map_err(|e| downgrade::unreadable(&e))?;
        stuffer.push(&piece, &mut out);
        if out.len() >= CHUNK {
            conn.write(&out, cfg.data_timeout)
                .await
                .map_err(|e| e.reply(cfg))?;
            out.clear();
        }
    }
    stuffer.finish(&mut out);
    conn.write(&out, cfg.data_timeout)
        .await
        .map_err(|e| e.reply(cfg))
}

fn set(outcomes: &mut [Option<Outcome>], i: usize, o: Outcome) {
    if let Some(slot) = outcomes.get_mut(i) {
        *slot = Some(o);
    }
}

/// A refusal as the server worded it; a reply of the wrong kind (a 3xx where none is
/// expected) is a protocol error, retried.
fn refusal(r: Reply) -> Reply {
    match r.class() {
        Class::Transient | Class::Permanent => r,
        Class::Success | Class::Intermediate => Reply::new(
            451,
            Enhanced(4, 5, 0),
            format!("Unexpected reply from the LMTP server: {r}"),
        ),
    }
}

fn log(cfg: &LmtpConfig, to: &str, stage: &str, o: &Outcome) {
    let (status, reply) = match o {
        Outcome::Delivered(r) => ("delivered", r),
        Outcome::Failed(r) if r.class() == Class::Permanent => ("refused", r),
        Outcome::Failed(r) => ("deferred", r),
    };
    tracing::info!(server = %cfg.address, to, stage, status, reply = %Escaped(&reply.to_string()), "LMTP recipient");
}

#[cfg(test)]
mod tests;
