//! The backend of one listener: recipient checks by direction, and delivery through the
//! relay after the outbound transform.

use std::sync::Arc;
use std::time::SystemTime;

use sealpost_keyring::openpgp::Cert;
use sealpost_keyring::Keyring;

use super::reply::ToReply;
use crate::policy::sender::{Binding, OnMismatch, Senders};
use crate::policy::{self, Decision, Facts, Mode, Policy, Treatment};
use crate::relay::{Copy, Relay, Route};
use crate::smtp::backend::Backend;
use crate::smtp::envelope::{Envelope, Recipient, Sender};
use crate::smtp::reply::{Enhanced, Reply};
use crate::smtp::transaction::{Client, Credentials, Transaction};
use crate::transform::inbound;
use crate::transform::outbound::{self, Classification};
use crate::wipe::Buf;

use super::process;
use super::split::Decided;

/// Messages up to this size are transformed on the async thread that received them, larger
/// ones on a blocking thread: 32 KiB encrypts and signs in well under a millisecond.
const INLINE_MAX: usize = 32 * 1024;

/// Which way a listener's mail goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Outbound,
    Inbound,
}

/// One listener's backend.
#[derive(Clone)]
pub struct Gateway {
    pub direction: Direction,
    pub relay: Relay,
    pub keyring: Keyring,
    pub policy: Arc<Policy>,
    /// Inbound only: the domains mail is accepted for.
    pub local_domains: Arc<Vec<String>>,
    /// Inbound only: the authserv-id and the plaintext limit of the inbound transform.
    pub inbound: Arc<inbound::Settings>,
    /// Outbound only: which From addresses each login may have signed.
    pub senders: Arc<Senders>,
    /// Outbound only: built copies past this size wait for delivery on disk, sealed.
    pub spill: Option<crate::blob::Spill>,
    /// Inbound only: whether a recipient of a local domain exists.
    pub recipients: Arc<crate::relay::verify::Verifier>,
    /// Outbound: key lookups for recipients without a usable key. Inbound: whether
    /// Autocrypt headers are harvested.
    pub discovery: Arc<crate::discovery::Finder>,
}

impl Backend for Gateway {
    async fn check_recipient(
        &self,
        sender: &Sender,
        rcpt: &Recipient,
        client: &Client,
    ) -> Result<(), Reply> {
        match self.direction {
            Direction::Outbound => {
                self.held_for_review(&rcpt.address)?;
                let now = SystemTime::now();
                let mut decision = self.decide(&sender.address, &rcpt.address, now);
                if let Some(lookup) = self.look_up(&rcpt.address, now) {
                    // A recipient refused for want of a key (`require`) waits for its
                    // lookup, within what is left of the message's budget; others go on
                    // at once and are looked at again after the final dot.
                    if matches!(decision, Decision::Refuse(_))
                        && lookup.until(self.lookup_deadline(client)).await
                    {
                        decision = self.decide(&sender.address, &rcpt.address, SystemTime::now());
                    }
                }
                match decision {
                    Decision::Refuse(reply) => Err(reply),
                    Decision::Accept(_) => Ok(()),
                }
            }
            Direction::Inbound => {
                // The same parsed domain the relay will send to: a quoted local part with
                // an `@` in it cannot make another domain look local.
                let domain = rcpt.address.domain().to_ascii_lowercase();
                if self.local_domains.contains(&domain) {
                    // Refused now rather than bounced later to a sender anyone can forge.
                    self.recipients.check(&rcpt.address).await
                } else {
                    Err(Reply::new(
                        550,
                        Enhanced(5, 7, 1),
                        format!("<{}>: relaying denied; this gateway accepts mail for its local domains only", rcpt.address),
                    ))
                }
            }
        }
    }

