//! The admin socket's server side: a Unix socket, mode 0600, one request per connection.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

use super::{Request, Response, MAX_REQUEST};

/// What runs a request: blocking work (keyring, spool), so it is called in `spawn_blocking`.
pub type Handler = Arc<dyn Fn(Request) -> Response + Send + Sync>;

/// Binds the socket at `path`, replacing a stale one from a crashed server, with mode 0600
/// so that only the server's user can administer it.
///
/// # Errors
/// When the path cannot be bound or its mode set.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if path.exists() {
        // A live server holds the stores' locks, so reaching here means the socket is stale.
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves requests until `shutdown`, then removes the socket file.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    handler: Handler,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, _) = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin socket accept failed");
                continue;
            }
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            if let Err(e) = one(stream, handler).await {
                tracing::warn!(error = %e, "admin request failed");
            }
        });
    }
    let _ = std::fs::remove_file(&path);
}

async fn one(stream: tokio::net::UnixStream, handler: Handler) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(MAX_REQUEST as u64));
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let response = match serde_json::from_str::<Request>(&line) {
        Ok(req) => tokio::task::spawn_blocking(move || handler(req))
            .await
            .unwrap_or_else(|_| Response {
                stdout: String::new(),
                stderr: "sealpost: error: the server failed to run the command\n".into(),
                code: 1,
            }),
        Err(e) => Response {
            stdout: String::new(),
            stderr: format!("sealpost: error: malformed admin request: {e}\n"),
            code: 2,
        },
    };
    let mut out = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}
