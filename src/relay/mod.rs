//! The sending side: delivers the pipeline's copies upstream (or to a Maildir) within the
//! client's transaction, spools what is left, retries it, and reports failures.
//!
//! Delivery semantics, as the README states them:
//! 1. every copy is tried within `budget`;
//! 2. all accepted: 250;
//! 3. none accepted, all failures of one class: that failure, as the upstream worded it;
//! 4. otherwise the undelivered recipients are spooled (flushed) before the 250, retried
//!    with backoff for `lifetime`, and reported to the sender in a DSN when given up;
//! 5. a 250 is never lost: the spool survives a crash and is picked up at start.
//!
//! A large message (a [`Blob`] spilled to a sealed file on arrival) is never held whole
//! in memory here: it goes to the next hop a sealed chunk at a time, dot-stuffed as it
//! goes, and to the spool as a sealed file of its own. The one exception is re-encoding
//! an 8-bit message for a hop without 8BITMIME ([`downgrade::prepare`]).

pub mod commands;
pub mod downgrade;
pub mod dsn;
pub mod escape;
pub mod hop;
pub mod lmtp;
pub mod maildir;
pub mod pool;
pub mod size;
pub mod spool;
pub mod upstream;
pub mod verify;
pub mod wire;
mod worker;

#[cfg(test)]
pub(crate) mod testutil;

use std::borrow::Cow;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

use crate::blob::Blob;
use crate::smtp::envelope::{Envelope, Recipient, Ret};
use crate::smtp::reply::{Class, Enhanced, Reply};
use crate::smtp::transaction::Credentials;

pub use escape::Escaped;
pub use hop::HopTls;
pub use lmtp::{LmtpAddress, LmtpConfig};
pub use spool::{Entry, Spool};
pub use upstream::{Outcome, UpstreamConfig};

/// Which way a copy travels: to the upstream, or to the local mailboxes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Route {
    #[default]
    Outbound,
    Inbound,
}

/// One message as it leaves: its own envelope and bytes.
#[derive(Debug, Clone)]
pub struct Copy {
    pub envelope: Envelope,
    pub data: Blob,
    /// The client's login (AUTH passthrough), used upstream for this copy.
    pub credentials: Option<Credentials>,
    pub route: Route,
    /// What a DSN about an inbound copy returns: the header of the message as it was
    /// received, before any transform (see [`returned_header`]). An inbound copy's `data`
    /// may be decrypted, and a report goes to an envelope sender anyone can choose, so it
    /// never returns `data` (security rule 13). `None` for outbound copies, whose DSN
    /// returns their own `data`, and for an inbound copy whose header could not be read
    /// (its DSN then returns nothing of the message).
    pub returned_header: Option<Arc<[u8]>>,
}

/// Where copies go.
#[derive(Debug, Clone)]
pub enum Transport {
    Smtp(UpstreamConfig),
    /// A mailbox server speaking LMTP (inbound delivery).
    Lmtp(LmtpConfig),
    Maildir(PathBuf),
}

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// How long delivery may take inside the client's transaction.
    pub budget: Duration,
    /// How long a spooled copy is retried.
    pub lifetime: Duration,
    /// First retry delay; doubled each time, up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Our name, for DSNs.
    pub hostname: String,
}

impl RelayConfig {
    pub fn new(hostname: impl Into<String>) -> RelayConfig {
        RelayConfig {
            budget: Duration::from_secs(60),
            lifetime: Duration::from_secs(5 * 86400),
            retry_base: Duration::from_secs(60),
            retry_max: Duration::from_secs(3600),
            hostname: hostname.into(),
        }
    }
}

struct Inner {
    outbound: Transport,
    inbound: Transport,
    cfg: RelayConfig,
    spool: Spool,
    /// Wakes the retry worker when something is spooled or a retry is asked for.
    wake: Notify,
    /// Entries an admin asked to be retried now, taken by the worker's next pass. Kept
    /// here rather than written into the entries, so that the admin's request never
    /// writes back an entry the worker has delivered and removed meanwhile.
    due_now: Mutex<DueNow>,
    /// IDs of the spooled entries being attempted right now: each entry is attempted by
    /// one task at a time, so that it is never delivered twice over.
    claims: Mutex<HashSet<String>>,
}

/// What `sealpost queue retry` asked for since the worker's last pass.
#[derive(Debug, Default)]
struct DueNow {
    all: bool,
    ids: HashSet<String>,
}

