//! Envelope addresses, parsed once at MAIL and RCPT and kept as a structure.
//!
//! The SMTP parser hands over a local part with its quoting removed: `<"a b"@x>` arrives
//! as `a b@x`. Written back as it is, such an address means something else to the next
//! hop: `<"carol@remote.test> ORCPT=rfc822;x"@evil.test>` would go upstream as
//! `RCPT TO:<carol@remote.test> ORCPT=…>`, and `<"victim@evil.test"@local.test>` passes
//! the local-domain check and then reaches `victim@evil.test` (an open relay). So an
//! [`Address`] keeps where its domain starts, refuses characters that can end an address
//! or a command line, and is re-serialised with its quoting (RFC 5321 §4.1.2) wherever it
//! is written to a next hop. Policy, the local-domain check, the keyring and the relay all
//! read the same value.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A parsed envelope address: `local@domain`, or the null reverse path `<>`.
///
/// Dereferences to the unquoted text (`local@domain`), which is what keys, policy rules
/// and logs compare; [`Address::to_smtp`] (and `Display`) give the form for the wire.
#[derive(Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Address {
    /// The unquoted local part, `@` and the domain; empty for the null path.
    text: String,
    /// Where the domain starts, just after the `@` that separates it.
    domain_at: usize,
}

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("an address must be local-part@domain")]
    NotAnAddress,
    #[error("the address contains '<', '>' or a control character")]
    ForbiddenCharacter,
    #[error("the domain is not a valid domain name or address literal")]
    BadDomain,
}

impl Address {
    /// The null reverse path `<>`.
    pub fn null() -> Address {
        Address::default()
    }

    /// Parses an address as the SMTP parser delivers it (quotes removed). The empty text
    /// is the null path; callers that must not accept it check [`Address::is_null`].
    ///
    /// # Errors
    /// No `@`, an empty local part or domain, a domain that is neither a domain name nor
    /// an address literal, or `<`, `>` or a control character anywhere.
    pub fn parse(text: &str) -> Result<Address, Invalid> {
        if text.is_empty() {
            return Ok(Address::null());
        }
        if text.chars().any(|c| c.is_control() || c == '<' || c == '>') {
            return Err(Invalid::ForbiddenCharacter);
        }
        // A domain never contains `@`, so the last one separates it, whatever the
        // (quoted) local part holds.
        let Some(at) = text.rfind('@') else {
            return Err(Invalid::NotAnAddress);
        };
        let (local, domain) = (&text[..at], &text[at + 1..]);
        if local.is_empty() || domain.is_empty() {
            return Err(Invalid::NotAnAddress);
        }
        if !valid_domain(domain) {
            return Err(Invalid::BadDomain);
        }
        Ok(Address {
            text: text.to_string(),
            domain_at: at + 1,
        })
    }

    /// Whether this is the null reverse path `<>`.
    pub fn is_null(&self) -> bool {
        self.text.is_empty()
    }

    /// The unquoted `local@domain` text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The local part, unquoted.
    pub fn local(&self) -> &str {
        self.text
            .get(..self.domain_at.saturating_sub(1))
            .unwrap_or_default()
    }

    /// The domain, as given.
    pub fn domain(&self) -> &str {
        self.text.get(self.domain_at..).unwrap_or_default()
    }

    /// The address as it goes between `<` and `>` on the wire: the local part quoted
    /// when it is not a dot-string.
    pub fn to_smtp(&self) -> String {
        if self.is_null() {
            return String::new();
        }
        let local = self.local();
        if is_dot_string(local) {
            return self.text.clone();
        }
        let mut out = String::with_capacity(self.text.len() + 4);
        out.push('"');
        for c in local.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push_str("\"@");
        out.push_str(self.domain());
        out
    }
}

/// RFC 5321 `Dot-string`: atoms of atext (and UTF-8, RFC 6531) joined by single dots.
fn is_dot_string(local: &str) -> bool {
    local.split('.').all(|atom| {
        !atom.is_empty()
            && atom.chars().all(|c| {
                c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
            })
    })
}

