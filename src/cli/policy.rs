//! Command-line parser and runner for `sealpost policy`.

use std::time::SystemTime;

use clap::Subcommand;
use sealpost_keyring::Keyring;

use crate::policy::{explain, Policy};

use super::keys::Io;

/// Inspect the outbound policy.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// For each recipient: the rule that matched, the key chosen, and the copy it would get
    #[command(after_help = "\
Examples:
  sealpost policy explain --from alice@example.org --to bob@example.net --to carol@partner.example
  sealpost --config /etc/sealpost/sealpost.toml policy explain --from a@example.org --to b@example.net --bcc c@example.com")]
    Explain {
        /// The sender (the From address, whose key signs)
        #[arg(long, value_name = "ADDRESS")]
        from: String,
        /// A To or Cc recipient (repeat for more)
        #[arg(long, value_name = "ADDRESS", required = true)]
        to: Vec<String>,
        /// A Bcc recipient (repeat for more)
        #[arg(long, value_name = "ADDRESS")]
        bcc: Vec<String>,
    },
}

pub fn execute(
    cmd: PolicyCommand,
    policy: &Policy,
    keyring: &Keyring,
    io: &mut Io<'_>,
) -> anyhow::Result<()> {
    match cmd {
        PolicyCommand::Explain { from, to, bcc } => {
            let text = explain::explain(policy, keyring, &from, &to, &bcc, SystemTime::now());
            write!(io.out, "{text}")?;
            Ok(())
        }
    }
}
