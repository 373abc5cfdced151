//! The receiving side of SMTP.

pub mod envelope;
pub mod reply;
pub mod transaction;
