//! Command-line parser and runner for `sealpost keys import`.

use std::path::PathBuf;

use super::Io;
use anyhow::Context;
use sealpost_keyring::{ImportStatus, Keyring};

/// Import certificates and secret keys (armored or binary) from files or stdin.
///
/// A file may hold one certificate or a keyring of many, public or secret, or a revocation
/// certificate. A certificate already in the keyring is merged: new user IDs, subkeys and
/// revocations are applied. A secret key imported after its certificate attaches to it.
/// All the files are imported as one change: if one cannot be imported, none is.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  sealpost keys import bob.asc carol.pgp
  gpg --export-secret-keys --armor alice@example.org | sealpost keys import -
  sealpost keys import revocation.rev")]
pub struct Args {
    /// Files to read; `-` reads standard input
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

pub fn run(args: Args, keyring: &Keyring, io: &mut Io<'_>) -> anyhow::Result<()> {
    let mut inputs = Vec::with_capacity(args.files.len());
    for file in &args.files {
        let name = file.display().to_string();
        inputs.push((io.input)(file).with_context(|| format!("{name}: cannot read"))?);
    }
    let slices: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
    let outcomes = keyring.import_all(&slices).map_err(|(i, e)| {
        let name = args
            .files
            .get(i)
            .map(|f| f.display().to_string())
            .unwrap_or_default();
        anyhow::Error::new(e).context(format!("{name}: nothing imported"))
    })?;
    let mut warned = false;
    for o in &outcomes {
        let status = match o.status {
            ImportStatus::New => "new",
            ImportStatus::Updated => "updated",
            ImportStatus::Unchanged => "unchanged",
        };
        let secret = if o.secret { "  [secret key]" } else { "" };
        writeln!(io.out, "{status:<9} {}{secret}", o.fingerprint.to_hex())?;
        for uid in &o.user_ids {
            writeln!(io.out, "          {uid}")?;
        }
        if o.secret && !warned {
            super::warn_if_unprotected(keyring, io)?;
            warned = true;
        }
    }
    Ok(())
}
