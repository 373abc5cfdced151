//! Command-line parser and runner for `sealpost keys export`.

use std::path::PathBuf;

use anyhow::Context;
use sealpost_keyring::openpgp::crypto::Password;
use sealpost_keyring::Keyring;

use super::Io;

/// Write one certificate, armored, to standard output.
///
/// With `--secret`, the secret key is exported instead: encrypted with the passphrase in
/// `--passphrase-file` (there is no prompt; the file is required), or in the clear with
/// `--unprotected`, which prints a warning. `--secret` alone is refused.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("protection").args(["passphrase_file", "unprotected"])))]
#[command(after_help = "\
Examples:
  sealpost keys export alice@example.org > alice.asc
  sealpost keys export alice@example.org | gpg --import
  sealpost keys export --secret --passphrase-file pass.txt 0x1A2B3C4D5E6F7081 > alice-secret.asc
  sealpost keys export --secret --unprotected alice@example.org > alice-secret-clear.asc")]
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
}

pub fn run(args: Args, keyring: &Keyring, io: &mut Io<'_>) -> anyhow::Result<()> {
    let cert = super::find_one(keyring, &args.query)?;
    let fpr = cert.fingerprint();
    let armored = match (args.secret, &args.passphrase_file, args.unprotected) {
        (false, _, _) => keyring.export(&fpr, false)?,
        (true, Some(file), _) => {
            let raw = (io.input)(file)
                .with_context(|| format!("cannot read the passphrase file {}", file.display()))?;
            let password = first_line(&raw)
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

/// The passphrase: the file's first line, without its line end; `None` when empty.
fn first_line(raw: &[u8]) -> Option<Password> {
    let line = raw.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    (!line.is_empty()).then(|| Password::from(line))
}
