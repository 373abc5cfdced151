//! The keyring's one error type.

/// Everything that can go wrong in the keyring. Each message is one line a person can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("key store: {0}")]
    Store(String),
    #[error("the keyring at {path} is in use by another process (is `sealpost serve` running?)")]
    Locked { path: String },
    #[error("{reason}")]
    Parse { reason: String },
    #[error("no key matches {0}")]
    NotFound(String),
    #[error("sealpost holds no secret key for {0}")]
    NoSecret(String),
    #[error("no usable OpenPGP key for {email}: {}", .reasons.join("; "))]
    NoUsableKey { email: String, reasons: Vec<String> },
    #[error("{}", sealpost_vault::Error::BadPassphrase)]
    BadPassphrase,
    #[error("{}", sealpost_vault::Error::PassphraseNeeded)]
    PassphraseNeeded,
    #[error("{}", sealpost_vault::Error::NotSealed { path: path.clone() })]
    NotSealed { path: String },
    #[error(
        "the secret key {fingerprint} is protected by a passphrase that was not given or did not \
         unlock it; give it with --passphrase-file FILE (the key is then sealed under the \
         keyring's own protection)"
    )]
    SecretLocked { fingerprint: String },
    #[error(
        "{email} has a secret key already ({fingerprint}); a second one would leave senders \
         guessing which to use: extend or revoke that one, or force a new one with --force"
    )]
    SecretExists { email: String, fingerprint: String },
    #[error("{0}")]
    Crypto(String),
    /// The store cannot be reached now (a database down): try again later, and never
    /// take it for "no key".
    #[error("{0}")]
    Unavailable(String),
    #[error(
        "a keyring shared in PostgreSQL stores secret keys only sealed with the passphrase: \
         set SEALPOST_PASSPHRASE_FILE"
    )]
    SharedNeedsPassphrase,
}

impl Error {
    /// `source`, naming the file or directory it happened on; its kind is kept.
    pub fn at(path: impl std::fmt::Display, source: std::io::Error) -> Error {
        Error::Io(std::io::Error::new(
            source.kind(),
            format!("{path}: {source}"),
        ))
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Error {
        Error::Store(e.to_string())
    }
}

/// The vault's mismatches stay the keyring's own variants, so that callers match one type.
impl From<sealpost_vault::Error> for Error {
    fn from(e: sealpost_vault::Error) -> Error {
        use sealpost_vault::Error as V;
        match e {
            V::Io(e) => Error::Io(e),
            V::At { path, source } => Error::at(&path, source),
            V::Locked { path } => Error::Locked { path },
            V::BadPassphrase => Error::BadPassphrase,
            V::PassphraseNeeded => Error::PassphraseNeeded,
            V::NotSealed { path } => Error::NotSealed { path },
            V::Corrupt(m) => Error::Store(m),
            V::Crypto(m) => Error::Crypto(m),
            other => Error::Store(other.to_string()),
        }
    }
}
