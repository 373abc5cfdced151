//! A self-signed certificate for `localhost` and `127.0.0.1`, made on first start and kept,
//! so that a mail client trusts it once.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use super::{acceptor, fingerprint, read_chain, read_key, Error};

/// Loads the self-signed certificate from `data_dir/tls/`, or makes it. Returns the
/// acceptor and the certificate's SHA-256 fingerprint.
///
/// # Errors
/// When the files cannot be written or read back.
pub fn self_signed(data_dir: &Path) -> Result<(TlsAcceptor, String), Error> {
    let dir = data_dir.join("tls");
    let cert_path = dir.join("selfsigned.crt");
    let key_path = dir.join("selfsigned.key");
    if !cert_path.exists() || !key_path.exists() {
        let io = |source: std::io::Error| Error::Read {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        let names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        let made = rcgen::generate_simple_self_signed(names)
            .map_err(|e| Error::Generate(e.to_string()))?;
        // The key is written first and 0600 before any byte of it lands.
        let tmp = key_path.with_extension("tmp");
        std::fs::write(&tmp, b"").map_err(io)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        std::fs::write(&tmp, made.signing_key.serialize_pem()).map_err(io)?;
        std::fs::rename(&tmp, &key_path).map_err(io)?;
        std::fs::write(&cert_path, made.cert.pem()).map_err(io)?;
    }
    let chain: Vec<CertificateDer<'static>> = read_chain(&cert_path)?;
    let key: PrivateKeyDer<'static> = read_key(&key_path)?;
    let fpr = chain.first().map(fingerprint).unwrap_or_default();
    Ok((acceptor(chain, key)?, fpr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (_, first) = self_signed(dir.path()).unwrap();
        let (_, second) = self_signed(dir.path()).unwrap();
        assert_eq!(first, second);
        assert_eq!(first.len(), 32 * 3 - 1);
        let mode = std::fs::metadata(dir.path().join("tls/selfsigned.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
