//! `sealpost keyring passphrase set|change`: seal, or re-seal, every secret key and
//! spooled message under a new passphrase at once; `sealpost keyring copy`: move a
//! keyring from a data directory into a PostgreSQL database several gateways share.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use sealpost_keyring::{vault, Keyring, OpenOptions};

use super::keys::read_passphrase_file;

#[derive(Debug, clap::Subcommand)]
pub enum KeyringCommand {
    /// Seal the keyring and spool with a passphrase, or replace it
    #[command(subcommand)]
    Passphrase(PassphraseCommand),
    /// Copy a keyring from a data directory into a PostgreSQL database
    Copy(CopyArgs),
}

/// Copies every certificate and secret key of the keyring in a data directory into the
/// PostgreSQL keyring at a URL, where several gateways can share it. Secret keys are
/// sealed there under the keyring passphrase (SEALPOST_PASSPHRASE_FILE, which both must
/// share). Running it again copies only what changed.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Example:
  SEALPOST_PASSPHRASE_FILE=/etc/sealpost/passphrase \\
    sealpost keyring copy --from /var/lib/sealpost --to postgres://sealpost@db.example.org/sealpost")]
pub struct CopyArgs {
    /// The data directory whose keyring is copied (stop `sealpost serve` on it first)
    #[arg(long, value_name = "DIR")]
    from: PathBuf,
    /// The PostgreSQL keyring: postgres://USER[:PASSWORD]@HOST:PORT/DATABASE
    #[arg(long, value_name = "URL")]
    to: String,
}

/// The keyring passphrase protects the vault (`DATA_DIR/vault`), which holds the key of
/// every secret key and every spooled message. These commands rewrite that one file, so
/// that everything moves to the new passphrase or nothing does. Stop `sealpost serve`
/// first; afterwards, start it with SEALPOST_PASSPHRASE_FILE naming the new file.
#[derive(Debug, clap::Subcommand)]
pub enum PassphraseCommand {
    /// Seal a keyring that has no passphrase yet
    #[command(after_help = "\
Example:
  umask 077; printf '%s' 'a long passphrase' > /etc/sealpost/passphrase
  sealpost keyring passphrase set --new-passphrase-file /etc/sealpost/passphrase
  SEALPOST_PASSPHRASE_FILE=/etc/sealpost/passphrase sealpost serve")]
    Set {
        /// The file holding the new passphrase (one trailing newline is ignored)
        #[arg(long, value_name = "FILE")]
        new_passphrase_file: PathBuf,
    },
    /// Replace the passphrase of a sealed keyring
    #[command(after_help = "\
Example:
  sealpost keyring passphrase change --old-passphrase-file old.pass --new-passphrase-file new.pass")]
    Change {
        /// The file holding the passphrase the keyring is sealed with now
        #[arg(
            long,
            value_name = "FILE",
            env = "SEALPOST_PASSPHRASE_FILE",
            hide_env_values = true
        )]
        old_passphrase_file: PathBuf,
        /// The file holding the new passphrase
        #[arg(long, value_name = "FILE")]
        new_passphrase_file: PathBuf,
    },
}