    async fn deliver(&self, tx: Transaction) -> Reply {
        if self.direction == Direction::Outbound {
            self.await_lookups(&tx).await;
        }
        // Only passthrough logins carry a secret; those are what the upstream needs.
        let credentials = tx.client.auth.clone().filter(|c| c.secret.is_some());
        let queue_id = tx.id.clone();
        let sender = tx.envelope.sender.clone();
        let size = tx.message.len();
        let (route, direction) = match self.direction {
            Direction::Inbound => (Route::Inbound, "inbound"),
            Direction::Outbound => (Route::Outbound, "outbound"),
        };
        // Read before the transform: a DSN about an inbound copy returns this, never the
        // (possibly decrypted) copy.
        let returned_header = crate::relay::returned_header(route, &tx.message);
        let this = self.clone();
        let run = move || match this.direction {
            Direction::Inbound => this.inbound(&tx),
            Direction::Outbound => this.outbound(tx),
        };
        // Encryption and decryption are CPU work. A large message is processed on a
        // blocking thread, off the async threads. A small one takes under a millisecond and
        // runs here: under load, handing each message to one of up to 32 blocking threads
        // cost as much CPU as it saved, and every one of those threads kept its own malloc
        // arena with freed memory the process does not give back (8 MB after 20,000
        // messages over 32 sessions, which a 20 MB message then came on top of).
        let started = std::time::Instant::now();
        let work = if size <= INLINE_MAX {
            Ok(run())
        } else {
            tokio::task::spawn_blocking(run).await
        };
        crate::ops::metrics::transform_time(started.elapsed());
        let parts = match work {
            Ok(Ok(parts)) => parts,
            Ok(Err(reply)) => return reply,
            Err(e) => {
                tracing::error!(%queue_id, error = %e, "{direction} processing failed");
                return Reply::new(
                    451,
                    Enhanced(4, 3, 0),
                    "Temporary local problem; try again later",
                );
            }
        };
        let copies = parts
            .into_iter()
            .map(|(recipients, data)| Copy {
                envelope: Envelope {
                    sender: sender.clone(),
                    recipients,
                },
                data,
                credentials: credentials.clone(),
                route,
                returned_header: returned_header.clone(),
            })
            .collect();
        self.relay.deliver(&queue_id, copies).await
    }

    async fn authenticate(&self, creds: &Credentials) -> Result<(), Reply> {
        self.relay.check_login(creds).await
    }
}

impl Gateway {
    /// Starts (or joins) a key lookup for `rcpt` when its rule could encrypt to a key and
    /// the keyring has none it may use; `None` when there is nothing to look up, or a
    /// recent lookup found nothing.
    fn look_up(&self, rcpt: &str, now: SystemTime) -> Option<crate::discovery::finder::Waiter> {
        if !self.discovery.looks_up() {
            return None;
        }
        let eff = self.policy.for_recipient(rcpt);
        if !matches!(eff.mode.0, Mode::Require | Mode::Opportunistic) {
            return None;
        }
        match policy::keys_for(&self.keyring, rcpt, &eff, now) {
            Err(e) if !unreachable_keyring(&e) => self.discovery.start(rcpt, now),
            _ => None,
        }
    }

    /// `hold_on_review`: a recipient whose changed key waits for an admin is deferred
    /// rather than encrypted to a key that may be about to be replaced.
    fn held_for_review(&self, rcpt: &str) -> Result<(), Reply> {
        if !self.policy.for_recipient(rcpt).hold_on_review.0 {
            return Ok(());
        }
        match self.keyring.review_pending(rcpt) {
            Ok(waiting) if waiting.is_empty() => Ok(()),
            Ok(_) => Err(Reply::new(
                450,
                Enhanced(4, 7, 0),
                format!("<{rcpt}>: a new key for this recipient waits for an admin's review; try again later"),
            )),
            Err(e) if unreachable_keyring(&e) => Err(keyring_down(&e)),
            Err(e) => {
                tracing::warn!(%rcpt, error = %e, "cannot read the review queue");
                Err(keyring_down(&e))
            }
        }
    }

