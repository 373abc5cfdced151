//! LMTP delivery (RFC 2033) to a mailbox server such as Dovecot, over TCP or a Unix
//! socket: LHLO, MAIL, one RCPT per recipient, DATA, then one reply per accepted
//! recipient, each mapped to that recipient's outcome as an SMTP reply would be.
//!
//! Over TCP the connection may be secured ([`HopTls`]): TLS from the first byte, or
//! STARTTLS after LHLO (LMTP keeps SMTP's service extensions, RFC 3207 among them), which
//! is then required: a server that does not offer it gets no message, and the copy is
//! retried. A Unix socket never uses TLS.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::blob::{sealed::CHUNK, Blob};
use crate::smtp::reply::{Class, Enhanced, Reply};

use super::commands::{self, MailParams};
use super::hop::{self, Connection, Error, HopTls};
use super::pool::{self, Kept};
use super::size::{self, HopSize};
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
    /// TLS to a TCP address, verified against its host.
    pub tls: HopTls,
    /// Our name in LHLO.
    pub lhlo: String,
    /// Connect and command timeout.
    pub timeout: Duration,
    /// How long to wait for each recipient's reply after the final dot (RFC 5321's
    /// 10 minutes: the server may be writing to a slow mailbox).
    pub data_timeout: Duration,
    /// Idle sessions kept for the next copy, and the server's SIZE.
    pub pool: Arc<Pool>,
}

/// Idle sessions to the LMTP server, reused for the next copy (see [`super::pool`]), and
/// the SIZE its last LHLO gave, for the inbound listener. Every session in one pool was
/// opened with the same greeting command.
#[derive(Default)]
pub struct Pool {
    idle: pool::Pool<(), Session>,
    size: Arc<HopSize>,
}

impl Pool {
    /// The server's SIZE, learned from the LHLO of each new session.
    pub fn size(&self) -> Arc<HopSize> {
        self.size.clone()
    }

    /// Keeps `session` for the next copy, unless it has served its time (then it ends
    /// with QUIT, in the background: nobody waits for that reply).
    fn put(&self, session: Kept<Session>, timeout: Duration) {
        if let Some(mut retired) = self.idle.put((), session) {
            tokio::spawn(async move { retired.conn.quit(timeout).await });
        }
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("size", &self.size.get())
            .finish_non_exhaustive()
    }
}

/// A connection past its greeting and LHLO (and STARTTLS), ready for MAIL.
struct Session {
    conn: Connection,
    caps: Capabilities,
}

/// The reply every recipient gets when the connection fails: temporary, so the copy is
/// retried, as for an unreachable SMTP upstream.
fn failed(e: &Error, cfg: &LmtpConfig) -> Reply {
    tracing::warn!(server = %cfg.address, tls = %cfg.tls, error = %Escaped(&e.to_string()), "LMTP delivery failed");
    let enhanced = match e {
        Error::Connect(_) | Error::Handshake(_) => Enhanced(4, 4, 1),
        Error::Wire(_) => Enhanced(4, 5, 0),
        _ if e.is_tls_policy() => Enhanced(4, 7, 5),
        Error::TlsOnUnixSocket => Enhanced(4, 3, 5),
        _ => Enhanced(4, 4, 2),
    };
    Reply::new(
        451,
        enhanced,
        format!("LMTP server {} failed ({e}); try again later", cfg.address),
    )
}

/// The extensions the LHLO reply lists that matter here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Capabilities {
    eight_bit_mime: bool,
    smtputf8: bool,
    size: bool,
    /// The limit SIZE gave, if any.
    size_limit: Option<u64>,
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
        c.size_limit = size::from_ehlo(lhlo.lines.iter().skip(1).map(String::as_str));
        c
    }
}

/// One attempt at one copy: an outcome per recipient, in envelope order.
pub async fn attempt(cfg: &LmtpConfig, copy: &Copy) -> Vec<Outcome> {
    match session(cfg, Hello::Lhlo).await {
        Ok(kept) => deliver(kept, cfg, copy).await,
        Err(reply) => all(copy, reply),
    }
}

/// Every recipient of `copy` gets `reply`.
fn all(copy: &Copy, reply: Reply) -> Vec<Outcome> {
    copy.envelope
        .recipients
        .iter()
        .map(|_| Outcome::Failed(reply.clone()))
        .collect()
}

/// Whether the LMTP server offers SMTPUTF8 (so that the inbound listener may offer it).
/// The session it opens (which also learns the server's SIZE) is kept for the first copy.
pub async fn offers_smtputf8(cfg: &LmtpConfig) -> bool {
    match session(cfg, Hello::Lhlo).await {
        Ok(kept) => {
            let yes = kept.conn.caps.smtputf8;
            cfg.pool.put(kept, cfg.timeout);
            yes
        }
        Err(_) => false,
    }
}

