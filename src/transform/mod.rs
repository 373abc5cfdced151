//! The cryptographic transforms, sans-I/O: bytes and keys in, bytes out, time passed in.
//!
//! Outbound today: [`encrypt::encrypt`] builds RFC 3156 combined sign+encrypt PGP/MIME with
//! RFC 9788 header protection. SEIPDv2 is produced only when every recipient's key
//! advertises it (sequoia's `Encryptor` decides per recipient set), otherwise SEIPDv1, so
//! gpg 2.2 and sq 0.27 recipients can read it; each signature names its intended
//! recipients.

pub mod autocrypt;
pub mod encrypt;
pub mod headers;
pub mod seven_bit;
pub mod sign;

use crate::smtp::reply::{Enhanced, Reply};

/// What can go wrong while transforming one message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} has no key usable for encryption")]
    NoEncryptionKey(String),
    #[error("{0} has no key usable for signing")]
    NoSigningKey(String),
    #[error("OpenPGP: {0}")]
    Crypto(String),
    #[error("the message has 8-bit content that cannot be re-encoded for signing")]
    NotSevenBit,
}

impl Error {
    /// Nothing about a transform failure is the client's fault: try again later, and let
    /// the logs say why.
    pub fn reply(&self) -> Reply {
        Reply::new(
            451,
            Enhanced(4, 3, 0),
            "Temporary failure while protecting the message; try again later",
        )
    }
}

#[cfg(test)]
mod tests;