impl DueNow {
    fn contains(&self, id: &str) -> bool {
        self.all || self.ids.contains(id)
    }
}

/// The right to attempt one spooled entry; released when dropped.
struct Claim<'a> {
    claims: &'a Mutex<HashSet<String>>,
    id: String,
}

impl<'a> Claim<'a> {
    /// `None` when another task holds the entry.
    fn take(claims: &'a Mutex<HashSet<String>>, id: &str) -> Option<Claim<'a>> {
        let fresh = claims
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.to_string());
        fresh.then(|| Claim {
            claims,
            id: id.to_string(),
        })
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.claims
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// The relay handle (cheap to clone).
#[derive(Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Spool(#[from] spool::Error),
}

impl Relay {
    /// A relay over `spool` (see [`Spool::open`]).
    ///
    /// # Errors
    /// None today; kept for symmetry with the transports that may fail to set up.
    pub fn open(
        spool: Spool,
        outbound: Transport,
        inbound: Transport,
        cfg: RelayConfig,
    ) -> Result<Relay, Error> {
        Ok(Relay {
            inner: Arc::new(Inner {
                outbound,
                inbound,
                cfg,
                spool,
                wake: Notify::new(),
                due_now: Mutex::new(DueNow::default()),
                claims: Mutex::new(HashSet::new()),
            }),
        })
    }

    pub fn spool(&self) -> &Spool {
        &self.inner.spool
    }

    /// Delivers `copies` for the transaction `queue_id` and says what the client hears.
    pub async fn deliver(&self, queue_id: &str, copies: Vec<Copy>) -> Reply {
        let cfg = &self.inner.cfg;
        // A copy the next hop would refuse for its size is refused here, before any copy
        // goes or is spooled: the client hears it now, rather than a 250 and a bounce.
        if let Some(reply) = copies.iter().find_map(|c| self.too_large(c)) {
            tracing::info!(queue_id, reply = %reply, "refused: a copy exceeds the next hop's SIZE");
            return reply;
        }
        let mut results: Vec<Option<Vec<Outcome>>> = vec![None; copies.len()];
        let attempts = async {
            for (i, copy) in copies.iter().enumerate() {
                results[i] = Some(self.attempt(copy).await);
            }
        };
        let timed_out = tokio::time::timeout(cfg.budget, attempts).await.is_err();

        let mut delivered = 0usize;
        let mut failures: Vec<Reply> = Vec::new();
        let mut pending: Vec<(usize, Vec<Recipient>, Option<Reply>)> = Vec::new();
        // Per copy: a DSN returns the failed copy's own bytes, never another's.
        let mut permanent: Vec<(usize, Vec<dsn::Failure>)> = Vec::new();
        for (i, copy) in copies.iter().enumerate() {
            match &results[i] {
                None => pending.push((i, copy.envelope.recipients.clone(), None)),
                Some(outcomes) => {
                    let mut retry = Vec::new();
                    let mut failed = Vec::new();
                    let mut last = None;
                    for (rcpt, o) in copy.envelope.recipients.iter().zip(outcomes) {
                        log_outcome(queue_id, copy, rcpt, o);
                        match o {
                            Outcome::Delivered(_) => delivered += 1,
                            Outcome::Failed(r) => {
                                failures.push(r.clone());
                                if r.class() == Class::Permanent {
                                    failed.push(dsn::Failure {
                                        recipient: rcpt.clone(),
                                        reply: r.clone(),
                                    });
                                } else {
                                    retry.push(rcpt.clone());
                                    last = Some(r.clone());
                                }
                            }
                        }
                    }
                    if !retry.is_empty() {
                        pending.push((i, retry, last));
                    }
                    if !failed.is_empty() {
                        permanent.push((i, failed));
                    }
                }
            }
        }

        if pending.is_empty() && permanent.is_empty() {
            return Reply::new(
                250,
                Enhanced(2, 0, 0),
                format!("Delivered, queue ID {queue_id}"),
            );
        }
        // Nothing accepted and one class of failure: hand it back; nothing is lost.
        if delivered == 0 && !timed_out {
            if let Some(first) = failures.first() {
                if failures.iter().all(|f| f.class() == first.class()) {
                    return handed_back(first);
                }
            }
        }

        // Partial: spool what is owed, report what failed for good, then answer 250.
        let now = unix(SystemTime::now());
        let mut entries = Vec::new();
        for (n, (i, rcpts, last)) in pending.iter().enumerate() {
            let copy = &copies[*i];
            let entry = Entry {
                id: format!("{queue_id}.{n}"),
                queue_id: queue_id.to_string(),
                envelope: Envelope {
                    sender: copy.envelope.sender.clone(),
                    recipients: rcpts.clone(),
                },
                // Set by the spool: in the entry, or a file of its own when large.
                data: String::new(),
                file: None,
                credentials: copy.credentials.clone(),
                route: copy.route,
                returned_header: copy.returned_header.clone(),
                created: now,
                attempts: 1,
                next_attempt: now + cfg.retry_base.as_secs(),
                last_error: Some(last.as_ref().map_or_else(
                    || "timed out within the transaction".to_string(),
                    |r| r.to_string(),
                )),
            };
            // A clone of the blob shares its storage: nothing is copied here.
            entries.push((entry, Some(copy.data.clone())));
        }
        for (i, failed) in &permanent {
            let Some(copy) = copies.get(*i) else { continue };
            let id = format!("{queue_id}.dsn.{i}");
            if let Some(e) = self.dsn_entry(id, queue_id, copy, failed, now) {
                entries.push((e, None));
            }
        }
        let spool = self.clone();
        // Files are written and synced, then the entries flushed, all before the 250.
        let stored = tokio::task::spawn_blocking(move || spool.inner.spool.put_new(entries)).await;
        match stored {
            Ok(Ok(())) => {
                self.inner.wake.notify_one();
                tracing::info!(
                    queue_id,
                    spooled = pending.len(),
                    failed = permanent.iter().map(|(_, f)| f.len()).sum::<usize>(),
                    "partially delivered; the rest is spooled"
                );
                Reply::new(
                    250,
                    Enhanced(2, 0, 0),
                    format!("Accepted, queue ID {queue_id}; some recipients will be retried or reported"),
                )
            }
            Ok(Err(e)) => {
                tracing::error!(queue_id, error = %Escaped(&e.to_string()), "cannot spool");
                Reply::new(
                    451,
                    Enhanced(4, 3, 0),
                    "Temporary local problem; try again later",
                )
            }
            Err(e) => {
                tracing::error!(queue_id, error = %e, "spool task failed");
                Reply::new(
                    451,
                    Enhanced(4, 3, 0),
                    "Temporary local problem; try again later",
                )
            }
        }
    }

