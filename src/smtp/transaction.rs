//! One accepted transaction: what the SMTP session hands to the pipeline after the final dot.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

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
    /// When the transaction's MAIL command was accepted (none before MAIL).
    pub mail_at: Option<std::time::Instant>,
}

/// The credentials a client authenticated with. In `passthrough` mode the secret is kept
/// so the relay can log in upstream as the client; in `local` mode it is dropped after the
/// check and `secret` is `None`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub username: String,
    pub secret: Option<Secret>,
}

/// A password, zeroed when dropped (each clone zeroes its own copy). In a spool entry it
/// is a plain JSON string, as it always was.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Secret {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(Zeroizing::new(s))
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret::from(s.to_string())
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        String::deserialize(d).map(Secret::from)
    }
}

// Never printed, whatever prints it.
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<hidden>")
    }
}

// Hand-written so that no log line can ever contain a password.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("secret", &self.secret)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spool entries written before the password was a [`Secret`] still load, and new
    /// ones are written the same way.
    #[test]
    fn credentials_keep_their_json_form() {
        let old = r#"{"username":"bob","secret":"hunter2"}"#;
        let c: Credentials = serde_json::from_str(old).unwrap();
        assert_eq!(c.secret.as_deref(), Some("hunter2"));
        assert_eq!(serde_json::to_string(&c).unwrap(), old);
        let none = r#"{"username":"bob","secret":null}"#;
        let c: Credentials = serde_json::from_str(none).unwrap();
        assert_eq!(c.secret, None);
        assert_eq!(serde_json::to_string(&c).unwrap(), none);
        assert!(!format!("{c:?} {:?}", Secret::from("hunter2")).contains("hunter2"));
    }
}
