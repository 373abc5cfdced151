//! The outbound transform: mail from our users, signed and encrypted before it leaves.
//!
//! [`classify()`] reads a message once: already protected messages pass through
//! byte-exact, malformed ones are refused, and [`Info`] says who it is from and to. Then
//! [`protect`] applies a [`Treatment`]: [`encrypt::seal`] builds RFC 3156 combined
//! sign+encrypt PGP/MIME ([`armor`] writes its ASCII armor) and [`sign::sign`] builds
//! `multipart/signed` with keys [`signer`] imports once, both with RFC 9788 header
//! protection and, when signed, an [`autocrypt`] header for the sender. The security
//! rules each file keeps are listed in the [`transform`](super) module.

pub mod armor;
pub mod autocrypt;
pub mod classify;
pub mod encrypt;
mod error;
pub mod protection;
pub mod sign;
pub mod signer;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use openpgp::policy::Policy;
use openpgp::{Cert, Fingerprint};
use sealpost_keyring::openpgp;

pub use classify::{classify, Classification, Info, Protection};
pub use error::Error;

/// What one group of recipients gets, decided by the policy.
#[derive(Debug, Clone)]
pub enum Treatment {
    /// Encrypted to every recipient cert (already checked usable by the caller), signed
    /// by `signer` (a TSK with an unencrypted signing key) when given and it fits.
    Encrypt {
        recipients: Vec<Arc<Cert>>,
        signer: Option<Arc<Cert>>,
        /// The outer Subject becomes `[...]` (RFC 9788); `false` leaves it in the clear.
        protect_subject: bool,
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
/// The input errors of [`classify()`] ([`Error::is_input`]: the pipeline answers
/// `554 5.6.0`); `NotSevenBit` when a signed-only copy cannot be made 7-bit (the caller
/// may send it unsigned); key and backend errors (`451 4.3.0`).
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
        Treatment::Encrypt {
            recipients,
            signer,
            protect_subject,
        } => {
            let refs: Vec<&Cert> = recipients.iter().map(Arc::as_ref).collect();
            let sealed = encrypt::seal_with(
                message,
                &refs,
                signer.as_deref(),
                |_, _| signer.as_ref().and_then(autocrypt),
                *protect_subject,
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

#[cfg(test)]
pub(crate) mod tests;
