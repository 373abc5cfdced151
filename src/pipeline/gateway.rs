//! The backend of one listener: recipient checks by direction, and delivery through the
//! relay.

use std::sync::Arc;

use sealpost_keyring::Keyring;

use crate::relay::{Copy, Relay, Route};
use crate::smtp::backend::Backend;
use crate::smtp::envelope::{Recipient, Sender};
use crate::smtp::reply::{Enhanced, Reply};
use crate::smtp::transaction::{Client, Credentials, Transaction};

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
    /// Inbound only: the domains mail is accepted for.
    pub local_domains: Arc<Vec<String>>,
}

impl Backend for Gateway {
    async fn check_recipient(
        &self,
        _sender: &Sender,
        rcpt: &Recipient,
        _client: &Client,
    ) -> Result<(), Reply> {
        match self.direction {
            Direction::Outbound => Ok(()),
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
        let route = match self.direction {
            Direction::Outbound => Route::Outbound,
            Direction::Inbound => Route::Inbound,
        };
        // Only passthrough logins carry a secret; those are what the upstream needs.
        let credentials = tx.client.auth.filter(|c| c.secret.is_some());
        let copy = Copy {
            envelope: tx.envelope,
            data: Arc::new(tx.message),
            credentials,
            route,
        };
        self.relay.deliver(&tx.id, vec![copy]).await
    }

    async fn authenticate(&self, creds: &Credentials) -> Result<(), Reply> {
        self.relay.check_login(creds).await
    }
}
