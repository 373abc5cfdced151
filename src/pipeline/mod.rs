//! The pipeline: what happens to one transaction between the final dot and the relay.
//!
//! [`Gateway`] is the SMTP session's [`Backend`](crate::smtp::backend::Backend). Outbound:
//! at RCPT time the policy refuses recipients that must be encrypted but have no key; after
//! the final dot, [`outbound::classify`](crate::transform::outbound::classify()) reads the message
//! once (already protected? malformed? From and To/Cc), each recipient gets a treatment,
//! [`split`] groups them (Bcc recipients apart), and [`process`] builds each group's copy
//! with [`outbound::protect_classified`](crate::transform::outbound::protect_classified). Inbound
//! mail is checked against the local domains and relayed.

mod gateway;
pub mod process;
pub mod reply;
pub mod split;

pub use gateway::{Direction, Gateway};
pub use reply::ToReply;
