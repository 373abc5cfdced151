//! Command-line parser and runner for `sealpost keys remove`.

use anyhow::Context;

use super::Io;
use sealpost_keyring::openpgp::Fingerprint;
use sealpost_keyring::Keyring;

/// Remove a certificate, and its secret key if sealpost holds one, from the keyring.
///
/// A full fingerprint is required, so that no key is removed by a loose match.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Example:
  sealpost keys remove C1A4B2D3E4F5061728394A5B6C7D8E9F00112233")]
pub struct Args {
    /// The certificate's full fingerprint (spaces allowed)
    fingerprint: String,
}

pub fn run(args: Args, keyring: &Keyring, io: &mut Io<'_>) -> anyhow::Result<()> {
    let compact: String = args.fingerprint.split_whitespace().collect();
    let compact = compact.trim_start_matches("0x");
    if compact.len() != 40 && compact.len() != 64 {
        anyhow::bail!(
            "{:?} is not a full fingerprint (40 or 64 hex digits); see `sealpost keys list`",
            args.fingerprint
        );
    }
    let fpr: Fingerprint = compact
        .parse()
        .with_context(|| format!("{:?} is not a fingerprint", args.fingerprint))?;
    let had_secret = keyring.has_secret(&fpr)?;
    if !keyring.remove(&fpr)? {
        anyhow::bail!("no key with fingerprint {}", fpr.to_hex());
    }
    if had_secret {
        writeln!(io.out, "removed {} and its secret key", fpr.to_hex())?;
    } else {
        writeln!(io.out, "removed {}", fpr.to_hex())?;
    }
    Ok(())
}