    /// A DSN to the sender of `copy` about `failures` (recipients of that copy), as the
    /// spool entry `id` (never to `<>`).
    ///
    /// It returns only this copy's own bytes: for an outbound copy its data (whole when
    /// small and RET=FULL, else its header); for an inbound copy only the header the
    /// gateway received, whatever RET asks for, as its data may be decrypted and the
    /// envelope sender may be anyone who replays a captured ciphertext (rule 13).
    fn dsn_entry(
        &self,
        id: String,
        queue_id: &str,
        copy: &Copy,
        failures: &[dsn::Failure],
        now: u64,
    ) -> Option<Entry> {
        let sender = &copy.envelope.sender;
        let wanted: Vec<dsn::Failure> = failures
            .iter()
            .filter(|f| dsn::wanted(&f.recipient))
            .cloned()
            .collect();
        if sender.is_null() || wanted.is_empty() {
            return None;
        }
        // An inbound copy's own data is never read for a report.
        let (bytes, whole) = match copy.route {
            Route::Inbound => (Cow::Borrowed(&[][..]), false),
            Route::Outbound => dsn_original(&copy.data).unwrap_or_else(|e| {
                tracing::warn!(queue_id, error = %Escaped(&e.to_string()), "cannot read the message back for a DSN; it goes without");
                (Cow::Borrowed(&[][..]), false)
            }),
        };
        let original = match (copy.route, sender.ret, whole) {
            (Route::Inbound, _, _) => {
                dsn::Original::ReceivedHeader(copy.returned_header.as_deref().unwrap_or(&[]))
            }
            (Route::Outbound, Some(Ret::Full), true) => dsn::Original::Full(&bytes),
            (Route::Outbound, Some(Ret::Full), false) => dsn::Original::HeadersOfLarge(&bytes),
            (Route::Outbound, _, _) => dsn::Original::Headers(&bytes),
        };
        tracing::info!(
            queue_id,
            to = %Escaped(&sender.address),
            failed = %wanted.iter().map(|f| f.recipient.address.as_str()).collect::<Vec<_>>().join(","),
            "bounce: a delivery status notification goes to the sender"
        );
        let report = dsn::build(
            &self.inner.cfg.hostname,
            &sender.address,
            queue_id,
            sender.envid.as_deref(),
            &wanted,
            original,
        );
        Some(Entry {
            id,
            queue_id: queue_id.to_string(),
            envelope: Envelope {
                sender: crate::smtp::envelope::Sender::plain(""),
                recipients: vec![Recipient::plain(sender.address.clone())],
            },
            data: Entry::encode(&report),
            file: None,
            credentials: None,
            // A report goes back towards the sender: outbound, whatever the copy's way.
            route: Route::Outbound,
            returned_header: None,
            created: now,
            attempts: 0,
            next_attempt: now,
            last_error: None,
        })
    }

