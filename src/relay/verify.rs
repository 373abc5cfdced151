//! Whether a recipient of a local domain exists, asked at RCPT time by the inbound
//! listener, so that mail for nobody is refused in the SMTP dialogue (550 5.1.1) and never
//! accepted and then bounced to a sender that may be forged (backscatter).
//!
//! The next hop is asked the way Postfix's `reject_unverified_recipient` does: a session
//! of its own up to `RCPT TO` with the null sender, then `QUIT`, nothing sent. Answers are
//! kept a short time ([`KNOWN_FOR`], [`UNKNOWN_FOR`]); a server that cannot be asked gives
//! the client a temporary refusal (450 4.1.1) and is asked again next time.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::smtp::reply::{Class, Enhanced, Reply};

use super::lmtp::{self, Hello, LmtpAddress, LmtpConfig};
use super::{Escaped, Transport};

/// How long an existing recipient is taken as known.
pub const KNOWN_FOR: Duration = Duration::from_secs(10 * 60);
/// How long an unknown one stays unknown (a user may be created meanwhile).
pub const UNKNOWN_FOR: Duration = Duration::from_secs(60);
/// Answers kept at most; past it, the cache starts again empty.
const MAX_CACHED: usize = 10_000;

/// Where the answer comes from.
pub enum By {
    /// The next hop, over this session.
    Ask(Box<LmtpConfig>, Hello),
    /// A list of addresses, lower-cased.
    List(HashSet<String>),
    /// Nobody to ask: every address of a local domain is taken.
    Any,
}

/// Recipient checks for one inbound listener.
pub struct Verifier {
    by: By,
    cache: Mutex<HashMap<String, (Instant, bool)>>,
}

impl Verifier {
    pub fn new(by: By) -> Verifier {
        Verifier {
            by,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The next hop of `transport` as the one to ask; a Maildir has no users to ask.
    pub fn asking(transport: &Transport) -> Verifier {
        let by = match transport {
            Transport::Lmtp(cfg) => By::Ask(Box::new(cfg.clone()), Hello::Lhlo),
            Transport::Smtp(up) => By::Ask(
                Box::new(LmtpConfig {
                    address: LmtpAddress::Tcp {
                        host: up.host.clone(),
                        port: up.port,
                    },
                    tls: up.tls.clone(),
                    lhlo: up.helo.clone(),
                    timeout: up.timeout,
                    data_timeout: up.data_timeout,
                    // Probe sessions of their own, opened with EHLO.
                    pool: Default::default(),
                }),
                Hello::Ehlo,
            ),
            Transport::Maildir(_) => By::Any,
        };
        Verifier::new(by)
    }

    /// `Ok` when `rcpt` exists; the client's reply otherwise.
    pub async fn check(&self, rcpt: &str) -> Result<(), Reply> {
        let key = rcpt.to_ascii_lowercase();
        let probe = match &self.by {
            By::Any => return Ok(()),
            By::List(known) => {
                return if known.contains(&key) {
                    Ok(())
                } else {
                    Err(unknown(rcpt, None))
                };
            }
            By::Ask(cfg, hello) => (cfg, *hello),
        };
        if let Some(known) = self.cached(&key) {
            return if known {
                Ok(())
            } else {
                Err(unknown(rcpt, None))
            };
        }
        let (cfg, hello) = probe;
        match lmtp::probe(cfg, hello, rcpt).await {
            Ok(reply) if reply.class() == Class::Success => {
                self.remember(key, true);
                Ok(())
            }
            Ok(reply) if reply.class() == Class::Permanent => {
                self.remember(key, false);
                Err(unknown(rcpt, Some(&reply)))
            }
            Ok(reply) | Err(reply) => {
                tracing::warn!(rcpt = %Escaped(rcpt), reply = %Escaped(&reply.to_string()), "cannot verify a recipient with the mailbox server");
                Err(Reply::new(
                    450,
                    Enhanced(4, 1, 1),
                    format!(
                        "<{rcpt}>: the mailbox server cannot confirm this recipient now ({}); try again later",
                        reply.text()
                    ),
                ))
            }
        }
    }

    fn cached(&self, key: &str) -> Option<bool> {
        let cache = self.cache.lock().ok()?;
        let (at, known) = cache.get(key)?;
        let ttl = if *known { KNOWN_FOR } else { UNKNOWN_FOR };
        (at.elapsed() < ttl).then_some(*known)
    }

    fn remember(&self, key: String, known: bool) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(key, (Instant::now(), known));
        }
    }
}

fn unknown(rcpt: &str, said: Option<&Reply>) -> Reply {
    let why = match said {
        Some(r) => format!(" (the mailbox server said: {})", r.text()),
        None => String::new(),
    };
    Reply::new(
        550,
        Enhanced(5, 1, 1),
        format!("<{rcpt}>: no such user here{why}"),
    )
}

/// The addresses of a recipients file: one per line, `#` starting a comment, lower-cased.
///
/// # Errors
/// When the file cannot be read.
pub fn read_list(path: &std::path::Path) -> std::io::Result<HashSet<String>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .map(str::to_ascii_lowercase)
        .collect())
}
