//! The upstream SMTP client: lettre's low-level connection, driven command by command, so
//! that every upstream reply is passed back exactly and one refused RCPT does not abort
//! the others. It serves the outbound upstream and an inbound SMTP delivery target alike.
//!
//! The socket and its TLS are the gateway's own ([`super::hop`], one client TLS
//! configuration for every hop); lettre speaks SMTP on the stream it is handed. With
//! STARTTLS, the greeting, EHLO and STARTTLS happen before lettre takes over, so that the
//! upgrade is verified by that same configuration and is required: a server that does not
//! offer it gets nothing.

use std::borrow::Cow;
use std::time::Duration;

use base64::Engine;
use lettre::transport::smtp::authentication::Mechanism;
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::extension::{ClientId, Extension};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::blob::{sealed::CHUNK, Blob};
use crate::smtp::reply::{Enhanced, Reply};
use crate::smtp::transaction::Credentials;

use super::commands::{self, MailParams};
use super::downgrade::{self, Prepared};
use super::hop::{self, HopTls};
use super::pool::{self, Kept};
use super::size::{self, HopSize};
use super::wire;
use super::{Copy, Escaped};
use switch::{Guarded, Regreeted, Switch};

/// Where and how to reach the upstream server.
#[derive(Clone)]
pub struct UpstreamConfig {
    pub host: String,
    pub port: u16,
    /// TLS, verified against `host`.
    pub tls: HopTls,
    /// The gateway's own login; a copy's client credentials (passthrough) win over it.
    pub credentials: Option<Credentials>,
    /// Our EHLO name.
    pub helo: String,
    /// Connect and command timeout.
    pub timeout: Duration,
    /// How long to wait for the reply to the final dot (RFC 5321: 10 minutes).
    pub data_timeout: Duration,
    /// Idle connections kept for the next copy.
    pub pool: std::sync::Arc<Pool>,
}

/// Idle upstream connections, reused for the next copy with the same login (see
/// [`super::pool`]), and what the upstream's last EHLO said its SIZE is, for the
/// listeners.
#[derive(Default)]
pub struct Pool {
    idle: pool::Pool<Option<Login>, Connected>,
    size: std::sync::Arc<HopSize>,
}

/// Which login an idle connection is logged in with: the user name, and a digest of the
/// password under a key of this process. The pool only has to tell logins apart, so it
/// keeps no password: one used to stay in memory, in the clear, for as long as its
/// connection sat idle.
#[derive(PartialEq, Eq)]
struct Login {
    user: String,
    secret: [u8; 32],
}

impl Login {
    fn of(c: &Credentials) -> Login {
        static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
        let key = KEY.get_or_init(|| {
            let mut k = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut k);
            k
        });
        let mut h = Sha256::new();
        h.update(key);
        h.update(c.secret.as_deref().unwrap_or_default().as_bytes());
        Login {
            user: c.username.clone(),
            secret: h.finalize().into(),
        }
    }
}

impl Pool {
    /// The upstream's SIZE, learned from the EHLO of each new connection.
    pub fn size(&self) -> std::sync::Arc<HopSize> {
        self.size.clone()
    }

    fn take(&self, login: &Option<Login>) -> Option<Kept<Connected>> {
        self.idle.take(login)
    }

    /// Keeps `conn` for the next copy with `login`, unless it has served its time (then
    /// it is closed with QUIT, in the background: nobody waits for that reply).
    fn put(&self, login: Option<Login>, conn: Kept<Connected>, timeout: Duration) {
        if let Some(mut retired) = self.idle.put(login, conn) {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(timeout, retired.conn.quit()).await;
            });
        }
    }
}

impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// What happened to one recipient in one attempt.
#[derive(Debug, Clone)]
pub enum Outcome {
    Delivered(Reply),
    Failed(Reply),
}

