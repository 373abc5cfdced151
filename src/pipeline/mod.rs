//! The pipeline: what happens to one transaction between the final dot and the relay.
//!
//! [`Gateway`] is the SMTP session's [`Backend`](crate::smtp::backend::Backend). Outbound:
//! at RCPT time the policy refuses recipients that must be encrypted but have no key; after
//! the final dot, [`parse`] reads the header section, each recipient gets a treatment,
//! [`split`] groups them (Bcc recipients apart), and [`process`] builds each group's copy
//! with the transforms. Inbound mail is checked against the local domains and relayed.

mod gateway;
pub mod parse;
pub mod process;
pub mod split;

pub use gateway::{Direction, Gateway};
