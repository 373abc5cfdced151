//! Command-line parser and runner for `sealpost keys discover`.

use std::time::SystemTime;

use sealpost_keyring::openpgp::Fingerprint;
use sealpost_keyring::Keyring;

use super::Io;
use crate::discovery::finder::{offer_words, Finder};

/// Look an address up as `serve` would for a recipient without a usable key, and show
/// what each source returned and what the keyring would do with it
///
/// Asks the address's Web Key Directory (the advanced method, then the direct one), its
/// DANE OPENPGPKEY record when `dane = true` (used only with a secure DNSSEC proof) and
/// each keyserver in `[discovery] keyservers`, with the `[discovery]` settings of the
/// configuration (`ca_file`, `resolve`, `dane_resolver`, `dane_trust_anchor`). Without
/// --store nothing changes: each key found
/// is listed with its user IDs for the address and what storing it would do. With
/// --store it is offered to the keyring as at send time: stored, merged into the stored
/// copy, or queued for `keys review` when the address already has a different key (a
/// pinned key is never replaced).
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  sealpost keys discover bob@example.net
  sealpost keys discover bob@example.net --store")]
pub struct Args {
    /// The address to look up
    pub email: String,
    /// Offer what was found to the keyring
    #[arg(long)]
    pub store: bool,
}

pub fn run(args: Args, finder: &Finder, keyring: &Keyring, io: &mut Io<'_>) -> anyhow::Result<()> {
    let Some(email) = sealpost_keyring::normalize_email(&args.email) else {
        anyhow::bail!("{:?} is not an email address", args.email);
    };
    if !finder.looks_up() {
        anyhow::bail!(
            "no source is enabled: [discovery] has wkd = false, dane = false and no \
             keyservers (Autocrypt keys come only with received mail)"
        );
    }
    let outcomes = match tokio::runtime::Handle::try_current() {
        Ok(h) => h.block_on(finder.ask(&email)),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(finder.ask(&email)),
    };
    let now = SystemTime::now();
    let current: Vec<Fingerprint> = keyring
        .find(&email)
        .unwrap_or_default()
        .iter()
        .map(|c| c.fingerprint())
        .collect();
    writeln!(io.out, "{email}")?;
    writeln!(
        io.out,
        "  in the keyring: {}",
        if current.is_empty() {
            "no key".to_string()
        } else {
            current
                .iter()
                .map(Fingerprint::to_hex)
                .collect::<Vec<_>>()
                .join(", ")
        }
    )?;
    if let Ok(Some(miss)) = keyring.discovery_miss(&email) {
        if miss.holds_at(now) {
            writeln!(
                io.out,
                "  last lookup by serve found nothing ({}); serve asks again after {}",
                miss.reason,
                crate::discovery::finder::when(miss.until_time())
            )?;
        }
    }
    for o in &outcomes {
        writeln!(io.out, "\n{}:", o.source)?;
        for a in &o.asked {
            writeln!(io.out, "  asked {a}")?;
        }
        match &o.certs {
            Err(reason) => writeln!(io.out, "  nothing: {reason}")?,
            Ok(certs) => {
                for c in certs {
                    let fpr = c.fingerprint();
                    writeln!(io.out, "  key {}", fpr.to_hex())?;
                    for uid in c.userids() {
                        let mine = sealpost_keyring::userid_email(uid.userid()).as_deref()
                            == Some(email.to_lowercase().as_str());
                        let text = String::from_utf8_lossy(uid.userid().value()).into_owned();
                        writeln!(
                            io.out,
                            "    user ID {} {}",
                            crate::relay::Escaped(&text),
                            if mine {
                                "(kept)"
                            } else {
                                "(dropped: another address)"
                            }
                        )?;
                    }
                    if !args.store {
                        let would = if current.contains(&fpr) {
                            "merged into the stored copy (revocations and new subkeys arrive)"
                        } else if current.is_empty() {
                            "stored, unless it cannot be used (expired, revoked, no encryption subkey)"
                        } else {
                            "queued for review: the address already has a key"
                        };
                        writeln!(io.out, "    would be {would}")?;
                    }
                }
            }
        }
    }
    if args.store {
        writeln!(io.out)?;
        for k in finder.keep(&email, &outcomes, now) {
            writeln!(
                io.out,
                "{} from {}: {}",
                k.fingerprint.to_hex(),
                k.source,
                offer_words(&k.result)
            )?;
        }
    } else if outcomes.iter().any(|o| o.certs.is_ok()) {
        writeln!(
            io.out,
            "\nnothing stored; run again with --store to store it"
        )?;
    }
    Ok(())
}