/// One attempt at one copy: an outcome per recipient, in envelope order.
pub async fn attempt(cfg: &UpstreamConfig, copy: &Copy) -> Vec<Outcome> {
    let all = |reply: Reply| {
        copy.envelope
            .recipients
            .iter()
            .map(|_| Outcome::Failed(reply.clone()))
            .collect()
    };
    let creds = copy.credentials.as_ref().or(cfg.credentials.as_ref());
    let login = creds.map(Login::of);
    let mut kept = match cfg.pool.take(&login) {
        Some(c) => c,
        None => match connect(cfg, creds).await {
            Ok(c) => Kept::new(c),
            Err(reply) => return all(reply),
        },
    };
    let was_pooled = kept.reused();
    let c = &mut kept.conn;
    // RFC 6152 §3: 8-bit data to a server without 8BITMIME is re-encoded first, or not
    // sent at all.
    let mut data = match downgrade::prepare(&copy.data, offers_8bitmime(&c.conn)).await {
        Ok(d) => d,
        Err(reply) => {
            // Nothing was sent: the connection is clean for the next copy.
            cfg.pool.put(login, kept, cfg.timeout);
            return all(reply);
        }
    };
    let first = opening(c, copy, &data);
    let mut sent = command_checked(&mut c.conn, first, cfg.timeout).await;
    if was_pooled && matches!(sent, Err((_, true))) {
        // The server closed the idle connection in the meantime: a fresh one.
        kept = match connect(cfg, creds).await {
            Ok(c) => Kept::new(c),
            Err(reply) => return all(reply),
        };
        let c = &mut kept.conn;
        data = match downgrade::prepare(&copy.data, offers_8bitmime(&c.conn)).await {
            Ok(d) => d,
            Err(reply) => {
                abort(&mut c.conn, cfg.timeout).await;
                return all(reply);
            }
        };
        let first = opening(c, copy, &data);
        sent = command_checked(&mut c.conn, first, cfg.timeout).await;
    }
    if let Err((reply, _)) = sent {
        abort(&mut kept.conn.conn, cfg.timeout).await;
        return all(reply);
    }
    kept.begun();
    let c = &mut kept.conn;
    let dsn = c.dsn;
    let pipelined = c.pipelining;
    let Connected { conn, switch, .. } = &mut *c;
    // Whether the connection is in a clean state to be reused.
    let mut reusable = true;
    // Whether the transaction is still open upstream: only the reply to the final dot
    // ends it, whatever that reply says.
    let mut open = true;
    let mut outcomes: Vec<Option<Outcome>> = vec![None; copy.envelope.recipients.len()];
    let mut accepted = Vec::new();
    // Pipelined: the replies to what was sent already, in order; a broken connection
    // leaves the rest unanswered.
    let mut lost = false;
    // Close without QUIT: the server is reading message text.
    let mut hang_up = false;
    for (i, rcpt) in copy.envelope.recipients.iter().enumerate() {
        let replied = if pipelined {
            read_checked(conn, cfg.timeout).await
        } else {
            command_checked(conn, commands::rcpt(rcpt, dsn), cfg.timeout).await
        };
        match replied {
            Ok(_) => accepted.push(i),
            Err((reply, broken)) => {
                reusable &= !broken;
                outcomes[i] = Some(Outcome::Failed(reply));
                if broken && pipelined {
                    lost = true;
                    break;
                }
            }
        }
    }
    if pipelined && !lost {
        // DATA was sent with the envelope: its reply comes whatever the RCPT replies were.
        let result = match read_checked(conn, cfg.timeout).await {
            // A server that takes DATA with no recipient accepted (RFC 2920 says it must
            // not) waits for a message nobody would get. The connection is closed
            // without a final dot, so that it delivers nothing; a QUIT would only be
            // read as message text.
            Ok(_) if accepted.is_empty() => {
                reusable = false;
                open = false;
                hang_up = true;
                None
            }
            Ok(_) => {
                let sent = send_message(conn, switch, cfg, &data.data).await;
                if let Err((_, broken)) = &sent {
                    reusable &= !broken;
                }
                open = false;
                Some(sent.map_err(|(reply, _)| reply))
            }
            Err((reply, broken)) => {
                reusable &= !broken;
                Some(Err(reply))
            }
        };
        if let Some(result) = result {
            for &i in &accepted {
                outcomes[i] = Some(match &result {
                    Ok(r) => Outcome::Delivered(r.clone()),
                    Err(r) => Outcome::Failed(r.clone()),
                });
            }
        }
    } else if pipelined {
        reusable = false;
    } else if !accepted.is_empty() {
        let result = match command_checked(conn, "DATA\r\n".to_string(), cfg.timeout).await {
            Ok(_) => {
                let sent = send_message(conn, switch, cfg, &data.data).await;
                if let Err((_, broken)) = &sent {
                    reusable &= !broken;
                }
                open = false;
                sent.map_err(|(reply, _)| reply)
            }
            Err((reply, broken)) => {
                reusable &= !broken;
                Err(reply)
            }
        };
        for &i in &accepted {
            outcomes[i] = Some(match &result {
                Ok(r) => Outcome::Delivered(r.clone()),
                Err(r) => Outcome::Failed(r.clone()),
            });
        }
    }
    if open && reusable {
        // No recipient was accepted, or DATA was refused: the next MAIL on this
        // connection would be refused as nested (503, a permanent failure) unless the
        // transaction is reset first.
        reusable = command_checked(conn, "RSET\r\n".to_string(), cfg.timeout)
            .await
            .is_ok();
    }
    if reusable && !c.conn.has_broken() {
        cfg.pool.put(login, kept, cfg.timeout);
    } else if hang_up {
        c.switch.cut();
        drop(kept);
    } else {
        abort(&mut c.conn, cfg.timeout).await;
    }
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Outcome::Failed(timeout_reply("a reply"))))
        .collect()
}

