//! Command-line parser and runner for `sealpost keys export`.

use super::Io;
use sealpost_keyring::Keyring;

/// Write one certificate, armored, to standard output.
///
/// With `--secret`, the secret key is exported instead (unencrypted: protect the output).
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  sealpost keys export alice@example.org > alice.asc
  sealpost keys export alice@example.org | gpg --import
  sealpost keys export --secret 0x1A2B3C4D5E6F7081 > alice-secret.asc")]
pub struct Args {
    /// An email address, a fingerprint, or a key ID; it must match exactly one certificate
    query: String,
    /// Export the secret key too
    #[arg(long)]
    secret: bool,
}

pub fn run(args: Args, keyring: &Keyring, io: &mut Io<'_>) -> anyhow::Result<()> {
    let cert = super::find_one(keyring, &args.query)?;
    let armored = keyring.export(&cert.fingerprint(), args.secret)?;
    io.out.write_all(&armored)?;
    io.out.flush()?;
    Ok(())
}
