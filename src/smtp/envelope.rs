//! The SMTP envelope of one transaction, with the DSN parameters (RFC 3461) kept so that
//! they can be passed upstream unchanged.

use serde::{Deserialize, Serialize};

pub use super::address::Address;

/// MAIL FROM and its parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sender {
    /// The reverse path; null (`<>`) for bounces, which must never get a DSN.
    pub address: Address,
    /// BODY=8BITMIME was given.
    pub eight_bit: bool,
    /// SMTPUTF8 was given.
    pub smtputf8: bool,
    /// RET=FULL or RET=HDRS (RFC 3461).
    pub ret: Option<Ret>,
    /// ENVID (RFC 3461), xtext-decoded.
    pub envid: Option<String>,
    /// SIZE declared by the client, if any.
    pub size: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ret {
    Full,
    Headers,
}

/// RCPT TO and its parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub address: Address,
    /// NOTIFY (RFC 3461); empty when the client gave none.
    pub notify: Vec<Notify>,
    /// ORCPT (RFC 3461), as `addr-type;xtext-decoded-address`.
    pub orcpt: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Notify {
    Never,
    Success,
    Failure,
    Delay,
}

/// One envelope: a sender and the recipients accepted so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub sender: Sender,
    pub recipients: Vec<Recipient>,
}

impl Sender {
    /// A sender with no parameters.
    pub fn plain(address: impl Into<Address>) -> Sender {
        Sender {
            address: address.into(),
            eight_bit: false,
            smtputf8: false,
            ret: None,
            envid: None,
            size: None,
        }
    }

    /// Whether this is the null reverse path `<>`.
    pub fn is_null(&self) -> bool {
        self.address.is_null()
    }
}

impl Recipient {
    /// A recipient with no parameters.
    pub fn plain(address: impl Into<Address>) -> Recipient {
        Recipient {
            address: address.into(),
            notify: Vec::new(),
            orcpt: None,
        }
    }
}
