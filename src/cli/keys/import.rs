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
///
/// A secret key protected by a passphrase (as gpg exports one) is unlocked with the
/// passphrase in `--passphrase-file`, or one asked for on the terminal when the command
/// runs on one, and then sealed like every secret key in the keyring (under
/// SEALPOST_PASSPHRASE_FILE's passphrase): the gateway uses it unattended.
///
/// A revocation certificate that gpg keeps in `openpgp-revocs.d/` has a ':' before its
/// armor line, so that it is not imported by accident; it is refused until the ':' is
/// removed, since importing it revokes the key for good.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  sealpost keys import bob.asc carol.pgp
  gpg --export-secret-keys --armor alice@example.org | sealpost keys import -
  gpg --export-secret-keys --armor alice@example.org > alice.asc
  sealpost keys import alice.asc --passphrase-file alice-gpg-passphrase
  sealpost keys import alice-revocation.asc")]
pub struct Args {
    /// Files to read; `-` reads standard input
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// The passphrase of protected secret keys, on the first line of FILE
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

/// Imports; with `prompt`, a person runs the command and may be asked on the terminal
/// for the passphrase of a protected secret key.
pub fn run(args: Args, keyring: &Keyring, io: &mut Io<'_>, prompt: bool) -> anyhow::Result<()> {
    let mut inputs = Vec::with_capacity(args.files.len());
    for file in &args.files {
        let name = file.display().to_string();
        inputs.push((io.input)(file).with_context(|| format!("{name}: cannot read"))?);
    }
    let mut passphrases = Vec::new();
    if let Some(file) = &args.passphrase_file {
        let raw = zeroize::Zeroizing::new(
            (io.input)(file)
                .with_context(|| format!("cannot read the passphrase file {}", file.display()))?,
        );
        passphrases.push(
            super::first_line(&raw)
                .with_context(|| format!("the passphrase file {} is empty", file.display()))?,
        );
    }
    let slices: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
    let mut result = keyring.import_all_with(&slices, &passphrases);
    if let Err((_, sealpost_keyring::Error::SecretLocked { fingerprint })) = &result {
        if prompt && passphrases.is_empty() {
            if let Some(pass) = ask(&format!("Passphrase of the secret key {fingerprint}: "))? {
                result = keyring.import_all_with(&slices, &[pass]);
            }
        }
    }
    let outcomes = result.map_err(|(i, e)| {
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

/// Asks for a passphrase on the controlling terminal with echo off; `None` when standard
/// input is not a terminal (a pipe, a service), so that nothing ever waits for one.
fn ask(question: &str) -> anyhow::Result<Option<sealpost_keyring::openpgp::crypto::Password>> {
    use rustix::termios;
    use std::io::{BufRead, Write};
    if !termios::isatty(std::io::stdin()) {
        return Ok(None);
    }
    let Ok(tty) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
    else {
        return Ok(None);
    };
    let saved = termios::tcgetattr(&tty).context("cannot read the terminal's settings")?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(termios::LocalModes::ECHO);
    termios::tcsetattr(&tty, termios::OptionalActions::Now, &quiet)
        .context("cannot turn the terminal's echo off")?;
    let mut line = zeroize::Zeroizing::new(String::new());
    let read = (&tty)
        .write_all(question.as_bytes())
        .and_then(|()| std::io::BufReader::new(&tty).read_line(&mut line));
    // Echo comes back whatever happened.
    let restored = termios::tcsetattr(&tty, termios::OptionalActions::Now, &saved);
    let _ = (&tty).write_all(b"\n");
    read.context("cannot read the passphrase")?;
    restored.context("cannot restore the terminal's settings")?;
    Ok(super::first_line(line.as_bytes()))
}
