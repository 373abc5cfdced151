//! `sealpost keys …`: the admin's view of the keyring.

mod backup;
pub mod discover;
mod expires;
mod export;
mod extend;
mod generate;
mod import;
pub mod list;
mod remove;
mod review;
mod show;
mod wkd_export;

use std::io::{Read, Write};
use std::path::Path;

use anyhow::Context;
use clap::Subcommand;
use sealpost_keyring::openpgp::crypto::Password;
use sealpost_keyring::{Keyring, OpenOptions};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    Import(import::Args),
    List(list::Args),
    Show(show::Args),
    Export(export::Args),
    Remove(remove::Args),
    Generate(generate::Args),
    Extend(extend::Args),
    Backup(backup::BackupArgs),
    Restore(backup::RestoreArgs),
    /// Decide on keys found by discovery that differ from an address's current key: list,
    /// accept or reject
    ///
    /// Discovery (WKD, keyservers, Autocrypt) never replaces a key silently: a different
    /// key for an address that has one waits here, and mail keeps using the current key
    /// until an admin decides. Check a new fingerprint with its owner before accepting it.
    #[command(subcommand)]
    Review(review::Command),
    WkdExport(wkd_export::Args),
    Discover(discover::Args),
}

/// Where a command writes: the terminal when run directly, buffers when run for an
/// admin-socket client inside `serve`.
pub struct Io<'a> {
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
    /// Reads an input file named on the command line (`-` is standard input). Through the
    /// admin socket, the client has read them already, with its own permissions and cwd.
    pub input: &'a mut dyn FnMut(&Path) -> std::io::Result<Vec<u8>>,
}

/// The direct `input` for `Io`: the file system, and `-` for standard input.
pub fn read_local(path: &Path) -> std::io::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin().lock().read_to_end(&mut buf)?;
        Ok(buf)
    } else {
        std::fs::read(path)
    }
}

/// The files a `keys` command reads, so that an admin-socket client can send them along.
pub fn inputs(cmd: &KeysCommand) -> Vec<std::path::PathBuf> {
    match cmd {
        KeysCommand::Import(args) => args
            .files
            .iter()
            .chain(args.passphrase_file.iter())
            .cloned()
            .collect(),
        KeysCommand::Export(args) => args.passphrase_file.iter().cloned().collect(),
        KeysCommand::Backup(args) => args
            .passphrase_file
            .iter()
            .chain(args.recovery_key.iter())
            .cloned()
            .collect(),
        KeysCommand::Restore(args) => std::iter::once(&args.file)
            .chain(args.passphrase_file.iter())
            .chain(args.recovery_key.iter())
            .cloned()
            .collect(),
        _ => Vec::new(),
    }
}

/// Why `cmd` cannot go through `serve`'s admin socket, if it cannot: a backup to a file
/// would be written by the server, on its own file system.
pub fn refuse_forward(cmd: &KeysCommand) -> Option<String> {
    match cmd {
        KeysCommand::Backup(args) if args.writes_file() => Some(
            "`sealpost serve` has the keyring open: a backup goes through its admin socket \
             to standard output; run `sealpost keys backup - … > FILE`"
                .to_string(),
        ),
        KeysCommand::WkdExport(args) if args.dir.is_relative() => Some(format!(
            "`sealpost serve` has the keyring open, and through its admin socket the server \
             writes the directory: give an absolute path instead of {}",
            args.dir.display()
        )),
        _ => None,
    }
}

/// [`execute`] for a command run directly by a person: `keys import` may then ask for
/// the passphrase of a protected secret key on the terminal.
pub fn execute_local(cmd: KeysCommand, keyring: &Keyring, io: &mut Io<'_>) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Import(args) => import::run(args, keyring, io, true),
        other => execute(other, keyring, io),
    }
}

