//! One client connection: owns the socket and the read buffer, drives the [`Session`],
//! flushes replies when the input is drained (PIPELINING), and enforces timeouts on
//! reads and on writes.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::net::IpAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout_at, Instant};
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use super::auth_failures;
use super::backend::Backend;
use super::command;
use super::config::{AuthMode, SessionConfig};
use super::password;
use super::reply::{Enhanced, Reply};
use super::session::{Session, Step};
use super::transaction::Credentials;
use crate::wipe;

/// How a connection's plaintext phase ended.
pub enum Outcome<S> {
    Closed,
    /// The client asked for STARTTLS: the caller performs the handshake on this stream
    /// and drives the session again.
    StartTls(S),
}

/// An idle connection keeps at most this much read buffer, so that thousands of idle
/// clients cost little memory.
const IDLE_BUFFER: usize = 1024;

/// A deadline for a timeout too large to add to the clock (tokio's "far future").
const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 60 * 60);

/// Drives `session` over `stream` until the client quits, a limit cuts it off, or it asks
/// for STARTTLS.
///
/// # Errors
/// Socket errors; the session is over then.
pub async fn drive<S, B>(
    mut stream: S,
    session: &mut Session,
    cfg: &SessionConfig,
    backend: &B,
    greet: bool,
    shutdown: &CancellationToken,
) -> std::io::Result<Outcome<S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    B: Backend,
{
    // Every write, like every command, must finish within the command timeout.
    let limit = cfg.command_timeout;
    // What the client sent: AUTH lines and the message itself. The session zeroes what
    // it consumes; the rest is zeroed when the connection ends.
    let mut input = Zeroizing::new(Vec::<u8>::with_capacity(IDLE_BUFFER));
    let mut out: Vec<u8> = Vec::new();
    if greet {
        out.extend(session.greeting().to_wire());
    }
    let mut read_by = deadline(cfg.command_timeout);
    loop {
        while let Some(step) = session.ingest(&mut input) {
            match step {
                Step::Reply(r) => out.extend(r.to_wire()),
                Step::Close(r) => {
                    out.extend(r.to_wire());
                    write(&mut stream, &mut out, limit).await?;
                    let _ = timeout_at(deadline(limit), stream.shutdown()).await;
                    return Ok(Outcome::Closed);
                }
                Step::CheckRecipient(rcpt) => {
                    // RFC 2920: flush before anything that may block.
                    write(&mut stream, &mut out, limit).await?;
                    let client = session.client();
                    let result = match session.sender() {
                        Some(sender) => backend.check_recipient(sender, &rcpt, &client).await,
                        None => Err(command::bad_sequence("Send MAIL first")),
                    };
                    if let Err(refused) = &result {
                        crate::ops::metrics::refusal(refused);
                    }
                    out.extend(session.recipient_checked(rcpt, result).to_wire());
                }
                Step::Deliver(tx) => {
                    write(&mut stream, &mut out, limit).await?;
                    let queue_id = tx.id.clone();
                    // The first entry of the message's decision trail: who sent what
                    // envelope (never the content).
                    tracing::info!(
                        queue_id,
                        client = %tx.client.addr,
                        tls = tx.client.tls,
                        user = %crate::relay::Escaped(tx.client.auth.as_ref().map_or("-", |c| c.username.as_str())),
                        from = %crate::relay::Escaped(&tx.envelope.sender.address),
                        to = %tx.envelope.recipients.iter().map(|r| r.address.as_str()).collect::<Vec<_>>().join(","),
                        size = tx.message.len(),
                        "received"
                    );
                    let reply = backend.deliver(*tx).await;
                    if reply.code >= 400 {
                        crate::ops::metrics::refusal(&reply);
                    }
                    tracing::info!(queue_id, reply = %crate::relay::Escaped(&reply.to_string()), "answered");
                    out.extend(session.delivered(reply).to_wire());
                }
                Step::Authenticate(creds) => {
                    write(&mut stream, &mut out, limit).await?;
                    let result = authenticate(cfg, backend, &creds, session.peer().ip()).await;
                    match session.authenticated(creds, result) {
                        Step::Close(r) => {
                            out.extend(r.to_wire());
                            write(&mut stream, &mut out, limit).await?;
                            let _ = timeout_at(deadline(limit), stream.shutdown()).await;
                            return Ok(Outcome::Closed);
                        }
                        Step::Reply(r) => out.extend(r.to_wire()),
                        _ => {}
                    }
                }
                Step::StartTls(r) => {
                    out.extend(r.to_wire());
                    write(&mut stream, &mut out, limit).await?;
                    return Ok(Outcome::StartTls(stream));
                }
            }
            read_by = deadline(if session.in_data() {
                cfg.data_timeout
            } else {
                cfg.command_timeout
            });
        }
        write(&mut stream, &mut out, limit).await?;
        if input.is_empty() && input.capacity() > 16 * IDLE_BUFFER {
            // The old buffer is zeroed as it is dropped.
            input = Zeroizing::new(Vec::with_capacity(IDLE_BUFFER));
        }
        if input.capacity() - input.len() < 512 {
            wipe::reserve(&mut input, 4096);
        }
        let idle = !session.in_data() && session.sender().is_none();
        let read = tokio::select! {
            _ = shutdown.cancelled(), if idle => {
                out.extend(shutting_down().to_wire());
                write(&mut stream, &mut out, limit).await?;
                return Ok(Outcome::Closed);
            }
            r = timeout_at(read_by, stream.read_buf(&mut *input)) => r,
        };
        match read {
            Err(_elapsed) => {
                out.extend(command::timeout().to_wire());
                let _ = write(&mut stream, &mut out, limit).await;
                return Ok(Outcome::Closed);
            }
            Ok(Ok(0)) => return Ok(Outcome::Closed),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    }
}

pub fn shutting_down() -> Reply {
    Reply::new(
        421,
        Enhanced(4, 3, 2),
        "Service shutting down; try again later",
    )
}

/// `after` from now. A timeout too large to add to the clock (a configured
/// `command_timeout` of `u64::MAX` seconds) is a deadline far in the future, not a panic.
fn deadline(after: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(after)
        .or_else(|| now.checked_add(FAR))
        .unwrap_or(now)
}

/// Sends `out`. A client that pipelines and never reads fills the socket buffers, and
/// the write would then wait forever, holding the connection and its per-IP slot: after
/// `limit` it gives up with `TimedOut`, and the connection is dropped.
///
/// # Errors
/// Socket errors, and `TimedOut`.
async fn write<S: AsyncWrite + Unpin>(
    stream: &mut S,
    out: &mut Vec<u8>,
    limit: Duration,
) -> std::io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let sent = timeout_at(deadline(limit), async {
        stream.write_all(out).await?;
        stream.flush().await
    })
    .await;
    match sent {
        Ok(result) => {
            result?;
            out.clear();
            Ok(())
        }
        Err(_elapsed) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client did not read its replies within the command timeout",
        )),
    }
}

