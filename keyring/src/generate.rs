//! New key pairs for local users.

use std::time::Duration;

use openpgp::cert::{CertBuilder, CipherSuite};
use openpgp::packet::Signature;
use openpgp::types::KeyFlags;
use openpgp::Cert;
use sequoia_openpgp as openpgp;

use crate::Error;

/// The key format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Profile {
    /// v4 keys (RFC 4880): readable by gpg 2.2, sq 0.27, Thunderbird.
    #[default]
    Rfc4880,
    /// v6 keys (RFC 9580).
    Rfc9580,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Cipher {
    #[default]
    Cv25519,
    Rsa3k,
    Rsa4k,
}

#[derive(Debug, Clone, Default)]
pub struct GenerateRequest {
    pub email: String,
    pub name: Option<String>,
    pub profile: Profile,
    pub cipher: Cipher,
    /// How long the key is valid from its creation; `None` never expires.
    pub validity: Option<Duration>,
    /// Makes a key even when the address has a secret key already.
    pub force: bool,
}

/// A certification-only primary key with a signing subkey and an encryption subkey (for
/// transport and storage) that expire with it, one user ID `Name <email>` (or `<email>`),
/// and the revocation certificate that revokes it.
///
/// # Errors
/// When the address is not one, or the crypto backend fails.
pub fn generate(req: &GenerateRequest) -> Result<(Cert, Signature), Error> {
    let email = crate::lookup::normalize_email(&req.email).ok_or_else(|| Error::Parse {
        reason: format!("{:?} is not an email address", req.email),
    })?;
    let uid = match req.name.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
        Some(name) => {
            if name.chars().any(|c| c.is_control() || c == '<' || c == '>') {
                return Err(Error::Parse {
                    reason: "the name must not contain '<', '>' or control characters".into(),
                });
            }
            format!("{name} <{email}>")
        }
        None => format!("<{email}>"),
    };
    let profile = match req.profile {
        Profile::Rfc4880 => openpgp::Profile::RFC4880,
        Profile::Rfc9580 => openpgp::Profile::RFC9580,
    };
    let suite = match req.cipher {
        Cipher::Cv25519 => CipherSuite::Cv25519,
        Cipher::Rsa3k => CipherSuite::RSA3k,
        Cipher::Rsa4k => CipherSuite::RSA4k,
    };
    let crypto = |e: openpgp::anyhow::Error| Error::Crypto(e.to_string());
    let mut builder = CertBuilder::new().set_profile(profile).map_err(crypto)?;
    if req.profile == Profile::Rfc4880 {
        // A v4 key is made for v4-only readers (gpg 2.2, sq 0.27, RNP): advertising
        // SEIPDv2 would make senders produce messages those readers cannot open.
        builder = builder
            .set_features(openpgp::types::Features::empty().set_seipdv1())
            .map_err(crypto)?;
    }
    let (cert, revocation) = builder
        .set_cipher_suite(suite)
        .set_validity_period(req.validity)
        .add_userid(uid)
        .add_signing_subkey()
        .add_subkey(
            KeyFlags::empty()
                .set_transport_encryption()
                .set_storage_encryption(),
            None,
            None,
        )
        .generate()
        .map_err(crypto)?;
    Ok((cert, revocation))
}
