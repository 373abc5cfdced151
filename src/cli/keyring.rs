//! `sealpost keyring passphrase set|change`: seal, or re-seal, every secret key and
//! spooled message under a new passphrase at once (for a keyring in PostgreSQL, every
//! secret key in the database, in one transaction); `sealpost keyring copy`: move a
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

/// Copies the keyring in a data directory into the PostgreSQL keyring at a URL, where
/// several gateways can share it: every certificate and secret key, and with them each
/// key's trust record (where it was found, how far it is trusted), the review queue, the
/// Autocrypt peer state and the kept revocation certificates. Secret keys are sealed
/// there under the keyring passphrase (SEALPOST_PASSPHRASE_FILE, which both must share).
/// Certificates are merged with those there (a second run reports them unchanged); the
/// records copied replace those of the same keys there.
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
///
/// With a PostgreSQL keyring (`[keyring] url`, SEALPOST_KEYRING_URL), they re-seal every
/// secret key in the database and replace its passphrase check in one transaction, with
/// the gateways running; each gateway then refuses work that needs a secret key (451,
/// /readyz failing) until it is restarted with the new passphrase. Each gateway's own
/// spool stays under the passphrase it has: change it there with the gateway stopped.
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
  sealpost keyring passphrase change --old-passphrase-file old.pass --new-passphrase-file new.pass

With a keyring in PostgreSQL ([keyring] url, SEALPOST_KEYRING_URL), the first run re-seals
every secret key in the database in one transaction, with the gateways running; gateways
still on the old passphrase then answer 451 to mail that needs a secret key and fail
/readyz. Stop each gateway in turn, run the same command on its data directory (its own
spool moves), and start it with SEALPOST_PASSPHRASE_FILE naming the new file.")]
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
    if let Some(url) = url {
        return shared_passphrase(&cmd, url, data_dir);
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
    // Everything a backup holds: certificates, secret keys (in memory only, on their way
    // to being sealed under the passphrase in the database), trust records, the review
    // queue, Autocrypt state and revocation certificates.
    let copied = from
        .copy_into(&to)
        .with_context(|| format!("cannot copy {} to {shown}", args.from.display()))?;
    let count = |s: sealpost_keyring::ImportStatus| {
        copied.outcomes.iter().filter(|o| o.status == s).count()
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "copied {} into {shown}: {} new, {} updated, {} unchanged; {} with a secret key; \
         {} trust, review, Autocrypt and revocation record(s)",
        args.from.display(),
        count(sealpost_keyring::ImportStatus::New),
        count(sealpost_keyring::ImportStatus::Updated),
        count(sealpost_keyring::ImportStatus::Unchanged),
        copied.counts.secret_keys,
        copied.counts.records,
    )?;
    Ok(())
}

