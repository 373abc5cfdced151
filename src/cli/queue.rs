//! Command-line parser and runner for `sealpost queue`.

use clap::Subcommand;

use crate::relay::{Entry, Relay};

use super::keys::Io;

/// Inspect and manage the spool: copies the gateway accepted and still owes a delivery.
#[derive(Debug, Subcommand)]
#[command(after_help = "\
Examples:
  sealpost queue list
  sealpost queue retry               # everything, now
  sealpost queue retry 7KQ2M9XBD4FZ.0
  sealpost queue remove 7KQ2M9XBD4FZ.0")]
pub enum QueueCommand {
    /// List spooled copies: ID, sender, recipients, attempts, next try, last error
    List,
    /// Retry now: one copy (by ID or queue ID), or all
    Retry { id: Option<String> },
    /// Remove a copy without delivering it (no DSN is sent)
    Remove { id: String },
}

pub fn execute(cmd: QueueCommand, relay: &Relay, io: &mut Io<'_>) -> anyhow::Result<()> {
    match cmd {
        QueueCommand::List => list(&relay.spool().all()?, io),
        QueueCommand::Retry { id } => {
            let n = relay.retry_now(id.as_deref())?;
            if n == 0 {
                anyhow::bail!("nothing in the spool matches");
            }
            writeln!(
                io.out,
                "{n} cop{} due now",
                if n == 1 { "y is" } else { "ies are" }
            )?;
            Ok(())
        }
        QueueCommand::Remove { id } => {
            if !relay.remove(&id)? {
                anyhow::bail!("no spooled copy {id}; see `sealpost queue list`");
            }
            writeln!(io.out, "removed {id}")?;
            Ok(())
        }
    }
}

pub fn list(entries: &[Entry], io: &mut Io<'_>) -> anyhow::Result<()> {
    if entries.is_empty() {
        writeln!(io.err, "the spool is empty")?;
        return Ok(());
    }
    for e in entries {
        let rcpts: Vec<&str> = e
            .envelope
            .recipients
            .iter()
            .map(|r| r.address.as_str())
            .collect();
        let next = chrono::DateTime::<chrono::Utc>::from_timestamp(e.next_attempt as i64, 0)
            .map_or_else(String::new, |t| {
                t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
            });
        writeln!(
            io.out,
            "{}  from <{}>  to {}  attempts {}  next {}",
            e.id,
            e.envelope.sender.address,
            rcpts.join(", "),
            e.attempts,
            next
        )?;
        if let Some(err) = &e.last_error {
            writeln!(io.out, "    last error: {err}")?;
        }
    }
    Ok(())
}
