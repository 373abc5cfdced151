//! Recipient grouping: which recipients share a copy (Bcc privacy, security.md rule 7).

use std::sync::Arc;

use sealpost_keyring::openpgp::Cert;

use crate::policy::Treatment;
use crate::smtp::envelope::Recipient;

/// One recipient with its treatment and, for encryption, its certificates.
#[derive(Debug, Clone)]
pub struct Decided {
    pub recipient: Recipient,
    pub treatment: Treatment,
    pub certs: Vec<Arc<Cert>>,
    /// Named in To or Cc (not a Bcc).
    pub named: bool,
    pub encrypt_to_self: bool,
    pub protect_subject: bool,
}

/// A copy to build: who gets it, and how.
#[derive(Debug, Clone)]
pub struct Group {
    pub recipients: Vec<Recipient>,
    pub treatment: Treatment,
    /// The certificates to encrypt to (for `Encrypt`).
    pub certs: Vec<Arc<Cert>>,
    pub encrypt_to_self: bool,
    /// Whether the outer Subject is hidden: unless every recipient of the copy allows it
    /// in the clear.
    pub protect_subject: bool,
}

/// All named encrypted recipients share one copy; each Bcc encrypted recipient gets its
/// own, so that no recipient sees another's key ID; the rest share one copy each by
/// treatment.
pub fn groups(decided: &[Decided]) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    let mut main: Option<Group> = None;
    for d in decided {
        match d.treatment {
            Treatment::Encrypt if d.named => {
                let g = main.get_or_insert_with(|| Group {
                    recipients: Vec::new(),
                    treatment: Treatment::Encrypt,
                    certs: Vec::new(),
                    encrypt_to_self: false,
                    protect_subject: false,
                });
                g.recipients.push(d.recipient.clone());
                for c in &d.certs {
                    if !g.certs.iter().any(|x| x.fingerprint() == c.fingerprint()) {
                        g.certs.push(c.clone());
                    }
                }
                g.encrypt_to_self |= d.encrypt_to_self;
                g.protect_subject |= d.protect_subject;
            }
            Treatment::Encrypt => out.push(Group {
                recipients: vec![d.recipient.clone()],
                treatment: Treatment::Encrypt,
                certs: d.certs.clone(),
                encrypt_to_self: d.encrypt_to_self,
                protect_subject: d.protect_subject,
            }),
            t => match out.iter_mut().find(|g| g.treatment == t) {
                Some(g) => g.recipients.push(d.recipient.clone()),
                None => out.push(Group {
                    recipients: vec![d.recipient.clone()],
                    treatment: t,
                    certs: Vec::new(),
                    encrypt_to_self: false,
                    protect_subject: true,
                }),
            },
        }
    }
    if let Some(m) = main {
        out.insert(0, m);
    }
    out
}