    /// When the message whose MAIL came at `client.mail_at` stops waiting for lookups.
    fn lookup_deadline(&self, client: &Client) -> tokio::time::Instant {
        let start = client.mail_at.unwrap_or_else(std::time::Instant::now);
        tokio::time::Instant::from_std(start + self.discovery.settings().budget)
    }

    /// After the final dot: waits for the lookups of keyless recipients, up to the end of
    /// the message's budget, so that a key found by then encrypts this message.
    async fn await_lookups(&self, tx: &Transaction) {
        let now = SystemTime::now();
        let waiting: Vec<_> = tx
            .envelope
            .recipients
            .iter()
            .filter_map(|r| self.look_up(&r.address, now))
            .collect();
        if waiting.is_empty() {
            return;
        }
        let deadline = self.lookup_deadline(&tx.client);
        let mut ended = 0;
        let count = waiting.len();
        for w in waiting {
            ended += usize::from(w.until(deadline).await);
        }
        tracing::info!(queue_id = %tx.id, lookups = count, ended, "waited for key lookups");
    }

    /// The policy's verdict for one recipient, from what the keyring knows now; `signer`
    /// is the address whose key would sign (the envelope sender at RCPT time, the From
    /// address after the final dot).
    fn decide(&self, signer: &str, rcpt: &str, now: SystemTime) -> Decision {
        let can_sign = if signer.is_empty() {
            false
        } else {
            match self.keyring.signing_cert_for(signer, now) {
                Ok(found) => found.is_some(),
                Err(e) if unreachable_keyring(&e) => return Decision::Refuse(keyring_down(&e)),
                Err(_) => false,
            }
        };
        self.decide_with(rcpt, can_sign, now).0
    }

    /// [`Gateway::decide`] with the signer already looked up, and the recipient's usable
    /// certificates (empty unless the verdict is to encrypt).
    fn decide_with(
        &self,
        rcpt: &str,
        can_sign: bool,
        now: SystemTime,
    ) -> (Decision, Vec<Arc<Cert>>) {
        let eff = self.policy.for_recipient(rcpt);
        // Only keys trusted at least as much as the recipient's rule asks (`min_trust`).
        let certs = policy::keys_for(&self.keyring, rcpt, &eff, now);
        // A keyring that cannot be asked knows nothing: never "no key" (plaintext).
        if let Err(e) = &certs {
            if unreachable_keyring(e) {
                return (Decision::Refuse(keyring_down(e)), Vec::new());
            }
        }
        let facts = Facts {
            has_key: certs.is_ok(),
            can_sign,
            others_encrypted: false,
        };
        let decision = policy::decide(rcpt, &eff, facts);
        let certs = match decision {
            Decision::Accept(Treatment::Encrypt) => certs.unwrap_or_default(),
            _ => Vec::new(),
        };
        (decision, certs)
    }

    /// A message that cannot be protected: passed on unchanged only when every recipient's
    /// policy allows plaintext, refused otherwise, so that it never reaches a `require`
    /// recipient in the clear.
    fn malformed(
        &self,
        queue_id: &str,
        recipients: Vec<Recipient>,
        message: Vec<u8>,
        reason: &str,
    ) -> Result<Vec<process::Built>, Reply> {
        let strict: Vec<String> = recipients
            .iter()
            .filter(|r| self.policy.for_recipient(&r.address).mode.0 == policy::Mode::Require)
            .map(|r| format!("<{}>", r.address))
            .collect();
        if strict.is_empty() {
            tracing::warn!(
                queue_id,
                reason,
                "malformed message passed on unchanged: every recipient may receive plaintext"
            );
            return Ok(vec![(recipients, message.into())]);
        }
        tracing::warn!(queue_id, reason, "malformed message refused");
        Err(Reply::new(
            554,
            Enhanced(5, 6, 0),
            format!(
                "Message refused: {reason}; it cannot be encrypted, and the policy requires encryption for {}",
                strict.join(", ")
            ),
        ))
    }

