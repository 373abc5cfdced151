//! The cryptographic transforms, sans-I/O: bytes and keys in, bytes out, time passed in.
//!
//! Outbound, [`classify`] comes first: already protected messages pass through byte-exact,
//! malformed ones are refused. Then [`protect`] applies a [`Treatment`]:
//! [`encrypt::seal`] builds RFC 3156 combined sign+encrypt PGP/MIME and [`sign::sign`]
//! builds `multipart/signed`, both with RFC 9788 header protection ([`headers`]) and,
//! when signed, an [`autocrypt`] header for the sender.
//!
//! Inbound, [`inbound::open`] decrypts and verifies mail for local users: it removes every
//! incoming copy of our result fields, looks only at the root entity (RFC 3156
//! `multipart/encrypted` or `multipart/signed`, or a text body that is exactly one armored
//! block), decrypts once per envelope recipient with that recipient's own keys, judges
//! signatures against the single From address, applies RFC 9788 protected fields only
//! under a valid signature, and writes `Authentication-Results` and `X-Sealpost-Verdict`.
//! What it finds is a verdict, never an error: what cannot be opened is delivered as
//! received, with our fields on top.
//!
//! # Security rules (`security.md`) and where they are kept
//!
//! - **Rule 1, EFAIL (inbound):** only the root is decrypted ([`inbound::root`]); nested
//!   ciphertext is reported `nested-ignored` (test `efail_ciphertext_between_html_parts_is_never_decrypted`).
//!   SED is refused before decryption, bad MDC and truncation after reading the whole
//!   plaintext, which is then discarded; plaintext is bounded by `max_plaintext`
//!   ([`inbound::decrypt`]; tests `sed_is_refused`, `a_bad_mdc_or_truncation_releases_nothing`,
//!   `a_compression_bomb_stops_at_the_limit`). Only `decrypt` makes a `Plaintext`.
//! - **Rule 2, reply oracles:** a secret key is used only when its certificate has a
//!   valid user ID with the envelope recipient's address (tests
//!   `ciphertext_for_another_local_user_is_not_decrypted`,
//!   `anonymous_recipients_are_tried_with_the_recipients_own_keys_only`).
//! - **Rule 3 (inbound):** [`inbound::verify::judge`] gives `valid` only for a signature
//!   over the whole (decrypted) root from a certificate with a user ID equal to the single
//!   From address; `partial`, `from-mismatch`, `multiple-from` otherwise (tests in
//!   `inbound/tests/signatures.rs`). Result fields carry only fixed words, hex
//!   fingerprints and validated addresses; protected values are sanitised
//!   (test `protected_values_cannot_inject_fields`).
//! - **Rules 4 and 5, forged results, encrypted is not authentic:** [`inbound::results`]
//!   strips our fields outside and in the payload (test
//!   `forged_results_are_removed_outside_and_inside`); protected fields replace outer ones
//!   only with the `Valid` proof only `judge` makes (tests
//!   `unsigned_protected_headers_are_kept_apart`,
//!   `the_outbound_path_output_opens_with_header_protection_applied`).
//!
//! - **Rule 3, signature spoofing:** a message is signed only as a whole root entity
//!   (the combined form, or the first part of `multipart/signed`), and only when it has
//!   exactly one From field with exactly one address ([`classify::classify`]; tests
//!   `bad_from_is_refused`). Nothing attacker-controlled is written into new header
//!   fields: the outer fields and `HP-Outer` copy the sender's own fields byte for byte,
//!   the Autocrypt `addr` is the validated From address. A v6 key never signs for v4
//!   recipients ([`encrypt::signer_fits`]; test `v6_signer_does_not_sign_for_v4`).
//! - **Rule 7, Bcc privacy:** the grouping is the pipeline's; here, `Bcc` is copied
//!   neither outside nor into the Cryptographic Payload (test `bcc_never_travels`), and
//!   [`Classification::named`] gives the To and Cc addresses that grouping needs.
//! - **Rule 10, limits:** NUL bytes, bare LF in the header, more than
//!   [`classify::MAX_FIELDS`] fields, header lines over 998 octets, MIME nesting deeper
//!   than [`structure::MAX_DEPTH`] and more than [`structure::MAX_PARTS`] parts are
//!   refused with `554 5.6.0`, never a panic (tests `limits_are_5xx_not_panics`,
//!   `arbitrary_bytes_never_panic`). Bodies are streamed into the encryptor, not parsed.
//! - **Never half-protected:** every failure is an error, never a plaintext fallback:
//!   input errors are `554 5.6.0`, key and backend failures `451 4.3.0` (test
//!   `a_recipient_without_an_encryption_key_is_an_error_not_a_plaintext`).
//! - **Compatibility:** SEIPDv2 only when every recipient advertises it (sequoia's
//!   `Encryptor`), so gpg 2.2 and sq 0.27 read what they are sent (test
//!   `a_v6_and_a_v4_recipient_both_read_it_gpg_gets_seipdv1`).

