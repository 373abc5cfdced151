//! Secrets at rest for sealpost, shared by the keyring and the spool.
//!
//! - [`vault`]: records sealed under keys of their own, kept in one small file and
//!   destroyed with the record (crypto-shredding), the whole file sealed by the keyring
//!   passphrase.
//! - [`legacy`]: the format records had before the vault, read so they can move into it.
//! - [`disk`]: private directories, and sled databases opened with their lock.
#![forbid(unsafe_code)]

pub mod disk;
pub mod legacy;
pub mod vault;

pub use vault::{Owner, Resealed, Vault};

/// What can go wrong with secrets at rest. Each message is one line a person can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{path} is in use by another process (is `sealpost serve` running?)")]
    Locked { path: String },
    #[error(
        "the passphrase in SEALPOST_PASSPHRASE_FILE is wrong: the keyring and spool were sealed \
         with another one (`sealpost keyring passphrase change` replaces it, given both)"
    )]
    BadPassphrase,
    #[error(
        "the keyring's secret keys and the spool are sealed with a passphrase; \
         set SEALPOST_PASSPHRASE_FILE to the file that holds it"
    )]
    PassphraseNeeded,
    #[error(
        "{path} holds secret keys or spooled mail sealed without a passphrase, so \
         SEALPOST_PASSPHRASE_FILE would protect only what comes after; seal them first: \
         `sealpost keyring passphrase set --new-passphrase-file FILE` (with \
         SEALPOST_PASSPHRASE_FILE unset)"
    )]
    NotSealed { path: String },
    /// An I/O error on a file or directory of the data directory, with its path.
    #[error("{path}: {source}")]
    At {
        path: String,
        source: std::io::Error,
    },
    /// A damaged vault or record, or one whose key was destroyed.
    #[error("{0}")]
    Corrupt(String),
    #[error("{0}")]
    Crypto(String),
}

impl Error {
    /// `source`, naming the file or directory it happened on.
    pub fn at(path: &std::path::Path, source: std::io::Error) -> Error {
        Error::At {
            path: path.display().to_string(),
            source,
        }
    }
}
