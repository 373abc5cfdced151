//! The PostgreSQL backend: one keyring shared by several gateways.
//!
//! The keyring is synchronous and is called from the gateway's async tasks, so the client
//! (tokio-postgres) runs on a thread and runtime of its own; each call sends a request and
//! waits for its answer, bounded by [`TIMEOUT`]. The thread keeps one connection, and
//! reconnects after it is lost; while it is down, every call fails at once with
//! [`Error::Unavailable`] (the gateway answers 4xx), never with stale "no key" answers.
//!
//! - Layout: the same ordered map as sled (tree byte, key → value) in one table,
//!   `sealpost_keyring (k bytea primary key, v bytea)`, whose `bytea` order is sled's.
//! - An atomic batch is one transaction.
//! - Writers: [`Store::begin_write`] takes a session advisory lock that every gateway's
//!   writer takes before it reads, and [`Store::end_write`] releases it after the batch
//!   has committed, so that a read-merge-write (an import, a removal) never loses another
//!   gateway's concurrent update: the whole read-merge-write is serialised, and its write
//!   is one transaction. A batch written without that lock takes the same lock for its
//!   transaction. A lock lost with its connection fails the write rather than letting it
//!   through unserialised.
//! - Coherence: each batch notifies channel `sealpost_keyring` on commit; every gateway
//!   listens and drops its caches ([`Store::on_change`]), and after a reconnect too, since
//!   notifications may have been missed.
//! - Reads: prepared once per connection. Index scans (an address's or a key ID's
//!   fingerprints) are kept in memory until the next change or reconnect, as the
//!   keyring keeps its parsed certificates, so that a warm gateway asks the database
//!   nothing per message; a writer holding the lock always reads the database.
//! - Schema: `keyring/migrations/NNNN_*.sql`, applied in order at connect under an advisory
//!   lock, their number kept in `sealpost_schema`. A newer schema than this build knows, or
//!   a database holding another application's tables, is refused before anything is
//!   written.

use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio_postgres::config::SslMode;
use tokio_postgres::{AsyncMessage, Client, Config, Statement};

use super::{full_key, Entry, Op, Store, Tree};
use crate::Error;

/// How long one call may take before the database counts as unreachable.
pub const TIMEOUT: Duration = Duration::from_secs(5);
const CHANNEL: &str = "sealpost_keyring";
/// The advisory lock every gateway's keyring writer takes.
const WRITE_LOCK: i64 = 0x5ea1_0057_0001;
/// The advisory lock migrations run under.
const MIGRATION_LOCK: i64 = 0x5ea1_0057_0002;

/// The migrations, in order; a database at version N has run the first N.
const MIGRATIONS: &[&str] = &[include_str!("../../migrations/0001_keyring.sql")];

type Reply<T> = SyncSender<Result<T, Error>>;
type Listener = Box<dyn Fn() + Send + Sync>;

/// How many index scans (an address's or a key ID's fingerprints) are kept in memory.
const INDEX_CACHE: usize = 10_000;

/// What the store's handle and its client thread share: who to tell of a change, and the
/// index scans answered from memory until one.
struct Shared {
    listeners: Mutex<Vec<Listener>>,
    /// Index scans by prefix. Each message asks for its sender's secret key by address,
    /// below the keyring's caches; answered from here, a warm gateway asks the database
    /// nothing per message, as with sled. Dropped with every change, as the keyring's
    /// caches are; never used by a writer, which must read what is committed.
    scans: quick_cache::sync::Cache<Vec<u8>, Vec<Entry>>,
    /// Bumped by every reset, under its lock: a scan read before a reset is not kept.
    generation: Mutex<u64>,
    /// Set while this process holds the writers' lock: reads then go to the database.
    writing: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// Another process may have changed the store: forget everything read from it.
    fn reset(&self) {
        if let Ok(mut g) = self.generation.lock() {
            *g += 1;
            self.scans.clear();
        }
        if let Ok(l) = self.listeners.lock() {
            for f in l.iter() {
                f();
            }
        }
    }

    fn generation(&self) -> Option<u64> {
        self.generation.lock().ok().map(|g| *g)
    }

    /// Keeps a scan read at `generation`, unless a reset came since.
    fn keep(&self, generation: u64, prefix: Vec<u8>, entries: Vec<Entry>) {
        if let Ok(g) = self.generation.lock() {
            if *g == generation {
                self.scans.insert(prefix, entries);
            }
        }
    }
}

