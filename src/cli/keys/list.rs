//! Command-line parser and runner for `sealpost keys list`.

use super::Io;
use sealpost_keyring::{KeyInfo, Keyring};

/// List the certificates in the keyring, with their validity for encryption.
///
/// Each entry shows the fingerprint, the user IDs, whether sealpost holds the secret key,
/// and whether the certificate can be encrypted to now, or why not (expired on a date,
/// revoked, no encryption subkey).
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  sealpost keys list
  sealpost keys list --secret
  sealpost keys list --json | jq '.[] | select(.validity.status != \"usable\")'")]
pub struct Args {
    /// Only certificates whose secret key sealpost holds (local users)
    #[arg(long)]
    secret: bool,
    /// Machine-readable output: a JSON array
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args, keyring: &Keyring, io: &mut Io<'_>) -> anyhow::Result<()> {
    let infos: Vec<KeyInfo> = keyring
        .list()?
        .into_iter()
        .filter(|i| !args.secret || i.has_secret)
        .collect();
    if args.json {
        writeln!(io.out, "{}", serde_json::to_string_pretty(&infos)?)?;
        return Ok(());
    }
    if infos.is_empty() {
        writeln!(
            io.err,
            "the keyring is empty; add keys with `sealpost keys import` or `sealpost keys generate`"
        )?;
        return Ok(());
    }
    for info in &infos {
        print_summary(info, io)?;
    }
    Ok(())
}

/// `keys list` where there is no keyring: the same empty answer, and on standard error
/// `why` (which directory was looked at, and how to name the right one).
pub fn without_keyring(args: &Args, why: &str, io: &mut Io<'_>) -> anyhow::Result<()> {
    if args.json {
        writeln!(io.out, "[]")?;
    }
    writeln!(io.err, "sealpost: {why}")?;
    Ok(())
}

/// The short form shared by `list` and `show`.
pub fn print_summary(info: &KeyInfo, io: &mut Io<'_>) -> std::io::Result<()> {
    let secret = if info.has_secret {
        "  [secret key]"
    } else {
        ""
    };
    writeln!(
        io.out,
        "{} (v{}, {}){secret}",
        info.fingerprint, info.version, info.algorithm
    )?;
    for uid in &info.user_ids {
        writeln!(io.out, "    user ID: {uid}")?;
    }
    writeln!(io.out, "    status:  {}", info.validity)?;
    if let Some(t) = &info.trust {
        writeln!(io.out, "    trust:   {}", t.describe())?;
    }
    Ok(())
}
