//! What the outbound transform finds wrong with a message, or what fails while it protects
//! one. The pipeline turns it into an SMTP reply.

/// What can go wrong while classifying or transforming one message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the message has no From field")]
    NoFrom,
    #[error("the message has {0} From fields")]
    SeveralFrom(usize),
    #[error("the From field has {0} addresses, not one valid address")]
    FromAddresses(usize),
    #[error("the message contains NUL bytes")]
    NulByte,
    #[error("the header section has a bare LF line ending")]
    BareLineFeed,
    #[error("a header line exceeds {0} octets")]
    HeaderLineTooLong(usize),
    #[error("the header section has more than {0} fields")]
    TooManyFields(usize),
    #[error("MIME nesting deeper than {0}")]
    TooDeep(usize),
    #[error("more than {0} MIME parts")]
    TooManyParts(usize),
    #[error("a text part declared {0} holds bytes that are not {0}")]
    InvalidCharset(String),
    #[error("no recipient to encrypt to")]
    NoRecipients,
    #[error("{0} has no key usable for encryption")]
    NoEncryptionKey(String),
    #[error("{0} has no key usable for signing")]
    NoSigningKey(String),
    #[error("OpenPGP: {0}")]
    Crypto(String),
    #[error("the message has 8-bit content that cannot be re-encoded for signing")]
    NotSevenBit,
}

impl From<crate::mime::Error> for Error {
    fn from(e: crate::mime::Error) -> Self {
        use crate::mime::Error as M;
        match e {
            M::HeaderLineTooLong(n) => Error::HeaderLineTooLong(n),
            M::TooDeep(n) => Error::TooDeep(n),
            M::TooManyParts(n) => Error::TooManyParts(n),
            M::InvalidCharset(c) => Error::InvalidCharset(c),
            M::NotSevenBit => Error::NotSevenBit,
        }
    }
}

impl Error {
    /// Whether the From field is at fault (missing, repeated, or not one address): the
    /// message cannot be signed or encrypted for anyone, but is otherwise sound.
    pub fn is_from(&self) -> bool {
        matches!(
            self,
            Error::NoFrom | Error::SeveralFrom(_) | Error::FromAddresses(_)
        )
    }

    /// Whether the message itself is at fault (permanent), not keys or the backend.
    pub fn is_input(&self) -> bool {
        !matches!(
            self,
            Error::NoRecipients
                | Error::NoEncryptionKey(_)
                | Error::NoSigningKey(_)
                | Error::Crypto(_)
                | Error::NotSevenBit
        )
    }
}
