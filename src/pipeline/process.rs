//! Building the copies: each group's message, encrypted where the policy says so.

use std::sync::Arc;
use std::time::SystemTime;

use sealpost_keyring::openpgp::Cert;
use sealpost_keyring::Keyring;

use crate::policy::{Mixed, Policy, Treatment};
use crate::smtp::envelope::Recipient;
use crate::smtp::reply::{Enhanced, Reply};
use crate::smtp::transaction::Transaction;
use crate::transform;

use super::parse::{self, Parsed};
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
pub type Built = (Vec<Recipient>, Vec<u8>);

/// One message per group.
///
/// # Errors
/// A message without exactly one From cannot be signed or encrypted (`554 5.6.0`);
/// a transform failure is temporary (`451 4.3.0`). Nothing is sent half-protected.
pub fn build(
    tx: &Transaction,
    parsed: &Parsed,
    decided: &[Decided],
    keyring: &Keyring,
    now: SystemTime,
) -> Result<Vec<Built>, Reply> {
    let mut out = Vec::new();
    for group in split::groups(decided) {
        match group.treatment {
            Treatment::Plain => {
                for r in &group.recipients {
                    tracing::info!(queue_id = %tx.id, to = %r.address, treatment = "plain", "copy");
                }
                out.push((group.recipients, tx.message.clone()));
            }
            Treatment::SignOnly => {
                let from = parsed.from.as_deref().ok_or_else(parse::bad_from)?;
                let signer = keyring.signing_cert_for(from, now).ok().flatten();
                let signed = match &signer {
                    Some(tsk) => {
                        match transform::sign::sign(&tx.message, tsk, keyring.policy(), now) {
                            Ok(data) => Some(data),
                            Err(transform::Error::NotSevenBit) => {
                                tracing::warn!(queue_id = %tx.id, "8-bit content outside any part (a preamble, an attached message): sent unsigned");
                                None
                            }
                            Err(e) => {
                                tracing::error!(queue_id = %tx.id, error = %e, "signing failed");
                                return Err(e.reply());
                            }
                        }
                    }
                    None => None,
                };
                let treatment = if signed.is_some() { "signed" } else { "plain" };
                for r in &group.recipients {
                    tracing::info!(
                        queue_id = %tx.id,
                        to = %r.address,
                        treatment,
                        signed_by = %signer.as_ref().map(|s| s.fingerprint().to_hex()).unwrap_or_default(),
                        "copy"
                    );
                }
                out.push((
                    group.recipients,
                    signed.unwrap_or_else(|| tx.message.clone()),
                ));
            }
            Treatment::Encrypt => {
                let from = parsed.from.as_deref().ok_or_else(parse::bad_from)?;
                let mut certs: Vec<Arc<Cert>> = group.certs.clone();
                if group.encrypt_to_self {
                    for c in keyring.lookup_encryption(from, now).unwrap_or_default() {
                        if !certs.iter().any(|x| x.fingerprint() == c.fingerprint()) {
                            certs.push(c);
                        }
                    }
                }
                let signer = keyring
                    .signing_cert_for(from, now)
                    .ok()
                    .flatten()
                    .filter(|s| usable_signer(s, &certs));
                let refs: Vec<&Cert> = certs.iter().map(|c| c.as_ref()).collect();
                let data = transform::encrypt::encrypt(
                    &tx.message,
                    &refs,
                    signer.as_deref(),
                    keyring.policy(),
                    now,
                )
                .map_err(|e| {
                    tracing::error!(queue_id = %tx.id, error = %e, "encryption failed");
                    e.reply()
                })?;
                let fprs: Vec<String> = certs.iter().map(|c| c.fingerprint().to_hex()).collect();
                for r in &group.recipients {
                    tracing::info!(
                        queue_id = %tx.id,
                        to = %r.address,
                        treatment = "encrypted",
                        keys = %fprs.join(","),
                        signed_by = %signer.as_ref().map(|s| s.fingerprint().to_hex()).unwrap_or_default(),
                        "copy"
                    );
                }
                out.push((group.recipients, data));
            }
        }
    }
    Ok(out)
}

/// A v6 signature makes a message unreadable for v4-only software even when it can
/// decrypt it, so a v6 key signs only when every recipient has a v6 key.
fn usable_signer(signer: &Cert, recipients: &[Arc<Cert>]) -> bool {
    signer.primary_key().key().version() != 6
        || recipients
            .iter()
            .all(|c| c.primary_key().key().version() == 6)
}