/// The message after DATA, its final dot, and the reply; an error says whether the
/// connection is broken, as for [`command_checked`].
///
/// lettre dot-stuffs what it is given (its encoder keeps its state from one piece to the
/// next, so a `.` that starts a line at a piece boundary is stuffed) and appends
/// CRLF.CRLF itself; the message already ends with CRLF, which is left out. A message in
/// memory goes as slices of itself; a spilled one is read one sealed chunk per piece, on
/// the async thread (a positioned read and a decryption of 64 KiB between two awaited
/// socket writes: cheaper than a hand-off to the blocking pool per chunk).
///
/// lettre's iterator cannot fail, and when it ends lettre sends the final dot: a chunk
/// that could not be read would truncate the message. So every spilled chunk has been
/// read and authenticated before MAIL (the 8-bit scan in [`downgrade::prepare`]), and a
/// read that still fails here (the disk failing within these seconds) cuts the socket's
/// writes before lettre writes the final dot: the upstream never sees the message end,
/// the connection is closed, and the recipients are failed temporarily.
async fn send_message(
    conn: &mut AsyncSmtpConnection,
    switch: &Switch,
    cfg: &UpstreamConfig,
    data: &Blob,
) -> Result<Reply, (Reply, bool)> {
    // The message and its final dot in one write (when it is small enough).
    switch.hold();
    let sent = match data.as_slice() {
        Some(bytes) => {
            let body = bytes.strip_suffix(b"\r\n").unwrap_or(bytes);
            // lettre stuffs a dot only after CRLF: every line end is made CRLF first.
            let pieces = wire::CrlfPieces::new(body.chunks(CHUNK).map(Cow::Borrowed));
            tokio::time::timeout(cfg.data_timeout, conn.message_iter(pieces)).await
        }
        None => {
            let len = data.len();
            let tail = data
                .slice(len.saturating_sub(2)..len)
                .to_vec()
                .map_err(|e| (downgrade::unreadable(&e), true))?;
            let body = match tail.as_slice() {
                b"\r\n" => data.slice(0..len - 2),
                _ => data.clone(),
            };
            let mut failed = None;
            let pieces = Pieces {
                pieces: body.pieces(),
                failed: &mut failed,
                switch,
            };
            let sent = tokio::time::timeout(
                cfg.data_timeout,
                conn.message_iter(wire::CrlfPieces::new(pieces)),
            )
            .await;
            if let Some(e) = failed {
                return Err((downgrade::unreadable(&e), true));
            }
            sent
        }
    };
    match sent {
        Ok(Ok(r)) => Ok(reply_of(&r)),
        Ok(Err(e)) => Err((error_reply(&e), e.status().is_none())),
        Err(_) => Err((timeout_reply("the final dot"), true)),
    }
}