pub mod armor;
pub mod autocrypt;
pub mod classify;
pub mod encrypt;
pub mod headers;
pub mod imported;
pub mod inbound;
pub mod seven_bit;
pub mod sign;
pub mod signer;
pub mod structure;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use openpgp::policy::Policy;
use openpgp::{Cert, Fingerprint};
use sealpost_keyring::openpgp;

use crate::smtp::reply::{Enhanced, Reply};

pub use classify::{classify, Classification, Info, Protection};

/// What one group of recipients gets, decided by the policy.
#[derive(Debug, Clone)]
pub enum Treatment {
    /// Encrypted to every recipient cert (already checked usable by the caller), signed
    /// by `signer` (a TSK with an unencrypted signing key) when given and it fits.
    Encrypt {
        recipients: Vec<Arc<Cert>>,
        signer: Option<Arc<Cert>>,
    },
    /// `multipart/signed` by `signer`.
    SignOnly { signer: Arc<Cert> },
    /// Unchanged.
    Plain,
}

/// A transformed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protected {
    /// The bytes to relay, CRLF.
    pub message: Vec<u8>,
    /// What was done to it.
    pub outcome: Outcome,
}

/// What [`protect`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Encrypted; signed by this key unless `None` (no signer given, or a v6 signer
    /// for v4 recipients, see [`encrypt::signer_fits`]).
    Encrypted { signed_by: Option<Fingerprint> },
    /// Signed only, by this key.
    Signed { by: Fingerprint },
    /// Already protected: passed through byte for byte.
    AlreadyProtected(Protection),
    /// `Treatment::Plain`: unchanged.
    Plain,
}

/// Applies `treatment` to `message` under `policy` at `now`.
///
/// # Errors
/// The input errors of [`classify()`] (`554 5.6.0`); `NotSevenBit` when a signed-only
/// copy cannot be made 7-bit (the caller may send it unsigned); key and backend errors
/// (`451 4.3.0`).
pub fn protect(
    message: &[u8],
    treatment: &Treatment,
    policy: &dyn Policy,
    now: SystemTime,
) -> Result<Protected, Error> {
    if let Treatment::Plain = treatment {
        return Ok(Protected {
            message: message.to_vec(),
            outcome: Outcome::Plain,
        });
    }
    match classify(message)? {
        Classification::Protected { kind, .. } => Ok(Protected {
            message: message.to_vec(),
            outcome: Outcome::AlreadyProtected(kind),
        }),
        Classification::Plain(info) => {
            protect_classified(Cow::Borrowed(message), &info, treatment, policy, now)
        }
    }
}