    /// What a listener can take so that its copies fit the next hop's SIZE as its EHLO
    /// or LHLO last gave it: an inbound listener's copies are decrypted (or go as they
    /// came), an outbound one's are encrypted. `None` for a Maildir.
    pub fn next_hop_size(&self, inbound: bool) -> Option<size::Fits> {
        let route = if inbound {
            Route::Inbound
        } else {
            Route::Outbound
        };
        let hop = self.hop_size(route)?;
        Some(match route {
            Route::Inbound => size::Fits::Opened(hop),
            Route::Outbound => size::Fits::Encrypted(hop),
        })
    }

    fn hop_size(&self, route: Route) -> Option<Arc<size::HopSize>> {
        match self.transport(route) {
            Transport::Smtp(up) => Some(up.pool.size()),
            Transport::Lmtp(l) => Some(l.pool.size()),
            Transport::Maildir(_) => None,
        }
    }

    /// `552 5.3.4` when `copy` is larger than its next hop's SIZE.
    fn too_large(&self, copy: &Copy) -> Option<Reply> {
        let limit = self.hop_size(copy.route)?.get()?;
        let hop = match self.transport(copy.route) {
            Transport::Smtp(up) => format!("{}:{}", up.host, up.port),
            Transport::Lmtp(l) => l.address.to_string(),
            Transport::Maildir(_) => return None,
        };
        let len = copy.data.len() as u64;
        (len > limit).then(|| {
            Reply::new(
                552,
                Enhanced(5, 3, 4),
                format!(
                    "Message too large for the next hop: the copy for <{}> would be {len} bytes \
                     (after encryption, decryption or re-encoding), and {hop} takes at most {limit}",
                    copy.envelope
                        .recipients
                        .first()
                        .map(|r| r.address.to_string())
                        .unwrap_or_default(),
                ),
            )
        })
    }

    /// One attempt at one copy on the configured transport.
    pub async fn attempt(&self, copy: &Copy) -> Vec<Outcome> {
        match self.transport(copy.route) {
            Transport::Smtp(up) => upstream::attempt(up, copy).await,
            Transport::Lmtp(l) => lmtp::attempt(l, copy).await,
            Transport::Maildir(root) => {
                let root = root.clone();
                let host = self.inner.cfg.hostname.clone();
                let c = copy.clone();
                let result =
                    tokio::task::spawn_blocking(move || maildir::deliver(&root, &host, &c))
                        .await
                        .unwrap_or_else(|_| {
                            Err(Reply::new(451, Enhanced(4, 3, 0), "Local delivery failed"))
                        });
                let o = match result {
                    Ok(r) => Outcome::Delivered(r),
                    Err(r) => Outcome::Failed(r),
                };
                copy.envelope.recipients.iter().map(|_| o.clone()).collect()
            }
        }
    }

    /// AUTH passthrough: the client's credentials, checked upstream.
    ///
    /// # Errors
    /// The reply for the client when they are refused or cannot be checked.
    pub async fn check_login(&self, creds: &Credentials) -> Result<(), Reply> {
        match &self.inner.outbound {
            Transport::Smtp(up) => upstream::check_login(up, creds).await,
            Transport::Lmtp(_) | Transport::Maildir(_) => Err(Reply::new(
                454,
                Enhanced(4, 7, 0),
                "AUTH passthrough needs an upstream server",
            )),
        }
    }

