//! Key lookups for recipients the keyring has no usable key for: every enabled source
//! asked at once, what they return offered to the keyring (which stores, merges, queues
//! for review or ignores it, see [`Keyring::offer_discovered`]), and a fruitless lookup
//! recorded so that the address is not asked again before `retry_after`.
//!
//! A lookup runs as a task of its own: a session waits for it only up to its message's
//! budget, and a lookup that outlasts the budget still stores what it finds for the next
//! message. One address has at most one lookup running, and at most [`MAX_RUNNING`] run
//! at once, so a flood of recipients at unknown domains cannot open unbounded connections.

use std::collections::HashMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sealpost_keyring::openpgp::{Cert, Fingerprint};
use sealpost_keyring::{Keyring, Miss, Offer, Source};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use url::Url;

use super::dane::{self, Dane};
use super::http::Client;
use super::{vks, wkd};

/// Lookups running at once; the next address waits for the next message.
pub const MAX_RUNNING: usize = 64;

/// The longest one lookup runs, whatever the budget of the message that started it.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(30);

/// `[discovery]`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Keys from the `Autocrypt:` headers of received mail.
    pub autocrypt: bool,
    /// Web Key Directory lookups.
    pub wkd: bool,
    /// VKS keyservers asked by address (none: off).
    pub keyservers: Vec<Url>,
    /// DANE OPENPGPKEY lookups, DNSSEC validated here.
    pub dane: bool,
    /// The resolvers asked for OPENPGPKEY records (the configuration fills in the
    /// system's when `dane` is on and none are named).
    pub dane_resolver: Vec<SocketAddr>,
    /// DNSKEY records validation starts from instead of the IANA root's.
    pub dane_trust_anchor: Option<dane::Anchor>,
    /// How long one message may wait for lookups, all recipients together.
    pub budget: Duration,
    /// How long an address that gave nothing is left alone.
    pub retry_after: Duration,
    /// The period over which every known certificate is fetched again (zero: never).
    pub refresh: Duration,
    /// CA certificates trusted for lookups besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Host names connected to at a fixed address instead of asking DNS.
    pub resolve: HashMap<String, SocketAddr>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            autocrypt: true,
            wkd: true,
            keyservers: Vec::new(),
            dane: false,
            dane_resolver: Vec::new(),
            dane_trust_anchor: None,
            budget: Duration::from_secs(5),
            retry_after: Duration::from_secs(3600),
            refresh: Duration::from_secs(7 * 24 * 3600),
            ca_file: None,
            resolve: HashMap::new(),
        }
    }
}

/// What one source answered.
#[derive(Debug)]
pub struct Outcome {
    pub source: Source,
    /// The URLs asked, each with its answer.
    pub asked: Vec<String>,
    pub certs: Result<Vec<Cert>, String>,
}

/// What became of one certificate offered to the keyring.
#[derive(Debug)]
pub struct Kept {
    pub source: Source,
    pub fingerprint: Fingerprint,
    pub result: Result<Offer, String>,
}

impl Kept {
    /// Whether the address can be encrypted to with this certificate now.
    fn usable(&self) -> bool {
        matches!(self.result, Ok(Offer::Stored { .. } | Offer::Unchanged(_)))
    }
}

