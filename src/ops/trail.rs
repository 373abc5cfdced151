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

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;

/// Where recorded events go once `serve` has started the trail; nothing is recorded
/// before (other commands never do).
static SINK: OnceLock<mpsc::Sender<String>> = OnceLock::new();

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
    if SINK.set(tx).is_err() {
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
///
/// Each event becomes its JSON line here, on the session's thread, written straight into
/// one string: a map of values and the date formatted anew for every event cost about a
/// twentieth of a pass-through message's CPU time.
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
        let mut line = String::with_capacity(256);
        line.push_str("{\"time\":\"");
        timestamp(&mut line);
        line.push_str("\",\"level\":\"");
        line.push_str(event.metadata().level().as_str());
        line.push('"');
        event.record(&mut Fields(&mut line));
        line.push_str("}\n");
        let _ = sink.send(line);
    }
}

/// Appends the time as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC). The part up to the seconds is
/// formatted once a second per thread.
fn timestamp(out: &mut String) {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != secs {
            let formatted = i64::try_from(secs)
                .ok()
                .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
                .map(|t| t.format("%Y-%m-%dT%H:%M:%S").to_string())
                .unwrap_or_default();
            *cached = (secs, formatted);
        }
        out.push_str(&cached.1);
    });
    let _ = write!(out, ".{:03}Z", now.subsec_millis());
}

/// An event's fields appended to a JSON object: numbers and booleans as such, everything
/// else as a string.
struct Fields<'a>(&'a mut String);

impl Fields<'_> {
    fn key(&mut self, field: &Field) {
        self.0.push_str(",\"");
        push_escaped(self.0, field.name());
        self.0.push_str("\":");
    }
}

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.key(field);
        self.0.push('"');
        let _ = write!(Escaping(self.0), "{value:?}");
        self.0.push('"');
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        self.0.push('"');
        push_escaped(self.0, value);
        self.0.push('"');
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.0, "{value}");
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.0, "{value}");
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.0.push_str(if value { "true" } else { "false" });
    }
}

/// Formatting into a JSON string's contents.
struct Escaping<'a>(&'a mut String);

impl std::fmt::Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        push_escaped(self.0, s);
        Ok(())
    }
}

/// Appends `s` with what JSON requires escaped (quote, backslash, control characters).
fn push_escaped(out: &mut String, s: &str) {
    if !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn escaped_strings_read_back_as_the_same_json_strings() {
        for s in [
            "plain",
            "quote \" and \\ backslash",
            "lines\n\r\tend",
            "\u{1}\u{1f}\u{7f}",
            "ünï € 😀",
        ] {
            let mut out = String::from("\"");
            push_escaped(&mut out, s);
            out.push('"');
            assert_eq!(serde_json::from_str::<String>(&out).unwrap(), s, "{out}");
        }
    }

    #[test]
    fn an_event_with_a_queue_id_becomes_one_json_line_and_others_none() {
        let (tx, rx) = mpsc::channel();
        assert!(SINK.set(tx).is_ok(), "only this test sets the sink");
        let subscriber = tracing_subscriber::registry().with(Layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(rcpt = "a@example.org", "no queue ID: not recorded");
            tracing::warn!(
                queue_id = "Q1",
                rcpt = %"odd\"name\n@example.org",
                copies = 3u64,
                spooled = true,
                "delivery {} failed",
                "attempt"
            );
        });
        let json = rx.try_recv().expect("one line");
        assert!(rx.try_recv().is_err(), "only the event with a queue ID");
        assert!(
            json.ends_with("}\n") && !json.trim_end().contains('\n'),
            "{json}"
        );
        let Value::Object(record) = serde_json::from_str::<Value>(&json).unwrap() else {
            panic!("not an object: {json}");
        };
        assert_eq!(record["queue_id"], "Q1");
        assert_eq!(record["level"], "WARN");
        assert_eq!(record["message"], "delivery attempt failed");
        assert_eq!(record["rcpt"], "odd\"name\n@example.org");
        assert_eq!(record["copies"], 3);
        assert_eq!(record["spooled"], true);
        let time = record["time"].as_str().unwrap();
        assert_eq!(time.len(), 24, "{time}");
        chrono::DateTime::parse_from_rfc3339(time).unwrap();
        assert!(line(&record).contains("rcpt=odd\"name"));
    }
}