pub fn run(cmd: KeyringCommand, data_dir: &Path, url: Option<&str>) -> anyhow::Result<()> {
    let cmd = match cmd {
        KeyringCommand::Copy(args) => return copy(&args),
        KeyringCommand::Passphrase(cmd) => cmd,
    };
    if url.is_some() {
        anyhow::bail!(
            "`sealpost keyring passphrase` works on a keyring in the data directory; \
             a PostgreSQL keyring's passphrase cannot be changed by sealpost yet"
        );
    }
    let vault_path = data_dir.join("vault");
    let sealed = vault::is_sealed(&vault_path)
        .with_context(|| format!("cannot read {}", vault_path.display()))?
        .unwrap_or(false);
    let (old, new) = match &cmd {
        PassphraseCommand::Set {
            new_passphrase_file,
        } => {
            if sealed {
                anyhow::bail!(
                    "the keyring in {} is sealed with a passphrase already; \
                     `sealpost keyring passphrase change` replaces it",
                    data_dir.display()
                );
            }
            (
                None,
                read_passphrase_file(new_passphrase_file, "--new-passphrase-file")?,
            )
        }
        PassphraseCommand::Change {
            old_passphrase_file,
            new_passphrase_file,
        } => {
            if !sealed {
                anyhow::bail!(
                    "the keyring in {} has no passphrase to change; \
                     `sealpost keyring passphrase set` seals it",
                    data_dir.display()
                );
            }
            (
                Some(read_passphrase_file(
                    old_passphrase_file,
                    "--old-passphrase-file",
                )?),
                read_passphrase_file(new_passphrase_file, "--new-passphrase-file")?,
            )
        }
    };
    let in_use = |e: &sealpost_keyring::Error| matches!(e, sealpost_keyring::Error::Locked { .. });
    let keyring = match Keyring::open(
        data_dir,
        OpenOptions {
            passphrase: old.clone(),
            ..OpenOptions::default()
        },
    ) {
        Err(e) if in_use(&e) => anyhow::bail!(
            "the keyring in {} is in use: stop `sealpost serve` first, since the passphrase \
             cannot change under a running server",
            data_dir.display()
        ),
        other => {
            other.with_context(|| format!("cannot open the keyring in {}", data_dir.display()))?
        }
    };
    // Opening the spool moves entries written before the vault into it, so that they
    // move to the new passphrase too.
    let spool = crate::relay::Spool::open_with(data_dir, keyring.vault().clone(), old.as_ref())
        .context("cannot open the spool")?;
    let unmoved = spool.unmoved()?;
    if unmoved > 0 {
        anyhow::bail!(
            "{unmoved} spooled copies in {} were written before the vault and cannot be \
             opened; nothing was changed",
            data_dir.display()
        );
    }
    let done = keyring
        .vault()
        .change_passphrase(Some(&new))
        .with_context(|| format!("cannot rewrite {}", vault_path.display()))?;
    drop(spool);
    drop(keyring);
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "sealed {} secret key(s) and {} spooled cop{} under the new passphrase ({})",
        done.secret_keys,
        done.spool_entries,
        if done.spool_entries == 1 { "y" } else { "ies" },
        vault_path.display()
    )?;
    writeln!(
        out,
        "start `sealpost serve` with SEALPOST_PASSPHRASE_FILE naming the new passphrase file"
    )?;
    Ok(())
}

fn copy(args: &CopyArgs) -> anyhow::Result<()> {
    let passphrase = super::keys::passphrase_from_env()?;
    let shown = sealpost_keyring::store::postgres::hide_password(&args.to);
    let from = Keyring::open(
        &args.from,
        OpenOptions {
            passphrase: passphrase.clone(),
            ..OpenOptions::default()
        },
    )
    .with_context(|| format!("cannot open the keyring in {}", args.from.display()))?;
    let to = Keyring::open_url(
        &args.to,
        OpenOptions {
            passphrase,
            ..OpenOptions::default()
        },
    )
    .with_context(|| format!("cannot open the keyring at {shown}"))?;
    let (mut new, mut updated, mut unchanged, mut secrets) = (0, 0, 0, 0);
    for info in from.list()? {
        let fpr: sealpost_keyring::openpgp::Fingerprint =
            info.fingerprint.parse().with_context(|| {
                format!("the keyring lists {:?} as a fingerprint", info.fingerprint)
            })?;
        let secret = from.has_secret(&fpr)?;
        // The secret key leaves the source only in memory, on its way to being sealed
        // under the passphrase in the database.
        let bytes = zeroize::Zeroizing::new(from.export(&fpr, secret)?);
        let outcomes = to
            .import(&bytes)
            .with_context(|| format!("cannot copy {} to {shown}", info.fingerprint))?;
        for o in outcomes {
            match o.status {
                sealpost_keyring::ImportStatus::New => new += 1,
                sealpost_keyring::ImportStatus::Updated => updated += 1,
                sealpost_keyring::ImportStatus::Unchanged => unchanged += 1,
            }
        }
        secrets += usize::from(secret);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "copied {} into {shown}: {new} new, {updated} updated, {unchanged} unchanged; {secrets} with a secret key",
        args.from.display()
    )?;
    Ok(())
}