/// A domain name (letters, digits, hyphens, UTF-8 labels; no empty label) or an address
/// literal in brackets.
fn valid_domain(domain: &str) -> bool {
    if let Some(literal) = domain.strip_prefix('[') {
        return literal.strip_suffix(']').is_some_and(|inner| {
            !inner.is_empty()
                && inner
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".:-".contains(c))
        });
    }
    domain.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || !c.is_ascii())
    })
}

impl std::ops::Deref for Address {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

impl AsRef<str> for Address {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

impl PartialEq<str> for Address {
    fn eq(&self, other: &str) -> bool {
        self.text == other
    }
}

impl PartialEq<&str> for Address {
    fn eq(&self, other: &&str) -> bool {
        self.text == *other
    }
}

/// The wire form, so that a reply or a report names the address the way it was meant.
impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_smtp())
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.to_smtp())
    }
}

impl TryFrom<String> for Address {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Address, Invalid> {
        Address::parse(&s)
    }
}

impl From<Address> for String {
    fn from(a: Address) -> String {
        a.text
    }
}

/// For addresses the program itself writes (tests, reports): anything that did not pass
/// [`Address::parse`] comes out as the null path rather than as an unchecked address.
impl From<&str> for Address {
    fn from(s: &str) -> Address {
        Address::parse(s).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_addresses_round_trip_unquoted() {
        let a = Address::parse("Bob.Smith+tag@Example.org").unwrap();
        assert_eq!(a.local(), "Bob.Smith+tag");
        assert_eq!(a.domain(), "Example.org");
        assert_eq!(a.to_smtp(), "Bob.Smith+tag@Example.org");
        assert_eq!(&*a, "Bob.Smith+tag@Example.org");
    }

    #[test]
    fn a_local_part_that_needs_quotes_gets_them_back() {
        let a = Address::parse("john doe@example.org").unwrap();
        assert_eq!(a.to_smtp(), "\"john doe\"@example.org");
        let a = Address::parse("victim@evil.test@local.test").unwrap();
        assert_eq!(a.domain(), "local.test");
        assert_eq!(a.local(), "victim@evil.test");
        assert_eq!(a.to_smtp(), "\"victim@evil.test\"@local.test");
        let a = Address::parse("a\"b\\c@x.test").unwrap();
        assert_eq!(a.to_smtp(), "\"a\\\"b\\\\c\"@x.test");
        let a = Address::parse(".lead@x.test").unwrap();
        assert_eq!(a.to_smtp(), "\".lead\"@x.test");
    }

    #[test]
    fn what_could_end_an_address_or_a_command_is_refused() {
        for bad in [
            "carol@remote.test> ORCPT=rfc822;x@evil.test",
            "a<b@x.test",
            "a\r\nRCPT TO:<c@d>@x.test",
            "a\0@x.test",
            "a\x1b[31m@x.test",
            "a\u{7f}@x.test",
        ] {
            assert_eq!(
                Address::parse(bad),
                Err(Invalid::ForbiddenCharacter),
                "{bad:?}"
            );
        }
        for bad in [
            "nodomain",
            "@x.test",
            "a@",
            "a@x..test",
            "a@x y.test",
            "a@[1.2.3.4",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn literals_utf8_and_null() {
        assert!(Address::parse("a@[127.0.0.1]").is_ok());
        assert!(Address::parse("a@[IPv6:::1]").is_ok());
        let u = Address::parse("jörg@bücher.example").unwrap();
        assert_eq!(u.to_smtp(), "jörg@bücher.example");
        assert!(Address::parse("").unwrap().is_null());
        assert_eq!(Address::null().to_smtp(), "");
    }

    #[test]
    fn stored_addresses_are_checked_when_read_back() {
        let json = serde_json::to_string(&Address::parse("x y@a.test").unwrap()).unwrap();
        assert_eq!(json, "\"x y@a.test\"");
        let back: Address = serde_json::from_str(&json).unwrap();
        assert_eq!(back.to_smtp(), "\"x y\"@a.test");
        assert!(serde_json::from_str::<Address>("\"a>b@x.test\"").is_err());
    }
}