/// Checks credentials, unless the client's address has failed too often; a failure
/// counts against the address, across connections and listeners.
async fn authenticate<B: Backend>(
    cfg: &SessionConfig,
    backend: &B,
    creds: &Credentials,
    ip: IpAddr,
) -> Result<(), Reply> {
    if cfg.auth_failures.blocked(ip, std::time::Instant::now()) {
        tracing::info!(%ip, "AUTH refused: too many failures from this address");
        return Err(auth_failures::blocked_reply());
    }
    let result = verify(cfg, backend, creds).await;
    if let Err(reply) = &result {
        if reply.code == 535 {
            // One line per failure, with the address and the name tried: what fail2ban
            // and the like match on. The name has its control characters and quotes
            // escaped, so that a client cannot forge a log line.
            tracing::warn!(client_ip = %ip, user = %creds.username.escape_debug(), "AUTH failed");
        }
        if reply.code == 535 && cfg.auth_failures.failed(ip, std::time::Instant::now()) {
            tracing::warn!(%ip, "too many failed AUTH attempts: this address is blocked for a while");
            return Err(auth_failures::blocked_reply());
        }
    }
    result
}

/// Checks credentials: argon2 against the configured users (on the password threads,
/// waiting at most the command timeout for one), or upstream through the backend.
async fn verify<B: Backend>(
    cfg: &SessionConfig,
    backend: &B,
    creds: &Credentials,
) -> Result<(), Reply> {
    match &cfg.auth {
        AuthMode::None => Err(command::auth::not_offered()),
        AuthMode::Passthrough => backend.authenticate(creds).await,
        AuthMode::Local(users) => {
            let pass = creds.secret.as_deref().unwrap_or_default();
            match password::check(users, &creds.username, pass, cfg.command_timeout).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(command::auth::failed()),
                Err(e) => {
                    tracing::warn!(error = %e, "password check did not complete");
                    Err(Reply::new(
                        454,
                        Enhanced(4, 7, 0),
                        "Temporary authentication failure; try again later",
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;

    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};

    use crate::smtp::envelope::{Recipient, Sender};
    use crate::smtp::transaction::{Client, Transaction};

    /// Accepts every recipient and message.
    struct Accept;

    impl Backend for Accept {
        async fn check_recipient(
            &self,
            _: &Sender,
            _: &Recipient,
            _: &Client,
        ) -> Result<(), Reply> {
            Ok(())
        }

        async fn deliver(&self, _: Transaction) -> Reply {
            Reply::new(250, Enhanced(2, 0, 0), "queued")
        }

        async fn authenticate(&self, _: &Credentials) -> Result<(), Reply> {
            Err(command::auth::failed())
        }
    }

    /// Drives a session for `cfg` over an in-memory stream with `buffer` bytes each way;
    /// returns the client's end and the connection's result.
    fn serve(
        cfg: SessionConfig,
        buffer: usize,
    ) -> (
        DuplexStream,
        tokio::task::JoinHandle<std::io::Result<Outcome<DuplexStream>>>,
    ) {
        let (client, server) = duplex(buffer);
        let cfg = Arc::new(cfg);
        let task = tokio::spawn(async move {
            let mut session = Session::new(cfg.clone(), "127.0.0.1:4000".parse().unwrap(), false);
            let shutdown = CancellationToken::new();
            drive(server, &mut session, &cfg, &Accept, true, &shutdown).await
        });
        (client, task)
    }

    /// The final lines of the replies in `all`, by code.
    fn codes(all: &str) -> Vec<&str> {
        all.lines()
            .filter(|l| l.as_bytes().get(3) == Some(&b' '))
            .filter_map(|l| l.get(..3))
            .collect()
    }

    /// Sends `input` on a fresh connection; returns everything the gateway said.
    async fn exchange(cfg: &SessionConfig, input: &str) -> String {
        let (mut client, task) = serve(cfg.clone(), 64 * 1024);
        client.write_all(input.as_bytes()).await.unwrap();
        let mut all = String::new();
        client.read_to_string(&mut all).await.unwrap();
        let _ = task.await.unwrap();
        all
    }

    /// An address that keeps failing AUTH: first its session is closed, then, over
    /// several connections, the address itself is refused before anything is checked.
    #[tokio::test]
    async fn an_address_that_keeps_failing_auth_is_refused_across_connections() {
        let mut cfg = SessionConfig::new("gw.test");
        cfg.auth = AuthMode::Passthrough;
        let three_wrong = format!(
            "EHLO c.test\r\n{}",
            "AUTH PLAIN AGFsaWNlAHdyb25n\r\n".repeat(3)
        );
        let first = exchange(&cfg, &three_wrong).await;
        assert_eq!(
            codes(&first),
            ["220", "250", "535", "535", "421"],
            "{first}"
        );
        assert!(
            !first.contains("address"),
            "the session's own limit: {first}"
        );
        let second = exchange(&cfg, &three_wrong).await;
        assert_eq!(codes(&second), ["220", "250", "535", "421"], "{second}");
        assert!(
            second.contains("421 4.7.0 Too many failed authentication attempts from your address"),
            "{second}"
        );
        let third = exchange(&cfg, &three_wrong).await;
        assert_eq!(codes(&third), ["220", "250", "421"], "{third}");
        let ip = "127.0.0.1".parse().unwrap();
        assert!(cfg.auth_failures.blocked(ip, std::time::Instant::now()));
        assert!(!cfg
            .auth_failures
            .blocked("127.0.0.2".parse().unwrap(), std::time::Instant::now()));
    }

    #[test]
    fn a_deadline_too_far_to_compute_is_far_not_a_panic() {
        let now = Instant::now();
        assert!(deadline(Duration::MAX) > now + Duration::from_secs(10 * 365 * 24 * 3600));
        assert!(deadline(Duration::from_secs(5)) <= Instant::now() + Duration::from_secs(5));
    }

    /// `Instant + Duration` overflowed and panicked every session when a timeout was
    /// configured absurdly large.
    #[tokio::test]
    async fn huge_timeouts_do_not_panic_a_session() {
        let mut cfg = SessionConfig::new("gw.test");
        cfg.command_timeout = Duration::MAX;
        cfg.data_timeout = Duration::MAX;
        let (mut client, task) = serve(cfg, 64 * 1024);
        client
            .write_all(b"EHLO c.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n")
            .await
            .unwrap();
        client.write_all(b"x\r\n.\r\nQUIT\r\n").await.unwrap();
        let mut all = String::new();
        client.read_to_string(&mut all).await.unwrap();
        assert_eq!(
            codes(&all),
            ["220", "250", "250", "250", "354", "250", "221"],
            "{all}"
        );
        assert!(matches!(task.await.unwrap(), Ok(Outcome::Closed)));
    }

    /// A client that pipelines and never reads: once the buffers are full the write
    /// waits, and gives up after the command timeout, ending the connection.
    #[tokio::test]
    async fn a_client_that_never_reads_is_cut_off_after_the_command_timeout() {
        let mut cfg = SessionConfig::new("gw.test");
        cfg.command_timeout = Duration::from_millis(300);
        let (client, task) = serve(cfg, 4096);
        let (_unread, mut writer) = tokio::io::split(client);
        let flood = tokio::spawn(async move {
            let help = b"HELP\r\n".repeat(100);
            while writer.write_all(&help).await.is_ok() {}
        });
        let started = Instant::now();
        let ended = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the connection ends instead of waiting forever")
            .unwrap();
        let err = ended.err().expect("a write timeout");
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(300));
        flood.abort();
    }
}
