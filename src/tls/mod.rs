//! TLS (rustls, ring provider). For the listeners: certificates from files, or a
//! self-signed one for loopback, made once and kept in the data directory. For the
//! gateway's connections to a next hop: [`ClientTls`], the one client configuration.

pub mod client;
mod selfsigned;

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;

pub use client::ClientTls;
pub use selfsigned::{self_signed, self_signed_path, SelfSigned};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Pem { path: String, reason: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot make a self-signed certificate: {0}")]
    Generate(String),
}

/// Installs the ring provider as the process default, once. rustls panics when both ring
/// and aws-lc-rs are compiled in and none is chosen.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A TLS acceptor from PEM files: a certificate chain and its private key.
///
/// # Errors
/// Unreadable files, no certificate or key in them, or a key that does not match.
pub fn from_files(cert: &Path, key: &Path) -> Result<TlsAcceptor, Error> {
    let chain = read_chain(cert)?;
    let key = read_key(key)?;
    acceptor(chain, key)
}

pub(crate) fn acceptor(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<TlsAcceptor, Error> {
    install_provider();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Read {
        path: path.display().to_string(),
        source,
    })
}

pub(crate) fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem = read(path)?;
    let chain: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Pem {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(Error::Pem {
            path: path.display().to_string(),
            reason: "no CERTIFICATE block found".into(),
        });
    }
    Ok(chain)
}

pub(crate) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let pem = read(path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| Error::Pem {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?
        .ok_or_else(|| Error::Pem {
            path: path.display().to_string(),
            reason: "no PRIVATE KEY block found".into(),
        })
}

/// The SHA-256 fingerprint of a certificate, as mail clients show it: `AB:CD:…`.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    Sha256::digest(cert.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}