/// Why a [`Finder`] cannot be built from its settings.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("ca_file: {0}")]
    Tls(#[from] crate::tls::Error),
    #[error("DANE: {0}")]
    Dane(#[from] dane::SetupError),
}

/// The lookup service of one gateway (shared by its listeners).
pub struct Finder {
    settings: Settings,
    client: Client,
    dane: Option<Dane>,
    keyring: Keyring,
    running: Mutex<HashMap<String, watch::Receiver<bool>>>,
    slots: Arc<Semaphore>,
}

/// A lookup someone can wait for.
pub struct Waiter(watch::Receiver<bool>);

impl Waiter {
    /// Waits until the lookup ended or `deadline` passed; whether it ended.
    pub async fn until(mut self, deadline: Instant) -> bool {
        matches!(
            tokio::time::timeout_at(deadline, self.0.wait_for(|done| *done)).await,
            Ok(Ok(_))
        )
    }
}

impl Finder {
    /// # Errors
    /// An unreadable `ca_file`; `dane` on without a resolver.
    pub fn new(settings: Settings, keyring: Keyring) -> Result<Finder, SetupError> {
        let tls = crate::tls::client::ClientTls::with_extra(settings.ca_file.as_deref())?;
        let client = Client::new(tls, settings.resolve.clone(), LOOKUP_TIMEOUT);
        let dane = if settings.dane {
            Some(Dane::new(
                &settings.dane_resolver,
                settings.dane_trust_anchor.as_ref(),
                LOOKUP_TIMEOUT,
            )?)
        } else {
            None
        };
        Ok(Finder {
            settings,
            client,
            dane,
            keyring,
            running: Mutex::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(MAX_RUNNING)),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Whether any source is asked at send time.
    pub fn looks_up(&self) -> bool {
        self.settings.wkd || self.dane.is_some() || !self.settings.keyservers.is_empty()
    }

    /// Asks every enabled source about `email` at once.
    pub async fn ask(&self, email: &str) -> Vec<Outcome> {
        let mut tasks = tokio::task::JoinSet::new();
        if self.settings.wkd {
            let client = self.client.clone();
            let email = email.to_string();
            tasks.spawn(async move {
                let a = wkd::lookup(&client, &email).await;
                Outcome {
                    source: Source::Wkd,
                    asked: a.asked,
                    certs: a.certs,
                }
            });
        }
        if let Some(dane) = &self.dane {
            let dane = dane.clone();
            let email = email.to_string();
            tasks.spawn(async move {
                let a = dane.lookup(&email).await;
                Outcome {
                    source: Source::Dane,
                    asked: a.asked,
                    certs: a.certs,
                }
            });
        }
        for server in &self.settings.keyservers {
            let client = self.client.clone();
            let email = email.to_string();
            let server = server.clone();
            tasks.spawn(async move {
                let (asked, certs) = vks::lookup(&client, &server, &email).await;
                Outcome {
                    source: Source::Keyserver,
                    asked: vec![asked],
                    certs,
                }
            });
        }
        let mut out = Vec::new();
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(o) => out.push(o),
                Err(e) => tracing::error!(error = %e, "a key lookup task failed"),
            }
        }
        // The better source first: it is offered first, and the keyring keeps the best
        // trust a certificate was found with. WKD and DANE have one trust; WKD goes first
        // so that the order does not depend on which answered sooner.
        out.sort_by_key(|o| rank(o.source));
        out
    }

    /// Offers what `outcomes` found for `email` to the keyring, and records a miss when
    /// nothing usable came of it.
    pub fn keep(&self, email: &str, outcomes: &[Outcome], now: SystemTime) -> Vec<Kept> {
        let kept = self.offer(email, outcomes, now);
        let recorded = if kept.iter().any(Kept::usable) {
            self.keyring.clear_discovery_miss(email)
        } else {
            let miss = Miss::new(
                now,
                now + self.settings.retry_after,
                describe(outcomes, &kept),
            );
            self.keyring.record_discovery_miss(email, &miss)
        };
        if let Err(e) = recorded {
            tracing::warn!(%email, error = %e, "cannot record a key lookup");
        }
        kept
    }

    /// Offers what a refresh of `email` found, recording nothing when it found nothing.
    pub fn refresh(&self, email: &str, outcomes: &[Outcome], now: SystemTime) -> Vec<Kept> {
        self.offer(email, outcomes, now)
    }

    fn offer(&self, email: &str, outcomes: &[Outcome], now: SystemTime) -> Vec<Kept> {
        let mut kept = Vec::new();
        for o in outcomes {
            let Ok(certs) = &o.certs else { continue };
            for cert in certs {
                let fingerprint = cert.fingerprint();
                let result = self
                    .keyring
                    .offer_discovered(email, cert.clone(), o.source, now)
                    .map_err(|e| e.to_string());
                kept.push(Kept {
                    source: o.source,
                    fingerprint,
                    result,
                });
            }
        }
        kept
    }

    /// Starts a lookup for `email` unless one is running (then waits on that one), one
    /// ended in a miss less than `retry_after` ago, or too many are running.
    pub fn start(self: &Arc<Self>, email: &str, now: SystemTime) -> Option<Waiter> {
        if !self.looks_up() {
            return None;
        }
        let email = sealpost_keyring::normalize_email(email)?.to_lowercase();
        let mut running = self.running.lock().ok()?;
        if let Some(rx) = running.get(&email) {
            return Some(Waiter(rx.clone()));
        }
        match self.keyring.discovery_miss(&email) {
            Ok(Some(m)) if m.holds_at(now) => return None,
            Ok(_) => {}
            // A store that cannot be read cannot record a result either.
            Err(_) => return None,
        }
        let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() else {
            tracing::warn!(%email, "key lookup not started: {MAX_RUNNING} lookups are running");
            return None;
        };
        let (tx, rx) = watch::channel(false);
        running.insert(email.clone(), rx.clone());
        drop(running);
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let _permit = permit;
            let started = std::time::Instant::now();
            let outcomes = match tokio::time::timeout(LOOKUP_TIMEOUT, this.ask(&email)).await {
                Ok(o) => o,
                Err(_) => vec![Outcome {
                    source: Source::Wkd,
                    asked: Vec::new(),
                    certs: Err(format!("no answer within {LOOKUP_TIMEOUT:?}")),
                }],
            };
            let keeper = Arc::clone(&this);
            let addr = email.clone();
            let kept = tokio::task::spawn_blocking(move || {
                let kept = keeper.keep(&addr, &outcomes, SystemTime::now());
                (outcomes, kept)
            })
            .await;
            match kept {
                Ok((outcomes, kept)) => log(&email, &outcomes, &kept, started.elapsed()),
                Err(e) => tracing::error!(%email, error = %e, "storing a key lookup failed"),
            }
            if let Ok(mut running) = this.running.lock() {
                running.remove(&email);
            }
            let _ = tx.send(true);
        });
        Some(Waiter(rx))
    }
}