/// [`protect`] for a message that [`classify()`] found to be plaintext, described by
/// `info`: the pipeline classifies once and then builds several copies. An owned
/// `message` is moved into a plain copy, and released as it is encrypted, so that a large
/// message is never held twice. The sender's Autocrypt header is built once per signer
/// key and reused ([`autocrypt::cached_header`]).
///
/// # Errors
/// As [`protect`], except the input errors, which [`classify()`] reported already.
pub fn protect_classified(
    message: Cow<'_, [u8]>,
    info: &Info,
    treatment: &Treatment,
    policy: &dyn Policy,
    now: SystemTime,
) -> Result<Protected, Error> {
    let autocrypt = |tsk: &Arc<Cert>| {
        autocrypt::cached_header(tsk, &info.from, policy, now)
            .map_err(|e| tracing::warn!(error = %e, "no Autocrypt header for the sender"))
            .ok()
    };
    match treatment {
        Treatment::Encrypt { recipients, signer } => {
            let refs: Vec<&Cert> = recipients.iter().map(Arc::as_ref).collect();
            let sealed = encrypt::seal_with(
                message,
                &refs,
                signer.as_deref(),
                |_, _| signer.as_ref().and_then(autocrypt),
                policy,
                now,
            )?;
            Ok(Protected {
                message: sealed.message,
                outcome: Outcome::Encrypted {
                    signed_by: sealed.signed_by,
                },
            })
        }
        // Already signed (or S/MIME): a second signature around it adds nothing a reader
        // checks, and breaks what theirs covers. Encryption, above, still applies.
        Treatment::SignOnly { .. } if info.label.is_some() => Ok(Protected {
            message: message.into_owned(),
            outcome: Outcome::AlreadyProtected(info.label.unwrap_or(Protection::Signed)),
        }),
        Treatment::SignOnly { signer } => Ok(Protected {
            message: sign::sign_with(&message, signer, |_| autocrypt(signer), policy, now)?,
            outcome: Outcome::Signed {
                by: signer.fingerprint(),
            },
        }),
        Treatment::Plain => Ok(Protected {
            message: message.into_owned(),
            outcome: Outcome::Plain,
        }),
    }
}

/// What can go wrong while classifying or transforming one message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the message has no From field")]
    NoFrom,
    #[error("the message has {0} From fields")]
    SeveralFrom(usize),
    #[error("the From field has {0} addresses, not one valid address")]
    FromAddresses(usize),
    #[error("the message contains NUL bytes")]
    NulByte,
    #[error("the header section has a bare LF line ending")]
    BareLineFeed,
    #[error("a header line exceeds {0} octets")]
    HeaderLineTooLong(usize),
    #[error("the header section has more than {0} fields")]
    TooManyFields(usize),
    #[error("MIME nesting deeper than {0}")]
    TooDeep(usize),
    #[error("more than {0} MIME parts")]
    TooManyParts(usize),
    #[error("a text part declared {0} holds bytes that are not {0}")]
    InvalidCharset(String),
    #[error("no recipient to encrypt to")]
    NoRecipients,
    #[error("{0} has no key usable for encryption")]
    NoEncryptionKey(String),
    #[error("{0} has no key usable for signing")]
    NoSigningKey(String),
    #[error("OpenPGP: {0}")]
    Crypto(String),
    #[error("the message has 8-bit content that cannot be re-encoded for signing")]
    NotSevenBit,
}

impl Error {
    /// Whether the From field is at fault (missing, repeated, or not one address): the
    /// message cannot be signed or encrypted for anyone, but is otherwise sound.
    pub fn is_from(&self) -> bool {
        matches!(
            self,
            Error::NoFrom | Error::SeveralFrom(_) | Error::FromAddresses(_)
        )
    }

    /// Whether the message itself is at fault (permanent), not keys or the backend.
    pub fn is_input(&self) -> bool {
        !matches!(
            self,
            Error::NoRecipients
                | Error::NoEncryptionKey(_)
                | Error::NoSigningKey(_)
                | Error::Crypto(_)
                | Error::NotSevenBit
        )
    }

    /// A malformed message is refused for good (`554 5.6.0`); anything else is not the
    /// client's fault: try again later, and let the logs say why (`451 4.3.0`).
    pub fn reply(&self) -> Reply {
        let text = match self {
            Error::NoFrom | Error::SeveralFrom(_) | Error::FromAddresses(_) => {
                "The message needs exactly one From address to be signed or encrypted"
            }
            Error::NulByte | Error::BareLineFeed => {
                "The message is malformed (NUL bytes or bare LF line endings)"
            }
            Error::HeaderLineTooLong(_) | Error::TooManyFields(_) => {
                "The message header is over the limits (998 octets a line, 1000 fields)"
            }
            Error::TooDeep(_) | Error::TooManyParts(_) => {
                "The MIME structure of the message is nested too deep or has too many parts"
            }
            Error::InvalidCharset(_) => {
                "The message is malformed (a text part's bytes are not in its declared charset)"
            }
            _ => "Temporary failure while protecting the message; try again later",
        };
        if self.is_input() {
            Reply::new(554, Enhanced(5, 6, 0), text)
        } else {
            Reply::new(451, Enhanced(4, 3, 0), text)
        }
    }
}

#[cfg(test)]
mod tests;
