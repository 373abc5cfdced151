//! The decision trail: what `serve` decided for each message, kept in the data directory
//! for `sealpost log show QUEUE-ID`, without any of the message's content.
//!
//! It is made of the log events that name a queue ID (received, the policy and its rule
//! per recipient, each copy's treatment and key fingerprints, every delivery attempt and
//! its reply, spooling, bounces): the same lines an operator reads in the journal, which
//! carry envelopes, fingerprints and replies but never a body, a subject or a password.
//! They are recorded whatever the log level, as one JSON object per line in
//! `DATA_DIR/trail/YYYY-MM-DD` (UTC; 0600 in a 0700 directory), and a day's file is
//! removed once it is older than `[admin] keep_trail` (7 days by default).
//!
//! Events are handed to one writer thread through a channel, so that a session never
//! waits for the disk; the thread appends what is waiting with one write.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;

/// Where recorded events go once `serve` has started the trail; nothing is recorded
/// before (other commands never do).
static SINK: OnceLock<Mutex<mpsc::Sender<String>>> = OnceLock::new();

/// Errors reading or writing the trail, each naming its path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create the trail directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the trail directory {path}: {source}")]
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the decision trail {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The trail directory of a data directory.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("trail")
}

/// Starts recording into `data_dir`'s trail, keeping each day's file for `keep` (none
/// when zero).
///
/// # Errors
/// The directory cannot be created.
pub fn start(data_dir: &Path, keep: Duration) -> Result<(), Error> {
    if keep.is_zero() {
        return Ok(());
    }
    let dir = dir(data_dir);
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| Error::CreateDir {
                path: dir.clone(),
                source,
            })?;
    }
    // Today's file is opened now, so that a directory the service cannot write to (left
    // owned by root, say) stops `serve` at start with its path, not at the first message.
    let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let first = open_day(&dir, &day)?;
    let (tx, rx) = mpsc::channel::<String>();
    if SINK.set(Mutex::new(tx)).is_err() {
        // Started already (a second start in one process): the first writer goes on.
        return Ok(());
    }
    std::thread::Builder::new()
        .name("trail".into())
        .spawn(move || write_loop(&dir, keep, &rx, Some((day, first))))
        .map(|_| ())
        .map_err(|source| Error::CreateDir {
            path: data_dir.join("trail"),
            source,
        })
}

/// Opens (creating, 0600) the file of `day` for appending.
fn open_day(dir: &Path, day: &str) -> Result<std::fs::File, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(day);
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .map_err(|source| Error::Write { path, source })
}

/// Bytes of events gathered into one write at most.
const BATCH: usize = 64 * 1024;
/// How long events are gathered before a write: short, so that `log show` right after a
/// message finds it.
const GATHER: Duration = Duration::from_millis(10);

fn write_loop(
    dir: &Path,
    keep: Duration,
    rx: &mpsc::Receiver<String>,
    mut open: Option<(String, std::fs::File)>,
) {
    prune(dir, keep);
    while let Ok(mut lines) = rx.recv() {
        // A short wait before the write gathers what follows: while this thread sleeps
        // instead of waiting on the channel, a session sending an event wakes nobody.
        // Waking it for every event cost about 15 % of inbound throughput under load.
        std::thread::sleep(GATHER);
        // Whatever else is waiting goes in the same write: under load one system call
        // carries many events instead of one each.
        while lines.len() < BATCH {
            match rx.try_recv() {
                Ok(more) => lines.push_str(&more),
                Err(_) => break,
            }
        }
        let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
        if open.as_ref().is_none_or(|(d, _)| *d != day) {
            prune(dir, keep);
            match open_day(dir, &day) {
                Ok(f) => open = Some((day, f)),
                Err(e) => {
                    // Logged to stderr only: an event about the trail has no queue ID,
                    // so it does not come back here.
                    tracing::error!(error = %e, "decision trail");
                    open = None;
                    continue;
                }
            }
        }
        if let Some((day, f)) = open.as_mut() {
            if let Err(e) = f.write_all(lines.as_bytes()) {
                tracing::error!(path = %dir.join(day).display(), error = %e, "cannot write the decision trail");
            }
        }
    }
}

/// Removes the days older than `keep`.
fn prune(dir: &Path, keep: Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let oldest =
        chrono::Utc::now() - chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::days(7));
    let oldest = oldest.format("%Y-%m-%d").to_string();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // Only files named as days; the comparison of ISO dates is their order.
        if is_day(&name) && name < oldest {
            if let Err(err) = std::fs::remove_file(e.path()) {
                tracing::warn!(path = %e.path().display(), error = %err, "cannot remove an expired trail file");
            }
        }
    }
}

fn is_day(name: &str) -> bool {
    name.len() == 10
        && name.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        })
}

/// The tracing layer that records events with a `queue_id` field.
pub struct Layer;

impl<S: Subscriber> tracing_subscriber::Layer<S> for Layer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let Some(sink) = SINK.get() else {
            return;
        };
        if !event
            .metadata()
            .fields()
            .iter()
            .any(|f| f.name() == "queue_id")
        {
            return;
        }
        let mut fields = Fields(Map::new());
        event.record(&mut fields);
        let mut record = Map::new();
        record.insert(
            "time".into(),
            Value::String(
                chrono::Utc::now()
                    .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                    .to_string(),
            ),
        );
        record.insert(
            "level".into(),
            Value::String(event.metadata().level().to_string()),
        );
        record.extend(fields.0);
        let mut line = Value::Object(record).to_string();
        line.push('\n');
        if let Ok(tx) = sink.lock() {
            let _ = tx.send(line);
        }
    }
}

/// An event's fields as JSON strings or numbers.
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut s = String::new();
        let _ = write!(s, "{value:?}");
        self.0.insert(field.name().into(), Value::String(s));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().into(), Value::String(value.to_string()));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
}

/// Every recorded event of `queue_id` (a transaction's ID, or one of its spooled
/// copies' `ID.N`), oldest first.
///
/// # Errors
/// The directory or a file cannot be read (a missing directory is an empty trail).
pub fn show(data_dir: &Path, queue_id: &str) -> Result<Vec<Map<String, Value>>, Error> {
    let dir = dir(data_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(Error::ReadDir { path: dir, source }),
    };
    let mut days: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| is_day(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    days.sort();
    let base = queue_id.split('.').next().unwrap_or(queue_id);
    let mut out = Vec::new();
    for path in days {
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        for line in text.lines() {
            // Cheap test first: most lines are about other messages.
            if !line.contains(base) {
                continue;
            }
            let Ok(Value::Object(record)) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let id = record.get("queue_id").and_then(Value::as_str).unwrap_or("");
            if id == queue_id || id.split('.').next() == Some(queue_id) {
                out.push(record);
            }
        }
    }
    Ok(out)
}

/// One recorded event as a line for a person: time, what happened, then the fields.
pub fn line(record: &Map<String, Value>) -> String {
    let get = |k: &str| record.get(k).and_then(Value::as_str).unwrap_or("");
    let mut s = format!("{} {:5} {}", get("time"), get("level"), get("message"));
    for (k, v) in record {
        if matches!(k.as_str(), "time" | "level" | "message" | "queue_id") {
            continue;
        }
        let v = match v {
            Value::String(t) => t.clone(),
            other => other.to_string(),
        };
        if v.is_empty() {
            continue;
        }
        let _ = write!(s, " {k}={v}");
    }
    s
}