/// An idle session from the pool, or a new one.
///
/// # Errors
/// The reply every recipient gets when no session could be opened.
async fn session(cfg: &LmtpConfig, verb: Hello) -> Result<Kept<Session>, Reply> {
    if let Some(kept) = cfg.pool.idle.take(&()) {
        return Ok(kept);
    }
    new_session(cfg, verb).await.map(Kept::new)
}

async fn new_session(cfg: &LmtpConfig, verb: Hello) -> Result<Session, Reply> {
    let conn = connect(cfg).await.map_err(|e| failed(&e, cfg))?;
    session_on(conn, cfg, verb).await
}

/// The greeting and hello on `conn` (see [`open_with`]); the server's SIZE is noted.
async fn session_on(conn: Connection, cfg: &LmtpConfig, verb: Hello) -> Result<Session, Reply> {
    let (conn, caps) = open_with(conn, cfg, verb).await?;
    cfg.pool.size.set(caps.size_limit);
    Ok(Session { conn, caps })
}

/// What a session is fit for once a copy or a probe is done with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    /// No transaction open: ready for the next MAIL.
    Clean,
    /// A transaction begun and not ended (no recipient, DATA refused): RSET first.
    Open,
    /// Broken, or in a state nothing more can be said in (message data, a 421): closed
    /// without a word.
    Broken,
}

/// Hands `kept` back to the pool, after RSET when a transaction is left open, or closes it.
async fn finish(mut kept: Kept<Session>, cfg: &LmtpConfig, after: After) {
    match after {
        After::Clean => cfg.pool.put(kept, cfg.timeout),
        After::Open => match kept
            .conn
            .conn
            .command("RSET\r\n", cfg.timeout, "the RSET reply")
            .await
        {
            Ok(r) if r.is_success() => cfg.pool.put(kept, cfg.timeout),
            Ok(_) => kept.conn.conn.quit(cfg.timeout).await,
            Err(_) => {}
        },
        After::Broken => {}
    }
}

/// How MAIL went on a session.
enum Begin {
    /// Accepted: the transaction is open for this data.
    Open(downgrade::Prepared),
    /// Nothing was sent: the copy cannot go to this server (8-bit data it cannot take).
    Unsendable(Reply),
    /// The server refused MAIL; the session is clean.
    Refused(Reply),
    /// No reply, or a 421: the session is gone.
    Broken(Reply),
}

/// The data prepared for the session's capabilities, and MAIL for it.
async fn begin(s: &mut Session, cfg: &LmtpConfig, copy: &Copy) -> Begin {
    let prepared = match downgrade::prepare(&copy.data, s.caps.eight_bit_mime).await {
        Ok(p) => p,
        Err(reply) => return Begin::Unsendable(reply),
    };
    let sender = &copy.envelope.sender;
    let params = MailParams {
        size: s.caps.size.then_some(prepared.data.len()),
        body_8bit: prepared.body_8bit,
        smtputf8: sender.smtputf8 && s.caps.smtputf8,
        dsn: s.caps.dsn,
    };
    let mail = commands::mail(sender, params);
    match s.conn.command(&mail, cfg.timeout, "the MAIL reply").await {
        Ok(r) if r.is_success() => Begin::Open(prepared),
        Ok(r) if r.code == 421 => Begin::Broken(refusal(r)),
        Ok(r) => Begin::Refused(refusal(r)),
        Err(e) => Begin::Broken(failed(&e, cfg)),
    }
}

/// One copy on `kept`: MAIL (on a fresh session when a pooled one turns out closed by
/// the server while it was idle, which MAIL finds before anything of the message went),
/// the transaction, and the session back to the pool when it is clean.
async fn deliver(mut kept: Kept<Session>, cfg: &LmtpConfig, copy: &Copy) -> Vec<Outcome> {
    let mut began = begin(&mut kept.conn, cfg, copy).await;
    if kept.reused() && matches!(began, Begin::Broken(_)) {
        kept = match new_session(cfg, Hello::Lhlo).await {
            Ok(s) => Kept::new(s),
            Err(reply) => return all(copy, reply),
        };
        began = begin(&mut kept.conn, cfg, copy).await;
    }
    let (outcomes, after) = match began {
        Begin::Open(prepared) => {
            kept.begun();
            transaction(&mut kept.conn, cfg, copy, &prepared.data).await
        }
        Begin::Unsendable(reply) | Begin::Refused(reply) => (all(copy, reply), After::Clean),
        Begin::Broken(reply) => (all(copy, reply), After::Broken),
    };
    finish(kept, cfg, after).await;
    outcomes
}

