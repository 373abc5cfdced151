//! `sealpost keyring passphrase set|change`: seal, or re-seal, every secret key and
//! spooled message under a new passphrase at once.

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

pub fn run(cmd: KeyringCommand, data_dir: &Path) -> anyhow::Result<()> {
    let KeyringCommand::Passphrase(cmd) = cmd;
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
