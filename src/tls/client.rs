//! TLS for the gateway's own connections to a next hop (the upstream, the mailbox
//! server): one rustls client configuration, made once when `serve` starts, for every hop
//! that uses TLS. Its trust anchors are the hop's `ca_file` when one is given, which then
//! replaces the system roots (an internal CA is the only anchor the admin meant to trust
//! for that hop, not one more beside every public CA), and the system roots otherwise.
//! The server's certificate is verified against the host name or IP address the hop was
//! configured with.
//!
//! A certificate in `ca_file` is also accepted when the server presents exactly that
//! certificate (a pinned certificate): a self-signed server certificate made with
//! `CA:TRUE`, as `openssl req -x509` makes by default, cannot be checked as issued by
//! itself (webpki refuses a CA certificate as a server's own), yet the admin who put it
//! in `ca_file` meant to trust exactly it. Like Postfix's `fingerprint` security level,
//! a pinned certificate is trusted whatever names and dates it carries; the handshake
//! must still be signed with its key.
//!
//! A failed handshake is reported in words (which certificate, which name, which date),
//! never as rustls's debug text.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::{read_chain, Error};

/// The client side of TLS to one next hop (cheap to clone).
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    /// Named in the reasons a handshake failed.
    ca_file: Option<PathBuf>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Trusts the certificates in `ca_file` (PEM) and nothing else, or the system's
    /// roots when there is no `ca_file`. Each certificate in `ca_file` is a CA whose
    /// certificates are trusted, and is itself trusted when a server presents exactly it.
    ///
    /// # Errors
    /// An unreadable `ca_file`, or one without a usable certificate.
    pub fn new(ca_file: Option<&Path>) -> Result<ClientTls, Error> {
        ClientTls::build(ca_file, ca_file.is_none())
    }

    /// The system's roots, and the certificates in `ca_file` besides them: for lookups on
    /// the open internet (key discovery) where an extra CA serves a test or a private
    /// network without taking the public CAs away.
    ///
    /// # Errors
    /// As [`ClientTls::new`].
    pub fn with_extra(ca_file: Option<&Path>) -> Result<ClientTls, Error> {
        ClientTls::build(ca_file, true)
    }

    fn build(ca_file: Option<&Path>, system: bool) -> Result<ClientTls, Error> {
        let mut roots = RootCertStore::empty();
        let mut pinned = Vec::new();
        if let Some(path) = ca_file {
            for cert in read_chain(path)? {
                roots.add(cert.clone()).map_err(|e| Error::Pem {
                    path: path.display().to_string(),
                    reason: format!("not a usable certificate: {e}"),
                })?;
                pinned.push(cert);
            }
        }
        if system {
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
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let algorithms = provider.signature_verification_algorithms;
        let webpki = if roots.is_empty() {
            None
        } else {
            Some(
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| Error::Pem {
                        path: ca_file.map(|p| p.display().to_string()).unwrap_or_default(),
                        reason: e.to_string(),
                    })?,
            )
        };
        let verifier = Verifier {
            webpki,
            pinned,
            algorithms,
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(ClientTls {
            config: Arc::new(config),
            ca_file: ca_file.map(Path::to_path_buf),
        })
    }

    /// The TLS handshake on `stream`, the server verified as `host` (a DNS name, or an IP
    /// address matched against the certificate's IP addresses).
    ///
    /// # Errors
    /// A host that cannot be verified (not a DNS name or an IP address), or a failed
    /// handshake: an untrusted or expired certificate, one for another name, or a lost
    /// connection. The error text says which, in words.
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
            .map_err(|e| {
                let text = explain(&e, host, self.ca_file.as_deref());
                io::Error::new(e.kind(), text)
            })
    }
}

