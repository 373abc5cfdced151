//! The retry worker: delivers spooled copies with exponential backoff, and sends the
//! sender a DSN when a copy fails for good or its lifetime runs out.

use std::sync::PoisonError;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::{dsn, unix, Claim, Copy, Entry, Escaped, Outcome, Relay};
use crate::blob::Blob;
use crate::smtp::reply::{Class, Enhanced, Reply};

pub async fn run(relay: Relay, shutdown: CancellationToken) {
    // The first pass after a start takes everything: a copy spooled just before a crash
    // should not wait out its backoff.
    let mut all_due = true;
    loop {
        let next = match pass(&relay, std::mem::take(&mut all_due)).await {
            Ok(next) => next,
            Err(e) => {
                tracing::error!(error = %Escaped(&e.to_string()), "spool pass failed");
                Some(Duration::from_secs(30))
            }
        };
        if shutdown.is_cancelled() {
            return;
        }
        // A pass that spooled a DSN goes round again at once to send it: its next wake-up
        // may be an hour away.
        if next == Some(Duration::ZERO) {
            continue;
        }
        let wait = next.unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = relay.inner.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Attempts every due entry; returns how long until the next one is due, zero when this
/// pass spooled something that is due now (a DSN).
async fn pass(relay: &Relay, all_due: bool) -> Result<Option<Duration>, super::Error> {
    let spool = &relay.inner.spool;
    // What `queue retry` asked for until now; a request made during this pass wakes the
    // next one.
    let asked = std::mem::take(
        &mut *relay
            .inner
            .due_now
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    );
    let mut soonest: Option<u64> = None;
    let mut earliest = |at: u64| soonest = Some(soonest.map_or(at, |s: u64| s.min(at)));
    let mut reported = false;
    for listed in spool.all()? {
        let now = unix(SystemTime::now());
        let due = |e: &Entry| e.next_attempt <= now || all_due || asked.contains(&e.id);
        if !due(&listed) {
            earliest(listed.next_attempt);
            continue;
        }
        // One task at a time per entry; another has it now and will settle it.
        let Some(_claim) = Claim::take(&relay.inner.claims, &listed.id) else {
            continue;
        };
        // Read again under the claim: the listing may predate another task's attempt
        // (which delivered and removed the entry, or put it off), or an admin's `queue
        // remove`.
        let Some(entry) = spool.get(&listed.id)? else {
            continue;
        };
        if !due(&entry) {
            earliest(entry.next_attempt);
            continue;
        }
        match attempt(relay, entry, now).await? {
            Settled::Done { reports } => reported |= reports,
            Settled::Owed { next, reports } => {
                reported |= reports;
                earliest(next);
            }
        }
    }
    if reported {
        return Ok(Some(Duration::ZERO));
    }
    let now = unix(SystemTime::now());
    Ok(soonest.map(|s| Duration::from_secs(s.saturating_sub(now).max(1))))
}

/// What became of an entry after an attempt.
enum Settled {
    /// Nothing more is owed for it.
    Done { reports: bool },
    /// Some recipients are retried at `next` (unix seconds).
    Owed { next: u64, reports: bool },
}

/// One attempt at a claimed entry, and its outcome stored: delivered recipients dropped,
/// permanent failures (and those whose lifetime ran out) reported in a DSN, the rest kept
/// with a later retry.
async fn attempt(relay: &Relay, mut entry: Entry, now: u64) -> Result<Settled, super::Error> {
    let cfg = &relay.inner.cfg;
    let spool = &relay.inner.spool;
    // A large message stays in its file and is read a chunk at a time as it is sent.
    let data = spool.message(&entry);
    let copy = Copy {
        envelope: entry.envelope.clone(),
        data: data.as_ref().map_or_else(|_| Blob::default(), Blob::clone),
        credentials: entry.credentials.clone(),
        route: entry.route,
        returned_header: entry.returned_header.clone(),
    };
    let outcomes = match &data {
        Ok(_) => relay.attempt(&copy).await,
        Err(e) => {
            // Retried like any temporary failure, and reported when its time is up.
            tracing::error!(id = %Escaped(&entry.id), error = %Escaped(&e.to_string()), "cannot read a spooled message back");
            let reply = Reply::new(
                451,
                Enhanced(4, 3, 0),
                "Temporary local problem: the spooled message cannot be read",
            );
            copy.envelope
                .recipients
                .iter()
                .map(|_| Outcome::Failed(reply.clone()))
                .collect()
        }
    };
    let mut retry = Vec::new();
    let mut failed = Vec::new();
    let mut last = None;
    for (rcpt, o) in entry.envelope.recipients.iter().zip(&outcomes) {
        super::log_outcome(&entry.queue_id, &copy, rcpt, o);
        match o {
            Outcome::Delivered(_) => {}
            Outcome::Failed(r) if r.class() == Class::Permanent => failed.push(dsn::Failure {
                recipient: rcpt.clone(),
                reply: r.clone(),
            }),
            Outcome::Failed(r) => {
                retry.push(rcpt.clone());
                last = Some(r.clone());
            }
        }
    }
    let expired = now.saturating_sub(entry.created) >= cfg.lifetime.as_secs();
    if expired {
        for rcpt in retry.drain(..) {
            let why = last
                .as_ref()
                .map_or_else(String::new, |r| format!(" (last error: {r})"));
            failed.push(dsn::Failure {
                recipient: rcpt,
                reply: Reply::new(
                    451,
                    Enhanced(4, 4, 7),
                    format!(
                        "Delivery time expired after {} attempts{why}",
                        entry.attempts + 1
                    ),
                ),
            });
        }
    }
    let mut reports = Vec::new();
    if !failed.is_empty() {
        // Named after the entry and its attempt: unique, so that two reports about one
        // entry never overwrite each other before they are sent.
        let id = format!("{}.dsn.{}", entry.id, entry.attempts);
        if let Some(report) = relay.dsn_entry(id, &entry.queue_id, &copy, &failed, now) {
            reports.push(report);
        }
    }
    let reported = !reports.is_empty();
    if retry.is_empty() {
        spool.settle(&entry.id, None, &reports)?;
        return Ok(Settled::Done { reports: reported });
    }
    entry.envelope.recipients = retry;
    entry.attempts += 1;
    let backoff = cfg
        .retry_base
        .saturating_mul(2u32.saturating_pow(entry.attempts.saturating_sub(1).min(16)))
        .min(cfg.retry_max);
    entry.next_attempt = now + backoff.as_secs().max(1);
    tracing::info!(
        queue_id = %entry.queue_id,
        id = %entry.id,
        attempts = entry.attempts,
        retry_in_seconds = backoff.as_secs().max(1),
        "still owed: retried later"
    );
    entry.last_error = last.map(|r| r.to_string());
    if !spool.settle(&entry.id, Some(&entry), &reports)? {
        // Removed by an admin while it was attempted: it stays removed.
        return Ok(Settled::Done { reports: reported });
    }
    Ok(Settled::Owed {
        next: entry.next_attempt,
        reports: reported,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::testutil::{
        dotted_message, entry, smtp_relay, spilled, unstuff, upstream_config, Sink,
    };
    use crate::relay::{RelayConfig, Route, Transport};
    use crate::smtp::envelope::Recipient;

    /// A spooled entry for `rcpt`, with `body` in it, not due for an hour.
    fn waiting(id: &str, rcpt: &str, body: &[u8]) -> (Entry, Option<Blob>) {
        let mut e = entry(id);
        e.envelope.recipients = vec![Recipient::plain(rcpt)];
        e.next_attempt = unix(SystemTime::now()) + 3600;
        (e, Some(Blob::from(body)))
    }

    /// Waits (up to `secs`) until `f` holds.
    async fn until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
        let end = std::time::Instant::now() + Duration::from_secs(secs);
        while !f() {
            assert!(std::time::Instant::now() < end, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retry_now_racing_the_worker_delivers_each_copy_once() {
        const ROUNDS: usize = 15;
        const ENTRIES: usize = 12;
        let incoming = tempfile::tempdir().unwrap();
        for round in 0..ROUNDS {
            let sink = Sink::start().await;
            let dir = tempfile::tempdir().unwrap();
            let relay = smtp_relay(dir.path(), sink.port);
            let mut items = Vec::new();
            for i in 0..ENTRIES {
                // Every third one spilled, so that it gets a file of its own.
                let filler = if i % 3 == 0 {
                    "f".repeat(2000)
                } else {
                    String::new()
                };
                let body = format!("Subject: {i}\r\n\r\n{filler}\r\nmarker-{round}-{i}\r\n");
                let (e, blob) = waiting(&format!("Q{i}.0"), "b@example.net", body.as_bytes());
                let blob = match i % 3 {
                    0 => Some(spilled(body.as_bytes(), incoming.path())),
                    _ => blob,
                };
                items.push((e, blob));
            }
            relay.spool().put_new(items).unwrap();
            // Two workers (each entry is claimed by one at a time) and an admin asking
            // for retries of everything and of single entries, all at once.
            let shutdown = CancellationToken::new();
            let workers = [
                relay.spawn_worker(shutdown.clone()),
                relay.spawn_worker(shutdown.clone()),
            ];
            let admin = relay.clone();
            let asking = tokio::task::spawn_blocking(move || {
                let mut n = 0;
                while !admin.spool().all().unwrap().is_empty() {
                    let id = format!("Q{}.0", n % ENTRIES);
                    let _ = admin.retry_now(if n % 2 == 0 { None } else { Some(&id) });
                    n += 1;
                }
                n
            });
            until(20, "an empty spool", || {
                relay.spool().all().map(|a| a.is_empty()).unwrap_or(false)
            })
            .await;
            let asked = asking.await.unwrap();
            assert!(asked > 0);
            // Anything written back after the last delivery would show up now.
            tokio::time::sleep(Duration::from_millis(50)).await;
            shutdown.cancel();
            for w in workers {
                w.await.unwrap();
            }
            assert!(relay.spool().all().unwrap().is_empty(), "round {round}");
            let got = sink.messages.lock().unwrap().clone();
            for i in 0..ENTRIES {
                let marker = format!("marker-{round}-{i}\r\n");
                let n = got
                    .iter()
                    .filter(|m| m.windows(marker.len()).any(|w| w == marker.as_bytes()))
                    .count();
                assert_eq!(n, 1, "round {round}: copy {i} delivered {n} times");
            }
            assert_eq!(got.len(), ENTRIES, "round {round}: no DSN, nothing else");
            let files = std::fs::read_dir(dir.path().join("spool-data")).unwrap();
            assert_eq!(
                files.count(),
                0,
                "round {round}: every file went with its entry"
            );
        }
    }

    #[tokio::test]
    async fn a_dsn_made_by_the_worker_goes_out_at_once() {
        let sink = Sink::scripted(None, Some("gone@")).await;
        let dir = tempfile::tempdir().unwrap();
        let relay = smtp_relay(dir.path(), sink.port);
        let (mut e, blob) = waiting("Q.0", "gone@example.net", b"Subject: s\r\n\r\nx\r\n");
        e.next_attempt = 0;
        relay.spool().put_new(vec![(e, blob)]).unwrap();
        let shutdown = CancellationToken::new();
        let worker = relay.spawn_worker(shutdown.clone());
        let start = std::time::Instant::now();
        until(10, "the DSN at the sink", || {
            sink.messages.lock().unwrap().len() == 1
        })
        .await;
        // Before, it waited for the worker's next wake-up: up to an hour.
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        let dsn = String::from_utf8(sink.messages.lock().unwrap()[0].clone()).unwrap();
        assert!(
            dsn.contains("Final-Recipient: rfc822; gone@example.net"),
            "{dsn}"
        );
        until(5, "an empty spool", || {
            relay.spool().all().map(|a| a.is_empty()).unwrap_or(false)
        })
        .await;
        shutdown.cancel();
        worker.await.unwrap();
    }

    #[tokio::test]
    async fn a_worker_dsn_about_an_inbound_copy_returns_only_the_received_header() {
        let sink = Sink::scripted(None, Some("gone@")).await;
        let dir = tempfile::tempdir().unwrap();
        let relay = smtp_relay(dir.path(), sink.port);
        let (mut e, blob) = waiting(
            "Q.0",
            "gone@example.org",
            b"Subject: the vault\r\n\r\ndecrypted: the code is 4711\r\n",
        );
        e.route = Route::Inbound;
        e.envelope.sender.ret = Some(crate::smtp::envelope::Ret::Full);
        e.returned_header = Some(std::sync::Arc::from(
            &b"Subject: [...]\r\nContent-Type: multipart/encrypted\r\n\r\n"[..],
        ));
        relay.spool().put_new(vec![(e, blob)]).unwrap();
        assert_eq!(pass(&relay, true).await.unwrap(), Some(Duration::ZERO));
        let all = relay.spool().all().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].id, "Q.0.dsn.1");
        let text = String::from_utf8(all[0].message()).unwrap();
        assert!(text.contains("Subject: [...]"), "{text}");
        assert!(!text.contains("vault") && !text.contains("4711"), "{text}");
        // The next pass sends it.
        assert_eq!(pass(&relay, false).await.unwrap(), None);
        assert_eq!(sink.messages.lock().unwrap().len(), 1);
        assert!(relay.spool().all().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_entry_removed_while_it_is_attempted_stays_removed() {
        let sink = Sink::refusing(Some("later@")).await;
        let dir = tempfile::tempdir().unwrap();
        let incoming = tempfile::tempdir().unwrap();
        let relay = smtp_relay(dir.path(), sink.port);
        let message = dotted_message(1);
        let mut e = entry("Q.0");
        e.envelope.recipients = vec![Recipient::plain("later@example.net")];
        relay
            .spool()
            .put_new(vec![(e.clone(), Some(spilled(&message, incoming.path())))])
            .unwrap();
        // As the worker does: claimed and read, then the admin removes it mid-attempt.
        let claimed = relay.spool().get("Q.0").unwrap().unwrap();
        assert!(relay.remove("Q.0").unwrap());
        let settled = attempt(&relay, claimed, unix(SystemTime::now()))
            .await
            .unwrap();
        assert!(matches!(settled, Settled::Done { reports: false }));
        assert!(relay.spool().all().unwrap().is_empty(), "not written back");
        // A claimed entry is not attempted by another task.
        let claim = Claim::take(&relay.inner.claims, "Q.1").unwrap();
        assert!(Claim::take(&relay.inner.claims, "Q.1").is_none());
        drop(claim);
        assert!(Claim::take(&relay.inner.claims, "Q.1").is_some());
    }

    #[tokio::test]
    async fn a_spooled_large_message_is_sent_from_its_file_which_then_goes() {
        let sink = Sink::start().await;
        let dir = tempfile::tempdir().unwrap();
        let incoming = tempfile::tempdir().unwrap();
        let up = Transport::Smtp(upstream_config(sink.port));
        let cfg = RelayConfig::new("gw.test");
        let message = dotted_message(3);
        {
            let relay = Relay::open(
                crate::relay::Spool::open(dir.path(), None).unwrap(),
                up.clone(),
                up.clone(),
                cfg.clone(),
            )
            .unwrap();
            let blob = spilled(&message, incoming.path());
            relay
                .spool()
                .put_new(vec![(entry("Q.0"), Some(blob))])
                .unwrap();
        }
        let file = dir.path().join("spool-data").join("Q.0");
        assert!(file.exists());
        // As after a restart: a new spool handle finds the entry and its file.
        let relay = Relay::open(
            crate::relay::Spool::open(dir.path(), None).unwrap(),
            up.clone(),
            up,
            cfg,
        )
        .unwrap();
        assert_eq!(pass(&relay, true).await.unwrap(), None);
        let got = sink.messages.lock().unwrap().clone();
        assert_eq!(got.len(), 1);
        assert!(unstuff(&got[0]) == message, "byte for byte");
        assert!(relay.spool().all().unwrap().is_empty());
        assert!(!file.exists(), "delivered: the file is gone");
    }

    #[tokio::test]
    async fn a_missing_file_is_a_temporary_failure_retried_later() {
        let dir = tempfile::tempdir().unwrap();
        let incoming = tempfile::tempdir().unwrap();
        // Nothing listens there: the attempt would fail anyway, but it is not made.
        let relay = smtp_relay(dir.path(), 9);
        let blob = spilled(&dotted_message(1), incoming.path());
        relay
            .spool()
            .put_new(vec![(entry("Q.0"), Some(blob))])
            .unwrap();
        std::fs::remove_file(dir.path().join("spool-data").join("Q.0")).unwrap();
        assert!(pass(&relay, true).await.unwrap().is_some());
        let all = relay.spool().all().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].attempts, 2);
        assert!(
            all[0]
                .last_error
                .as_deref()
                .unwrap_or("")
                .contains("cannot be read"),
            "{:?}",
            all[0].last_error
        );
    }
}
