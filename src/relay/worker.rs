//! The retry worker: delivers spooled copies with exponential backoff, and sends the
//! sender a DSN when a copy fails for good or its lifetime runs out.

use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::{dsn, unix, Copy, Escaped, Outcome, Relay};
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
        let wait = next.unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = relay.inner.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Attempts every due entry; returns how long until the next one is due.
async fn pass(relay: &Relay, all_due: bool) -> Result<Option<Duration>, super::Error> {
    let cfg = &relay.inner.cfg;
    let spool = &relay.inner.spool;
    let mut soonest: Option<u64> = None;
    for mut entry in spool.all()? {
        let now = unix(SystemTime::now());
        if entry.next_attempt > now && !all_due {
            soonest = Some(soonest.map_or(entry.next_attempt, |s| s.min(entry.next_attempt)));
            continue;
        }
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
        let mut updates = Vec::new();
        if !failed.is_empty() && !entry.envelope.sender.is_null() {
            // Named after the entry and its attempt: unique, so that two reports about one
            // entry never overwrite each other before they are sent.
            let id = format!("{}.dsn.{}", entry.id, entry.attempts);
            if let Some(report) = relay.dsn_entry(id, &entry.queue_id, &copy, &failed, now) {
                updates.push(report);
            }
        }
        if retry.is_empty() {
            if !updates.is_empty() {
                spool.put(&updates)?;
            }
            spool.remove(&entry.id)?;
            continue;
        }
        entry.envelope.recipients = retry;
        entry.attempts += 1;
        let backoff = cfg
            .retry_base
            .saturating_mul(2u32.saturating_pow(entry.attempts.saturating_sub(1).min(16)))
            .min(cfg.retry_max);
        entry.next_attempt = now + backoff.as_secs().max(1);
        entry.last_error = last.map(|r| r.to_string());
        soonest = Some(soonest.map_or(entry.next_attempt, |s| s.min(entry.next_attempt)));
        updates.push(entry);
        spool.put(&updates)?;
    }
    let now = unix(SystemTime::now());
    Ok(soonest.map(|s| Duration::from_secs(s.saturating_sub(now).max(1))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::testutil::{
        dotted_message, entry, smtp_relay, spilled, unstuff, upstream_config, Sink,
    };
    use crate::relay::{RelayConfig, Transport};

    #[tokio::test]
    async fn a_spooled_large_message_is_sent_from_its_file_which_then_goes() {
        let sink = Sink::start().await;
        let dir = tempfile::tempdir().unwrap();
        let incoming = tempfile::tempdir().unwrap();
        let up = Transport::Smtp(upstream_config(sink.port));
        let cfg = RelayConfig::new("gw.test");
        let message = dotted_message(3);
        {
            let relay = Relay::open(dir.path(), None, up.clone(), up.clone(), cfg.clone()).unwrap();
            let blob = spilled(&message, incoming.path());
            relay
                .spool()
                .put_new(vec![(entry("Q.0"), Some(blob))])
                .unwrap();
        }
        let file = dir.path().join("spool-data").join("Q.0");
        assert!(file.exists());
        // As after a restart: a new spool handle finds the entry and its file.
        let relay = Relay::open(dir.path(), None, up.clone(), up, cfg).unwrap();
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
