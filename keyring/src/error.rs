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
    #[error(
        "the secret key {fingerprint} is protected by its own passphrase; \
         export it without one (gpg --export-secret-keys after `gpg --passwd` to an empty passphrase)"
    )]
    SecretLocked { fingerprint: String },
    #[error("{0}")]
    Crypto(String),
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Error {
        Error::Store(e.to_string())
    }
}
