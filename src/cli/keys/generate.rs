//! Command-line parser and runner for `sealpost keys generate`.

use std::time::SystemTime;

use clap::ValueEnum;

use super::expires::Expires;
use super::Io;
use sealpost_keyring::{Cipher, GenerateRequest, Keyring, Profile};

/// Generate a new key pair for a local user and store it in the keyring.
///
/// The default is a v4 (RFC 4880) Cv25519 key with separate signing and encryption
/// subkeys, which gpg 2.2, sq and Thunderbird can all use. `--profile rfc9580` makes a
/// v6 key, which older OpenPGP software cannot read.
///
/// The key expires after two years unless `--expires` says otherwise (as gpg and sq do):
/// a key whose secret part is lost then stops being used by itself. Renew it in time with
/// `keys extend`. A revocation certificate is made with the key and kept in the keyring;
/// `keys export --revocation` writes it. An address that has a secret key already gets
/// no second one unless `--force` is given: senders could not tell which to use.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  sealpost keys generate alice@example.org --name 'Alice Example'
  sealpost keys generate ops@example.org --cipher rsa4k --expires 1y
  sealpost keys generate alice@example.org --profile rfc9580 --force")]
pub struct Args {
    /// The email address of the new key's user ID
    email: String,
    /// A display name for the user ID, as in "Alice Example <alice@example.org>"
    #[arg(long)]
    name: Option<String>,
    /// Key format: rfc4880 (v4, widely readable) or rfc9580 (v6)
    #[arg(long, value_enum, default_value_t = ProfileArg::Rfc4880)]
    profile: ProfileArg,
    /// Algorithm
    #[arg(long, value_enum, default_value_t = CipherArg::Cv25519)]
    cipher: CipherArg,
    /// When the key expires: 2y, 18m, 6w, 90d, a date (YYYY-MM-DD), or never
    #[arg(long, value_name = "WHEN", default_value = "2y")]
    expires: Expires,
    /// Make the key even though the address has a secret key already
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ProfileArg {
    Rfc4880,
    Rfc9580,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CipherArg {
    Cv25519,
    Rsa3k,
    Rsa4k,
}

pub fn run(args: Args, keyring: &Keyring, io: &mut Io<'_>) -> anyhow::Result<()> {
    let Some(email) = sealpost_keyring::normalize_email(&args.email) else {
        anyhow::bail!("{:?} is not an email address", args.email);
    };
    let req = GenerateRequest {
        email,
        name: args.name,
        profile: match args.profile {
            ProfileArg::Rfc4880 => Profile::Rfc4880,
            ProfileArg::Rfc9580 => Profile::Rfc9580,
        },
        cipher: match args.cipher {
            CipherArg::Cv25519 => Cipher::Cv25519,
            CipherArg::Rsa3k => Cipher::Rsa3k,
            CipherArg::Rsa4k => Cipher::Rsa4k,
        },
        validity: args.expires.period(SystemTime::now())?,
        force: args.force,
    };
    let cert = keyring.generate(&req)?;
    let info = keyring.info(&cert);
    writeln!(io.out, "generated {}", info.fingerprint)?;
    for uid in &info.user_ids {
        writeln!(io.out, "          {uid}")?;
    }
    writeln!(io.out, "          {}", info.validity)?;
    writeln!(
        io.out,
        "          revocation certificate kept: sealpost keys export --revocation {}",
        info.fingerprint
    )?;
    super::warn_if_unprotected(keyring, io)?;
    Ok(())
}
