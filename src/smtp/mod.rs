//! The receiving side of SMTP: a sans-I/O session, one file per verb, and the connection
//! that drives it over a socket.

pub mod address;
pub mod auth_failures;
pub mod backend;
pub mod command;
pub mod config;
pub mod connection;
pub mod envelope;
pub mod password;
pub mod reply;
pub mod session;
pub mod trace;
pub mod transaction;