/// Runs one `keys` command against an open keyring.
pub fn execute(cmd: KeysCommand, keyring: &Keyring, io: &mut Io<'_>) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Import(args) => import::run(args, keyring, io, false),
        KeysCommand::List(args) => list::run(args, keyring, io),
        KeysCommand::Show(args) => show::run(args, keyring, io),
        KeysCommand::Export(args) => export::run(args, keyring, io),
        KeysCommand::Remove(args) => remove::run(args, keyring, io),
        KeysCommand::Generate(args) => generate::run(args, keyring, io),
        KeysCommand::Review(cmd) => review::run(cmd, keyring, io),
        KeysCommand::Extend(args) => extend::run(args, keyring, io),
        KeysCommand::Backup(args) => backup::backup(args, keyring, io),
        KeysCommand::Restore(args) => backup::restore(args, keyring, io),
        KeysCommand::WkdExport(args) => wkd_export::run(args, keyring, io),
        // Needs the [discovery] settings: `keys_command` and the admin socket's handler
        // run it with theirs.
        KeysCommand::Discover(_) => anyhow::bail!("`keys discover` needs the discovery settings"),
    }
}

/// Opens the keyring in `data_dir`, or the PostgreSQL keyring at `url`, unlocked with the
/// passphrase from `SEALPOST_PASSPHRASE_FILE` when that is set.
pub fn open(data_dir: &Path, url: Option<&str>) -> anyhow::Result<Keyring> {
    let passphrase = passphrase_from_env()?;
    let opts = OpenOptions {
        passphrase,
        ..OpenOptions::default()
    };
    match url {
        Some(url) => Keyring::open_url(url, opts).with_context(|| {
            format!(
                "cannot open the keyring at {}",
                sealpost_keyring::store::postgres::hide_password(url)
            )
        }),
        None => Keyring::open(data_dir, opts)
            .with_context(|| format!("cannot open the keyring in {}", data_dir.display())),
    }
}

/// Reads the keyring passphrase from the file named by `SEALPOST_PASSPHRASE_FILE`.
/// One trailing newline is dropped, as editors add one.
pub fn passphrase_from_env() -> anyhow::Result<Option<Password>> {
    let Some(path) = std::env::var_os("SEALPOST_PASSPHRASE_FILE").filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    read_passphrase_file(Path::new(&path), "SEALPOST_PASSPHRASE_FILE").map(Some)
}

/// Reads a passphrase from `path` (`what` names where the path came from, for messages).
/// One trailing newline is dropped, as editors add one; an empty passphrase is refused.
pub fn read_passphrase_file(path: &Path, what: &str) -> anyhow::Result<Password> {
    let raw = zeroize::Zeroizing::new(std::fs::read(path).with_context(|| {
        format!(
            "cannot read the passphrase file {} ({what})",
            path.display()
        )
    })?);
    let mut text = raw.as_slice();
    if let Some(rest) = text.strip_suffix(b"\n") {
        text = rest.strip_suffix(b"\r").unwrap_or(rest);
    }
    if text.is_empty() {
        anyhow::bail!("the passphrase file {} ({what}) is empty", path.display());
    }
    Ok(Password::from(text))
}

/// Printed whenever a command stores or reveals secret key material without a keyring
/// passphrase, so that an admin is never unaware that the keys rest unencrypted.
pub fn warn_if_unprotected(keyring: &Keyring, io: &mut Io<'_>) -> std::io::Result<()> {
    if !keyring.has_passphrase() {
        writeln!(
            io.err,
            "sealpost: warning: no keyring passphrase is configured (SEALPOST_PASSPHRASE_FILE); \
             secret keys are stored unencrypted, protected only by file mode 0600"
        )?;
    }
    Ok(())
}

/// Exactly one certificate for `query`, or an error that tells the user what to type instead.
pub fn find_one(
    keyring: &Keyring,
    query: &str,
) -> anyhow::Result<std::sync::Arc<sealpost_keyring::openpgp::Cert>> {
    let mut found = keyring.find(query)?;
    match found.len() {
        0 => anyhow::bail!("no key matches {query:?}"),
        1 => Ok(found.remove(0)),
        n => {
            let fprs: Vec<String> = found.iter().map(|c| c.fingerprint().to_hex()).collect();
            anyhow::bail!(
                "{n} keys match {query:?} ({}); give a fingerprint instead",
                fprs.join(", ")
            )
        }
    }
}

/// A passphrase given in a file: its first line, without its line end; `None` when empty.
pub(crate) fn first_line(raw: &[u8]) -> Option<Password> {
    let line = raw.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    (!line.is_empty()).then(|| Password::from(line))
}
