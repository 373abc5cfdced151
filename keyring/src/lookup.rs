//! Email addresses the way OpenPGP tools compare them, and the index keys built from them.

use openpgp::packet::UserID;
use openpgp::{Cert, Fingerprint, KeyHandle, KeyID};
use sequoia_openpgp as openpgp;

use crate::store::{Op, Tree};
use crate::{Error, Keyring};

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

/// The address of a user ID, whether it is `Name <addr>` or a bare address, lower-cased.
///
/// A user ID with a control character anywhere in it (`Mallory\n<alice@…>`, a NUL before
/// the address) binds to no address: it shows one thing in a terminal or a mail client
/// and would bind to another here.
pub fn userid_email(uid: &UserID) -> Option<String> {
    if uid.value().iter().any(|&b| b < 0x20 || b == 0x7f) {
        return None;
    }
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

impl Keyring {
    pub(crate) fn fingerprints_for_email(&self, email: &str) -> Result<Vec<Fingerprint>, Error> {
        let prefix = email_prefix(email);
        Ok(self
            .inner
            .store
            .scan(Tree::Emails, &prefix)?
            .into_iter()
            .filter_map(|(k, _)| k.get(prefix.len()..).and_then(|raw| fpr_from(raw).ok()))
            .collect())
    }

    /// Primary fingerprints of the certificates that contain the key `handle` names.
    pub(crate) fn fingerprints_for(&self, handle: &KeyHandle) -> Result<Vec<Fingerprint>, Error> {
        let id = KeyID::from(handle);
        let mut out = Vec::new();
        for (k, _) in self.inner.store.scan(Tree::KeyIds, id.as_bytes())? {
            let fpr = fpr_from(k.get(id.as_bytes().len()..).unwrap_or_default())?;
            if let KeyHandle::Fingerprint(want) = handle {
                // A key ID is a part of the fingerprint: confirm the full one.
                match self.get(&fpr)? {
                    Some(c) if c.keys().any(|ka| &ka.key().fingerprint() == want) => {}
                    _ => continue,
                }
            }
            out.push(fpr);
        }
        Ok(out)
    }

    pub(crate) fn index_ops(&self, cert: &Cert, put: bool) -> Vec<Op> {
        let fpr = cert.fingerprint();
        let mut keys: Vec<(Tree, Vec<u8>)> = emails(cert)
            .iter()
            .map(|e| (Tree::Emails, email_key(e, &fpr)))
            .collect();
        keys.extend(
            keyids(cert)
                .iter()
                .map(|id| (Tree::KeyIds, keyid_key(id, &fpr))),
        );
        keys.into_iter()
            .map(|(t, k)| {
                if put {
                    Op::Put(t, k, Vec::new())
                } else {
                    Op::Delete(t, k)
                }
            })
            .collect()
    }
}

/// A stored fingerprint: 20 bytes for v4, 32 for v6.
pub(crate) fn fpr_from(raw: &[u8]) -> Result<Fingerprint, Error> {
    let version = if raw.len() == 32 { 6 } else { 4 };
    Fingerprint::from_bytes(version, raw)
        .map_err(|e| Error::Store(format!("corrupt index entry: {e}")))
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
    fn a_user_id_with_control_characters_binds_to_no_address() {
        for uid in [
            &b"Mallory\n<alice@example.org>"[..],
            b"Mallory\0<alice@example.org>",
            b"Mallory\r\n<alice@example.org>",
            b"\x1b[2K<alice@example.org>",
            b"alice@example.org\n",
        ] {
            assert_eq!(userid_email(&UserID::from(uid)), None, "{uid:?}");
        }
        assert_eq!(
            userid_email(&UserID::from("Alice <Alice@Example.org>")).as_deref(),
            Some("alice@example.org")
        );
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