/// A spilled message's pieces for lettre, which takes an iterator of bytes: the first
/// read error cuts the socket's writes (lettre's final dot then fails to go out), ends
/// the pieces, and is kept for the caller.
struct Pieces<'a> {
    pieces: crate::blob::Pieces<'a>,
    failed: &'a mut Option<std::io::Error>,
    switch: &'a Switch,
}

impl<'a> Iterator for Pieces<'a> {
    type Item = Cow<'a, [u8]>;

    fn next(&mut self) -> Option<Cow<'a, [u8]>> {
        if self.failed.is_some() {
            return None;
        }
        match self.pieces.next()? {
            Ok(p) => Some(p),
            Err(e) => {
                self.switch.cut();
                *self.failed = Some(e);
                None
            }
        }
    }
}

/// Logs in upstream with the client's credentials (AUTH passthrough).
///
/// # Errors
/// `535 5.7.8` when the upstream refuses them, `454 4.7.0` when it cannot be reached.
pub async fn check_login(cfg: &UpstreamConfig, creds: &Credentials) -> Result<(), Reply> {
    match connect(cfg, Some(creds)).await {
        Ok(mut c) => {
            let _ = tokio::time::timeout(cfg.timeout, c.conn.quit()).await;
            Ok(())
        }
        Err(reply) if reply.code == 535 || reply.code == 534 || reply.code == 530 => {
            Err(Reply::new(
                535,
                Enhanced(5, 7, 8),
                format!(
                    "Authentication credentials invalid (upstream: {})",
                    reply.text()
                ),
            ))
        }
        Err(reply) => Err(Reply::new(
            454,
            Enhanced(4, 7, 0),
            format!("Temporary authentication failure: {}", reply.text()),
        )),
    }
}

/// Whether the upstream offers SMTPUTF8 (so that the listener may offer it too).
pub async fn offers_smtputf8(cfg: &UpstreamConfig) -> bool {
    match connect(cfg, None).await {
        Ok(mut c) => {
            let yes = c
                .conn
                .server_info()
                .supports_feature(Extension::SmtpUtfEight);
            let _ = tokio::time::timeout(cfg.timeout, c.conn.quit()).await;
            yes
        }
        Err(_) => false,
    }
}

/// A connection, the switch that cuts its writes, and what its EHLO offered that lettre
/// does not track.
struct Connected {
    conn: AsyncSmtpConnection,
    switch: Switch,
    /// DSN (RFC 3461): the client's RET, ENVID, NOTIFY and ORCPT go on.
    dsn: bool,
    /// PIPELINING (RFC 2920): the envelope and DATA go in one write.
    pipelining: bool,
}

