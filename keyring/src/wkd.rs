//! Publishing the local users' keys as a Web Key Directory (the advanced and the direct
//! layout, with their `policy` files), for any web server to serve.
//!
//! The layout and the z-base-32 names come from sequoia-net's `wkd::insert`, not from
//! code of our own. Each published certificate carries only the user IDs of the domain
//! it is published for, so that a lookup for one address does not reveal a user's others.

use std::path::{Path, PathBuf};

use openpgp::Cert;
use sequoia_net::wkd::{self, Variant};
use sequoia_openpgp as openpgp;

use crate::lookup;
use crate::store::Tree;
use crate::{Error, Keyring};

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WkdExport {
    /// Each published address with the fingerprint of its key.
    pub published: Vec<(String, String)>,
    /// The domains with nothing to publish.
    pub empty: Vec<String>,
    /// Certificates left out, with why (a binding the standard policy rejects, say).
    pub skipped: Vec<(String, String)>,
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::Io(std::io::Error::new(
        e.kind(),
        format!("{}: {e}", path.display()),
    ))
}

impl Keyring {
    /// Writes `DIR/.well-known/openpgpkey/` for `domains`: the certificates of the local
    /// users (those with a secret key here) that have a user ID in each domain, expired
    /// and revoked ones included, so that their state reaches those who refresh them.
    /// An earlier export there is replaced whole; the rest of `DIR/.well-known` is left
    /// alone.
    ///
    /// # Errors
    /// `Error::Io` when the directory cannot be written; `Error::Crypto` from the layout.
    pub fn wkd_export(&self, dir: &Path, domains: &[String]) -> Result<WkdExport, Error> {
        let mut locals: Vec<Cert> = Vec::new();
        for (key, _) in self.inner.store.scan(Tree::Secrets, b"")? {
            if let Some(cert) = self.get(&lookup::fpr_from(&key)?)? {
                locals.push(Cert::clone(&cert));
            }
        }
        let staging = dir.join(".sealpost-wkd-new");
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|e| io_error(&staging, e))?;
        }
        std::fs::create_dir_all(&staging).map_err(|e| io_error(&staging, e))?;
        let mut out = WkdExport::default();
        for domain in domains {
            let domain = domain.trim().to_ascii_lowercase();
            let mut any = false;
            for cert in &locals {
                let in_domain = cert.clone().retain_userids(|ua| {
                    lookup::userid_email(ua.userid())
                        .and_then(|e| e.rsplit_once('@').map(|(_, d)| d == domain))
                        .unwrap_or(false)
                });
                let addresses = lookup::emails(&in_domain);
                if addresses.is_empty() {
                    continue;
                }
                let inserted = [Variant::Advanced, Variant::Direct]
                    .into_iter()
                    .try_for_each(|variant| wkd::insert(&staging, &domain, variant, &in_domain));
                if let Err(e) = inserted {
                    tracing::warn!(fpr = %cert.fingerprint(), %domain, error = %e, "not published in the WKD");
                    out.skipped
                        .push((cert.fingerprint().to_hex(), e.to_string()));
                    continue;
                }
                for a in addresses {
                    out.published.push((a, cert.fingerprint().to_hex()));
                }
                any = true;
            }
            if !any {
                out.empty.push(domain);
            }
        }
        replace_openpgpkey(dir, &staging)?;
        out.published.sort();
        Ok(out)
    }
}

/// Moves `staging/.well-known/openpgpkey` to `dir/.well-known/openpgpkey`, replacing
/// what was there, and removes `staging`.
fn replace_openpgpkey(dir: &Path, staging: &Path) -> Result<(), Error> {
    let well_known = dir.join(".well-known");
    std::fs::create_dir_all(&well_known).map_err(|e| io_error(&well_known, e))?;
    let target = well_known.join("openpgpkey");
    let new: PathBuf = staging.join(".well-known").join("openpgpkey");
    let old = dir.join(".sealpost-wkd-old");
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| io_error(&old, e))?;
    }
    if target.exists() {
        std::fs::rename(&target, &old).map_err(|e| io_error(&target, e))?;
    }
    if new.exists() {
        std::fs::rename(&new, &target).map_err(|e| io_error(&new, e))?;
    } else {
        // Nothing to publish: an empty directory says so to a web server.
        std::fs::create_dir_all(&target).map_err(|e| io_error(&target, e))?;
    }
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| io_error(&old, e))?;
    }
    std::fs::remove_dir_all(staging).map_err(|e| io_error(staging, e))?;
    Ok(())
}