/// The order sources are offered in: by trust, then WKD before DANE.
fn rank(source: Source) -> (std::cmp::Reverse<sealpost_keyring::Trust>, u8) {
    let within = match source {
        Source::Dane => 1,
        _ => 0,
    };
    (std::cmp::Reverse(source.trust()), within)
}

/// One line per source for the miss record: what it answered.
fn describe(outcomes: &[Outcome], kept: &[Kept]) -> String {
    let mut out = String::new();
    if outcomes.is_empty() {
        out.push_str("no source is enabled");
    }
    for o in outcomes {
        if !out.is_empty() {
            out.push_str("; ");
        }
        let _ = write!(out, "{}: ", o.source);
        match &o.certs {
            Err(reason) => out.push_str(reason),
            Ok(_) => {
                let mine: Vec<String> = kept
                    .iter()
                    .filter(|k| k.source == o.source)
                    .map(|k| format!("{} {}", k.fingerprint.to_hex(), offer_words(&k.result)))
                    .collect();
                out.push_str(&mine.join(", "));
            }
        }
    }
    out
}

/// What the keyring did with an offered certificate, in words.
pub fn offer_words(result: &Result<Offer, String>) -> String {
    match result {
        Ok(Offer::Stored { new: true, .. }) => "stored".into(),
        Ok(Offer::Stored { new: false, .. }) => "merged into the stored copy".into(),
        Ok(Offer::Unchanged(_)) => "already stored, unchanged".into(),
        Ok(Offer::Queued { current, .. }) => format!(
            "queued for review (the address keeps {})",
            current
                .iter()
                .map(Fingerprint::to_hex)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Ok(Offer::Ignored(why)) => format!("not stored: {why}"),
        Err(e) => format!("not stored: {e}"),
    }
}

/// A time as a person reads it in `keys discover` and `policy explain`.
pub fn when(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string()
}

fn log(email: &str, outcomes: &[Outcome], kept: &[Kept], took: Duration) {
    for o in outcomes {
        if let Err(reason) = &o.certs {
            tracing::info!(%email, source = %o.source, reason = %reason, asked = %o.asked.join(" "), "key lookup found nothing");
        }
    }
    for k in kept {
        tracing::info!(%email, source = %k.source, fingerprint = %k.fingerprint.to_hex(), outcome = %offer_words(&k.result), "key lookup");
    }
    tracing::debug!(%email, took_ms = took.as_millis() as u64, "key lookup ended");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_offered_wkd_then_dane_then_keyservers() {
        let mut sources = vec![Source::Keyserver, Source::Dane, Source::Wkd];
        sources.sort_by_key(|s| rank(*s));
        assert_eq!(sources, [Source::Wkd, Source::Dane, Source::Keyserver]);
    }
}