async fn connect(cfg: &UpstreamConfig, creds: Option<&Credentials>) -> Result<Connected, Reply> {
    let hello = ClientId::Domain(cfg.helo.clone());
    let connected = hop::connect_tcp(&cfg.host, cfg.port, &cfg.tls, cfg.timeout).await;
    // For /readyz: whether the next hop could be reached lately.
    crate::ops::metrics::contact(&cfg.host, cfg.port, connected.is_ok());
    let (stream, peer) = connected.map_err(|e| hop_failed(cfg, &e))?;
    crate::ops::metrics::upstream_connection();
    let stream = match &cfg.tls {
        HopTls::StartTls(client) => starttls(cfg, stream, client).await?,
        HopTls::None | HopTls::Implicit(_) => stream,
    };
    let (guarded, switch) = Guarded::new(stream, peer);
    let greeting = AsyncSmtpConnection::connect_with_transport(Box::new(guarded), &hello);
    let mut conn = match tokio::time::timeout(cfg.timeout, greeting).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return Err(unreachable(
                cfg,
                &e.to_string(),
                e.status().is_some().then(|| error_reply(&e)),
            ))
        }
        Err(_) => return Err(unreachable(cfg, "no greeting", None)),
    };
    // lettre keeps only the extensions it knows from its EHLO: SIZE and DSN are read from
    // a second EHLO (RFC 5321 allows it; it resets nothing that exists yet). Before AUTH,
    // which some servers do not allow to be followed by EHLO.
    let ehlo =
        match tokio::time::timeout(cfg.timeout, conn.command(format!("EHLO {}\r\n", cfg.helo)))
            .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                abort(&mut conn, cfg.timeout).await;
                return Err(unreachable(
                    cfg,
                    &e.to_string(),
                    e.status().is_some().then(|| error_reply(&e)),
                ));
            }
            Err(_) => return Err(timeout_reply("the EHLO reply")),
        };
    let keywords: Vec<&str> = ehlo.message().skip(1).collect();
    cfg.pool.size.set(size::from_ehlo(keywords.iter().copied()));
    let offers = |keyword: &str| {
        keywords.iter().any(|k| {
            k.split_ascii_whitespace()
                .next()
                .is_some_and(|w| w.eq_ignore_ascii_case(keyword))
        })
    };
    let (dsn, pipelining) = (offers("DSN"), offers("PIPELINING"));
    if let Some(c) = creds {
        match tokio::time::timeout(cfg.timeout, login(&mut conn, c)).await {
            Ok(Ok(())) => {}
            Ok(Err(reply)) => {
                abort(&mut conn, cfg.timeout).await;
                return Err(reply);
            }
            Err(_) => return Err(timeout_reply("AUTH")),
        }
    }
    Ok(Connected {
        conn,
        switch,
        dsn,
        pipelining,
    })
}

/// Closes a connection that cannot be reused: lettre's abort says QUIT and waits for the
/// reply (unbounded in lettre), so it is bounded like any other command.
async fn abort(conn: &mut AsyncSmtpConnection, timeout: Duration) {
    let _ = tokio::time::timeout(timeout, conn.abort()).await;
}

/// AUTH PLAIN, or LOGIN when the server offers only that (RFC 4954), as lettre would do
/// it, but without lettre's `Credentials`: those keep the password in `String`s that
/// lettre clones and formats and frees as they are, out of reach. Here the password and
/// its base64 form are in buffers zeroed when dropped; lettre sees only each command line
/// (one string it writes and frees).
///
/// # Errors
/// The server's refusal as it worded it; `454 4.7.0` when it offers neither mechanism or
/// the connection fails.
async fn login(conn: &mut AsyncSmtpConnection, c: &Credentials) -> Result<(), Reply> {
    let secret = c.secret.as_deref().unwrap_or_default();
    let failed = |e: lettre::transport::smtp::Error| match e.status() {
        Some(_) => error_reply(&e),
        None => Reply::new(454, Enhanced(4, 7, 0), format!("Upstream AUTH failed: {e}")),
    };
    let info = conn.server_info();
    if info.supports_auth_mechanism(Mechanism::Plain) {
        let mut plain = Zeroizing::new(Vec::with_capacity(c.username.len() + secret.len() + 2));
        plain.push(0);
        plain.extend_from_slice(c.username.as_bytes());
        plain.push(0);
        plain.extend_from_slice(secret.as_bytes());
        let reply = conn
            .command(Line::new("AUTH PLAIN ", &plain))
            .await
            .map_err(failed)?;
        return accepted(&reply);
    }
    if info.supports_auth_mechanism(Mechanism::Login) {
        let mut reply = conn
            .command(Line::new("AUTH LOGIN", b""))
            .await
            .map_err(failed)?;
        for answer in [c.username.as_bytes(), secret.as_bytes()] {
            if !reply.has_code(334) {
                return accepted(&reply);
            }
            reply = conn.command(Line::new("", answer)).await.map_err(failed)?;
        }
        return accepted(&reply);
    }
    Err(Reply::new(
        454,
        Enhanced(4, 7, 0),
        "Upstream AUTH failed: the server offers neither AUTH PLAIN nor LOGIN",
    ))
}

