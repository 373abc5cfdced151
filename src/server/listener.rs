//! Accepts connections on one listener, enforces the connection limits, and runs one task
//! per connection: plaintext, STARTTLS, or implicit TLS.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::smtp::backend::Backend;
use crate::smtp::config::SessionConfig;
use crate::smtp::connection::{drive, Outcome};
use crate::smtp::reply::{Enhanced, Reply};
use crate::smtp::session::Session;

/// Connection limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max: usize,
    pub per_ip: usize,
}

/// Counts connections per client address; the guard gives its slot back on drop.
#[derive(Default)]
struct PerIp {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

struct IpSlot {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn take(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<IpSlot> {
        let mut counts = self.counts.lock().ok()?;
        let n = counts.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n = n.saturating_add(1);
        Some(IpSlot {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.table.counts.lock() {
            if let Some(n) = counts.get_mut(&self.ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.remove(&self.ip);
                }
            }
        }
    }
}

/// What new connections on a listener are served with. A reload sends a new one; a
/// session keeps the one it started with until it ends.
pub struct Serving<B> {
    pub cfg: Arc<SessionConfig>,
    pub backend: Arc<B>,
}

impl<B> Clone for Serving<B> {
    fn clone(&self) -> Self {
        Serving {
            cfg: self.cfg.clone(),
            backend: self.backend.clone(),
        }
    }
}

/// Accepts until `shutdown`, then stops accepting; connections in flight are tracked by
/// `tracker` so that the caller can wait for them. Each connection is served with what
/// `serving` holds when it is accepted.
pub async fn run<B: Backend>(
    listener: TcpListener,
    serving: tokio::sync::watch::Receiver<Serving<B>>,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(limits.max));
    let per_ip = Arc::new(PerIp::default());
    loop {
        let Some(accepted) = accept(&listener, &shutdown, "SMTP").await else {
            return;
        };
        let Ok((stream, peer)) = accepted else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Serving { cfg, backend } = serving.borrow().clone();
        let permit = slots.clone().try_acquire_owned().ok();
        let slot = per_ip.take(peer.ip(), limits.per_ip);
        let (Some(permit), Some(slot)) = (permit, slot) else {
            tracker.spawn(refuse(stream, cfg.command_timeout));
            continue;
        };
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let _slot = slot;
            if let Err(e) = connection(stream, peer, &cfg, backend.as_ref(), &shutdown).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// Tells a client over the limits to come back later. Bounded in time like every write:
/// a refused client must not keep even this task waiting.
async fn refuse(mut stream: TcpStream, limit: std::time::Duration) {
    let reply = Reply::new(
        421,
        Enhanced(4, 3, 2),
        "Too many connections; try again later",
    );
    let _ = tokio::time::timeout(limit, async {
        let _ = stream.write_all(&reply.to_wire()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

async fn connection<B: Backend>(
    stream: TcpStream,
    peer: SocketAddr,
    cfg: &Arc<SessionConfig>,
    backend: &B,
    shutdown: &CancellationToken,
) -> std::io::Result<()> {
    let handshake = |acceptor: &tokio_rustls::TlsAcceptor, s: TcpStream| {
        let accept = acceptor.accept(s);
        tokio::time::timeout(cfg.command_timeout, accept)
    };
    if cfg.implicit_tls {
        let Some(acceptor) = &cfg.tls else {
            return Ok(());
        };
        let tls = handshake(acceptor, stream)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake"))??;
        let mut session = Session::new(cfg.clone(), peer, true);
        let result = drive(tls, &mut session, cfg, backend, true, shutdown).await;
        session_ended(&session);
        return result.map(|_| ());
    }
    let mut session = Session::new(cfg.clone(), peer, false);
    let result = match drive(stream, &mut session, cfg, backend, true, shutdown).await {
        Ok(Outcome::Closed) => Ok(()),
        Ok(Outcome::StartTls(stream)) => match &cfg.tls {
            None => Ok(()),
            Some(acceptor) => match handshake(acceptor, stream).await {
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "TLS handshake",
                )),
                Ok(Err(e)) => Err(e),
                Ok(Ok(tls)) => {
                    session.tls_started();
                    drive(tls, &mut session, cfg, backend, false, shutdown)
                        .await
                        .map(|_| ())
                }
            },
        },
        Err(e) => Err(e),
    };
    session_ended(&session);
    result
}

/// One line per session, whatever ended it: who, whether encrypted, as whom, and how
/// many messages were accepted.
fn session_ended(session: &Session) {
    tracing::info!(
        client = %session.peer(),
        tls = if session.tls() { "yes" } else { "no" },
        user = %session.user().unwrap_or("-").escape_debug(),
        messages = session.accepted(),
        "session ended"
    );
}

/// The next connection on `listener`, or `None` once `shutdown` is cancelled. A failed
/// accept (out of file descriptors and the like) is logged and waited out briefly, and
/// comes back as `Some(Err(()))` so that the caller keeps serving.
pub async fn accept(
    listener: &TcpListener,
    shutdown: &CancellationToken,
    what: &str,
) -> Option<Result<(TcpStream, SocketAddr), ()>> {
    let accepted = tokio::select! {
        _ = shutdown.cancelled() => return None,
        a = listener.accept() => a,
    };
    Some(match accepted {
        Ok(a) => Ok(a),
        Err(e) => {
            tracing::warn!(error = %e, "{what} accept failed");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            Err(())
        }
    })
}
