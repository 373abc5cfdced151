//! sealpost: an OpenPGP end-to-end encryption gateway for SMTP.
//!
//! # Layout
//!
//! One message's path through the gateway, in the order the modules are listed:
//!
//! - [`server`]: listeners, connection limits, graceful shutdown.
//! - [`tls`]: certificates for the listeners (from files, or self-signed on loopback).
//! - [`smtp`]: the receiving side: a sans-I/O session, one file per verb, the connection
//!   that drives it, replies, the envelope, the transaction handed on after the final dot.
//! - [`pipeline`]: the session's backend: parse, policy per recipient, grouping (Bcc
//!   apart), transform, then the relay.
//! - [`policy`]: layered rules (global, domain, address) and the decision per recipient.
//! - [`transform`]: the OpenPGP transforms, sans-I/O: `outbound` (PGP/MIME
//!   sign+encrypt, signed-only, header protection, Autocrypt) and `inbound` (decrypt and
//!   verify for local users).
//! - [`relay`]: the sending side: upstream SMTP or Maildir, the spool, retries, DSNs.
//!
//! Around it: [`mime`] (the byte-level MIME layer the transforms and the relay share:
//! header split, MIME scan, charset checks, 7-bit encoding), [`blob`] (a message's bytes, in memory or spilled to a sealed temporary
//! file), [`wipe`] (buffers of plaintext and passwords, zeroed before they are freed),
//! [`config`] (the TOML file, validated once), [`ops`] (metrics and health over HTTP,
//! readiness for systemd), [`publish`] (the local users' keys served as a Web Key
//! Directory over HTTPS), [`admin`] (the socket through
//! which `sealpost keys|queue|policy` reach a running server) and [`cli`].
#![forbid(unsafe_code)]

pub mod blob;
pub mod mime;
pub mod ops;
pub mod pipeline;
pub mod policy;
pub mod relay;
pub mod server;
pub mod smtp;
pub mod tls;
pub mod transform;
pub mod wipe;

pub mod admin;
pub mod cli;
pub mod config;
pub mod discovery;
pub mod imap;
pub mod publish;
