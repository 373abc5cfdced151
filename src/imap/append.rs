//! APPEND with `encrypt_appended`, sans-I/O: the copy a mail client stores (its sent
//! copy, a draft) is encrypted to the user's own keys before it reaches the provider. The
//! proxy takes the whole command from the client (answering its continuation requests
//! itself), [`seal`]s the message with the outbound transform (PGP/MIME with header
//! protection, signed when the keyring holds a signing key for the address), and sends the
//! command upstream again in chunks, each after the upstream's continuation request.
//!
//! A message that is already OpenPGP or S/MIME goes up as it came. A user with no key of
//! their own in the keyring, or a message the transform cannot read, gets `NO`: whoever
//! turned the setting on expects no plaintext copy at the provider, and a mail client
//! shows a failed save rather than storing it in the clear unnoticed.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use imap_codec::decode::Decoder;
use imap_codec::encode::{Encoder, Fragment};
use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::core::{Literal, LiteralMode};
use imap_codec::CommandCodec;
use sealpost_keyring::openpgp::Cert;
use sealpost_keyring::Keyring;

use crate::transform::outbound::{self, Classification, Treatment};

/// Why an APPEND is not sent on: the text of the client's tagged `NO`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("[CANNOT] the proxy encrypts stored copies, and has no key of yours to encrypt to")]
    NoKey,
    #[error("[CANNOT] the proxy cannot encrypt this message: {0}")]
    Unreadable(String),
    #[error("[CANNOT] the proxy cannot read this APPEND command")]
    Command,
    #[error("[CANNOT] encrypting this message failed")]
    Failed,
}

/// Whether a command line is an APPEND (its first line, before any literal).
pub fn is_append(line: &[u8]) -> bool {
    let mut words = line.split(|&b| b == b' ');
    let _tag = words.next();
    words
        .next()
        .is_some_and(|w| w.eq_ignore_ascii_case(b"APPEND"))
}

/// The whole APPEND `command` (lines and literal data, as the client sent it) with its
/// message encrypted to `address`'s own keys, in the chunks to send upstream: the first
/// at once, each next one after a continuation request.
///
/// # Errors
/// A [`Refusal`]: the command unreadable, no key, or the message not encryptable.
pub fn seal(
    command: &[u8],
    address: Option<&str>,
    keyring: &Keyring,
    now: SystemTime,
) -> Result<Vec<Vec<u8>>, Refusal> {
    let (rest, parsed) = CommandCodec::default()
        .decode(command)
        .map_err(|_| Refusal::Command)?;
    if !rest.is_empty() {
        return Err(Refusal::Command);
    }
    let Command { tag, body } = parsed;
    let CommandBody::Append {
        mailbox,
        flags,
        date,
        message,
    } = body
    else {
        return Err(Refusal::Command);
    };
    let text = message.as_ref();
    let info = match outbound::classify(text) {
        // Already encrypted (or signed by the client): stored as it came.
        Ok(Classification::Protected { .. }) => None,
        Ok(Classification::Plain(info)) => Some(info),
        Err(e) => return Err(Refusal::Unreadable(e.to_string())),
    };
    let sealed = match info {
        None => text.to_vec(),
        Some(info) => {
            let address = address.ok_or(Refusal::NoKey)?;
            let recipients = own_keys(keyring, address, now);
            if recipients.is_empty() {
                return Err(Refusal::NoKey);
            }
            let signer = keyring.signing_cert_for(address, now).ok().flatten();
            let treatment = Treatment::Encrypt {
                recipients,
                signer,
                protect_subject: true,
            };
            outbound::protect_classified(
                Cow::Borrowed(text),
                &info,
                &treatment,
                keyring.policy(),
                now,
            )
            .map_err(|e| {
                tracing::error!(error = %e, "encrypting an APPENDed message failed");
                Refusal::Failed
            })?
            .message
        }
    };
    let message = Literal::try_from(sealed).map_err(|_| Refusal::Failed)?;
    let command = Command {
        tag,
        body: CommandBody::Append {
            mailbox,
            flags,
            date,
            message: message.into_sync(),
        },
    };
    Ok(chunks(CommandCodec::default().encode(&command)))
}

/// The certificates of `address` whose secret keys the keyring holds: the keys the proxy
/// opens the user's mail with.
fn own_keys(keyring: &Keyring, address: &str, now: SystemTime) -> Vec<Arc<Cert>> {
    keyring
        .lookup_encryption(address, now)
        .unwrap_or_default()
        .into_iter()
        .filter(|c| keyring.has_secret(&c.fingerprint()).unwrap_or(false))
        .collect()
}

/// An encoded command cut before each synchronising literal's data.
fn chunks(fragments: impl Iterator<Item = Fragment>) -> Vec<Vec<u8>> {
    let mut out = vec![Vec::new()];
    for f in fragments {
        match f {
            Fragment::Line { data } => {
                if let Some(last) = out.last_mut() {
                    last.extend_from_slice(&data);
                }
            }
            Fragment::Literal { data, mode } => {
                if mode == LiteralMode::Sync {
                    out.push(data);
                } else if let Some(last) = out.last_mut() {
                    last.extend_from_slice(&data);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring_with(address: &str) -> Keyring {
        let k = Keyring::open_memory(sealpost_keyring::OpenOptions::default()).unwrap();
        k.generate(&sealpost_keyring::GenerateRequest {
            email: address.into(),
            name: None,
            profile: sealpost_keyring::Profile::Rfc4880,
            cipher: sealpost_keyring::Cipher::Cv25519,
            validity: None,
            force: false,
        })
        .unwrap();
        k
    }

    #[test]
    fn appended_copies_are_encrypted_to_the_user_s_own_key() {
        let k = keyring_with("bob@example.org");
        let message =
            b"From: bob@example.org\r\nTo: carol@example.com\r\nSubject: hi\r\n\r\nhello\r\n";
        let command = &[
            format!("a1 APPEND Sent (\\Seen) {{{}}}\r\n", message.len()).as_bytes(),
            message,
            b"\r\n",
        ]
        .concat();
        let parts = seal(command, Some("bob@example.org"), &k, SystemTime::now()).unwrap();
        assert_eq!(parts.len(), 2, "the message after a continuation");
        let line = String::from_utf8_lossy(&parts[0]);
        assert!(line.starts_with("a1 APPEND Sent (\\Seen) {"), "{line}");
        let sealed = String::from_utf8_lossy(&parts[1]);
        assert!(sealed.contains("multipart/encrypted"), "{sealed}");
        assert!(sealed.contains("-----BEGIN PGP MESSAGE-----"), "{sealed}");
        assert!(!sealed.contains("hello"), "{sealed}");
        assert!(
            line.ends_with(&format!("{{{}}}\r\n", parts[1].len() - 2)),
            "{line}"
        );
        assert!(
            parts[1].ends_with(b"\r\n"),
            "the command's end after the literal"
        );
        // No key of one's own: refused, never stored in the clear.
        assert_eq!(
            seal(command, Some("carol@example.com"), &k, SystemTime::now()),
            Err(Refusal::NoKey)
        );
        assert_eq!(
            seal(command, None, &k, SystemTime::now()),
            Err(Refusal::NoKey)
        );
        assert_eq!(
            seal(
                b"a1 APPEND Sent\r\n",
                Some("bob@example.org"),
                &k,
                SystemTime::now()
            ),
            Err(Refusal::Command)
        );
        assert!(is_append(b"a1 append Sent {3}\r\n"));
        assert!(!is_append(b"a1 APPENDX Sent {3}\r\n"));
    }
}
