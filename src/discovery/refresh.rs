//! Known certificates fetched again in the background, so that revocations, new subkeys
//! and new expiry dates arrive without an admin: every address of every certificate
//! without a secret key here is asked again once per `refresh` period, the lookups spread
//! evenly over it. What comes back is offered to the keyring as at send time, so an update
//! of a stored certificate merges (a revoked key stops being used at once) and a different
//! key goes to the review queue. A refresh never records a miss: the address has a key.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sealpost_keyring::openpgp::packet::UserID;
use sealpost_keyring::Keyring;
use tokio_util::sync::CancellationToken;

use super::finder::Finder;

/// The shortest pause between two refreshes, however many addresses there are.
const MIN_GAP: Duration = Duration::from_millis(200);

/// The addresses of the certificates that are not a local user's.
pub fn known_addresses(keyring: &Keyring) -> Result<Vec<String>, sealpost_keyring::Error> {
    let mut out = BTreeSet::new();
    for info in keyring.list()? {
        if info.has_secret {
            continue;
        }
        for uid in &info.user_ids {
            if let Some(email) = sealpost_keyring::userid_email(&UserID::from(uid.as_str())) {
                out.insert(email);
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// Refreshes until `shutdown`, one round per `refresh` period.
pub async fn run(finder: Arc<Finder>, keyring: Keyring, shutdown: CancellationToken) {
    let period = finder.settings().refresh;
    if period.is_zero() || !finder.looks_up() {
        return;
    }
    loop {
        let addresses = {
            let k = keyring.clone();
            match tokio::task::spawn_blocking(move || known_addresses(&k)).await {
                Ok(Ok(a)) => a,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "key refresh: cannot list the keyring");
                    Vec::new()
                }
                Err(_) => Vec::new(),
            }
        };
        let gap = (period / addresses.len().max(1) as u32).max(MIN_GAP);
        tracing::debug!(
            addresses = addresses.len(),
            gap_ms = gap.as_millis() as u64,
            "key refresh round"
        );
        if addresses.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(gap) => continue,
            }
        }
        for email in addresses {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(gap) => {}
            }
            let outcomes = tokio::select! {
                _ = shutdown.cancelled() => return,
                o = tokio::time::timeout(super::finder::LOOKUP_TIMEOUT, finder.ask(&email)) => match o {
                    Ok(o) => o,
                    Err(_) => continue,
                },
            };
            let f = Arc::clone(&finder);
            let addr = email.clone();
            let kept =
                tokio::task::spawn_blocking(move || f.refresh(&addr, &outcomes, SystemTime::now()))
                    .await;
            if let Ok(kept) = kept {
                for k in kept
                    .iter()
                    .filter(|k| !matches!(k.result, Ok(sealpost_keyring::Offer::Unchanged(_))))
                {
                    tracing::info!(%email, source = %k.source, fingerprint = %k.fingerprint.to_hex(), outcome = %super::finder::offer_words(&k.result), "key refresh");
                }
            }
        }
    }
}
