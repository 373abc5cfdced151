//! The pipeline: what happens to one transaction between the final dot and the relay.
//!
//! [`Gateway`] is the SMTP session's [`Backend`](crate::smtp::backend::Backend): it checks
//! recipients at RCPT time and turns a transaction into copies for the relay. Today a
//! transaction leaves as one copy with its own envelope (the transparent relay); the
//! encrypting and decrypting transforms plug in between.

mod gateway;

pub use gateway::{Direction, Gateway};
