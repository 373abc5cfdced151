//! Email addresses the way OpenPGP tools compare them, and the index keys built from them.

use openpgp::packet::UserID;
use openpgp::{Cert, Fingerprint, KeyID};
use sequoia_openpgp as openpgp;

/// The address in `s`, which may be a bare address or a user ID such as
/// `Name <Alice@Example.ORG>`, with the domain lower-cased. `None` when there is none.
pub fn normalize_email(s: &str) -> Option<String> {
    let s = s.trim();
    let inner = match (s.rfind('<'), s.rfind('>')) {
        (Some(a), Some(b)) if b > a => &s[a + 1..b],
        _ => s,
    };
    let inner = inner.trim();
    let (local, domain) = inner.rsplit_once('@')?;
    if local.is_empty()
        || domain.is_empty()
        || inner
            .chars()
            .any(|c| c.is_whitespace() || c == '<' || c == '>')
    {
        return None;
    }
    Some(format!("{local}@{}", domain.to_lowercase()))
}

/// The index form of an address: the whole address lower-cased, as gpg matches
/// `<addr>` case-insensitively.
pub fn index_form(email: &str) -> Option<String> {
    normalize_email(email).map(|e| e.to_lowercase())
}

/// The address of a user ID, whether it is `Name <addr>` or a bare address.
pub fn userid_email(uid: &UserID) -> Option<String> {
    if let Ok(Some(e)) = uid.email() {
        return index_form(e);
    }
    std::str::from_utf8(uid.value()).ok().and_then(index_form)
}

/// Every address a certificate's user IDs name (valid or not: the index finds candidates,
/// validity is checked on each lookup).
pub fn emails(cert: &Cert) -> Vec<String> {
    let mut out: Vec<String> = cert
        .userids()
        .filter_map(|ua| userid_email(ua.userid()))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Index key for an email: `email 0 fingerprint`.
pub fn email_key(email: &str, fpr: &Fingerprint) -> Vec<u8> {
    let mut k = email_prefix(email);
    k.extend_from_slice(fpr.as_bytes());
    k
}

pub fn email_prefix(email: &str) -> Vec<u8> {
    let mut k = email.as_bytes().to_vec();
    k.push(0);
    k
}

/// Index key for a key ID: `keyid fingerprint`.
pub fn keyid_key(id: &KeyID, fpr: &Fingerprint) -> Vec<u8> {
    let mut k = id.as_bytes().to_vec();
    k.extend_from_slice(fpr.as_bytes());
    k
}

/// The key IDs of the primary key and every subkey.
pub fn keyids(cert: &Cert) -> Vec<KeyID> {
    cert.keys().map(|ka| ka.key().keyid()).collect()
}

/// What a query names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    Email(String),
    Fingerprint(Fingerprint),
    KeyId(KeyID),
}

impl Query {
    /// Reads an email address, a fingerprint (40 or 64 hex digits, spaces and `0x`
    /// allowed) or a key ID (16 hex digits).
    pub fn parse(s: &str) -> Option<Query> {
        if s.contains('@') {
            return index_form(s).map(Query::Email);
        }
        let hex: String = s.split_whitespace().collect();
        let hex = hex
            .strip_prefix("0x")
            .or_else(|| hex.strip_prefix("0X"))
            .unwrap_or(&hex);
        if !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        match hex.len() {
            40 | 64 => hex.parse().ok().map(Query::Fingerprint),
            16 => hex.parse().ok().map(Query::KeyId),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_normalise_like_openpgp_tools() {
        assert_eq!(
            normalize_email("Alice Example <Alice@Example.ORG>").as_deref(),
            Some("Alice@example.org")
        );
        assert_eq!(
            index_form(" alice@EXAMPLE.org ").as_deref(),
            Some("alice@example.org")
        );
        assert_eq!(normalize_email("no address here"), None);
        assert_eq!(normalize_email("@example.org"), None);
        assert_eq!(normalize_email("a b@example.org"), None);
    }

    #[test]
    fn queries() {
        assert!(
            matches!(Query::parse("Bob <bob@x.org>"), Some(Query::Email(e)) if e == "bob@x.org")
        );
        assert!(matches!(
            Query::parse("0x1A2B 3C4D 5E6F 7081"),
            Some(Query::KeyId(_))
        ));
        assert!(matches!(
            Query::parse("C1A4B2D3E4F5061728394A5B6C7D8E9F00112233"),
            Some(Query::Fingerprint(_))
        ));
        assert_eq!(Query::parse("ABCD"), None);
        assert_eq!(Query::parse("zz"), None);
    }
}