/// webpki's verification, and before it the certificates pinned in `ca_file`.
#[derive(Debug)]
struct Verifier {
    /// `None` when there is no trust anchor at all (no system roots found).
    webpki: Option<Arc<WebPkiServerVerifier>>,
    /// The certificates of `ca_file`, each trusted when presented exactly.
    pinned: Vec<CertificateDer<'static>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            // The handshake signature is still checked against this certificate's key
            // (verify_tls1x_signature below), so only its holder gets this far.
            return Ok(ServerCertVerified::assertion());
        }
        match &self.webpki {
            Some(v) => {
                v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            None => Err(CertificateError::UnknownIssuer.into()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Why a handshake with `host` failed, for a person: what was wrong with the certificate
/// and what to do about it, or what the server did.
fn explain(err: &io::Error, host: &str, ca_file: Option<&Path>) -> String {
    let Some(tls) = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return match err.kind() {
            io::ErrorKind::UnexpectedEof => format!(
                "{host} closed the connection during the TLS handshake (it may not accept \
                 TLS on this port, or refused sealpost's TLS versions)"
            ),
            _ => err.to_string(),
        };
    };
    let anchors = match ca_file {
        Some(path) => format!("a CA in ca_file {}", path.display()),
        None => "a CA the system trusts (no ca_file is set)".to_string(),
    };
    match tls {
        rustls::Error::InvalidCertificate(cert) => {
            match cert {
                CertificateError::UnknownIssuer => match ca_file {
                    Some(path) => format!(
                        "the certificate {host} presented is not signed by a CA in ca_file {}, \
                     nor is it a certificate in that file",
                        path.display()
                    ),
                    None => format!(
                        "the certificate {host} presented is not signed by a CA the system \
                     trusts; for an internal CA or a self-signed certificate, put it in ca_file"
                    ),
                },
                CertificateError::NotValidForNameContext { presented, .. } => {
                    let names: Vec<String> = presented.iter().map(|n| general_name(n)).collect();
                    if names.is_empty() {
                        format!("the certificate names no host (no subjectAltName), not {host}")
                    } else {
                        format!("the certificate is for {}, not {host}", names.join(", "))
                    }
                }
                CertificateError::NotValidForName => {
                    format!("the certificate is for another name than {host}")
                }
                CertificateError::ExpiredContext { not_after, .. } => {
                    format!("the certificate of {host} expired on {}", date(*not_after))
                }
                CertificateError::Expired => format!("the certificate of {host} has expired"),
                CertificateError::NotValidYetContext { not_before, .. } => format!(
                "the certificate of {host} is not valid before {} (is this machine's clock right?)",
                date(*not_before)
            ),
                CertificateError::NotValidYet => {
                    format!("the certificate of {host} is not valid yet (is this machine's clock right?)")
                }
                CertificateError::Revoked => format!("the certificate of {host} has been revoked"),
                CertificateError::BadSignature => format!(
                    "the certificate of {host} has a signature that does not verify with {anchors}"
                ),
                CertificateError::InvalidPurpose
                | CertificateError::InvalidPurposeContext { .. } => {
                    format!("the certificate of {host} is not for a TLS server (its extended key usage)")
                }
                CertificateError::BadEncoding => {
                    format!("the certificate of {host} cannot be parsed")
                }
                CertificateError::Other(other) => {
                    // webpki's own errors; the one an admin meets is a CA certificate
                    // presented as the server's own (a self-signed `CA:TRUE` certificate).
                    let text = other.to_string();
                    if text.contains("CaUsedAsEndEntity") {
                        format!(
                            "{host} presented a CA certificate (CA:TRUE) as its own; to trust \
                         exactly this certificate, put it in ca_file"
                        )
                    } else {
                        format!("the certificate of {host} is not acceptable ({text})")
                    }
                }
                other => format!("the certificate of {host} is not acceptable ({other})"),
            }
        }
        rustls::Error::AlertReceived(alert) => format!(
            "{host} ended the TLS handshake ({}); it may require TLS versions or client \
             certificates that sealpost does not offer",
            format!("{alert:?}").to_lowercase()
        ),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => format!(
            "{host} does not speak TLS on this port (plain SMTP? then use tls = \"starttls\" \
             rather than \"tls\")"
        ),
        rustls::Error::PeerIncompatible(_) => format!(
            "{host} and sealpost have no TLS version or cipher suite in common (sealpost \
             speaks TLS 1.2 and 1.3)"
        ),
        rustls::Error::NoCertificatesPresented => {
            format!("{host} presented no certificate")
        }
        other => format!("TLS with {host} failed: {other}"),
    }
}

/// A subjectAltName as webpki reports it (`DnsName("a.example")`, `IpAddress(192.0.2.7)`),
/// as the name alone.
fn general_name(presented: &str) -> String {
    let inner = presented
        .strip_prefix("DnsName(")
        .or_else(|| presented.strip_prefix("IpAddress("))
        .and_then(|rest| rest.strip_suffix(')'));
    match inner {
        Some(name) => name.trim_matches('"').to_string(),
        None => presented.to_string(),
    }
}

/// A certificate's date, as an admin reads it: `2024-05-01 12:00 UTC`.
fn date(t: UnixTime) -> String {
    i64::try_from(t.as_secs())
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map_or_else(
            || format!("{} seconds after 1970", t.as_secs()),
            |d| d.format("%Y-%m-%d %H:%M UTC").to_string(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    static CAS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    use std::sync::atomic::Ordering::SeqCst;

    /// A CA, and a server certificate it issued for `names`, valid until `not_after`
    /// (rcgen's default when `None`).
    fn issued_until(
        names: &[&str],
        not_after: Option<(i32, u8, u8)>,
    ) -> (String, tokio_rustls::TlsAcceptor) {
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
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        if let Some((y, m, d)) = not_after {
            params.not_before = rcgen::date_time_ymd(y - 1, m, d);
            params.not_after = rcgen::date_time_ymd(y, m, d);
        }
        let leaf = params.signed_by(&key, &ca).unwrap();
        let der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let acceptor = crate::tls::acceptor(vec![leaf.der().clone()], der).unwrap();
        (ca.pem(), acceptor)
    }

    fn issued(names: &[&str]) -> (String, tokio_rustls::TlsAcceptor) {
        issued_until(names, None)
    }

    /// A self-signed certificate for `names` with `CA:TRUE`, as `openssl req -x509`
    /// makes: its PEM, and a server presenting it.
    fn self_signed_ca(names: &[&str]) -> (String, tokio_rustls::TlsAcceptor) {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        let der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let acceptor = crate::tls::acceptor(vec![cert.der().clone()], der).unwrap();
        (cert.pem(), acceptor)
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
            Err(e) => Some(e.to_string().replace(&ca_file.display().to_string(), "CA")),
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
        assert_eq!(
            wrong_name.as_deref(),
            Some("the certificate is for mail.example.org, 192.0.2.7, not other.example.org")
        );
        let (other_ca, _) = issued(&["mail.example.org"]);
        let untrusted = handshake(&other_ca, acceptor, "mail.example.org").await;
        assert_eq!(
            untrusted.as_deref(),
            Some(
                "the certificate mail.example.org presented is not signed by a CA in \
                 ca_file CA, nor is it a certificate in that file"
            )
        );
    }

    #[tokio::test]
    async fn an_expired_certificate_is_refused_with_its_date() {
        crate::tls::install_provider();
        let (ca, acceptor) = issued_until(&["mail.example.org"], Some((2020, 1, 2)));
        let expired = handshake(&ca, acceptor, "mail.example.org").await;
        assert_eq!(
            expired.as_deref(),
            Some("the certificate of mail.example.org expired on 2020-01-02 00:00 UTC")
        );
    }

    #[tokio::test]
    async fn a_self_signed_ca_certificate_in_ca_file_is_pinned() {
        crate::tls::install_provider();
        let (pem, acceptor) = self_signed_ca(&["localhost"]);
        // Exactly that certificate: trusted, whatever name the hop was given.
        assert_eq!(handshake(&pem, acceptor.clone(), "localhost").await, None);
        assert_eq!(handshake(&pem, acceptor.clone(), "127.0.0.1").await, None);
        // Another one in ca_file: the server's CA certificate is no server certificate.
        let (other, _) = self_signed_ca(&["localhost"]);
        let refused = handshake(&other, acceptor, "localhost").await;
        assert_eq!(
            refused.as_deref(),
            Some(
                "localhost presented a CA certificate (CA:TRUE) as its own; to trust \
                 exactly this certificate, put it in ca_file"
            )
        );
    }

    /// A server that presents `cert` but signs the handshake with another key.
    #[derive(Debug)]
    struct Impostor(std::sync::Arc<rustls::sign::CertifiedKey>);

    impl rustls::server::ResolvesServerCert for Impostor {
        fn resolve(
            &self,
            _: rustls::server::ClientHello<'_>,
        ) -> Option<std::sync::Arc<rustls::sign::CertifiedKey>> {
            Some(self.0.clone())
        }
    }

    #[tokio::test]
    async fn a_pinned_certificate_needs_its_key() {
        crate::tls::install_provider();
        let (pem, _) = self_signed_ca(&["localhost"]);
        let pinned = rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let other_key = rcgen::KeyPair::generate().unwrap();
        let der = rustls::pki_types::PrivateKeyDer::try_from(other_key.serialize_der()).unwrap();
        let signer = rustls::crypto::ring::sign::any_supported_type(&der).unwrap();
        let certified = rustls::sign::CertifiedKey::new(vec![pinned], signer);
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(std::sync::Arc::new(Impostor(std::sync::Arc::new(
                certified,
            ))));
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let refused = handshake(&pem, acceptor, "localhost").await;
        assert!(
            refused.is_some(),
            "a copy of the pinned certificate was trusted"
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
