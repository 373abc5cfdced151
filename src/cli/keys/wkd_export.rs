//! Command-line parser and runner for `sealpost keys wkd-export`.

use std::path::PathBuf;

use sealpost_keyring::Keyring;

use super::Io;

/// Publish the local users' keys as a Web Key Directory, for a web server to serve.
///
/// Writes `DIR/.well-known/openpgpkey/` in both layouts of the WKD draft: the advanced
/// one (`<domain>/hu/<hash>`, served at https://openpgpkey.<domain>/) and the direct one
/// (`hu/<hash>`, served at https://<domain>/), each with its `policy` file. The hash is
/// z-base-32 of SHA-1 of the lower-cased local part, as `gpg-wks-client --print-wkd-hash`
/// prints it. Only keys whose secret key is in the keyring are published, expired and
/// revoked ones included (so that their state reaches those who refresh them), each
/// with only its user IDs of that domain. An earlier export in DIR is replaced; the rest
/// of `DIR/.well-known` is left alone. Run it again after keys change.
///
/// While `serve` runs, the command goes through its admin socket and the server writes
/// DIR as its own user: give an absolute path it may write.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  sealpost keys wkd-export /var/www/openpgpkey
  sealpost keys wkd-export /srv/www --domain example.org --domain example.net
  /usr/lib/gnupg/gpg-wks-client --print-wkd-hash alice@example.org   # the file name")]
pub struct Args {
    /// The web root to write `.well-known/openpgpkey/` into (created if missing)
    pub dir: PathBuf,
    /// A domain to publish (repeat for more); default: the domains of the keyring's
    /// secret keys
    #[arg(long, value_name = "DOMAIN")]
    domain: Vec<String>,
}

pub fn run(args: Args, keyring: &Keyring, io: &mut Io<'_>) -> anyhow::Result<()> {
    let domains = if args.domain.is_empty() {
        keyring.secret_domains()?
    } else {
        args.domain
    };
    if domains.is_empty() {
        anyhow::bail!(
            "the keyring holds no secret key, so there is no local domain to publish; \
             name one with --domain"
        );
    }
    let done = keyring.wkd_export(&args.dir, &domains)?;
    for (address, fpr) in &done.published {
        writeln!(io.out, "published {address}  {fpr}")?;
    }
    for domain in &done.empty {
        writeln!(
            io.err,
            "sealpost: no local user's key has an address in {domain}"
        )?;
    }
    for (fpr, why) in &done.skipped {
        writeln!(io.err, "sealpost: {fpr} not published: {why}")?;
    }
    writeln!(
        io.out,
        "wrote {}",
        args.dir.join(".well-known").join("openpgpkey").display()
    )?;
    Ok(())
}
