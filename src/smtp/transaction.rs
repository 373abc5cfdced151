//! One accepted transaction: what the SMTP session hands to the pipeline after the final dot.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::envelope::Envelope;

/// Everything the pipeline needs to process and relay one message.
#[derive(Debug, Clone)]
pub struct Transaction {
    /// A short unique ID, used in logs, in the `Received:` header and as the spool key.
    pub id: String,
    pub envelope: Envelope,
    /// The message as received: CRLF line ends, dot-unstuffed, with the gateway's
    /// `Received:` header already prepended; a large one spilled to disk.
    pub message: crate::blob::Blob,
    pub client: Client,
}

/// Who sent the transaction.
#[derive(Debug, Clone)]
pub struct Client {
    pub addr: SocketAddr,
    /// The EHLO/HELO name the client gave.
    pub helo: String,
    /// Whether the session was under TLS when DATA ended.
    pub tls: bool,
    /// The authenticated identity, if the client used AUTH.
    pub auth: Option<Credentials>,
}

/// The credentials a client authenticated with. In `passthrough` mode the secret is kept
/// so the relay can log in upstream as the client; in `local` mode it is dropped after the
/// check and `secret` is `None`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub username: String,
    pub secret: Option<String>,
}

// Hand-written so that no log line can ever contain a password.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("secret", &self.secret.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}
