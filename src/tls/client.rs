//! TLS for the gateway's own connections to a next hop (the upstream, the mailbox
//! server): one rustls client configuration, made once when `serve` starts, for every hop
//! that uses TLS. Its trust anchors are the hop's `ca_file` when one is given, which then
//! replaces the system roots (an internal CA is the only anchor the admin meant to trust
//! for that hop, not one more beside every public CA), and the system roots otherwise.
//! The server's certificate is verified against the host name or IP address the hop was
//! configured with.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::RootCertStore;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::{read_chain, Error};

/// The client side of TLS to one next hop (cheap to clone).
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls").finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Trusts the CA certificates in `ca_file` (PEM) and nothing else, or the system's
    /// roots when there is no `ca_file`.
    ///
    /// # Errors
    /// An unreadable `ca_file`, or one without a usable CA certificate.
    pub fn new(ca_file: Option<&Path>) -> Result<ClientTls, Error> {
        let mut roots = RootCertStore::empty();
        match ca_file {
            Some(path) => {
                for cert in read_chain(path)? {
                    roots.add(cert).map_err(|e| Error::Pem {
                        path: path.display().to_string(),
                        reason: format!("not a usable CA certificate: {e}"),
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for e in &found.errors {
                    tracing::warn!(error = %e, "cannot read some of the system's CA certificates");
                }
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    // Not fatal: a hop that is never reached needs no roots, and the
                    // failure of one that is is logged with every attempt.
                    tracing::warn!("no system CA certificates found: TLS to a next hop without ca_file will fail verification");
                }
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(ClientTls {
            config: Arc::new(config),
        })
    }

    /// The TLS handshake on `stream`, the server verified as `host` (a DNS name, or an IP
    /// address matched against the certificate's IP addresses).
    ///
    /// # Errors
    /// A host that cannot be verified (not a DNS name or an IP address), or a failed
    /// handshake: an untrusted or expired certificate, one for another name, or a lost
    /// connection. The error text says which.
    pub async fn connect<S>(&self, host: &str, stream: S) -> io::Result<TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let name = ServerName::try_from(host.to_string()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{host:?} is not a host name or an IP address a certificate can be checked against"),
            )
        })?;
        TlsConnector::from(Arc::clone(&self.config))
            .connect(name, stream)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    static CAS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    use std::sync::atomic::Ordering::SeqCst;

    /// A CA, and a server certificate it issued for `names`.
    fn issued(names: &[&str]) -> (String, tokio_rustls::TlsAcceptor) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        // Each CA a name of its own: with one name, the other CA's certificate would be
        // found as the issuer and fail on its signature instead.
        ca_params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("Test CA {}", CAS.fetch_add(1, SeqCst)),
        );
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let leaf = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let acceptor = crate::tls::acceptor(vec![leaf.der().clone()], der).unwrap();
        (ca.pem(), acceptor)
    }

    /// A handshake from a client trusting `ca_pem` to a server using `acceptor`, the
    /// server checked as `host`; the client's error text, if any.
    async fn handshake(
        ca_pem: &str,
        acceptor: tokio_rustls::TlsAcceptor,
        host: &str,
    ) -> Option<String> {
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_pem).unwrap();
        let client = ClientTls::new(Some(&ca_file)).unwrap();
        let (a, b) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move {
            if let Ok(mut s) = acceptor.accept(b).await {
                let _ = s.write_all(b"hello").await;
                let _ = s.shutdown().await;
            }
        });
        let result = match client.connect(host, a).await {
            Ok(mut s) => {
                let mut got = Vec::new();
                s.read_to_end(&mut got).await.unwrap();
                assert_eq!(got, b"hello");
                None
            }
            Err(e) => Some(e.to_string()),
        };
        let _ = server.await;
        result
    }

    #[tokio::test]
    async fn the_certificate_must_come_from_ca_file_and_name_the_host() {
        crate::tls::install_provider();
        let (ca, acceptor) = issued(&["mail.example.org", "192.0.2.7"]);
        assert_eq!(
            handshake(&ca, acceptor.clone(), "mail.example.org").await,
            None
        );
        assert_eq!(handshake(&ca, acceptor.clone(), "192.0.2.7").await, None);
        let wrong_name = handshake(&ca, acceptor.clone(), "other.example.org").await;
        assert!(
            wrong_name
                .as_deref()
                .is_some_and(|e| e.contains("not valid for name")),
            "{wrong_name:?}"
        );
        let (other_ca, _) = issued(&["mail.example.org"]);
        let untrusted = handshake(&other_ca, acceptor, "mail.example.org").await;
        assert!(
            untrusted
                .as_deref()
                .is_some_and(|e| e.contains("UnknownIssuer")),
            "{untrusted:?}"
        );
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        let err = ClientTls::new(Some(&empty)).unwrap_err().to_string();
        assert!(err.contains("no CERTIFICATE block"), "{err}");
        let err = ClientTls::new(Some(&dir.path().join("missing.pem")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read"), "{err}");
    }
}
