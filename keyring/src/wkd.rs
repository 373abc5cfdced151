//! Publishing the local users' keys as a Web Key Directory (the advanced and the direct
//! layout, with their `policy` files), for any web server to serve.
//!
//! The layout and the z-base-32 names come from sequoia-net's `wkd::insert`, not from
//! code of our own. Each published certificate carries only the user IDs of the domain
//! it is published for, so that a lookup for one address does not reveal a user's others.

use std::path::{Path, PathBuf};

use openpgp::serialize::SerializeInto;
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
    /// Writes `DIR/.well-known/openpgpkey/` for `domains`: what [`Keyring::wkd_certs`]
    /// selects for each. An earlier export there is replaced whole; the rest of `DIR/.well-known` is left
    /// alone.
    ///
    /// # Errors
    /// `Error::Io` when the directory cannot be written; `Error::Crypto` from the layout.
    pub fn wkd_export(&self, dir: &Path, domains: &[String]) -> Result<WkdExport, Error> {
        let staging = dir.join(".sealpost-wkd-new");
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|e| io_error(&staging, e))?;
        }
        std::fs::create_dir_all(&staging).map_err(|e| io_error(&staging, e))?;
        let mut out = WkdExport::default();
        for domain in domains {
            let domain = domain.trim().to_ascii_lowercase();
            let mut any = false;
            let published = self.wkd_certs(&domain)?;
            out.skipped.extend(published.skipped);
            for cert in published.certs {
                let inserted = [Variant::Advanced, Variant::Direct]
                    .into_iter()
                    .try_for_each(|variant| wkd::insert(&staging, &domain, variant, &cert));
                if let Err(e) = inserted {
                    tracing::warn!(fpr = %cert.fingerprint(), %domain, error = %e, "not published in the WKD");
                    out.skipped
                        .push((cert.fingerprint().to_hex(), e.to_string()));
                    continue;
                }
                for a in lookup::emails(&cert) {
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
        out.skipped.sort();
        out.skipped.dedup();
        Ok(out)
    }

    /// What a Web Key Directory of `domain` publishes: the certificates of the local
    /// users (those with a secret key here) that have a user ID in `domain`, each with
    /// only those user IDs, expired and revoked ones included, so that their state
    /// reaches those who refresh them. `wkd_export` writes these and the WKD listener
    /// serves them, so that both publish the same.
    ///
    /// # Errors
    /// Store errors.
    pub fn wkd_certs(&self, domain: &str) -> Result<WkdCerts, Error> {
        let domain = domain.trim().to_ascii_lowercase();
        let mut out = WkdCerts::default();
        for (key, _) in self.inner.store.scan(Tree::Secrets, b"")? {
            let Some(cert) = self.get(&lookup::fpr_from(&key)?)? else {
                continue;
            };
            let in_domain = Cert::clone(&cert)
                .retain_userids(|ua| {
                    lookup::userid_email(ua.userid())
                        .and_then(|e| e.rsplit_once('@').map(|(_, d)| d == domain))
                        .unwrap_or(false)
                })
                .retain_user_attributes(|_| false);
            if in_domain.userids().next().is_none() {
                continue;
            }
            // A certificate without a binding the policy accepts cannot be published:
            // a WKD client would drop it, and sequoia-net's layout refuses it.
            if let Err(e) = in_domain.with_policy(&self.inner.policy, None) {
                out.skipped
                    .push((in_domain.fingerprint().to_hex(), e.to_string()));
                continue;
            }
            out.certs.push(in_domain);
        }
        Ok(out)
    }

    /// The answer of the WKD of `domain` to a request for the z-base-32 `hash` of a local
    /// part (and, when the request names it with `l=`, that local part): the certificates
    /// published under that name, binary and concatenated, as the WKD draft wants them;
    /// `None` when none is. The names come from sequoia-net, as `wkd_export`'s do.
    ///
    /// # Errors
    /// Store errors; `Error::Crypto` when a certificate cannot be serialized.
    pub fn wkd_lookup(
        &self,
        domain: &str,
        hash: &str,
        local: Option<&str>,
    ) -> Result<Option<Vec<u8>>, Error> {
        let mut out = Vec::new();
        for cert in self.wkd_certs(domain)?.certs {
            let named = lookup::emails(&cert).iter().any(|address| {
                let local_ok = local.is_none_or(|l| {
                    address
                        .rsplit_once('@')
                        .is_some_and(|(a, _)| a.eq_ignore_ascii_case(l))
                });
                local_ok && wkd_name(address).as_deref() == Some(hash)
            });
            if named {
                out.extend(cert.to_vec().map_err(|e| Error::Crypto(e.to_string()))?);
            }
        }
        Ok((!out.is_empty()).then_some(out))
    }
}

/// The file name of an address in a Web Key Directory (z-base-32 of the SHA-1 of its
/// lower-cased local part), as sequoia-net computes it.
pub fn wkd_name(address: &str) -> Option<String> {
    let path = wkd::Url::from(address)
        .and_then(|u| u.to_file_path(Variant::Direct))
        .ok()?;
    path.file_name()?.to_str().map(str::to_string)
}

/// The certificates a Web Key Directory of one domain publishes.
#[derive(Debug, Clone, Default)]
pub struct WkdCerts {
    pub certs: Vec<Cert>,
    /// Certificates left out, with why (a binding the standard policy rejects, say).
    pub skipped: Vec<(String, String)>,
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