/// The socket, and for implicit TLS the handshake.
async fn connect(cfg: &LmtpConfig) -> Result<Connection, Error> {
    let stream: Box<dyn hop::Stream> = match &cfg.address {
        LmtpAddress::Tcp { host, port } => {
            hop::connect_tcp(host, *port, &cfg.tls, cfg.timeout)
                .await?
                .0
        }
        LmtpAddress::Unix(path) => {
            // The configuration refuses TLS to a local socket; were it asked for anyway,
            // nothing is sent rather than the copy without the TLS it was to have.
            if !cfg.tls.is_none() {
                return Err(Error::TlsOnUnixSocket);
            }
            let connecting = tokio::net::UnixStream::connect(path);
            Box::new(
                tokio::time::timeout(cfg.timeout, connecting)
                    .await
                    .map_err(|_| Error::Timeout("the connection"))?
                    .map_err(Error::Connect)?,
            )
        }
    };
    crate::ops::metrics::upstream_connection();
    Ok(Connection::new(stream))
}

/// Which greeting command a session opens with: LHLO for delivery over LMTP, EHLO for a
/// recipient probe of an SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hello {
    Lhlo,
    Ehlo,
}

async fn open_with(
    mut conn: Connection,
    cfg: &LmtpConfig,
    verb: Hello,
) -> Result<(Connection, Capabilities), Reply> {
    let greeted = match greeting(&mut conn, cfg).await {
        Ok(()) => lhlo(&mut conn, cfg, verb).await,
        Err(reply) => Err(reply),
    };
    let hello = match greeted {
        Ok(r) => r,
        Err(reply) => {
            conn.quit(cfg.timeout).await;
            return Err(reply);
        }
    };
    let client = match &cfg.tls {
        HopTls::StartTls(client) => client,
        HopTls::None | HopTls::Implicit(_) => return Ok((conn, Capabilities::of(&hello))),
    };
    let LmtpAddress::Tcp { host, .. } = &cfg.address else {
        conn.quit(cfg.timeout).await;
        return Err(failed(&Error::TlsOnUnixSocket, cfg));
    };
    let mut conn = conn
        .starttls(&hello, client, host, cfg.timeout)
        .await
        .map_err(|e| failed(&e, cfg))?;
    match lhlo(&mut conn, cfg, verb).await {
        Ok(hello) => Ok((conn, Capabilities::of(&hello))),
        Err(reply) => {
            conn.quit(cfg.timeout).await;
            Err(reply)
        }
    }
}

async fn greeting(conn: &mut Connection, cfg: &LmtpConfig) -> Result<(), Reply> {
    let greeting = conn
        .reply(cfg.timeout, "the greeting")
        .await
        .map_err(|e| failed(&e, cfg))?;
    if !greeting.is_success() {
        return Err(refusal(greeting));
    }
    Ok(())
}

