//! What the gateway found out about one delivered copy, and the fixed words that say it.

use sealpost_keyring::openpgp::Fingerprint;

/// The signature part of a verdict (`signature=` in `X-Sealpost-Verdict`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signature {
    /// A good signature over the whole root from a key whose user ID is the From address.
    Valid,
    /// A bad signature, or a signing key that was not valid for signing.
    Invalid,
    /// Signed by a key the keyring does not hold.
    UnknownSigner,
    /// A good signature from a key without a user ID for the From address.
    FromMismatch,
    /// A good signature, but the message has no From address or several.
    MultipleFrom,
    /// A good signature from the From address, but a `Sender` field names someone else.
    SenderMismatch,
    /// A good signature from the From address, but the display name shows another address.
    DisplayNameMismatch,
    /// Only a part below the root is signed: not a signed message.
    Partial,
    /// Not signed.
    None,
}

/// The encryption part of a verdict (`encryption=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encryption {
    /// Decrypted with the recipient's own key, integrity checked.
    Decrypted,
    /// Not encrypted.
    None,
    /// Encrypted, but not to a key of this recipient (the reply-oracle case).
    NoKey,
    /// Encrypted without integrity protection (SED): refused.
    NoIntegrity,
    /// Bad MDC or AEAD tag, truncation or a decryption error: refused.
    IntegrityFailure,
    /// The plaintext is over `max_plaintext`: refused.
    TooLarge,
    /// Not a well-formed OpenPGP message, or a broken PGP/MIME structure.
    Malformed,
    /// Ciphertext below the root (or beside cleartext): never decrypted (EFAIL).
    NestedIgnored,
    /// Decrypted, but the plaintext cannot be made safe for the next hop (NUL bytes, or
    /// 8-bit data outside any part that can be re-encoded): the received ciphertext is
    /// delivered instead, and the recipient's own client can open it.
    Unencodable,
}

/// The header protection part of a verdict (`protected-headers=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderProtection {
    /// Protected fields replaced the outer ones (a valid signature covers them).
    Applied,
    /// Protected fields were added as `X-Sealpost-Protected-*`, the outer ones kept.
    KeptApart,
    /// No protected header fields.
    None,
}

/// The `pgp=` result of `Authentication-Results`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pgp {
    Pass,
    Fail,
    Neutral,
    None,
    PermError,
}

/// Everything the result headers say about one copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub signature: Signature,
    pub encryption: Encryption,
    pub protected_headers: HeaderProtection,
    /// The certificate a signature was checked against (known to the keyring).
    pub signer: Option<Fingerprint>,
    /// The signer's address, only when it is the validated From address (`Valid`).
    pub signer_address: Option<String>,
    /// The certificate whose key decrypted the message.
    pub decryption_key: Option<Fingerprint>,
    /// The single From address, when there is exactly one valid one.
    pub from: Option<String>,
}

impl Verdict {
    /// A verdict with nothing found yet.
    pub fn new(from: Option<String>) -> Verdict {
        Verdict {
            signature: Signature::None,
            encryption: Encryption::None,
            protected_headers: HeaderProtection::None,
            signer: None,
            signer_address: None,
            decryption_key: None,
            from,
        }
    }

    /// The RFC 8601 style result.
    pub fn pgp(&self) -> Pgp {
        use Encryption as E;
        use Signature as S;
        match (self.signature, self.encryption) {
            (S::Valid, _) => Pgp::Pass,
            (
                S::Invalid
                | S::FromMismatch
                | S::MultipleFrom
                | S::SenderMismatch
                | S::DisplayNameMismatch,
                _,
            )
            | (_, E::NoIntegrity | E::IntegrityFailure) => Pgp::Fail,
            (S::UnknownSigner | S::Partial, _) => Pgp::Neutral,
            (S::None, E::Malformed) => Pgp::PermError,
            _ => Pgp::None,
        }
    }

