//! The From binding beyond the address (security rule 3): a good signature from the From
//! address is still not a verified message when the header shows the reader another
//! identity, in a `Sender` field (which many clients display as the author) or in the
//! From display name (`"ceo@example.org" <mallory@example.net>`).
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use mail_parser::MessageParser;

use crate::mime::headers::Field;

/// How a header disguises its signed From address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disguise {
    /// A `Sender` field with another address, several of them, or one that cannot be read.
    Sender,
    /// The From display name holds an address that is not the From address.
    DisplayName,
}

/// Whether `fields` show another identity than `from` (the single From address, lower-case).
pub fn disguise(fields: &[Field], from: &str) -> Option<Disguise> {
    let wire: String = fields
        .iter()
        .filter(|f| f.is("From") || f.is("Sender"))
        .map(Field::wire)
        .collect();
    let parsed = MessageParser::default().parse_headers(wire.as_bytes());
    let senders = fields.iter().filter(|f| f.is("Sender")).count();
    if senders > 0 {
        let address = parsed
            .as_ref()
            .and_then(|m| m.sender())
            .and_then(|s| s.first())
            .and_then(|a| a.address());
        match address {
            Some(a) if senders == 1 && a.eq_ignore_ascii_case(from) => {}
            _ => return Some(Disguise::Sender),
        }
    }
    let names = parsed
        .as_ref()
        .and_then(|m| m.from())
        .map(|l| l.iter().filter_map(|a| a.name()).collect::<Vec<_>>())
        .unwrap_or_default();
    if names.iter().any(|n| shows_other_address(n, from)) {
        return Some(Disguise::DisplayName);
    }
    None
}

/// Whether a display name contains something that reads as an address other than `from`.
fn shows_other_address(name: &str, from: &str) -> bool {
    name.split(|c: char| c.is_whitespace() || "<>\"'()[],;:".contains(c))
        .filter(|t| t.contains('@'))
        .any(|t| !t.eq_ignore_ascii_case(from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mime::headers;

    fn check(head: &str) -> Option<Disguise> {
        let (fields, _) = headers::split(format!("{head}\r\n").as_bytes());
        disguise(&fields, "alice@example.org")
    }

    #[test]
    fn a_plain_from_or_a_matching_sender_is_no_disguise() {
        assert_eq!(check("From: Alice <alice@example.org>\r\n"), None);
        assert_eq!(check("From: alice@example.org\r\n"), None);
        assert_eq!(
            check("From: \"Alice (alice@EXAMPLE.org)\" <Alice@example.org>\r\n"),
            None
        );
        assert_eq!(
            check("From: Alice <alice@example.org>\r\nSender: <ALICE@example.org>\r\n"),
            None
        );
    }

    #[test]
    fn another_sender_is_a_disguise() {
        for head in [
            "From: Alice <alice@example.org>\r\nSender: Boss <boss@example.org>\r\n",
            "From: Alice <alice@example.org>\r\nSender: alice@example.org\r\nSender: x@y.org\r\n",
            "From: Alice <alice@example.org>\r\nSender: not an address\r\n",
            "Sender: Boss <boss@example.org>\r\nFrom: Alice <alice@example.org>\r\n",
        ] {
            assert_eq!(check(head), Some(Disguise::Sender), "{head}");
        }
    }

    #[test]
    fn an_address_in_the_display_name_is_a_disguise() {
        for head in [
            "From: \"boss@example.org\" <alice@example.org>\r\n",
            "From: \"Boss <boss@example.org>\" <alice@example.org>\r\n",
            "From: =?UTF-8?Q?boss=40example=2Eorg?= <alice@example.org>\r\n",
        ] {
            assert_eq!(check(head), Some(Disguise::DisplayName), "{head}");
        }
    }
}
