//! Publishing the local users' keys, so that outsiders find them without an admin:
//! a Web Key Directory served over HTTPS ([`wkd`], `[wkd] listen`). `sealpost keys
//! wkd-export` writes the same keys as files for any web server instead.

pub mod wkd;

use std::net::SocketAddr;
use std::path::PathBuf;

/// `[wkd]`: the WKD listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub listen: SocketAddr,
    /// The certificate chain (PEM) the listener presents, for `openpgpkey.<domain>` and
    /// `<domain>`, and its private key.
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    /// The domains served; empty: the local domains (`[inbound] local_domains`, else
    /// those of the keyring's secret keys, read on each request).
    pub domains: Vec<String>,
}
