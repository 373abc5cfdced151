//! Building the copies: each group's message, encrypted where the policy says so.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use sealpost_keyring::openpgp::Cert;
use sealpost_keyring::Keyring;

use super::reply::ToReply;
use crate::blob::{Blob, Spill};
use crate::policy::{Mixed, Policy, Treatment};
use crate::smtp::envelope::Recipient;
use crate::smtp::reply::{Enhanced, Reply};
use crate::transform::outbound::{self, Info};
use crate::wipe::Buf;

use super::split::{self, Decided};

/// `mixed = refuse-unencrypted`: when some recipients get the message encrypted, those
/// whose policy says so must not get it in the clear.
///
/// # Errors
/// `550 5.7.1` naming them; the client then sends to them separately.
pub fn check_mixed(decided: &[Decided], policy: &Policy) -> Result<(), Reply> {
    if !decided.iter().any(|d| d.treatment == Treatment::Encrypt) {
        return Ok(());
    }
    let refused: Vec<String> = decided
        .iter()
        .filter(|d| d.treatment != Treatment::Encrypt)
        .filter(|d| policy.for_recipient(&d.recipient.address).mixed.0 == Mixed::RefuseUnencrypted)
        .map(|d| format!("<{}>", d.recipient.address))
        .collect();
    if refused.is_empty() {
        return Ok(());
    }
    Err(Reply::new(
        550,
        Enhanced(5, 7, 1),
        format!(
            "{}: no valid OpenPGP key, and the policy (mixed = refuse-unencrypted) forbids an unencrypted copy of a message others get encrypted; send to them separately",
            refused.join(", ")
        ),
    ))
}

/// A built copy: its recipients and its bytes.
pub type Built = (Vec<Recipient>, Blob);

/// What the pipeline knows about the sender of a plaintext message.
pub struct Sender<'a> {
    /// The classified message, or why it has no single From address: then nothing can be
    /// signed or encrypted, and only plain copies can be made.
    pub info: Result<&'a Info, &'a outbound::Error>,
    /// The sender's secret key that can sign now, looked up once per message.
    pub signer: Option<Arc<Cert>>,
}

