//! Command-line parser and runner for `sealpost keys export`.

use std::path::PathBuf;

use anyhow::Context;
use sealpost_keyring::Keyring;

use super::Io;

/// Write one certificate, armored, to standard output.
///
/// With `--secret`, the secret key is exported instead: encrypted with the passphrase in
/// `--passphrase-file` (there is no prompt; the file is required), or in the clear with
/// `--unprotected`, which prints a warning. `--secret` alone is refused.
///
/// With `--revocation`, the key's revocation certificate is written instead: the one
/// stored when sealpost generated the key, or one made now with its secret key. Keep it
/// apart from the key; importing it anywhere (`keys import`, `gpg --import`) revokes the
/// key for good, for when the key is lost or stolen.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("protection").args(["passphrase_file", "unprotected"])))]
#[command(after_help = "\
Examples:
  sealpost keys export alice@example.org > alice.asc
  sealpost keys export alice@example.org | gpg --import
  sealpost keys export --secret --passphrase-file pass.txt 0x1A2B3C4D5E6F7081 > alice-secret.asc
  sealpost keys export --secret --unprotected alice@example.org > alice-secret-clear.asc
  sealpost keys export --revocation alice@example.org > alice-revocation.asc")]
pub struct Args {
    /// An email address, a fingerprint, or a key ID; it must match exactly one certificate
    query: String,
    /// Export the secret key too (needs --passphrase-file or --unprotected)
    #[arg(long, requires = "protection")]
    secret: bool,
    /// Encrypt the exported secret key with the passphrase in FILE (its first line)
    #[arg(
        long,
        value_name = "FILE",
        requires = "secret",
        conflicts_with = "unprotected"
    )]
    pub passphrase_file: Option<PathBuf>,
    /// Export the secret key unencrypted (a warning is printed; protect the output)
    #[arg(long, requires = "secret")]
    unprotected: bool,
    /// Export the key's revocation certificate instead of the key
    #[arg(long, conflicts_with = "secret")]
    revocation: bool,
}

pub fn run(args: Args, keyring: &Keyring, io: &mut Io<'_>) -> anyhow::Result<()> {
    let cert = super::find_one(keyring, &args.query)?;
    let fpr = cert.fingerprint();
    if args.revocation {
        io.out.write_all(&keyring.revocation(&fpr)?)?;
        io.out.flush()?;
        return Ok(());
    }
    let armored = match (args.secret, &args.passphrase_file, args.unprotected) {
        (false, _, _) => keyring.export(&fpr, false)?,
        (true, Some(file), _) => {
            let raw = (io.input)(file)
                .with_context(|| format!("cannot read the passphrase file {}", file.display()))?;
            let password = super::first_line(&raw)
                .with_context(|| format!("the passphrase file {} is empty", file.display()))?;
            keyring.export_protected(&fpr, &password)?
        }
        (true, None, true) => {
            writeln!(
                io.err,
                "sealpost: warning: the secret key of {} is exported unencrypted; anyone who \
                 reads the output can sign and decrypt as its owner",
                fpr.to_hex()
            )?;
            keyring.export(&fpr, true)?
        }
        // clap already refuses --secret without either (a usage error, exit 2).
        (true, None, false) => anyhow::bail!(
            "--secret needs --passphrase-file FILE (the export is encrypted with that \
             passphrase) or --unprotected (exported in the clear)"
        ),
    };
    io.out.write_all(&armored)?;
    io.out.flush()?;
    Ok(())
}