enum Request {
    Get(Vec<u8>, Reply<Option<Vec<u8>>>),
    Scan(Vec<u8>, Reply<Vec<(Vec<u8>, Vec<u8>)>>),
    Apply(Vec<(Vec<u8>, Option<Vec<u8>>)>, Reply<()>),
    Lock(Reply<()>),
    Unlock(Reply<()>),
}

/// A keyring store in PostgreSQL.
pub struct PostgresStore {
    requests: UnboundedSender<Request>,
    shared: Arc<Shared>,
    shown: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.shown)
            .finish_non_exhaustive()
    }
}

/// `url` with its password replaced, for messages and `check-config`.
pub fn hide_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some((a, h)) => (a, h),
        None => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (a `postgres://` URL; `sslmode=require`,
    /// `verify-ca` or `verify-full` for TLS, each checking the chain and the server's name,
    /// with `sslrootcert=FILE` as the only trust anchors, else the system's), brings its
    /// schema up to date, and starts listening for changes.
    ///
    /// # Errors
    /// `Error::Unavailable` naming the URL (password hidden) when it cannot connect;
    /// `Error::Store` for a malformed URL, a newer schema or another application's
    /// database.
    pub fn open(url: &str) -> Result<PostgresStore, Error> {
        let shown = hide_password(url);
        let (config, ca_file) = parse_url(url, &shown)?;
        let tls = tls_connector(&config, ca_file.as_deref(), &shown)?;
        let (requests, inbox) = unbounded_channel();
        let shared = Arc::new(Shared {
            listeners: Mutex::new(Vec::new()),
            scans: quick_cache::sync::Cache::new(INDEX_CACHE),
            generation: Mutex::new(0),
            writing: std::sync::atomic::AtomicBool::new(false),
        });
        let (ready, started) = sync_channel(1);
        let worker = Worker {
            config,
            tls,
            shown: shown.clone(),
            shared: shared.clone(),
        };
        std::thread::Builder::new()
            .name("keyring-postgres".into())
            .spawn(move || worker.run(inbox, ready))
            .map_err(Error::Io)?;
        match started.recv() {
            Ok(Ok(())) => Ok(PostgresStore {
                requests,
                shared,
                shown,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Unavailable(format!(
                "the keyring database {shown} could not be opened"
            ))),
        }
    }

    /// The URL with its password hidden.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, Error> {
        let (reply, answer) = sync_channel(1);
        self.requests
            .send(make(reply))
            .map_err(|_| self.unavailable("its client has stopped"))?;
        match answer.recv_timeout(TIMEOUT + Duration::from_secs(1)) {
            Ok(r) => r,
            Err(_) => Err(self.unavailable("no answer in time")),
        }
    }

    fn unavailable(&self, why: &str) -> Error {
        Error::Unavailable(format!("the keyring database {}: {why}", self.shown))
    }
}

impl Store for PostgresStore {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let k = full_key(tree, key);
        self.call(|r| Request::Get(k, r))
    }

    fn scan(&self, tree: Tree, prefix: &[u8]) -> Result<Vec<Entry>, Error> {
        use std::sync::atomic::Ordering;
        let p = full_key(tree, prefix);
        let cached = matches!(tree, Tree::Emails | Tree::KeyIds)
            && !self.shared.writing.load(Ordering::Acquire);
        if cached {
            if let Some(hit) = self.shared.scans.get(&p) {
                return Ok(hit);
            }
        }
        // Read before the query: a reset while it runs leaves its answer out of the cache.
        let generation = self.shared.generation();
        let rows = self.call(|r| Request::Scan(p.clone(), r))?;
        let entries: Vec<Entry> = rows
            .into_iter()
            .map(|(k, v)| (k.get(1..).unwrap_or_default().to_vec(), v))
            .collect();
        if let (true, Some(g)) = (cached, generation) {
            self.shared.keep(g, p, entries.clone());
        }
        Ok(entries)
    }

    fn apply(&self, ops: Vec<Op>) -> Result<(), Error> {
        let ops: Vec<(Vec<u8>, Option<Vec<u8>>)> = ops
            .into_iter()
            .map(|op| match op {
                Op::Put(t, k, v) => (full_key(t, &k), Some(v)),
                Op::Delete(t, k) => (full_key(t, &k), None),
            })
            .collect();
        let applied = self.call(|r| Request::Apply(ops, r));
        // Whether or not it committed (an answer lost in time may hide a commit), what
        // was read before may be stale; the notification would say so a moment later.
        self.shared.reset();
        applied
    }

    fn flush(&self) -> Result<(), Error> {
        // Every batch is committed before `apply` returns.
        Ok(())
    }

    fn begin_write(&self) -> Result<(), Error> {
        use std::sync::atomic::Ordering;
        self.shared.writing.store(true, Ordering::Release);
        let locked = self.call(Request::Lock);
        if locked.is_err() {
            self.shared.writing.store(false, Ordering::Release);
        }
        locked
    }

    fn end_write(&self) {
        use std::sync::atomic::Ordering;
        self.shared.writing.store(false, Ordering::Release);
        if let Err(e) = self.call(Request::Unlock) {
            tracing::warn!(error = %e, "cannot release the keyring's write lock (it goes with the connection)");
        }
    }

    fn on_change(&self, f: Box<dyn Fn() + Send + Sync>) {
        if let Ok(mut l) = self.shared.listeners.lock() {
            l.push(f);
        }
    }

    fn shared(&self) -> bool {
        true
    }
}

