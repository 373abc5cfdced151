//! Key discovery: keys found without an admin. Today that is Autocrypt Level 1 on inbound
//! mail ([`autocrypt`]): the `Autocrypt:` header of a message whose single From address
//! is the header's `addr` offers its key to the keyring, which stores it with the trust
//! `autocrypt` (below every key an admin pinned), queues a different key for an address
//! that has one for review, and never replaces a pinned key
//! ([`sealpost_keyring::Keyring::offer_discovered`]).

pub mod autocrypt;