    /// Whether the next hop takes SMTPUTF8 (a Maildir does).
    pub async fn offers_smtputf8(&self, route: Route) -> bool {
        match self.transport(route) {
            Transport::Smtp(up) => upstream::offers_smtputf8(up).await,
            Transport::Lmtp(l) => lmtp::offers_smtputf8(l).await,
            Transport::Maildir(_) => true,
        }
    }

    /// Recipient checks for the inbound listener, by asking the inbound next hop.
    pub fn inbound_verifier(&self) -> verify::Verifier {
        verify::Verifier::asking(&self.inner.inbound)
    }

    fn transport(&self, route: Route) -> &Transport {
        match route {
            Route::Outbound => &self.inner.outbound,
            Route::Inbound => &self.inner.inbound,
        }
    }

    /// Starts the retry worker; it picks up what an earlier run left in the spool.
    pub fn spawn_worker(
        &self,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(worker::run(self.clone(), shutdown))
    }

    /// Makes every spooled copy (or those with the ID or queue ID `id`) due now: the
    /// worker attempts them in its next pass, which this starts. Nothing is attempted or
    /// written here, so that an entry is never attempted by two tasks, nor written back
    /// after the worker delivered and removed it.
    ///
    /// # Errors
    /// Spool failures; `Ok(0)` when nothing matched.
    pub fn retry_now(&self, id: Option<&str>) -> Result<usize, Error> {
        let matched: Vec<String> = self
            .inner
            .spool
            .all()?
            .into_iter()
            .filter(|e| id.is_none_or(|i| i == e.id || i == e.queue_id))
            .map(|e| e.id)
            .collect();
        if !matched.is_empty() {
            let mut due = self
                .inner
                .due_now
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match id {
                None => due.all = true,
                Some(_) => due.ids.extend(matched.iter().cloned()),
            }
        }
        self.inner.wake.notify_one();
        Ok(matched.len())
    }

    /// Removes a spooled copy without delivering it.
    ///
    /// # Errors
    /// Spool failures.
    pub fn remove(&self, id: &str) -> Result<bool, Error> {
        Ok(self.inner.spool.remove(id)?)
    }
}

/// A message returned whole in a DSN (RET=FULL) is at most this large; a larger one is
/// returned by its header, with a note (RFC 3461 §4.3 lets an MTA return the header
/// only), so that a report never holds a large message in memory nor in the spool.
pub const RETURN_FULL_MAX: usize = 1024 * 1024;
/// The most header bytes a DSN returns.
const RETURN_HEADER_MAX: usize = 256 * 1024;

/// What of `data` a DSN may return, and whether that is the whole message: all of it
/// when it is small and in memory (borrowed when it is one piece; the report cuts it at
/// the header unless RET=FULL is asked for), else its header.
///
/// # Errors
/// When a spilled message cannot be read back.
fn dsn_original(data: &Blob) -> std::io::Result<(Cow<'_, [u8]>, bool)> {
    if !data.is_spilled() && data.len() <= RETURN_FULL_MAX {
        return Ok((data.bytes()?, true));
    }
    Ok((Cow::Owned(header_of(data)?), false))
}

/// What a DSN about a copy made from `received` (the message as the listener received
/// it) may return of it, for [`Copy::returned_header`]: for an inbound copy, the header
/// of `received`, up to and with its empty line, at most [`RETURN_HEADER_MAX`] bytes;
/// for an outbound copy nothing, as its DSN returns its own data.
///
/// A message that cannot be read back gives `None` (logged): the transform will report
/// the same failure, and a DSN then returns nothing of the message rather than more.
pub fn returned_header(route: Route, received: &Blob) -> Option<Arc<[u8]>> {
    match route {
        Route::Outbound => None,
        Route::Inbound => match header_of(received) {
            Ok(h) => Some(Arc::from(h)),
            Err(e) => {
                tracing::warn!(error = %Escaped(&e.to_string()), "cannot read the received header back for DSNs");
                None
            }
        },
    }
}

/// The reply the client gets when nothing was accepted and every failure was of one
/// class: the next hop's own, except that a 421 becomes a 451 with the same text. A 421
/// tells the client that the server closes the connection (RFC 5321 §3.8); the next hop
/// closed its connection to the gateway, not the gateway its session with the client.
fn handed_back(reply: &Reply) -> Reply {
    if reply.code == 421 {
        return Reply {
            code: 451,
            ..reply.clone()
        };
    }
    reply.clone()
}

/// The header of a message, up to and with the empty line that ends it, read a piece at
/// a time (at most [`RETURN_HEADER_MAX`] bytes).
fn header_of(data: &Blob) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    for piece in data.pieces() {
        let from = out.len().saturating_sub(3);
        out.extend_from_slice(&piece?);
        let end = out
            .get(from..)
            .and_then(|tail| tail.windows(4).position(|w| w == b"\r\n\r\n"));
        if let Some(i) = end {
            out.truncate(from + i + 4);
            return Ok(out);
        }
        if out.len() >= RETURN_HEADER_MAX {
            out.truncate(RETURN_HEADER_MAX);
            break;
        }
    }
    Ok(out)
}

