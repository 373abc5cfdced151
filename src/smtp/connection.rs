//! One client connection: owns the socket and the read buffer, drives the [`Session`],
//! flushes replies when the input is drained (PIPELINING), and enforces timeouts.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout_at, Instant};
use tokio_util::sync::CancellationToken;

use super::backend::Backend;
use super::command;
use super::config::{AuthMode, SessionConfig};
use super::reply::{Enhanced, Reply};
use super::session::{Session, Step};
use super::transaction::Credentials;

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
    let mut input: Vec<u8> = Vec::with_capacity(IDLE_BUFFER);
    let mut out: Vec<u8> = Vec::new();
    if greet {
        out.extend(session.greeting().to_wire());
    }
    let mut deadline = Instant::now() + cfg.command_timeout;
    loop {
        while let Some(step) = session.ingest(&mut input) {
            match step {
                Step::Reply(r) => out.extend(r.to_wire()),
                Step::Close(r) => {
                    out.extend(r.to_wire());
                    write(&mut stream, &mut out).await?;
                    let _ = stream.shutdown().await;
                    return Ok(Outcome::Closed);
                }
                Step::CheckRecipient(rcpt) => {
                    // RFC 2920: flush before anything that may block.
                    write(&mut stream, &mut out).await?;
                    let client = session.client();
                    let result = match session.sender() {
                        Some(sender) => backend.check_recipient(sender, &rcpt, &client).await,
                        None => Err(command::bad_sequence("Send MAIL first")),
                    };
                    out.extend(session.recipient_checked(rcpt, result).to_wire());
                }
                Step::Deliver(tx) => {
                    write(&mut stream, &mut out).await?;
                    let reply = backend.deliver(tx).await;
                    out.extend(session.delivered(reply).to_wire());
                }
                Step::Authenticate(creds) => {
                    write(&mut stream, &mut out).await?;
                    let result = verify(cfg, backend, &creds).await;
                    match session.authenticated(creds, result) {
                        Step::Close(r) => {
                            out.extend(r.to_wire());
                            write(&mut stream, &mut out).await?;
                            return Ok(Outcome::Closed);
                        }
                        Step::Reply(r) => out.extend(r.to_wire()),
                        _ => {}
                    }
                }
                Step::StartTls(r) => {
                    out.extend(r.to_wire());
                    write(&mut stream, &mut out).await?;
                    return Ok(Outcome::StartTls(stream));
                }
            }
            deadline = Instant::now()
                + if session.in_data() {
                    cfg.data_timeout
                } else {
                    cfg.command_timeout
                };
        }
        write(&mut stream, &mut out).await?;
        if input.is_empty() && input.capacity() > 16 * IDLE_BUFFER {
            input = Vec::with_capacity(IDLE_BUFFER);
        }
        if input.capacity() - input.len() < 512 {
            input.reserve(4096);
        }
        let idle = !session.in_data() && session.sender().is_none();
        let read = tokio::select! {
            _ = shutdown.cancelled(), if idle => {
                out.extend(shutting_down().to_wire());
                write(&mut stream, &mut out).await?;
                return Ok(Outcome::Closed);
            }
            r = timeout_at(deadline, stream.read_buf(&mut input)) => r,
        };
        match read {
            Err(_elapsed) => {
                out.extend(command::timeout().to_wire());
                let _ = write(&mut stream, &mut out).await;
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

async fn write<S: AsyncWrite + Unpin>(stream: &mut S, out: &mut Vec<u8>) -> std::io::Result<()> {
    if !out.is_empty() {
        stream.write_all(out).await?;
        stream.flush().await?;
        out.clear();
    }
    Ok(())
}

/// Checks credentials: argon2 against the configured users (on a blocking thread, as the
/// hash is deliberately slow), or upstream through the backend.
async fn verify<B: Backend>(
    cfg: &SessionConfig,
    backend: &B,
    creds: &Credentials,
) -> Result<(), Reply> {
    match &cfg.auth {
        AuthMode::None => Err(command::auth::not_offered()),
        AuthMode::Passthrough => backend.authenticate(creds).await,
        AuthMode::Local(users) => {
            let users: Arc<Vec<(String, String)>> = users.clone();
            let user = creds.username.clone();
            let pass = creds.secret.clone().unwrap_or_default();
            let checked =
                tokio::task::spawn_blocking(move || local_password_ok(&users, &user, &pass)).await;
            match checked {
                Ok(true) => Ok(()),
                Ok(false) => Err(command::auth::failed()),
                Err(e) => {
                    tracing::error!(error = %e, "password check did not complete");
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

/// Whether `pass` matches `user`'s PHC hash. An unknown user costs one hash as well, so
/// that response times do not tell which user names exist.
fn local_password_ok(users: &[(String, String)], user: &str, pass: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
    static DUMMY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let argon = argon2::Argon2::default();
    let stored = users.iter().find(|(name, _)| name == user).map(|(_, h)| h);
    let dummy = DUMMY.get_or_init(|| {
        let salt = SaltString::encode_b64(b"sealpost-dummy-salt").ok()?;
        argon.hash_password(b"", &salt).ok().map(|h| h.to_string())
    });
    let Some(hash) = stored.or(dummy.as_ref()) else {
        return false;
    };
    let Ok(parsed) = PasswordHash::new(hash) else {
        tracing::warn!(
            user,
            "the configured password hash is not a valid PHC string"
        );
        return false;
    };
    argon.verify_password(pass.as_bytes(), &parsed).is_ok() && stored.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_passwords() {
        use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
        let hash = argon2::Argon2::default()
            .hash_password(b"secret", &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string();
        let users = vec![
            ("alice".to_string(), hash),
            ("bob".into(), "garbage".into()),
        ];
        assert!(local_password_ok(&users, "alice", "secret"));
        assert!(!local_password_ok(&users, "alice", "wrong"));
        assert!(!local_password_ok(&users, "mallory", ""));
        assert!(!local_password_ok(&users, "bob", "garbage"));
    }
}