    /// Decrypt and verify: one copy for all recipients, or one per recipient when the
    /// message is encrypted (each opened with that recipient's own key).
    fn inbound(&self, tx: &Transaction) -> Result<Vec<process::Built>, Reply> {
        // Without the keyring nothing can be decrypted or verified: the sender tries
        // again later rather than the mailbox getting ciphertext it could have read.
        if let Err(e) = self.keyring.reachable() {
            return Err(keyring_down(&e));
        }
        // A spilled message is opened while it is read from its sealed file, never whole.
        let rcpts: Vec<&str> = tx
            .envelope
            .recipients
            .iter()
            .map(|r| r.address.as_str())
            .collect();
        let opened = inbound::open(
            &tx.message,
            &rcpts,
            &self.keyring,
            &self.inbound,
            SystemTime::now(),
        )
        .map_err(|e| {
            tracing::error!(queue_id = %tx.id, error = %e, "inbound processing failed");
            e.reply()
        })?;
        // After opening, so that a key first seen in this message never verified it.
        if self.discovery.settings().autocrypt {
            crate::discovery::autocrypt::harvest(
                &self.keyring,
                &tx.message,
                SystemTime::now(),
                &tx.id.to_string(),
            );
            // Every decrypted copy carries the same payload: its gossip is read once.
            if let Some(o) = opened.iter().find(|o| !o.gossip.is_empty()) {
                let (now, id) = (SystemTime::now(), tx.id.to_string());
                crate::discovery::autocrypt::harvest_gossip(
                    &self.keyring,
                    &tx.message,
                    &o.gossip,
                    now,
                    &id,
                );
            }
        }
        let mut parts = Vec::with_capacity(opened.len());
        for o in opened {
            let recipients: Vec<Recipient> = o
                .recipients
                .iter()
                .filter_map(|&i| tx.envelope.recipients.get(i).cloned())
                .collect();
            let v = &o.verdict;
            crate::ops::metrics::message("inbound", v.encryption.word());
            for r in &recipients {
                tracing::info!(
                    queue_id = %tx.id,
                    recipient = %r.address,
                    signature = v.signature.word(),
                    encryption = v.encryption.word(),
                    protected_headers = v.protected_headers.word(),
                    signer = v.signer.as_ref().map(|f| f.to_hex()).unwrap_or_default(),
                    key = v.decryption_key.as_ref().map(|f| f.to_hex()).unwrap_or_default(),
                    "inbound copy"
                );
            }
            parts.push((recipients, o.message));
        }
        Ok(parts)
    }