/// One message per group. The message is moved into (or released while encrypting) the
/// last copy that needs it, so that a large message is not copied for it.
///
/// # Errors
/// A message without exactly one From cannot be signed or encrypted (`554 5.6.0`);
/// a transform failure is temporary (`451 4.3.0`). Nothing is sent half-protected.
///
/// A built copy larger than `spill` says goes to a sealed temporary file as soon as it is
/// made: a large message to many Bcc recipients is one encrypted copy each, and held in
/// memory together they grew the gateway by hundreds of megabytes under load.
pub fn build(
    id: &str,
    message: Vec<u8>,
    sender: &Sender<'_>,
    decided: &[Decided],
    keyring: &Keyring,
    now: SystemTime,
    spill: Option<&Spill>,
) -> Result<Vec<Built>, Reply> {
    let store = |data: Vec<u8>| {
        Blob::stored(data, spill).map_err(|e| {
            tracing::error!(queue_id = %id, error = %e, "cannot store a built copy");
            Reply::new(
                451,
                Enhanced(4, 3, 0),
                "Temporary local problem: the message cannot be stored; try again later",
            )
        })
    };
    let groups = split::groups(decided);
    let last_index = groups.len().saturating_sub(1);
    // Zeroed when dropped, unless a copy takes it whole (and zeroes it when delivered).
    let mut message = Some(Buf::from(message));
    let mut out = Vec::with_capacity(groups.len());
    for (i, group) in groups.into_iter().enumerate() {
        let last = i == last_index;
        match group.treatment {
            Treatment::Plain => {
                crate::ops::metrics::message("outbound", "plain");
                for r in &group.recipients {
                    tracing::info!(queue_id = %id, to = %r.address, treatment = "plain", "copy");
                }
                out.push((group.recipients, store(plain_copy(&mut message, last))?));
            }
            Treatment::SignOnly => {
                let info = sender.info.map_err(outbound::Error::reply)?;
                let text = message.as_ref().map_or(&[][..], |m| m.as_slice());
                let signed = match &sender.signer {
                    Some(tsk) => {
                        let t = outbound::Treatment::SignOnly {
                            signer: Arc::clone(tsk),
                        };
                        match outbound::protect_classified(
                            Cow::Borrowed(text),
                            info,
                            &t,
                            keyring.policy(),
                            now,
                        ) {
                            Ok(p) if matches!(p.outcome, outbound::Outcome::Signed { .. }) => {
                                Some(p.message)
                            }
                            // Already signed or S/MIME: passed on as it is.
                            Ok(_) => None,
                            Err(outbound::Error::NotSevenBit) => {
                                tracing::warn!(queue_id = %id, "8-bit content outside any part (a preamble, an attached message): sent unsigned");
                                None
                            }
                            Err(e) => {
                                tracing::error!(queue_id = %id, error = %e, "signing failed");
                                return Err(e.reply());
                            }
                        }
                    }
                    None => None,
                };
                let treatment = if signed.is_some() { "signed" } else { "plain" };
                crate::ops::metrics::message("outbound", treatment);
                for r in &group.recipients {
                    tracing::info!(
                        queue_id = %id,
                        to = %r.address,
                        treatment,
                        signed_by = %sender.signer.as_ref().filter(|_| signed.is_some()).map(|s| s.fingerprint().to_hex()).unwrap_or_default(),
                        "copy"
                    );
                }
                let data = match signed {
                    Some(data) => data,
                    None => plain_copy(&mut message, last),
                };
                out.push((group.recipients, store(data)?));
            }
            Treatment::Encrypt => {
                let info = sender.info.map_err(outbound::Error::reply)?;
                let mut certs: Vec<Arc<Cert>> = group.certs.clone();
                if group.encrypt_to_self {
                    for c in keyring
                        .lookup_encryption(&info.from, now)
                        .unwrap_or_default()
                    {
                        if !certs.iter().any(|x| x.fingerprint() == c.fingerprint()) {
                            certs.push(c);
                        }
                    }
                }
                let fprs: Vec<String> = certs.iter().map(|c| c.fingerprint().to_hex()).collect();
                let t = outbound::Treatment::Encrypt {
                    recipients: certs,
                    signer: sender.signer.clone(),
                    protect_subject: group.protect_subject,
                };
                let text = if last {
                    // Released while encrypting, by the transform: the one copy of the
                    // plaintext sealpost hands on without zeroing it.
                    Cow::Owned(message.take().map(Buf::into_inner).unwrap_or_default())
                } else {
                    Cow::Borrowed(message.as_ref().map_or(&[][..], |m| m.as_slice()))
                };
                let protected = outbound::protect_classified(text, info, &t, keyring.policy(), now)
                    .map_err(|e| {
                        tracing::error!(queue_id = %id, error = %e, "encryption failed");
                        e.reply()
                    })?;
                let signed_by = match &protected.outcome {
                    outbound::Outcome::Encrypted {
                        signed_by: Some(fpr),
                    } => fpr.to_hex(),
                    _ => String::new(),
                };
                crate::ops::metrics::message("outbound", "encrypted");
                for r in &group.recipients {
                    tracing::info!(
                        queue_id = %id,
                        to = %r.address,
                        treatment = "encrypted",
                        keys = %fprs.join(","),
                        signed_by = %signed_by,
                        "copy"
                    );
                }
                out.push((group.recipients, store(protected.message)?));
            }
        }
    }
    Ok(out)
}

/// The message for a plain copy: the last copy takes it, earlier ones get their own.
fn plain_copy(message: &mut Option<Buf>, last: bool) -> Vec<u8> {
    if last {
        message.take().map(Buf::into_inner).unwrap_or_default()
    } else {
        message.as_ref().map(|m| m.to_vec()).unwrap_or_default()
    }
}
