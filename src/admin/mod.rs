//! The admin socket: while `serve` holds the stores' locks, `sealpost keys …` and
//! `sealpost queue …` run inside the server, sent over a Unix socket in the data directory.
//!
//! The protocol is one JSON request line and one JSON response line per connection. The
//! client sends its command line and the contents of the files it names, so that the server
//! never reads paths with its own permissions or working directory.

pub mod client;
pub mod socket;

use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};

/// The socket's file name inside the data directory.
pub const SOCKET_NAME: &str = "admin.sock";

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// The client's arguments, without the program name.
    pub argv: Vec<String>,
    /// Files the command reads, by the name given on the command line, base64.
    pub inputs: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub stdout: String,
    pub stderr: String,
    /// The exit code the client should exit with.
    pub code: u8,
}

pub fn encode(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

pub fn decode(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// Largest request accepted (a keyring import can be large).
pub const MAX_REQUEST: usize = 256 * 1024 * 1024;
