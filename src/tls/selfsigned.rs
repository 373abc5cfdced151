//! A self-signed certificate for the gateway's host name, `localhost`, `127.0.0.1` and
//! `::1`, made on first start and kept, so that a mail client trusts it once.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use super::{acceptor, fingerprint, read_chain, read_key, Error};

/// How long a new certificate is valid: 825 days, the longest that Apple's systems
/// accept for any TLS server certificate (one a user trusted by hand included), so that
/// Apple Mail takes it too.
const VALID_DAYS: i64 = 825;

/// The self-signed certificate in the data directory: where it is (or will be made).
pub fn self_signed_path(data_dir: &Path) -> PathBuf {
    data_dir.join("tls").join("selfsigned.crt")
}

/// The loaded certificate: what a listener needs, and what a person compares.
pub struct SelfSigned {
    pub acceptor: TlsAcceptor,
    /// SHA-256, as mail clients show it: `AB:CD:…`.
    pub fingerprint: String,
    pub path: PathBuf,
}

/// Loads the self-signed certificate from `data_dir/tls/`, or makes it for `hostname`
/// (its common name, and a name beside `localhost`).
///
/// # Errors
/// When the files cannot be written or read back.
pub fn self_signed(data_dir: &Path, hostname: &str) -> Result<SelfSigned, Error> {
    let dir = data_dir.join("tls");
    let cert_path = self_signed_path(data_dir);
    let key_path = dir.join("selfsigned.key");
    if !cert_path.exists() || !key_path.exists() {
        let io = |source: std::io::Error| Error::Read {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        let (cert_pem, key_pem) = generate(hostname, chrono::Utc::now())?;
        // The key is written first and 0600 before any byte of it lands.
        let tmp = key_path.with_extension("tmp");
        std::fs::write(&tmp, b"").map_err(io)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        std::fs::write(&tmp, key_pem).map_err(io)?;
        std::fs::rename(&tmp, &key_path).map_err(io)?;
        std::fs::write(&cert_path, cert_pem).map_err(io)?;
    }
    let chain: Vec<CertificateDer<'static>> = read_chain(&cert_path)?;
    let key: PrivateKeyDer<'static> = read_key(&key_path)?;
    let fingerprint = chain.first().map(fingerprint).unwrap_or_default();
    Ok(SelfSigned {
        acceptor: acceptor(chain, key)?,
        fingerprint,
        path: cert_path,
    })
}

/// A certificate and key (PEM) named for `hostname` and loopback, valid from the day
/// before `now` (a client whose clock is a little behind still takes it) for
/// [`VALID_DAYS`].
fn generate(hostname: &str, now: chrono::DateTime<chrono::Utc>) -> Result<(String, String), Error> {
    use chrono::Datelike;
    let generate = |e: rcgen::Error| Error::Generate(e.to_string());
    let mut names = Vec::new();
    // An IP address or an odd kernel host name is no DNS name; loopback still is named.
    if !hostname.is_empty()
        && hostname != "localhost"
        && hostname.parse::<std::net::IpAddr>().is_err()
        && rustls::pki_types::DnsName::try_from(hostname).is_ok()
    {
        names.push(hostname.to_string());
    }
    names.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
    let mut params = rcgen::CertificateParams::new(names).map_err(generate)?;
    let cn = if hostname.is_empty() {
        "localhost"
    } else {
        hostname
    };
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let day = |d: chrono::DateTime<chrono::Utc>| {
        let month = u8::try_from(d.month()).unwrap_or(1);
        let day = u8::try_from(d.day()).unwrap_or(1);
        rcgen::date_time_ymd(d.year(), month, day)
    };
    params.not_before = day(now - chrono::Duration::days(1));
    params.not_after = day(now + chrono::Duration::days(VALID_DAYS));
    let key = rcgen::KeyPair::generate().map_err(generate)?;
    let cert = params.self_signed(&key).map_err(generate)?;
    Ok((cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = self_signed(dir.path(), "gateway.example.org").unwrap();
        let second = self_signed(dir.path(), "other.example.org").unwrap();
        assert_eq!(first.fingerprint, second.fingerprint);
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
        assert_eq!(first.path, dir.path().join("tls/selfsigned.crt"));
        let mode = std::fs::metadata(dir.path().join("tls/selfsigned.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn named_for_the_host_and_loopback_for_a_few_years() {
        use chrono::TimeZone;
        let now = chrono::Utc.with_ymd_and_hms(2026, 3, 10, 12, 0, 0).unwrap();
        let (pem, _) = generate("gateway.example.org", now).unwrap();
        let der = rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        // The DER holds the names as they are, and the dates as UTCTime (YYMMDDhhmmssZ).
        let has = |needle: &[u8]| der.windows(needle.len()).any(|w| w == needle);
        assert!(has(b"gateway.example.org"));
        assert!(has(b"localhost"));
        assert!(!has(b"rcgen"), "no rcgen placeholder name");
        assert!(has(b"260309000000Z"), "valid from the day before");
        assert!(has(b"280612000000Z"), "valid for 825 days");
        // A host name that is no DNS name still gets a certificate for loopback.
        assert!(generate("my host", now).is_ok());
    }
}
