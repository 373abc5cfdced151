//! The process's counters, gauges and histogram. One registry for the process: the few
//! places that count call the functions here instead of carrying a handle through every
//! constructor.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::smtp::reply::Reply;

type One = [(&'static str, String); 1];
type Two = [(&'static str, String); 2];

struct Metrics {
    registry: Registry,
    messages: Family<Two, Counter>,
    refusals: Family<One, Counter>,
    upstream_replies: Family<One, Counter>,
    upstream_connections: Counter,
    spool_messages: Gauge,
    spool_oldest: Gauge,
    transform: Histogram,
    keys_expiring: Family<One, Gauge>,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let messages = Family::<Two, Counter>::default();
        let refusals = Family::<One, Counter>::default();
        let upstream_replies = Family::<One, Counter>::default();
        let upstream_connections = Counter::default();
        let spool_messages = Gauge::default();
        let spool_oldest = Gauge::default();
        // 1 ms to about 16 s: a small message is signed in a millisecond, a large one
        // encrypted in seconds.
        let transform = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let keys_expiring = Family::<One, Gauge>::default();
        registry.register(
            "sealpost_messages",
            "Copies built for delivery, by direction and treatment",
            messages.clone(),
        );
        registry.register(
            "sealpost_refusals",
            "Recipients and messages refused to a client, by enhanced status code",
            refusals.clone(),
        );
        registry.register(
            "sealpost_upstream_replies",
            "Replies of the next hops per recipient, by class (2xx, 4xx, 5xx)",
            upstream_replies.clone(),
        );
        registry.register(
            "sealpost_upstream_connections",
            "SMTP and LMTP connections opened to the next hops (each is reused for later copies)",
            upstream_connections.clone(),
        );
        registry.register(
            "sealpost_spool_messages",
            "Copies waiting in the spool",
            spool_messages.clone(),
        );
        registry.register(
            "sealpost_spool_oldest_seconds",
            "Age of the oldest copy in the spool (0 when it is empty)",
            spool_oldest.clone(),
        );
        registry.register(
            "sealpost_transform_seconds",
            "Time to encrypt, sign, decrypt or verify one message",
            transform.clone(),
        );
        registry.register(
            "sealpost_keys_expiring",
            "Local users' keys that expire within 30 days",
            keys_expiring.clone(),
        );
        Metrics {
            registry,
            messages,
            refusals,
            upstream_replies,
            upstream_connections,
            spool_messages,
            spool_oldest,
            transform,
            keys_expiring,
        }
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// One copy built for `direction` (`outbound`, `inbound`) with `treatment` (`encrypted`,
/// `signed`, `plain`, `protected`, or an inbound verdict's encryption word).
pub fn message(direction: &str, treatment: &str) {
    METRICS
        .messages
        .get_or_create(&[
            ("direction", direction.to_string()),
            ("treatment", treatment.to_string()),
        ])
        .inc();
}

/// A refusal the client heard (4xx or 5xx to RCPT or after DATA); the reason is the
/// enhanced status code (`5.7.1`), or the basic code without one.
pub fn refusal(reply: &Reply) {
    let reason = match reply.enhanced {
        Some(e) => format!("{}.{}.{}", e.0, e.1, e.2),
        None => reply.code.to_string(),
    };
    METRICS.refusals.get_or_create(&[("reason", reason)]).inc();
}

/// A new SMTP or LMTP connection to a next hop (the pool had none idle to reuse).
pub fn upstream_connection() {
    METRICS.upstream_connections.inc();
}

/// A next hop's reply for one recipient.
pub fn upstream_reply(reply: &Reply) {
    let class = format!("{}xx", reply.code / 100);
    METRICS
        .upstream_replies
        .get_or_create(&[("class", class)])
        .inc();
}

/// How long one message's transform took.
pub fn transform_time(took: Duration) {
    METRICS.transform.observe(took.as_secs_f64());
}

/// What is computed when scraped rather than counted as it happens.
pub struct Snapshot {
    pub spool_messages: usize,
    pub spool_oldest: Duration,
    /// Certificates that expire within 30 days; `None` when the keyring cannot be read.
    pub keys_expiring_30d: Option<usize>,
}

/// Every metric in the text format, with `snapshot`'s gauges set first.
pub fn render(snapshot: &Snapshot) -> String {
    let m = &*METRICS;
    m.spool_messages
        .set(i64::try_from(snapshot.spool_messages).unwrap_or(i64::MAX));
    m.spool_oldest
        .set(i64::try_from(snapshot.spool_oldest.as_secs()).unwrap_or(i64::MAX));
    if let Some(n) = snapshot.keys_expiring_30d {
        m.keys_expiring
            .get_or_create(&[("within", "30d".to_string())])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &m.registry);
    out
}

/// A next hop: host and port.
type Hop = (String, u16);

/// The last contact with each next hop, and whether it answered.
static CONTACTS: LazyLock<Mutex<HashMap<Hop, (Instant, bool)>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// A connection to a next hop was made (`reached`) or failed.
pub fn contact(host: &str, port: u16, reached: bool) {
    if let Ok(mut map) = CONTACTS.lock() {
        map.insert((host.to_string(), port), (Instant::now(), reached));
    }
}

/// When `host:port` was last tried, and whether it answered then.
pub fn last_contact(host: &str, port: u16) -> Option<(Instant, bool)> {
    CONTACTS
        .lock()
        .ok()
        .and_then(|map| map.get(&(host.to_string(), port)).copied())
}