fn log_outcome(queue_id: &str, copy: &Copy, rcpt: &Recipient, o: &Outcome) {
    let (status, reply) = match o {
        Outcome::Delivered(r) => ("delivered", r),
        Outcome::Failed(r) => ("failed", r),
    };
    crate::ops::metrics::upstream_reply(reply);
    tracing::info!(
        queue_id,
        from = %Escaped(&copy.envelope.sender.address),
        to = %Escaped(&rcpt.address),
        size = copy.data.len(),
        status,
        reply = %Escaped(&reply.to_string()),
        "copy outcome"
    );
}

pub(crate) fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::testutil::{dotted_message, smtp_relay, spilled, unstuff, Sink};

    #[tokio::test]
    async fn a_large_copy_owed_to_some_recipients_is_in_its_file_before_the_250() {
        let sink = Sink::refusing(Some("later@")).await;
        let dir = tempfile::tempdir().unwrap();
        let incoming = tempfile::tempdir().unwrap();
        let relay = smtp_relay(dir.path(), sink.port);
        let message = dotted_message(3);
        let copy = Copy {
            envelope: Envelope {
                sender: crate::smtp::envelope::Sender::plain("a@example.org"),
                recipients: vec![
                    Recipient::plain("now@x.test"),
                    Recipient::plain("later@x.test"),
                ],
            },
            data: spilled(&message, incoming.path()),
            credentials: None,
            route: Route::Outbound,
            returned_header: None,
        };
        let reply = relay.deliver("QID", vec![copy]).await;
        assert_eq!(reply.code, 250, "{reply}");
        assert!(reply.text().contains("retried"), "{reply}");
        assert!(unstuff(&sink.messages.lock().unwrap()[0]) == message);

        let spooled = relay.spool().all().unwrap();
        assert_eq!(spooled.len(), 1);
        assert_eq!(spooled[0].envelope.recipients[0].address, "later@x.test");
        assert_eq!(spooled[0].file.as_deref(), Some("QID.0"));
        assert!(spooled[0].data.is_empty(), "not copied into the entry");
        let back = relay.spool().message(&spooled[0]).unwrap();
        assert!(back.to_vec().unwrap() == message);
    }

    /// Copies of one transaction from a@example.org (RET=FULL), one per recipient, each
    /// with a body of its own.
    fn copies(route: Route, returned: Option<&[u8]>, rcpts: &[&str]) -> Vec<Copy> {
        let mut sender = crate::smtp::envelope::Sender::plain("a@example.org");
        sender.ret = Some(Ret::Full);
        rcpts
            .iter()
            .enumerate()
            .map(|(i, rcpt)| Copy {
                envelope: Envelope {
                    sender: sender.clone(),
                    recipients: vec![Recipient::plain(*rcpt)],
                },
                data: Blob::from(
                    format!("Subject: copy {i}\r\n\r\nbody of copy {i}, for {rcpt} only\r\n")
                        .into_bytes(),
                ),
                credentials: None,
                route,
                returned_header: returned.map(Arc::from),
            })
            .collect()
    }

    fn spooled_text(relay: &Relay, id: &str) -> String {
        let entry = relay.spool().get(id).unwrap().expect(id);
        assert!(entry.envelope.sender.is_null());
        assert_eq!(entry.envelope.recipients[0].address, "a@example.org");
        String::from_utf8(entry.message()).unwrap()
    }

    #[tokio::test]
    async fn each_dsn_returns_the_failed_copy_s_own_data_not_the_first_copy_s() {
        let sink = Sink::scripted(None, Some("gone@")).await;
        let dir = tempfile::tempdir().unwrap();
        let relay = smtp_relay(dir.path(), sink.port);
        let rcpts = ["ok@x.test", "gone@x.test", "gone@y.test"];
        let reply = relay
            .deliver("QID", copies(Route::Outbound, None, &rcpts))
            .await;
        assert_eq!(reply.code, 250, "{reply}");
        let ids: Vec<String> = relay
            .spool()
            .all()
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(
            ids,
            ["QID.dsn.1", "QID.dsn.2"],
            "one report per failed copy"
        );
        for (i, id) in ids.iter().enumerate() {
            let i = i + 1;
            let text = spooled_text(&relay, id);
            assert!(text.contains("message/rfc822"), "RET=FULL: {text}");
            assert!(
                text.contains(&format!("body of copy {i}, for {} only", rcpts[i])),
                "{text}"
            );
            assert!(
                text.contains(&format!("Final-Recipient: rfc822; {}", rcpts[i])),
                "{text}"
            );
            for other in (0..3).filter(|&o| o != i) {
                assert!(!text.contains(&format!("copy {other}")), "{text}");
            }
        }
    }

    #[tokio::test]
    async fn an_inbound_dsn_returns_the_received_header_and_nothing_delivered() {
        let sink = Sink::scripted(None, Some("gone@")).await;
        let received = b"Subject: as received\r\nContent-Type: multipart/encrypted\r\n\r\n";
        for returned in [Some(&received[..]), None] {
            let dir = tempfile::tempdir().unwrap();
            let relay = smtp_relay(dir.path(), sink.port);
            let rcpts = ["ok@example.org", "gone@example.org"];
            let reply = relay
                .deliver("QID", copies(Route::Inbound, returned, &rcpts))
                .await;
            assert_eq!(reply.code, 250, "{reply}");
            let text = spooled_text(&relay, "QID.dsn.1");
            // RET=FULL asked for the message: an inbound report returns only the header.
            assert!(!text.contains("message/rfc822"), "{text}");
            assert!(text.contains("text/rfc822-headers"), "{text}");
            assert!(
                !text.contains("copy 0") && !text.contains("copy 1"),
                "{text}"
            );
            assert!(text.contains("Final-Recipient: rfc822; gone@example.org"));
            assert_eq!(
                text.contains("Subject: as received"),
                returned.is_some(),
                "{text}"
            );
        }
    }

    #[test]
    fn a_421_handed_back_to_the_client_becomes_a_451() {
        let closing = Reply::new(421, Enhanced(4, 3, 2), "upstream closing");
        assert_eq!(
            handed_back(&closing).to_string(),
            "451 4.3.2 upstream closing"
        );
        let refused = Reply::new(550, Enhanced(5, 1, 1), "no");
        assert_eq!(handed_back(&refused), refused);
    }

    #[test]
    fn a_dsn_returns_a_large_message_by_its_header() {
        let incoming = tempfile::tempdir().unwrap();
        let mut m = b"Subject: big\r\nX-Long: ".to_vec();
        m.extend(std::iter::repeat_n(b'h', 70_000));
        m.extend_from_slice(b"\r\n\r\n");
        m.extend(std::iter::repeat_n(b'B', 3 * 65_536));
        let header_len = m.len() - 3 * 65_536;
        let big = spilled(&m, incoming.path());
        let (bytes, whole) = dsn_original(&big).unwrap();
        assert!(!whole);
        assert_eq!(
            &bytes[..],
            &m[..header_len],
            "the header, across a chunk edge"
        );

        let small = Blob::from(&b"Subject: s\r\n\r\nbody\r\n"[..]);
        let (bytes, whole) = dsn_original(&small).unwrap();
        assert!(whole && matches!(bytes, Cow::Borrowed(_)));
        // In memory, in two pieces: whole too.
        let mut two = Blob::from(&b"Subject: s\r\n"[..]);
        two.append(Blob::from(&b"\r\nbody\r\n"[..]));
        let (bytes, whole) = dsn_original(&two).unwrap();
        assert!(whole);
        assert_eq!(&bytes[..], b"Subject: s\r\n\r\nbody\r\n");

        // No empty line: at most RETURN_HEADER_MAX bytes.
        let endless = spilled(&vec![b'h'; 2 * RETURN_HEADER_MAX], incoming.path());
        assert_eq!(header_of(&endless).unwrap().len(), RETURN_HEADER_MAX);
    }
}
