//! The backend of one listener: recipient checks by direction, and delivery through the
//! relay after the outbound transform.

use std::sync::Arc;
use std::time::SystemTime;

use sealpost_keyring::Keyring;

use crate::policy::{self, Decision, Facts, Policy, Treatment};
use crate::relay::{Copy, Relay, Route};
use crate::smtp::backend::Backend;
use crate::smtp::envelope::{Envelope, Recipient, Sender};
use crate::smtp::reply::{Enhanced, Reply};
use crate::smtp::transaction::{Client, Credentials, Transaction};
use crate::transform::inbound;

use super::split::Decided;
use super::{parse, process};

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
}

impl Backend for Gateway {
    async fn check_recipient(
        &self,
        sender: &Sender,
        rcpt: &Recipient,
        _client: &Client,
    ) -> Result<(), Reply> {
        match self.direction {
            Direction::Outbound => {
                match self.decide(&sender.address, &rcpt.address, SystemTime::now()) {
                    Decision::Refuse(reply) => Err(reply),
                    Decision::Accept(_) => Ok(()),
                }
            }
            Direction::Inbound => {
                let domain = rcpt
                    .address
                    .rsplit_once('@')
                    .map(|(_, d)| d.to_ascii_lowercase())
                    .unwrap_or_default();
                if self.local_domains.contains(&domain) {
                    Ok(())
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
        // Only passthrough logins carry a secret; those are what the upstream needs.
        let credentials = tx.client.auth.clone().filter(|c| c.secret.is_some());
        let queue_id = tx.id.clone();
        let sender = tx.envelope.sender.clone();
        let (route, direction) = match self.direction {
            Direction::Inbound => (Route::Inbound, "inbound"),
            Direction::Outbound => (Route::Outbound, "outbound"),
        };
        let this = self.clone();
        // Encryption and decryption are CPU work: off the async threads.
        let work = tokio::task::spawn_blocking(move || match this.direction {
            Direction::Inbound => this.inbound(&tx),
            Direction::Outbound => this.outbound(&tx),
        });
        let parts = match work.await {
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
                data: Arc::new(data),
                credentials: credentials.clone(),
                route,
            })
            .collect();
        self.relay.deliver(&queue_id, copies).await
    }

    async fn authenticate(&self, creds: &Credentials) -> Result<(), Reply> {
        self.relay.check_login(creds).await
    }
}

impl Gateway {
    /// The policy's verdict for one recipient, from what the keyring knows now; `signer`
    /// is the address whose key would sign (the envelope sender at RCPT time, the From
    /// address after the final dot).
    fn decide(&self, signer: &str, rcpt: &str, now: SystemTime) -> Decision {
        let eff = self.policy.for_recipient(rcpt);
        let facts = Facts {
            has_key: self.keyring.lookup_encryption(rcpt, now).is_ok(),
            can_sign: !signer.is_empty()
                && matches!(self.keyring.signing_cert_for(signer, now), Ok(Some(_))),
            others_encrypted: false,
        };
        policy::decide(rcpt, &eff, facts)
    }

    /// A message that cannot be protected: passed on unchanged only when every recipient's
    /// policy allows plaintext, refused otherwise, so that it never reaches a `require`
    /// recipient in the clear.
    fn malformed(&self, tx: &Transaction, reason: &str) -> Result<Vec<process::Built>, Reply> {
        let strict: Vec<String> = tx
            .envelope
            .recipients
            .iter()
            .filter(|r| self.policy.for_recipient(&r.address).mode.0 == policy::Mode::Require)
            .map(|r| format!("<{}>", r.address))
            .collect();
        if strict.is_empty() {
            tracing::warn!(queue_id = %tx.id, reason, "malformed message passed on unchanged: every recipient may receive plaintext");
            return Ok(vec![(tx.envelope.recipients.clone(), tx.message.clone())]);
        }
        tracing::warn!(queue_id = %tx.id, reason, "malformed message refused");
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
        let mut parts = Vec::with_capacity(opened.len());
        for o in opened {
            let recipients: Vec<Recipient> = o
                .recipients
                .iter()
                .filter_map(|&i| tx.envelope.recipients.get(i).cloned())
                .collect();
            let v = &o.verdict;
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

    /// Parse, decide per recipient, group, transform: the copies and who gets each.
    fn outbound(&self, tx: &Transaction) -> Result<Vec<process::Built>, Reply> {
        let now = SystemTime::now();
        let parsed = parse::parse(&tx.message);
        if parsed.protected {
            tracing::info!(queue_id = %tx.id, "already protected: passed on unchanged");
            return Ok(vec![(tx.envelope.recipients.clone(), tx.message.clone())]);
        }
        if let Some(reason) = &parsed.malformed {
            return self.malformed(tx, reason);
        }
        let mut decided = Vec::with_capacity(tx.envelope.recipients.len());
        let signer = parsed.from.clone().unwrap_or_default();
        for r in &tx.envelope.recipients {
            let treatment = match self.decide(&signer, &r.address, now) {
                Decision::Accept(t) => t,
                // The keyring changed between RCPT and the final dot.
                Decision::Refuse(reply) => return Err(reply),
            };
            let eff = self.policy.for_recipient(&r.address);
            let certs = match treatment {
                Treatment::Encrypt => self
                    .keyring
                    .lookup_encryption(&r.address, now)
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            decided.push(Decided {
                recipient: r.clone(),
                treatment,
                certs,
                named: parsed.named.contains(&r.address.to_ascii_lowercase()),
                encrypt_to_self: eff.encrypt_to_self.0,
            });
        }
        process::check_mixed(&decided, &self.policy)?;
        process::build(tx, &parsed, &decided, &self.keyring, now)
    }
}