    /// Classify, decide per recipient, group, transform: the copies and who gets each.
    fn outbound(&self, tx: Transaction) -> Result<Vec<process::Built>, Reply> {
        let now = SystemTime::now();
        // Signing and encryption take the message whole; one that was spilled to disk
        // comes back into memory here, bounded by the listener's size limit.
        let Transaction {
            id,
            envelope,
            message,
            client,
        } = tx;
        // Zeroed if this returns before a copy takes it.
        let message = Buf::from(message.into_vec().map_err(|e| unreadable(&id, &e))?);
        let info = match outbound::classify(&message) {
            Ok(Classification::Protected { kind, .. }) => {
                tracing::info!(queue_id = %id, ?kind, "already protected: passed on unchanged");
                crate::ops::metrics::message("outbound", "protected");
                return Ok(vec![(envelope.recipients, message.into_inner().into())]);
            }
            Ok(Classification::Plain(info)) => Ok(info),
            // Sound, but with nothing to sign for: plain copies only.
            Err(e) if e.is_from() => Err(e),
            Err(e) => {
                let reason = e.to_string();
                return self.malformed(&id, envelope.recipients, message.into_inner(), &reason);
            }
        };
        let signer = match &info {
            Ok(info) => self.signer_for(&id, &client, info, now)?,
            Err(_) => None,
        };
        let named: &[String] = info.as_ref().map_or(&[], |i| &i.named);
        let mut decided = Vec::with_capacity(envelope.recipients.len());
        for r in &envelope.recipients {
            let (treatment, certs) = match self.decide_with(&r.address, signer.is_some(), now) {
                (Decision::Accept(t), certs) => (t, certs),
                // The keyring changed between RCPT and the final dot.
                (Decision::Refuse(reply), _) => return Err(reply),
            };
            let eff = self.policy.for_recipient(&r.address);
            // For the decision trail: the rule that set this recipient's mode.
            tracing::info!(queue_id = %id, to = %r.address, mode = ?eff.mode.0, rule = %eff.mode.1, treatment = ?treatment, "policy");
            decided.push(Decided {
                recipient: r.clone(),
                treatment,
                certs,
                named: named.contains(&r.address.to_ascii_lowercase()),
                encrypt_to_self: eff.encrypt_to_self.0,
                protect_subject: eff.protect_subject.0,
            });
        }
        process::check_mixed(&decided, &self.policy)?;
        let sender = process::Sender {
            info: info.as_ref(),
            signer,
        };
        process::build(
            &id,
            message.into_inner(),
            &sender,
            &decided,
            &self.keyring,
            now,
            self.spill.as_ref(),
        )
    }
}

impl Gateway {
    /// The key that signs a message from `info.from`, if the keyring has one and the
    /// client may sign as that address: a login signs only for the addresses bound to it.
    /// With no key there is nothing to sign with, and nothing to refuse.
    ///
    /// # Errors
    /// `553 5.7.1` when the login may not, and the policy refuses such a message.
    fn signer_for(
        &self,
        queue_id: &str,
        client: &crate::smtp::transaction::Client,
        info: &outbound::Info,
        now: SystemTime,
    ) -> Result<Option<Arc<Cert>>, Reply> {
        let found = match self.keyring.signing_cert_for(&info.from, now) {
            Ok(found) => found,
            Err(e) if unreachable_keyring(&e) => return Err(keyring_down(&e)),
            Err(_) => None,
        };
        let Some(signer) = found else {
            return Ok(None);
        };
        let login = client.auth.as_ref().map(|c| c.username.as_str());
        match self.senders.check(login, &info.from) {
            Binding::Unauthenticated | Binding::Bound => Ok(Some(signer)),
            Binding::Mismatch(reply) => match self.policy.sender_mismatch {
                OnMismatch::Refuse => {
                    tracing::warn!(queue_id, login, from = %info.from, "refused: the login may not sign as this From address");
                    Err(reply)
                }
                OnMismatch::Unsigned => {
                    tracing::warn!(queue_id, login, from = %info.from, "sent unsigned: the login may not sign as this From address");
                    Ok(None)
                }
            },
        }
    }
}

/// A spilled message that cannot be read back: a temporary local failure.
fn unreadable(queue_id: &str, e: &std::io::Error) -> Reply {
    tracing::error!(%queue_id, error = %e, "cannot read a spilled message back");
    Reply::new(
        451,
        Enhanced(4, 3, 0),
        "Temporary local problem: the stored message cannot be read; try again later",
    )
}

/// Whether a keyring error means the store cannot be asked now (a database down), as
/// opposed to an answer about keys.
fn unreachable_keyring(e: &sealpost_keyring::Error) -> bool {
    matches!(e, sealpost_keyring::Error::Unavailable(_))
}

/// The client's answer while the keyring cannot be asked: try again later.
fn keyring_down(e: &sealpost_keyring::Error) -> Reply {
    tracing::warn!(error = %e, "the keyring is unreachable: asking the client to try again later");
    Reply::new(
        451,
        Enhanced(4, 3, 0),
        "The key store is unreachable; try again later",
    )
}