fn parse_url(url: &str, shown: &str) -> Result<(Config, Option<String>), Error> {
    let bad = |why: String| Error::Store(format!("the keyring URL {shown} is not usable: {why}"));
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(bad("it must start with postgres://".into()));
    }
    // tokio-postgres knows neither `sslrootcert` nor libpq's `verify-ca` and `verify-full`:
    // take them out, keep the file for rustls, and ask tokio-postgres for TLS.
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut ca_file = None;
    let mut mode = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslrootcert", v)) => {
                ca_file = Some(percent_decode(v).ok_or_else(|| {
                    bad(format!("sslrootcert={v} is not a percent-encoded path"))
                })?);
            }
            Some(("sslmode", v)) => mode = Some(v),
            _ => kept.push(pair),
        }
    }
    // rustls always checks the chain and the server's name, so every mode that asks for
    // TLS is libpq's `verify-full`; none connects over TLS it has not verified.
    let ssl = match mode {
        Some("disable") => SslMode::Disable,
        Some("prefer") => SslMode::Prefer,
        Some("require" | "verify-ca" | "verify-full") => SslMode::Require,
        Some(other) => {
            return Err(bad(format!(
                "sslmode={other} is none of disable, prefer, require, verify-ca, verify-full"
            )))
        }
        // A CA file says the server is to be reached over TLS.
        None if ca_file.is_some() => SslMode::Require,
        None => SslMode::Prefer,
    };
    if ssl == SslMode::Disable && ca_file.is_some() {
        return Err(bad("sslrootcert is given but sslmode=disable".into()));
    }
    let rebuilt = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut config: Config = rebuilt.parse().map_err(|e| bad(format!("{e}")))?;
    if config.get_dbname().is_none() {
        return Err(bad(
            "it names no database (postgres://USER@HOST:PORT/DATABASE)".into(),
        ));
    }
    config.ssl_mode(ssl);
    config.connect_timeout(TIMEOUT);
    config.application_name("sealpost");
    Ok((config, ca_file))
}

/// `%XX` escapes in a URL's query value decoded, as tokio-postgres decodes the others;
/// `None` for a broken escape or a path that is not UTF-8.
fn percent_decode(v: &str) -> Option<String> {
    let mut out = Vec::with_capacity(v.len());
    let mut bytes = v.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            let hex = std::str::from_utf8(&hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

fn tls_connector(
    config: &Config,
    ca_file: Option<&str>,
    shown: &str,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                Error::Store(format!("cannot read sslrootcert {path} for {shown}: {e}"))
            })?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| {
                    Error::Store(format!("sslrootcert {path} is not PEM certificates: {e}"))
                })?;
                roots.add(cert).map_err(|e| {
                    Error::Store(format!(
                        "sslrootcert {path}: a certificate is unusable: {e}"
                    ))
                })?;
            }
            if roots.is_empty() {
                return Err(Error::Store(format!(
                    "sslrootcert {path} holds no certificate"
                )));
            }
        }
        None if config.get_ssl_mode() != SslMode::Disable => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
        None => {}
    }
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
}

struct Worker {
    config: Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    shown: String,
    shared: Arc<Shared>,
}

