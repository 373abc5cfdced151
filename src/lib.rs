//! sealpost: an OpenPGP end-to-end encryption gateway for SMTP.
//!
//! # Layout
//!
//! One message's path through the gateway, in the order the modules are listed:
//!
//! - [`smtp`]: the receiving side: session state machine, replies, the envelope.
#![forbid(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod config;
pub mod pipeline;
pub mod policy;
pub mod relay;
pub mod server;
pub mod smtp;
pub mod tls;
pub mod transform;
