//! Inbound: decrypt and verify mail for local users, sans-I/O (bytes, keyring and time in,
//! bytes out), EFAIL-safe, with result fields no sender can forge.
//!
//! [`open`] strips every incoming copy of our result fields ([`results`]), decides what the
//! root entity is ([`root`]; only the root, never a nested part, [`nested`]), decrypts it
//! per envelope recipient with that recipient's own keys ([`decrypt`]; Cv25519 keys
//! through OpenSSL keys imported once, [`x25519`]), checks signatures against the keyring
//! and the single From address ([`verify`], [`binding`]), applies or keeps apart protected
//! header fields ([`protected`]) and builds the delivered message ([`payload`],
//! [`assemble`]) with `Authentication-Results` and `X-Sealpost-Verdict` on top
//! ([`verdict`]).
//!
//! There is one way to open a message, over a [`Blob`]: a message held in memory is a
//! blob without a file, and one that spilled to disk while it was received is read from
//! its sealed file as it is opened. Either way the message and its plaintext are read as
//! they come: the root's parts are byte ranges, OpenPGP data is transfer decoded and
//! dearmored as sequoia reads it ([`root::Data`]), the plaintext goes to a
//! [`crate::blob::Writer`] that spills to a sealed file past `spill_above` and is used
//! only once decryption finished with its integrity checked, and a delivered message is a
//! new head in front of a slice of the received body or of the plaintext, never a copy.
//! Read whole into memory, and only then, each bounded by `max_plaintext`: decrypted
//! inline (armored text-body) plaintext, which is re-encoded as the text body
//! ([`assemble::inline`]), and a decrypted payload body that must be re-encoded for 7-bit
//! transport ([`assemble::decrypted`]).
//!
//! Everything about the message is a [`Verdict`], never an error: a message that cannot be
//! decrypted is delivered unchanged with our fields. [`Error`] is only a temporary local
//! failure (the keyring, a spill file), answered `451 4.3.0`.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

pub mod armor;
pub mod assemble;
pub mod binding;
pub mod context;
pub mod decrypt;
pub mod error;
pub mod judge;
pub mod nested;
pub mod open;
pub mod payload;
pub mod protected;
pub mod results;
pub mod root;
pub mod verdict;
pub mod verify;
pub mod x25519;

pub use context::{Opened, Settings};
pub use error::Error;
pub use open::open;
pub use verdict::{Encryption, HeaderProtection, Pgp, Signature, Verdict};

#[cfg(test)]
mod tests;
