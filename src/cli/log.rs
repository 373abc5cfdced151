//! `sealpost log show QUEUE-ID`: the decision trail `serve` kept for one message.

use std::path::Path;

use anyhow::Context;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// What happened to one message: received (client, envelope, size), the policy rule
    /// per recipient, each copy's treatment and key fingerprints, every delivery attempt
    /// with the next hop's reply, spooling, retries and bounces. Never any content.
    Show {
        /// The queue ID of the `250` reply and the `Received:` header (or a spooled
        /// copy's ID, `QUEUE-ID.N`).
        queue_id: String,
        /// One JSON object per line, as kept.
        #[arg(long)]
        json: bool,
    },
}

/// Reads the trail in `data_dir` (files only: it needs neither the running server nor
/// its locks, and writes nothing).
///
/// # Errors
/// The trail cannot be read, or has nothing for the ID (exit 1, saying where it looked).
pub fn run(cmd: LogCommand, data_dir: &Path) -> anyhow::Result<()> {
    let LogCommand::Show { queue_id, json } = cmd;
    let records =
        crate::ops::trail::show(data_dir, &queue_id).context("cannot read the decision trail")?;
    if records.is_empty() {
        anyhow::bail!(
            "nothing recorded for queue ID {queue_id} in {} (the trail keeps each message for [admin] keep_trail, 7 days by default)",
            crate::ops::trail::dir(data_dir).display()
        );
    }
    for r in &records {
        if json {
            println!("{}", serde_json::Value::Object(r.clone()));
        } else {
            println!("{}", crate::ops::trail::line(r));
        }
    }
    Ok(())
}
