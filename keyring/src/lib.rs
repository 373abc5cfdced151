//! The sealpost keyring.
