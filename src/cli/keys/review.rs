//! Command-line parser and runner for `sealpost keys review`.

use anyhow::Context;
use clap::Subcommand;
use sealpost_keyring::openpgp::serialize::SerializeInto;
use sealpost_keyring::openpgp::Fingerprint;
use sealpost_keyring::Keyring;

use super::Io;

/// Decide on keys found by discovery that differ from the key an address already has.
///
/// Discovery (WKD, keyservers, Autocrypt) never replaces a key silently: a different key
/// for an address that has one waits here, and mail keeps using the current key (or is
/// held, as the policy says) until an admin accepts or rejects the new one. Check the new
/// fingerprint with its owner over another channel before accepting it.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the keys waiting, with the address, where each was found and the current key
    #[command(after_help = "\
Examples:
  sealpost keys review list
  sealpost keys review list --json")]
    List {
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Use the new key for the address from now on, pinned as if an admin had imported it;
    /// the address's old key loses the address (and is removed if it had no other)
    #[command(after_help = "\
Examples:
  sealpost keys review accept 0123456789ABCDEF0123456789ABCDEF01234567
  sealpost keys review accept 0123456789ABCDEF0123456789ABCDEF01234567 --address bob@example.net")]
    Accept(Choice),
    /// Write the waiting key, armored, to standard output (to inspect it, as with
    /// `gpg --show-keys`, before deciding)
    #[command(after_help = "\
Examples:
  sealpost keys review export 0123456789ABCDEF0123456789ABCDEF01234567 | gpg --show-keys")]
    Export(Choice),
    /// Drop the new key; it is ignored if a source offers it again for the address
    #[command(after_help = "\
Examples:
  sealpost keys review reject 0123456789ABCDEF0123456789ABCDEF01234567")]
    Reject(Choice),
}

#[derive(Debug, clap::Args)]
pub struct Choice {
    /// The fingerprint of the waiting key, as `keys review list` shows it
    fingerprint: String,
    /// The address, when the key waits for more than one
    #[arg(long, value_name = "EMAIL")]
    address: Option<String>,
}

pub fn run(cmd: Command, keyring: &Keyring, io: &mut Io<'_>) -> anyhow::Result<()> {
    match cmd {
        Command::List { json } => list(keyring, json, io),
        Command::Accept(choice) => {
            let (email, fpr) = resolve(keyring, &choice)?;
            let done = keyring.review_accept(&email, &fpr)?;
            writeln!(io.out, "accepted {} for {}", fpr.to_hex(), done.email)?;
            for f in &done.removed {
                writeln!(io.out, "removed  {} (it had no other address)", f.to_hex())?;
            }
            for f in &done.unbound {
                writeln!(io.out, "unbound  {} from {}", f.to_hex(), done.email)?;
            }
            Ok(())
        }
        Command::Export(choice) => {
            let (email, fpr) = resolve(keyring, &choice)?;
            let cert = keyring
                .review_cert(&email, &fpr)?
                .with_context(|| format!("{} is not waiting for {email}", fpr.to_hex()))?;
            let armored = cert.armored().to_vec()?;
            io.out.write_all(&armored)?;
            io.out.flush()?;
            Ok(())
        }
        Command::Reject(choice) => {
            let (email, fpr) = resolve(keyring, &choice)?;
            if !keyring.review_reject(&email, &fpr)? {
                anyhow::bail!("{} is not waiting for {email}", fpr.to_hex());
            }
            writeln!(io.out, "rejected {} for {email}", fpr.to_hex())?;
            Ok(())
        }
    }
}

fn list(keyring: &Keyring, json: bool, io: &mut Io<'_>) -> anyhow::Result<()> {
    let entries = keyring.review_list()?;
    if json {
        serde_json::to_writer_pretty(&mut *io.out, &entries)?;
        writeln!(io.out)?;
        return Ok(());
    }
    if entries.is_empty() {
        writeln!(io.out, "no keys are waiting for review")?;
        return Ok(());
    }
    for e in &entries {
        writeln!(io.out, "{}  {}", e.email, e.fingerprint)?;
        writeln!(
            io.out,
            "    found by {}, first {}, last {}; {}",
            e.source, e.first_seen, e.last_seen, e.validity
        )?;
        for uid in &e.user_ids {
            writeln!(io.out, "    user ID: {uid}")?;
        }
        if e.current.is_empty() {
            writeln!(io.out, "    current: none")?;
        }
        for c in &e.current {
            writeln!(io.out, "    current: {c}")?;
        }
    }
    Ok(())
}

/// The address and fingerprint a choice names: the address given, or the only one the
/// key waits for.
fn resolve(keyring: &Keyring, choice: &Choice) -> anyhow::Result<(String, Fingerprint)> {
    let hex: String = choice.fingerprint.split_whitespace().collect();
    let hex = hex.strip_prefix("0x").unwrap_or(&hex);
    let fpr: Fingerprint = hex
        .parse()
        .ok()
        .filter(|_| hex.len() == 40 || hex.len() == 64)
        .with_context(|| {
            format!(
                "{:?} is not a fingerprint (40 or 64 hex digits, as `keys review list` shows)",
                choice.fingerprint
            )
        })?;
    if let Some(a) = &choice.address {
        return Ok((a.clone(), fpr));
    }
    let mut addresses = keyring.review_addresses(&fpr)?;
    match addresses.len() {
        0 => anyhow::bail!("{} is not waiting for review", fpr.to_hex()),
        1 => Ok((addresses.remove(0), fpr)),
        _ => anyhow::bail!(
            "{} waits for several addresses ({}); name one with --address",
            fpr.to_hex(),
            addresses.join(", ")
        ),
    }
}
