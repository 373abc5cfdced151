//! The admin socket's client side, used by the CLI when `serve` is running.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use super::{Request, Response};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the running server at {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("the running server did not answer: {0}")]
    Io(#[from] std::io::Error),
    #[error("the running server sent a malformed answer: {0}")]
    Protocol(String),
}

/// Sends one request and waits for its response.
///
/// # Errors
/// When the socket cannot be reached or the server answers nonsense.
pub fn call(socket: &Path, req: &Request) -> Result<Response, Error> {
    let mut stream = UnixStream::connect(socket).map_err(|source| Error::Connect {
        path: socket.display().to_string(),
        source,
    })?;
    let mut line = serde_json::to_vec(req).map_err(|e| Error::Protocol(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line)?;
    stream.flush()?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    reader.read_line(&mut answer)?;
    serde_json::from_str(&answer).map_err(|e| Error::Protocol(e.to_string()))
}