/// LHLO (or EHLO); its reply, or the reply every recipient gets.
async fn lhlo(conn: &mut Connection, cfg: &LmtpConfig, verb: Hello) -> Result<Reply, Reply> {
    let word = match verb {
        Hello::Lhlo => "LHLO",
        Hello::Ehlo => "EHLO",
    };
    let lhlo = conn
        .command(
            &format!("{word} {}\r\n", cfg.lhlo),
            cfg.timeout,
            "the LHLO reply",
        )
        .await
        .map_err(|e| failed(&e, cfg))?;
    match lhlo.class() {
        Class::Success => Ok(lhlo),
        Class::Permanent if verb == Hello::Ehlo => Err(refusal(lhlo)),
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

/// Asks the server whether it takes mail for `rcpt`: MAIL with the null sender and
/// `RCPT TO`, then RSET; nothing is sent. On a pooled session when there is one, which
/// goes back to the pool after. The RCPT reply, or (as `Err`) the temporary reply when
/// the server could not be asked.
pub async fn probe(cfg: &LmtpConfig, verb: Hello, rcpt: &str) -> Result<Reply, Reply> {
    let mut kept = session(cfg, verb).await?;
    let mut asked = ask(&mut kept.conn.conn, cfg, rcpt).await;
    if kept.reused() && matches!(asked, Err((_, After::Broken))) {
        // Closed by the server while it was idle: a fresh session.
        kept = Kept::new(new_session(cfg, verb).await?);
        asked = ask(&mut kept.conn.conn, cfg, rcpt).await;
    }
    kept.begun();
    let (answer, after) = match asked {
        Ok(reply) => (Ok(reply), After::Open),
        Err((reply, after)) => (Err(reply), after),
    };
    finish(kept, cfg, after).await;
    answer
}

/// MAIL FROM:<> and RCPT TO:<`rcpt`>: the RCPT reply, or the temporary reply and what
/// the session is fit for.
async fn ask(conn: &mut Connection, cfg: &LmtpConfig, rcpt: &str) -> Result<Reply, (Reply, After)> {
    let broken = |e: Error| (failed(&e, cfg), After::Broken);
    let mail = conn
        .command("MAIL FROM:<>\r\n", cfg.timeout, "the MAIL reply")
        .await
        .map_err(broken)?;
    if !mail.is_success() {
        let after = if mail.code == 421 {
            After::Broken
        } else {
            After::Clean
        };
        return Err((
            Reply::new(
                450,
                Enhanced(4, 1, 1),
                format!("The delivery server refused the null sender ({mail}); try again later"),
            ),
            after,
        ));
    }
    conn.command(
        &format!("RCPT TO:<{rcpt}>\r\n"),
        cfg.timeout,
        "the RCPT reply",
    )
    .await
    .map_err(broken)
}

/// The transaction after an accepted MAIL: the recipients, DATA, the message and a reply
/// per accepted recipient; the outcomes, and what the session is fit for after.
async fn transaction(
    s: &mut Session,
    cfg: &LmtpConfig,
    copy: &Copy,
    data: &Blob,
) -> (Vec<Outcome>, After) {
    let rcpts = &copy.envelope.recipients;
    let dsn = s.caps.dsn;
    let conn = &mut s.conn;
    let mut outcomes: Vec<Option<Outcome>> = vec![None; rcpts.len()];
    // Every recipient without an outcome yet gets `reply`.
    let fill = |outcomes: Vec<Option<Outcome>>, reply: Reply, after: After| {
        let all = outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::Failed(reply.clone())))
            .collect();
        (all, after)
    };
    // A 421 says the server is closing the session.
    let fit = |r: &Reply, otherwise: After| {
        if r.code == 421 {
            After::Broken
        } else {
            otherwise
        }
    };

    let mut accepted = Vec::new();
    for (i, rcpt) in rcpts.iter().enumerate() {
        match conn
            .command(&commands::rcpt(rcpt, dsn), cfg.timeout, "a RCPT reply")
            .await
        {
            Ok(r) if r.is_success() => accepted.push(i),
            Ok(r) if r.code == 421 => return fill(outcomes, refusal(r), After::Broken),
            Ok(r) => {
                let o = Outcome::Failed(refusal(r));
                log(cfg, &rcpt.address, "at RCPT", &o);
                set(&mut outcomes, i, o);
            }
            Err(e) => return fill(outcomes, failed(&e, cfg), After::Broken),
        }
    }
    if accepted.is_empty() {
        return fill(
            outcomes,
            Reply::new(451, Enhanced(4, 0, 0), "no recipient"),
            After::Open,
        );
    }

    match conn
        .command("DATA\r\n", cfg.timeout, "the DATA reply")
        .await
    {
        Ok(r) if r.code == 354 => {}
        Ok(r) => {
            let after = fit(&r, After::Open);
            return fill(outcomes, refusal(r), after);
        }
        Err(e) => return fill(outcomes, failed(&e, cfg), After::Broken),
    }
    if let Err(e) = send_data(conn, cfg, data).await {
        // No final dot went out: the server discards the transaction when the connection
        // drops (no QUIT: it would be taken for message data).
        return fill(outcomes, e, After::Broken);
    }
    // RFC 2033 §4.2: one reply per accepted recipient, in RCPT order. From here on the
    // message may have been delivered to some: a failure is never retried on another
    // session, only reported for the recipients without a reply yet.
    let mut after = After::Clean;
    for &i in &accepted {
        let o = match conn
            .reply(cfg.data_timeout, "a recipient's reply after the final dot")
            .await
        {
            Ok(r) if r.is_success() => Outcome::Delivered(r),
            Ok(r) => {
                after = fit(&r, after);
                Outcome::Failed(refusal(r))
            }
            Err(e) => return fill(outcomes, failed(&e, cfg), After::Broken),
        };
        if let Some(rcpt) = rcpts.get(i) {
            log(cfg, &rcpt.address, "after DATA", &o);
        }
        set(&mut outcomes, i, o);
    }
    fill(
        outcomes,
        Reply::new(451, Enhanced(4, 0, 0), "no reply"),
        after,
    )
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
                .map_err(|e| failed(&e, cfg))?;
            out.clear();
        }
    }
    stuffer.finish(&mut out);
    conn.write(&out, cfg.data_timeout)
        .await
        .map_err(|e| failed(&e, cfg))
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
