//! The byte-level MIME layer, with no crypto and no I/O, shared by the transforms and the
//! relay:
//! - [`headers`]: a header section split into fields, folding kept, and the field that
//!   counts when one is repeated;
//! - [`structure`]: the bounded scan of a MIME tree (depth, parts, line length) and the
//!   full parse, a parser panic turned into "cannot parse";
//! - [`entity`]: one entity's content fields as every reader takes them, its content type
//!   and parameters, CRLF line ends;
//! - [`scan`], [`lines`]: the same reading of a header section and of a multipart's
//!   delimiter lines over bytes read as they come, in memory or from a sealed file, a
//!   line of any length at bounded cost;
//! - [`decode`]: a part's transfer decoding as it is read, line ends made CRLF, markers
//!   searched for on the way ([`pending`] holds what a decoder made and was not read yet);
//! - [`charset`]: whether a text part holds bytes of the charset it declares;
//! - [`seven_bit`]: 7-bit text, the one single-part encoder (quoted-printable or base64),
//!   and the 7-bit rewrite of a whole message.

pub mod charset;
pub mod decode;
pub mod entity;
pub mod headers;
pub mod lines;
pub mod pending;
pub mod scan;
pub mod seven_bit;
pub mod structure;

/// What is wrong with a message at the MIME level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("a header line exceeds {0} octets")]
    HeaderLineTooLong(usize),
    #[error("MIME nesting deeper than {0}")]
    TooDeep(usize),
    #[error("more than {0} MIME parts")]
    TooManyParts(usize),
    #[error("a text part declared {0} holds bytes that are not {0}")]
    InvalidCharset(String),
    #[error("the message has 8-bit content that cannot be re-encoded as 7-bit")]
    NotSevenBit,
}
