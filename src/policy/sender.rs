//! Sender binding: which From addresses an authenticated login may have mail signed for.
//!
//! Without it, any user who can log in could send `From: ceo@…` and have the gateway sign
//! it with the CEO's key. A login is bound to the addresses configured for it
//! (`[[user]] addresses`), and a login that is itself an address (every passthrough login
//! at a provider, a local user named by address) to that address. Clients that send
//! without AUTH (loopback, an allowlisted network) are trusted as the configuration says.

use std::collections::HashMap;

use crate::smtp::reply::{Enhanced, Reply};

/// What happens to a message whose From address the login may not sign for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnMismatch {
    /// `553 5.7.1`: the client is told at once.
    #[default]
    Refuse,
    /// Delivered as the policy says, but never signed (encrypted copies go unsigned).
    Unsigned,
}

/// The addresses each login may send signed mail as.
#[derive(Debug, Clone, Default)]
pub struct Senders {
    /// Login name → lower-cased addresses.
    bound: HashMap<String, Vec<String>>,
}

/// The verdict for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// No AUTH: the client was let in by address, and the configuration trusts it.
    Unauthenticated,
    /// The login may sign for this From address.
    Bound,
    /// The login may not; the reply says so, for [`OnMismatch::Refuse`].
    Mismatch(Reply),
}

impl Senders {
    /// From the configured users: their name and the addresses they may sign for.
    pub fn new<'a>(users: impl IntoIterator<Item = (&'a str, &'a [String])>) -> Senders {
        Senders {
            bound: users
                .into_iter()
                .map(|(name, addrs)| (name.to_string(), addrs.to_vec()))
                .collect(),
        }
    }

    /// Whether `login` (the AUTH user name, if the client logged in) may have a message
    /// from `from` (lower-cased) signed.
    pub fn check(&self, login: Option<&str>, from: &str) -> Binding {
        let Some(login) = login else {
            return Binding::Unauthenticated;
        };
        let own = login.contains('@') && login.eq_ignore_ascii_case(from);
        let configured = self
            .bound
            .get(login)
            .is_some_and(|addrs| addrs.iter().any(|a| a.eq_ignore_ascii_case(from)));
        if own || configured {
            return Binding::Bound;
        }
        Binding::Mismatch(Reply::new(
            553,
            Enhanced(5, 7, 1),
            format!(
                "Sender <{from}> refused: user {} may not send as this address (see [[user]] addresses)",
                login.escape_debug()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_signs_only_for_its_own_addresses() {
        let alice = vec!["alice@example.org".to_string(), "sales@example.org".into()];
        let s = Senders::new([("alice", alice.as_slice())]);
        assert_eq!(s.check(Some("alice"), "sales@example.org"), Binding::Bound);
        assert!(matches!(
            s.check(Some("alice"), "bob@example.org"),
            Binding::Mismatch(r) if r.code == 553
        ));
        // A login that is an address: that address, in any case.
        assert_eq!(
            s.check(Some("Bob@Example.org"), "bob@example.org"),
            Binding::Bound
        );
        assert!(matches!(
            s.check(Some("bob@example.org"), "alice@example.org"),
            Binding::Mismatch(_)
        ));
        // An unknown login without an address signs for nothing.
        assert!(matches!(
            s.check(Some("mallory"), "alice@example.org"),
            Binding::Mismatch(_)
        ));
        assert_eq!(
            s.check(None, "anyone@example.org"),
            Binding::Unauthenticated
        );
    }
}
