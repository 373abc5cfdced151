//! The inbound transform's only error: a temporary local failure, nothing about the
//! message (the pipeline answers it `451 4.3.0`).

/// A temporary local failure: nothing about the message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("keyring: {0}")]
    Keyring(#[from] sealpost_keyring::Error),
    /// A spilled message or its plaintext could not be read or written.
    #[error("spill file: {0}")]
    Spill(#[from] std::io::Error),
}
