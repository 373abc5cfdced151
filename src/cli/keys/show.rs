//! Command-line parser and runner for `sealpost keys show`.

use super::Io;
use sealpost_keyring::Keyring;

/// Show the certificates matching an email address, fingerprint or key ID, with subkeys.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  sealpost keys show bob@example.org
  sealpost keys show 0x1A2B3C4D5E6F7081
  sealpost keys show C1A4B2D3E4F5061728394A5B6C7D8E9F00112233 --json")]
pub struct Args {
    /// An email address, a fingerprint, or a key ID (of the primary key or a subkey)
    query: String,
    /// Machine-readable output: a JSON array
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args, keyring: &Keyring, io: &mut Io<'_>) -> anyhow::Result<()> {
    let certs = keyring.find(&args.query)?;
    if certs.is_empty() {
        anyhow::bail!("no key matches {:?}", args.query);
    }
    let infos: Vec<_> = certs.iter().map(|c| keyring.info(c)).collect();
    if args.json {
        writeln!(io.out, "{}", serde_json::to_string_pretty(&infos)?)?;
        return Ok(());
    }
    for info in &infos {
        super::list::print_summary(info, io)?;
        writeln!(io.out, "    created: {}", info.created)?;
        for sub in &info.subkeys {
            writeln!(io.out, "    subkey:  {sub}")?;
        }
    }
    Ok(())
}