    /// `policy.encrypted=`: `yes` when decrypted, `failed` when the root was encrypted but
    /// not decrypted, `no` otherwise.
    pub fn encrypted(&self) -> &'static str {
        match self.encryption {
            Encryption::Decrypted => "yes",
            Encryption::NoKey
            | Encryption::NoIntegrity
            | Encryption::IntegrityFailure
            | Encryption::TooLarge
            | Encryption::Malformed
            | Encryption::Unencodable => "failed",
            Encryption::None | Encryption::NestedIgnored => "no",
        }
    }

    /// Our own explanation: ASCII, no `"`, `\` or `;`.
    pub fn reason(&self) -> String {
        let e = match self.encryption {
            Encryption::Decrypted => Some("decrypted"),
            Encryption::None => None,
            Encryption::NoKey => Some("not encrypted to a key of this recipient"),
            Encryption::NoIntegrity => Some("encrypted without integrity protection, refused"),
            Encryption::IntegrityFailure => Some("integrity check failed, nothing released"),
            Encryption::TooLarge => Some("decrypted content over the size limit, refused"),
            Encryption::Malformed => Some("malformed OpenPGP message"),
            Encryption::NestedIgnored => Some("ciphertext below the root ignored"),
            Encryption::Unencodable => {
                Some("decrypted content cannot be sent safely, the ciphertext is delivered")
            }
        };
        let s = match self.signature {
            Signature::Valid => Some("good signature from the From address"),
            Signature::Invalid => Some("bad signature or signing key not valid"),
            Signature::UnknownSigner => Some("signing key not in the keyring"),
            Signature::FromMismatch => Some("signing key has no user ID for the From address"),
            Signature::MultipleFrom => Some("not exactly one From address"),
            Signature::SenderMismatch => Some("a Sender field names another address than From"),
            Signature::DisplayNameMismatch => Some("the From display name shows another address"),
            Signature::Partial => Some("only a part is signed"),
            Signature::None => Some("not signed"),
        };
        match (e, s) {
            (Some(e), Some(s)) => format!("{e}, {s}"),
            (Some(x), None) | (None, Some(x)) => x.to_string(),
            (None, None) => String::new(),
        }
    }
}

impl Pgp {
    pub fn word(self) -> &'static str {
        match self {
            Pgp::Pass => "pass",
            Pgp::Fail => "fail",
            Pgp::Neutral => "neutral",
            Pgp::None => "none",
            Pgp::PermError => "permerror",
        }
    }
}

impl Signature {
    pub fn word(self) -> &'static str {
        match self {
            Signature::Valid => "valid",
            Signature::Invalid => "invalid",
            Signature::UnknownSigner => "unknown-signer",
            Signature::FromMismatch => "from-mismatch",
            Signature::MultipleFrom => "multiple-from",
            Signature::SenderMismatch => "sender-mismatch",
            Signature::DisplayNameMismatch => "display-name-mismatch",
            Signature::Partial => "partial",
            Signature::None => "none",
        }
    }
}

impl Encryption {
    pub fn word(self) -> &'static str {
        match self {
            Encryption::Decrypted => "decrypted",
            Encryption::None => "none",
            Encryption::NoKey => "no-key",
            Encryption::NoIntegrity => "no-integrity",
            Encryption::IntegrityFailure => "integrity-failure",
            Encryption::TooLarge => "too-large",
            Encryption::Malformed => "malformed",
            Encryption::NestedIgnored => "nested-ignored",
            Encryption::Unencodable => "unencodable",
        }
    }
}

impl HeaderProtection {
    pub fn word(self) -> &'static str {
        match self {
            HeaderProtection::Applied => "applied",
            HeaderProtection::KeptApart => "kept-apart",
            HeaderProtection::None => "none",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgp_result_follows_the_table() {
        let v = |s, e| Verdict {
            signature: s,
            encryption: e,
            ..Verdict::new(None)
        };
        use Encryption as E;
        use Signature as S;
        assert_eq!(v(S::Valid, E::Decrypted).pgp(), Pgp::Pass);
        assert_eq!(v(S::FromMismatch, E::None).pgp(), Pgp::Fail);
        assert_eq!(v(S::None, E::NoIntegrity).pgp(), Pgp::Fail);
        assert_eq!(v(S::SenderMismatch, E::Decrypted).pgp(), Pgp::Fail);
        assert_eq!(v(S::DisplayNameMismatch, E::None).pgp(), Pgp::Fail);
        assert_eq!(v(S::None, E::IntegrityFailure).pgp(), Pgp::Fail);
        assert_eq!(v(S::Partial, E::None).pgp(), Pgp::Neutral);
        assert_eq!(v(S::UnknownSigner, E::Decrypted).pgp(), Pgp::Neutral);
        assert_eq!(v(S::None, E::Malformed).pgp(), Pgp::PermError);
        assert_eq!(v(S::None, E::Decrypted).pgp(), Pgp::None);
        assert_eq!(v(S::None, E::NoKey).pgp(), Pgp::None);
        assert_eq!(v(S::None, E::NoKey).encrypted(), "failed");
        assert_eq!(v(S::None, E::NestedIgnored).encrypted(), "no");
        for s in [S::Valid, S::Invalid, S::None] {
            for e in [E::Decrypted, E::None, E::NoKey, E::TooLarge] {
                let r = v(s, e).reason();
                assert!(r.is_ascii() && !r.contains(['"', '\\', ';']), "{r}");
            }
        }
    }
}