/// The connection's state as the worker sees it.
struct Live {
    client: Client,
    /// Closed when the connection ends.
    gone: tokio::sync::oneshot::Receiver<()>,
    /// Whether this connection holds the write lock.
    locked: bool,
    /// The reads, prepared once per connection: a text query would be parsed on every
    /// call, one more round trip each.
    get: Statement,
    scan: Statement,
    scan_to_end: Statement,
}

impl Worker {
    fn run(self, mut inbox: UnboundedReceiver<Request>, ready: SyncSender<Result<(), Error>>) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready.send(Err(Error::Io(e)));
                return;
            }
        };
        rt.block_on(async move {
            let mut live = match self.connect().await {
                Ok(l) => {
                    let _ = ready.send(Ok(()));
                    Some(l)
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            // A writer asked for the lock on a connection since lost: its writes must not
            // go through without it.
            let mut lock_wanted = false;
            let mut backoff = Duration::from_millis(200);
            // When to try again: a deadline, so that requests answered meanwhile do not
            // put it off.
            let mut next_try = tokio::time::Instant::now();
            loop {
                let Some(conn) = live.as_mut() else {
                    // Down: answer at once, and try again now and then.
                    tokio::select! {
                        req = inbox.recv() => match req {
                            Some(req) => self.refuse(req, "not connected"),
                            None => return,
                        },
                        () = tokio::time::sleep_until(next_try) => {
                            match self.connect().await {
                                Ok(l) => {
                                    tracing::info!(url = %self.shown, "reconnected to the keyring database");
                                    live = Some(l);
                                    backoff = Duration::from_millis(200);
                                    self.changed();
                                }
                                Err(e) => {
                                    tracing::debug!(error = %e, "the keyring database is still unreachable");
                                    backoff = (backoff * 2).min(Duration::from_secs(5));
                                    next_try = tokio::time::Instant::now() + backoff;
                                }
                            }
                        }
                    }
                    continue;
                };
                tokio::select! {
                    req = inbox.recv() => {
                        let Some(req) = req else { return };
                        let lost = self.serve(conn, req, &mut lock_wanted).await;
                        if lost {
                            tracing::warn!(url = %self.shown, "lost the keyring database connection");
                            live = None;
                            next_try = tokio::time::Instant::now() + backoff;
                        }
                    }
                    _ = &mut conn.gone => {
                        tracing::warn!(url = %self.shown, "lost the keyring database connection");
                        live = None;
                        next_try = tokio::time::Instant::now() + backoff;
                    }
                }
            }
        });
    }

    fn changed(&self) {
        self.shared.reset();
    }

    fn refuse(&self, req: Request, why: &str) {
        let e = || Error::Unavailable(format!("the keyring database {}: {why}", self.shown));
        match req {
            Request::Get(_, r) => drop(r.send(Err(e()))),
            Request::Scan(_, r) => drop(r.send(Err(e()))),
            Request::Apply(_, r) => drop(r.send(Err(e()))),
            Request::Lock(r) => drop(r.send(Err(e()))),
            // Nothing to release on a connection that is gone.
            Request::Unlock(r) => drop(r.send(Ok(()))),
        }
    }

    /// Answers one request; returns whether the connection is lost.
    async fn serve(&self, conn: &mut Live, req: Request, lock_wanted: &mut bool) -> bool {
        let unavailable = |e: &dyn std::fmt::Display| {
            Error::Unavailable(format!("the keyring database {}: {e}", self.shown))
        };
        macro_rules! timed {
            ($fut:expr) => {
                match tokio::time::timeout(TIMEOUT, $fut).await {
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("no answer in time".to_string()),
                }
            };
        }
        let client = &conn.client;
        match req {
            Request::Get(k, reply) => {
                let r = timed!(client.query_opt(&conn.get, &[&k]));
                let lost = r.is_err();
                let _ = reply.send(
                    r.map(|row| row.map(|row| row.get::<_, Vec<u8>>(0)))
                        .map_err(|e| unavailable(&e)),
                );
                lost
            }
            Request::Scan(prefix, reply) => {
                let r = match upper_bound(&prefix) {
                    Some(hi) => timed!(client.query(&conn.scan, &[&prefix, &hi])),
                    None => timed!(client.query(&conn.scan_to_end, &[&prefix])),
                };
                let lost = r.is_err();
                let _ = reply.send(
                    r.map(|rows| {
                        rows.into_iter()
                            .map(|row| (row.get::<_, Vec<u8>>(0), row.get::<_, Vec<u8>>(1)))
                            .collect()
                    })
                    .map_err(|e| unavailable(&e)),
                );
                lost
            }
            Request::Apply(ops, reply) => {
                if *lock_wanted && !conn.locked {
                    let _ = reply.send(Err(unavailable(
                        &"the write lock went with a lost connection",
                    )));
                    return false;
                }
                let r = timed!(apply(&mut conn.client, &ops, conn.locked));
                let lost = r.is_err();
                let _ = reply.send(r.map_err(|e| unavailable(&e)));
                lost
            }
            Request::Lock(reply) => {
                *lock_wanted = true;
                let r = timed!(client.execute("SELECT pg_advisory_lock($1)", &[&WRITE_LOCK]));
                let lost = r.is_err();
                conn.locked = r.is_ok();
                let _ = reply.send(r.map(|_| ()).map_err(|e| unavailable(&e)));
                lost
            }
            Request::Unlock(reply) => {
                *lock_wanted = false;
                let r = if conn.locked {
                    timed!(client.execute("SELECT pg_advisory_unlock($1)", &[&WRITE_LOCK]))
                        .map(|_| ())
                } else {
                    Ok(())
                };
                conn.locked = false;
                let lost = r.is_err();
                let _ = reply.send(r.map_err(|e| unavailable(&e)));
                lost
            }
        }
    }

    async fn connect(&self) -> Result<Live, Error> {
        let unreachable = |e: &dyn std::fmt::Display| {
            Error::Unavailable(format!(
                "cannot reach the keyring database {}: {e}",
                self.shown
            ))
        };
        let (client, mut connection) = self
            .config
            .connect(self.tls.clone())
            .await
            .map_err(|e| unreachable(&describe(&e)))?;
        let (gone_tx, gone) = tokio::sync::oneshot::channel();
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            use futures_util::StreamExt;
            while let Some(m) = messages.next().await {
                match m {
                    Ok(AsyncMessage::Notification(_)) => shared.reset(),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "keyring database connection ended");
                        break;
                    }
                }
            }
            let _ = gone_tx.send(());
        });
        migrate(&client, &self.shown).await?;
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .await
            .map_err(|e| unreachable(&describe(&e)))?;
        let prepare = |sql: &'static str| {
            let client = &client;
            async move {
                client
                    .prepare(sql)
                    .await
                    .map_err(|e| unreachable(&describe(&e)))
            }
        };
        let get = prepare("SELECT v FROM sealpost_keyring WHERE k = $1").await?;
        let scan = prepare("SELECT k, v FROM sealpost_keyring WHERE k >= $1 AND k < $2 ORDER BY k")
            .await?;
        let scan_to_end =
            prepare("SELECT k, v FROM sealpost_keyring WHERE k >= $1 ORDER BY k").await?;
        Ok(Live {
            client,
            gone,
            locked: false,
            get,
            scan,
            scan_to_end,
        })
    }
}

