//! Key discovery: keys found without an admin.
//!
//! - [`autocrypt`]: the `Autocrypt:` header of a received message whose single From
//!   address is the header's `addr` offers its key, with the trust `autocrypt`; so do the
//!   `Autocrypt-Gossip:` fields of a decrypted payload, for the message's other recipients.
//! - [`finder`]: at send time, a recipient without a usable key is looked up in its
//!   domain's Web Key Directory ([`wkd`]), in its domain's DNS as a DANE OPENPGPKEY record
//!   validated with DNSSEC ([`dane`], off by default) and on the configured VKS keyservers
//!   ([`vks`]), over our HTTPS client ([`http`]), within the message's budget; misses are
//!   recorded so the address is not asked again too soon.
//! - [`refresh`]: known certificates are fetched again in the background.
//!
//! Whatever a source returns is offered to the keyring
//! ([`sealpost_keyring::Keyring::offer_discovered`]), which keeps only the user IDs with
//! the wanted address, merges updates, queues a different key for an address that has one
//! for review, and never replaces a pinned key.

pub mod autocrypt;
pub mod dane;
pub mod finder;
pub mod http;
pub mod refresh;
pub mod vks;
pub mod wkd;

pub use finder::{Finder, Settings};
