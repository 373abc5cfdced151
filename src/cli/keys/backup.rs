//! Command-line parsers and runners for `sealpost keys backup` and `keys restore`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use sealpost_keyring::openpgp::parse::Parse;
use sealpost_keyring::openpgp::Cert;
use sealpost_keyring::{BackupCounts, BackupTo, Keyring, RestoreWith};

use super::Io;

/// Write the whole keyring to one encrypted file: every certificate, every secret key,
/// the trust records of discovered keys, the review queue, Autocrypt state and stored
/// revocation certificates.
///
/// The file is an OpenPGP message (armored) encrypted to the passphrase in
/// `--passphrase-file` or to the certificate in `--recovery-key` (keep that key's secret
/// part offline). Restore it with `keys restore` on any machine: the restored keyring
/// decrypts what this one did. FILE is created with mode 0600 and never overwritten;
/// `-` writes to standard output (needed while `serve` runs, through its admin socket).
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("to").args(["passphrase_file", "recovery_key"]).required(true)))]
#[command(after_help = "\
Examples:
  sealpost keys backup /root/sealpost-keys.pgp --passphrase-file /root/backup-passphrase
  sealpost keys backup - --recovery-key recovery-cert.asc > sealpost-keys.pgp")]
pub struct BackupArgs {
    /// Where to write the backup; `-` for standard output
    file: PathBuf,
    /// Encrypt to the passphrase in FILE (its first line)
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Encrypt to this certificate (a recovery key's public part)
    #[arg(long, value_name = "CERT")]
    pub recovery_key: Option<PathBuf>,
}

/// Restore a backup made by `keys backup` into this keyring.
///
/// Certificates and secret keys are merged with those here, and secret keys are sealed
/// under this keyring's protection (SEALPOST_PASSPHRASE_FILE); the trust records, the
/// review queue and Autocrypt state of the backup replace those here. Nothing changes
/// when the backup cannot be opened or is damaged.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("with").args(["passphrase_file", "recovery_key"]).required(true)))]
#[command(after_help = "\
Examples:
  sealpost keys restore /root/sealpost-keys.pgp --passphrase-file /root/backup-passphrase
  sealpost keys restore sealpost-keys.pgp --recovery-key recovery-secret.asc")]
pub struct RestoreArgs {
    /// The backup; `-` reads standard input
    pub file: PathBuf,
    /// The passphrase the backup was made with, in FILE (its first line)
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// The recovery key's secret key (unprotected), to which the backup was encrypted
    #[arg(long, value_name = "KEY")]
    pub recovery_key: Option<PathBuf>,
}

impl BackupArgs {
    /// Whether the backup goes to a file, which only a process with the keyring open
    /// itself may write (the admin socket's server would write its own file system).
    pub fn writes_file(&self) -> bool {
        self.file.as_os_str() != "-"
    }
}

pub fn backup(args: BackupArgs, keyring: &Keyring, io: &mut Io<'_>) -> anyhow::Result<()> {
    let (data, counts) = match (&args.passphrase_file, &args.recovery_key) {
        (Some(file), _) => {
            let pass = passphrase(io, file)?;
            keyring.backup(&BackupTo::Passphrase(&pass))?
        }
        (None, Some(file)) => {
            let cert = read_cert(io, file)?;
            keyring.backup(&BackupTo::RecoveryKey(&cert))?
        }
        (None, None) => anyhow::bail!("give --passphrase-file FILE or --recovery-key CERT"),
    };
    if args.writes_file() {
        write_new(&args.file, &data)?;
        writeln!(
            io.out,
            "wrote {}: {}",
            args.file.display(),
            describe(counts)
        )?;
    } else {
        io.out.write_all(&data)?;
        io.out.flush()?;
        writeln!(io.err, "sealpost: backup of {}", describe(counts))?;
    }
    Ok(())
}

pub fn restore(args: RestoreArgs, keyring: &Keyring, io: &mut Io<'_>) -> anyhow::Result<()> {
    let data =
        (io.input)(&args.file).with_context(|| format!("{}: cannot read", args.file.display()))?;
    let counts = match (&args.passphrase_file, &args.recovery_key) {
        (Some(file), _) => {
            let pass = passphrase(io, file)?;
            keyring.restore(&data, &RestoreWith::Passphrase(&pass))
        }
        (None, Some(file)) => {
            let key = read_cert(io, file)?;
            keyring.restore(&data, &RestoreWith::RecoveryKey(&key))
        }
        (None, None) => anyhow::bail!("give --passphrase-file FILE or --recovery-key KEY"),
    }
    .with_context(|| format!("{}: nothing restored", args.file.display()))?;
    writeln!(
        io.out,
        "restored {}: {}",
        args.file.display(),
        describe(counts)
    )?;
    if counts.secret_keys > 0 {
        super::warn_if_unprotected(keyring, io)?;
    }
    Ok(())
}

fn describe(c: BackupCounts) -> String {
    format!(
        "{} certificates, {} secret keys, {} other records",
        c.certificates, c.secret_keys, c.records
    )
}

fn passphrase(
    io: &mut Io<'_>,
    file: &Path,
) -> anyhow::Result<sealpost_keyring::openpgp::crypto::Password> {
    let raw = zeroize::Zeroizing::new(
        (io.input)(file)
            .with_context(|| format!("cannot read the passphrase file {}", file.display()))?,
    );
    super::first_line(&raw)
        .with_context(|| format!("the passphrase file {} is empty", file.display()))
}

fn read_cert(io: &mut Io<'_>, file: &Path) -> anyhow::Result<Cert> {
    let raw = zeroize::Zeroizing::new(
        (io.input)(file).with_context(|| format!("{}: cannot read", file.display()))?,
    );
    Cert::from_bytes(raw.as_slice())
        .with_context(|| format!("{}: not an OpenPGP key", file.display()))
}

/// Creates `path` with mode 0600, refusing to replace a file already there.
fn write_new(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| {
            format!(
                "cannot create {} (an existing file is never replaced)",
                path.display()
            )
        })?;
    f.write_all(data)?;
    f.sync_all()?;
    Ok(())
}