/// A person's reading of a client error: the server's message when it sent one.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            text
        }
    }
}

/// Writes one batch in one transaction. A batch outside a read-merge-write (`locked`
/// false) still takes the writers' lock, for the transaction only: it then cannot land
/// between another gateway's read and its write, whatever the caller.
///
/// The last op on a key decides it; once collapsed, the deletions and the writes touch
/// different keys, and go as two statements whatever the batch's size (a keyring of
/// thousands of certificates imported at once is two round trips, not thousands).
async fn apply(
    client: &mut Client,
    ops: &[(Vec<u8>, Option<Vec<u8>>)],
    locked: bool,
) -> Result<(), tokio_postgres::Error> {
    let mut last: std::collections::BTreeMap<&[u8], Option<&[u8]>> = Default::default();
    for (k, v) in ops {
        last.insert(k, v.as_deref());
    }
    let (mut gone, mut keys, mut values) = (Vec::new(), Vec::new(), Vec::new());
    for (k, v) in last {
        match v {
            Some(v) => {
                keys.push(k);
                values.push(v);
            }
            None => gone.push(k),
        }
    }
    let tx = client.transaction().await?;
    if !locked {
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])
            .await?;
    }
    if !gone.is_empty() {
        tx.execute("DELETE FROM sealpost_keyring WHERE k = ANY($1)", &[&gone])
            .await?;
    }
    if !keys.is_empty() {
        tx.execute(
            "INSERT INTO sealpost_keyring (k, v) \
             SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
             ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
            &[&keys, &values],
        )
        .await?;
    }
    tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL]).await?;
    tx.commit().await
}

