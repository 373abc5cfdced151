//! Command-line parser and runner for `sealpost hash-password`.

use std::io::{BufRead, Write};

use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
use argon2::Argon2;

/// Print the argon2id hash of a password, for a `[[user]]` of a listener with
/// `auth = "local"`.
///
/// The password is read from the first line of standard input, so that it never appears
/// in the shell history or the process list.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Example:
  printf '%s\\n' 'a long passphrase' | sealpost hash-password
  # then, in the config file:
  # [[user]]
  # name = \"alice\"
  # password_hash = \"$argon2id$v=19$m=19456,t=2,p=1$…\"")]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        anyhow::bail!("no password on standard input");
    }
    let salt = SaltString::generate(&mut OsRng);
    let hash = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{hash}")?;
    Ok(())
}
