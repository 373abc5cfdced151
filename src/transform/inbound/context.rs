//! What the inbound steps share: the transform's settings and what it returns, the
//! keyring and the time, and the outer header with our fields stripped.

use std::time::SystemTime;

use sealpost_keyring::Keyring;

use crate::blob::{self, Blob};
use crate::mime::headers::{self, Field};

use super::results::{self, RawField};
use super::verdict::Verdict;

/// The inbound transform's configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Our authserv-id (RFC 8601): the first token of our `Authentication-Results`.
    pub authserv_id: String,
    /// Most plaintext released from one message (compression bombs).
    pub max_plaintext: usize,
    /// Where the plaintext of a large message goes while it is decrypted (a sealed
    /// temporary file); `None` keeps it in memory.
    pub spill: Option<blob::Spill>,
}

/// One delivered version of the message and the envelope recipients (indexes into
/// `recipients`) that get it.
#[derive(Debug, Clone)]
pub struct Opened {
    pub recipients: Vec<usize>,
    /// Our head in memory; the body shares the received message's or the plaintext's
    /// storage when it goes out unchanged.
    pub message: Blob,
    pub verdict: Verdict,
    /// The `Autocrypt-Gossip` field values (unfolded) of a decrypted payload's header,
    /// for discovery; empty for anything that was not decrypted.
    pub gossip: Vec<String>,
}

/// What every step needs.
pub struct Ctx<'a> {
    pub keyring: &'a Keyring,
    pub settings: &'a Settings,
    pub now: SystemTime,
}

/// The outer header, our fields stripped.
pub struct Outer<'a> {
    pub raw: Vec<RawField<'a>>,
    pub fields: Vec<Field>,
    /// The single From address, lower-cased.
    pub from: Option<String>,
}

/// The outer header with our forged fields stripped.
pub fn outer_of<'a>(head: &'a [u8], settings: &Settings) -> Outer<'a> {
    let raw = results::strip(results::fields(head), &settings.authserv_id);
    let fields: Vec<Field> = raw.iter().filter_map(|r| r.field.clone()).collect();
    let from = headers::from_address(&fields);
    Outer { raw, fields, from }
}