/// The least key greater than every key starting with `prefix`, if there is one.
fn upper_bound(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut hi = prefix.to_vec();
    while let Some(last) = hi.pop() {
        if last < 0xff {
            hi.push(last + 1);
            return Some(hi);
        }
    }
    None
}

/// Brings the schema up to date, or refuses a database that is not sealpost's.
async fn migrate(client: &Client, shown: &str) -> Result<(), Error> {
    let fail = |e: tokio_postgres::Error| {
        Error::Unavailable(format!("the keyring database {shown}: {}", describe(&e)))
    };
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(fail)?;
    let result = migrate_locked(client, shown).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(fail);
    result.and(unlocked.map(|_| ()))
}

async fn migrate_locked(client: &Client, shown: &str) -> Result<(), Error> {
    let fail = |e: tokio_postgres::Error| {
        Error::Unavailable(format!("the keyring database {shown}: {}", describe(&e)))
    };
    let ours: bool = client
        .query_one("SELECT to_regclass('sealpost_schema') IS NOT NULL", &[])
        .await
        .map_err(fail)?
        .get(0);
    let version: i64 = if ours {
        client
            .query_one(
                "SELECT coalesce(max(version), 0)::bigint FROM sealpost_schema",
                &[],
            )
            .await
            .map_err(fail)?
            .get(0)
    } else {
        let others: Vec<String> = client
            .query(
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = current_schema() ORDER BY 1 LIMIT 5",
                &[],
            )
            .await
            .map_err(fail)?
            .into_iter()
            .map(|r| r.get(0))
            .collect();
        if !others.is_empty() {
            return Err(Error::Store(format!(
                "the keyring database {shown} holds another application's tables ({}); \
                 give sealpost a database of its own",
                others.join(", ")
            )));
        }
        0
    };
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(Error::Store(format!(
            "the keyring database {shown} has schema version {version}, newer than this \
             sealpost knows ({known}); upgrade sealpost"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let n = i as i64 + 1;
        client
            .batch_execute(&format!(
                "BEGIN; {sql}; INSERT INTO sealpost_schema (version) VALUES ({n}); COMMIT;"
            ))
            .await
            .map_err(fail)?;
        tracing::info!(version = n, "keyring database schema updated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_bounds_and_hidden_passwords() {
        assert_eq!(upper_bound(b"c"), Some(b"d".to_vec()));
        assert_eq!(upper_bound(&[b'e', 0xff]), Some(vec![b'f']));
        assert_eq!(upper_bound(&[0xff, 0xff]), None);
        assert_eq!(
            hide_password("postgres://gw:s3cret@db.example:5432/keys"),
            "postgres://gw:***@db.example:5432/keys"
        );
        assert_eq!(
            hide_password("postgres://gw@db.example/keys"),
            "postgres://gw@db.example/keys"
        );
    }

    #[test]
    fn tls_modes_and_the_ca_file_are_read_from_the_url() {
        let mode = |url: &str| parse_url(url, url).map(|(c, f)| (c.get_ssl_mode(), f));
        let base = "postgres://gw@db.example:5432/keys";
        assert_eq!(mode(base).unwrap(), (SslMode::Prefer, None));
        for m in ["require", "verify-ca", "verify-full"] {
            assert_eq!(
                mode(&format!("{base}?sslmode={m}")).unwrap().0,
                SslMode::Require
            );
        }
        assert_eq!(
            mode(&format!("{base}?sslrootcert=%2Fetc%2Fdb%20ca.pem")).unwrap(),
            (SslMode::Require, Some("/etc/db ca.pem".to_string()))
        );
        assert_eq!(
            mode(&format!("{base}?sslmode=disable")).unwrap().0,
            SslMode::Disable
        );
    }

    #[test]
    fn malformed_urls_are_refused_with_the_password_hidden() {
        for bad in [
            "mysql://u:pw@h/db",
            "postgres://u:pw@h:notaport/db",
            "postgres://u:pw@h:5432",
            "postgres://u:pw@h:5432/db?sslmode=allow",
            "postgres://u:pw@h:5432/db?sslmode=disable&sslrootcert=/ca.pem",
            "postgres://u:pw@h:5432/db?sslrootcert=%2",
        ] {
            let e = PostgresStore::open(bad).unwrap_err().to_string();
            assert!(!e.contains("pw@"), "{e}");
            assert!(e.contains("not usable"), "{e}");
        }
    }
}