/// The reply that ends AUTH: only a 2xx logs in.
fn accepted(reply: &lettre::transport::smtp::response::Response) -> Result<(), Reply> {
    let r = reply_of(reply);
    if r.is_success() {
        Ok(())
    } else {
        Err(Reply::new(
            454,
            Enhanced(4, 7, 0),
            format!("Upstream AUTH failed: unexpected reply {}", r.code),
        ))
    }
}

/// One AUTH command line: `prefix`, then `data` base64-encoded (nothing when empty), then
/// CRLF, built whole in a buffer zeroed when dropped, so that lettre copies it once.
struct Line(Zeroizing<String>);

impl Line {
    fn new(prefix: &str, data: &[u8]) -> Line {
        let encoded = base64::encoded_len(data.len(), true).unwrap_or(0);
        let mut line = Zeroizing::new(String::with_capacity(prefix.len() + encoded + 2));
        line.push_str(prefix);
        base64::engine::general_purpose::STANDARD.encode_string(data, &mut line);
        line.push_str("\r\n");
        Line(line)
    }
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The greeting, EHLO and STARTTLS in the clear, then the handshake: the TLS stream, with
/// the greeting replayed for lettre, which reads one before its EHLO (the server sends
/// none after STARTTLS). lettre's EHLO then goes over TLS, and only what the server says
/// there counts.
///
/// # Errors
/// The server's own refusal of the greeting or EHLO; else a temporary failure: STARTTLS
/// not offered or refused, or the handshake failed (the certificate among other things).
async fn starttls(
    cfg: &UpstreamConfig,
    stream: Box<dyn hop::Stream>,
    client: &crate::tls::ClientTls,
) -> Result<Box<dyn hop::Stream>, Reply> {
    let mut conn = hop::Connection::new(stream);
    let greeting = conn
        .reply(cfg.timeout, "the greeting")
        .await
        .map_err(|e| hop_failed(cfg, &e))?;
    if !greeting.is_success() {
        return Err(greeting);
    }
    let ehlo = conn
        .command(
            &format!("EHLO {}\r\n", cfg.helo),
            cfg.timeout,
            "the EHLO reply",
        )
        .await
        .map_err(|e| hop_failed(cfg, &e))?;
    if !ehlo.is_success() {
        conn.quit(cfg.timeout).await;
        return Err(ehlo);
    }
    let tls = conn
        .starttls(&ehlo, client, &cfg.host, cfg.timeout)
        .await
        .map_err(|e| hop_failed(cfg, &e))?
        .into_stream()
        .map_err(|e| hop_failed(cfg, &e))?;
    Ok(Box::new(Regreeted::new(&greeting, tls)))
}

/// A failure to connect, or to secure the connection as configured: temporary, so that
/// the copy is retried, and logged with the reason.
fn hop_failed(cfg: &UpstreamConfig, e: &hop::Error) -> Reply {
    tracing::warn!(server = %format!("{}:{}", cfg.host, cfg.port), tls = %cfg.tls, error = %Escaped(&e.to_string()), "SMTP delivery failed");
    if e.is_tls_policy() {
        return Reply::new(
            451,
            Enhanced(4, 7, 5),
            format!(
                "Upstream {}:{} cannot be reached securely ({e}); try again later",
                cfg.host, cfg.port
            ),
        );
    }
    unreachable(cfg, &e.to_string(), None)
}

/// MAIL for `data` (the copy as prepared for this connection's capabilities).
fn mail_for(c: &Connected, copy: &Copy, data: &Prepared) -> String {
    let info = c.conn.server_info();
    commands::mail(
        &copy.envelope.sender,
        MailParams {
            size: Some(data.data.len()),
            body_8bit: data.body_8bit,
            smtputf8: copy.envelope.sender.smtputf8
                && info.supports_feature(Extension::SmtpUtfEight),
            dsn: c.dsn,
        },
    )
}

fn offers_8bitmime(conn: &AsyncSmtpConnection) -> bool {
    conn.server_info().supports_feature(Extension::EightBitMime)
}

/// The next reply to a command sent already (pipelined), as for [`command_checked`].
async fn read_checked(
    conn: &mut AsyncSmtpConnection,
    timeout: Duration,
) -> Result<Reply, (Reply, bool)> {
    match tokio::time::timeout(timeout, conn.read_response()).await {
        Ok(Ok(r)) => Ok(reply_of(&r)),
        Ok(Err(e)) => Err((error_reply(&e), e.status().is_none())),
        Err(_) => Err((timeout_reply("a reply"), true)),
    }
}

/// What opens a transaction on `c`: MAIL alone, or, when the server offers PIPELINING
/// (RFC 2920), MAIL, every RCPT and DATA in one write, which saves two round trips (and
/// their wake-ups on both sides) per copy.
fn opening(c: &Connected, copy: &Copy, data: &Prepared) -> String {
    let mut cmd = mail_for(c, copy, data);
    if c.pipelining {
        for rcpt in &copy.envelope.recipients {
            cmd.push_str(&commands::rcpt(rcpt, c.dsn));
        }
        cmd.push_str("DATA\r\n");
    }
    cmd
}

/// A command and its reply; an error says whether the connection is broken (no reply, or
/// a timeout) rather than refused by the server.
async fn command_checked(
    conn: &mut AsyncSmtpConnection,
    cmd: String,
    timeout: Duration,
) -> Result<Reply, (Reply, bool)> {
    match tokio::time::timeout(timeout, conn.command(cmd)).await {
        Ok(Ok(r)) => Ok(reply_of(&r)),
        Ok(Err(e)) => Err((error_reply(&e), e.status().is_none())),
        Err(_) => Err((timeout_reply("a reply"), true)),
    }
}

fn reply_of(r: &lettre::transport::smtp::response::Response) -> Reply {
    let code: u16 = r.code().to_string().parse().unwrap_or(250);
    parse_text(code, r.message().collect::<Vec<_>>().join(" "))
}

/// An upstream refusal, kept as the upstream worded it; its enhanced code is read from
/// the text when the upstream gave one.
fn error_reply(e: &lettre::transport::smtp::Error) -> Reply {
    match e.status() {
        Some(code) => {
            let code: u16 = code.to_string().parse().unwrap_or(451);
            let text = std::error::Error::source(e)
                .map(|s| s.to_string())
                .unwrap_or_default();
            parse_text(code, text)
        }
        None => Reply::new(
            451,
            Enhanced(4, 4, 2),
            format!("Upstream connection failed: {e}"),
        ),
    }
}

fn parse_text(code: u16, text: String) -> Reply {
    let text = text.replace(['\r', '\n'], " ");
    let mut parts = text.splitn(2, ' ');
    let first = parts.next().unwrap_or("");
    let nums: Vec<u16> = first.split('.').filter_map(|n| n.parse().ok()).collect();
    if let [a, b, c] = nums[..] {
        if first.split('.').count() == 3 && (a == 2 || a == 4 || a == 5) {
            return Reply::new(
                code,
                Enhanced(a as u8, b, c),
                parts.next().unwrap_or("").trim(),
            );
        }
    }
    let class = (code / 100) as u8;
    Reply::new(code, Enhanced(class, 0, 0), text.trim())
}

fn unreachable(cfg: &UpstreamConfig, why: &str, reply: Option<Reply>) -> Reply {
    if let Some(r) = reply {
        return r;
    }
    Reply::new(
        451,
        Enhanced(4, 4, 1),
        format!(
            "Upstream {}:{} unreachable ({why}); try again later",
            cfg.host, cfg.port
        ),
    )
}

fn timeout_reply(waiting_for: &str) -> Reply {
    Reply::new(
        451,
        Enhanced(4, 4, 2),
        format!("Upstream timed out waiting for {waiting_for}"),
    )
}

mod switch;

#[cfg(test)]
mod tests;
