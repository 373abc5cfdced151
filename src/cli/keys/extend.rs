//! Command-line parser and runner for `sealpost keys extend`.

use std::time::SystemTime;

use sealpost_keyring::Keyring;

use super::expires::Expires;
use super::Io;

/// Renew a local user's key: set a new expiry on the primary key and every subkey.
///
/// Only a key whose secret key is in the keyring can be extended; an expired one can be,
/// too. Publish the updated certificate afterwards (`keys export`), so that senders see
/// the new date: a key they hold with the old one stops being used on that day. The
/// gateway logs every local user's key within 30 days of its expiry once a day.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  sealpost keys extend alice@example.org --expires 2y
  sealpost keys extend 0123456789ABCDEF0123456789ABCDEF01234567 --expires 2027-06-30
  sealpost keys extend alice@example.org --expires never")]
pub struct Args {
    /// An email address, a fingerprint, or a key ID; it must match exactly one certificate
    query: String,
    /// The new expiry, from now: 2y, 18m, 6w, 90d, a date (YYYY-MM-DD), or never
    #[arg(long, value_name = "WHEN")]
    expires: Expires,
}

pub fn run(args: Args, keyring: &Keyring, io: &mut Io<'_>) -> anyhow::Result<()> {
    let cert = super::find_one(keyring, &args.query)?;
    let now = SystemTime::now();
    let at = args.expires.at(now)?;
    let renewed = keyring.extend(&cert.fingerprint(), at, now)?;
    let info = keyring.info(&renewed);
    writeln!(io.out, "extended {}: {}", info.fingerprint, info.validity)?;
    Ok(())
}