/// `keyring passphrase set|change` with a PostgreSQL keyring at `url`: every secret key in
/// the database is sealed again under the new passphrase and the passphrase check
/// replaced, in one transaction, while the gateways may keep running; then this gateway's
/// own vault and spool in `data_dir`, if it has them and is stopped. Run once per
/// gateway, each stopped in turn: the database moves on the first run, and a run that
/// finds it moved already does only the data directory.
fn shared_passphrase(cmd: &PassphraseCommand, url: &str, data_dir: &Path) -> anyhow::Result<()> {
    use sealpost_keyring::openpgp::crypto::Password;
    use sealpost_keyring::Error as KeyringError;
    let shown = sealpost_keyring::store::postgres::hide_password(url);
    let open = |passphrase: Option<Password>| {
        Keyring::open_url(
            url,
            OpenOptions {
                passphrase,
                ..OpenOptions::default()
            },
        )
    };
    let context = || format!("cannot open the keyring at {shown}");
    let (old, new) = match cmd {
        PassphraseCommand::Set {
            new_passphrase_file,
        } => (
            None,
            read_passphrase_file(new_passphrase_file, "--new-passphrase-file")?,
        ),
        PassphraseCommand::Change {
            old_passphrase_file,
            new_passphrase_file,
        } => (
            Some(read_passphrase_file(
                old_passphrase_file,
                "--old-passphrase-file",
            )?),
            read_passphrase_file(new_passphrase_file, "--new-passphrase-file")?,
        ),
    };
    // Opened without a passphrase first: opening with one sets it where there is none.
    let stored = open(None)
        .with_context(context)?
        .shared_passphrase_stored()?;
    let mut out = std::io::stdout().lock();
    // A run for an earlier gateway may have moved the database already.
    let moved_already = match (&old, stored) {
        (Some(_), false) => anyhow::bail!(
            "the keyring at {shown} has no passphrase to change; \
             `sealpost keyring passphrase set` sets one"
        ),
        (None, false) => false,
        (_, true) => match open(Some(new.clone())) {
            Ok(_) => true,
            Err(KeyringError::BadPassphrase) if old.is_none() => anyhow::bail!(
                "the keyring at {shown} has a passphrase already; \
                 `sealpost keyring passphrase change` replaces it"
            ),
            Err(KeyringError::BadPassphrase) => false,
            Err(e) => return Err(anyhow::Error::new(e).context(context())),
        },
    };
    if moved_already {
        writeln!(
            out,
            "the keyring at {shown} is under the new passphrase already"
        )?;
    } else {
        let keyring = open(old.clone()).with_context(context)?;
        let sealed = keyring
            .change_shared_passphrase(&new)
            .with_context(|| format!("nothing was changed in {shown}"))?;
        writeln!(
            out,
            "sealed {sealed} secret key(s) in {shown} under the new passphrase, in one transaction"
        )?;
    }
    match reseal_spool(data_dir, old.as_ref(), &new)? {
        Spool::Absent => {}
        Spool::Done => writeln!(
            out,
            "this gateway's vault and spool in {} are under the new passphrase already",
            data_dir.display()
        )?,
        Spool::Resealed(n) => writeln!(
            out,
            "sealed {n} spooled cop{} in {} under the new passphrase",
            if n == 1 { "y" } else { "ies" },
            data_dir.display()
        )?,
        Spool::Running => writeln!(
            out,
            "the gateway on {} is running: its spool stays under the old passphrase; \
             stop it and run this command again there",
            data_dir.display()
        )?,
    }
    writeln!(
        out,
        "gateways still running with the old passphrase refuse mail that needs a secret key \
         (451) and fail /readyz: stop each in turn, run this command on its data directory, \
         and start it with SEALPOST_PASSPHRASE_FILE naming the new passphrase file"
    )?;
    Ok(())
}

/// What became of a gateway's own vault and spool.
enum Spool {
    /// No vault in the data directory (a machine that runs no gateway).
    Absent,
    /// Under the new passphrase already.
    Done,
    /// Sealed again: so many spooled copies.
    Resealed(usize),
    /// The gateway holds them open.
    Running,
}

/// Seals the vault in `data_dir` (the keys of the spool's copies) under `new`, from `old`.
fn reseal_spool(
    data_dir: &Path,
    old: Option<&sealpost_keyring::openpgp::crypto::Password>,
    new: &sealpost_keyring::openpgp::crypto::Password,
) -> anyhow::Result<Spool> {
    use sealpost_keyring::Error as KeyringError;
    let path = data_dir.join("vault");
    if vault::is_sealed(&path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .is_none()
    {
        return Ok(Spool::Absent);
    }
    let opened = |p: Option<&sealpost_keyring::openpgp::crypto::Password>| {
        sealpost_keyring::Vault::open(&path, p).map_err(KeyringError::from)
    };
    match opened(Some(new)) {
        Ok(_) => return Ok(Spool::Done),
        Err(KeyringError::Locked { .. }) => return Ok(Spool::Running),
        Err(KeyringError::BadPassphrase | KeyringError::NotSealed { .. }) => {}
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("cannot open {}", path.display())))
        }
    }
    let vault = match opened(old) {
        Err(KeyringError::Locked { .. }) => return Ok(Spool::Running),
        other => other.with_context(|| format!("cannot open {}", path.display()))?,
    };
    // Opening the spool moves entries written before the vault into it, so that they move
    // to the new passphrase too.
    let spool = crate::relay::Spool::open_with(data_dir, vault.clone(), old)
        .context("cannot open the spool")?;
    let unmoved = spool.unmoved()?;
    if unmoved > 0 {
        anyhow::bail!(
            "{unmoved} spooled copies in {} were written before the vault and cannot be \
             opened; the spool was not changed",
            data_dir.display()
        );
    }
    let done = vault
        .change_passphrase(Some(new))
        .with_context(|| format!("cannot rewrite {}", path.display()))?;
    drop(spool);
    Ok(Spool::Resealed(done.spool_entries))
}
