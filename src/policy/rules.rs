//! Layered policy rules: global, then domain, then address; the most specific setting wins.

use std::collections::HashMap;
use std::fmt;

use sealpost_keyring::Trust;

/// What the gateway does for a recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Encrypt, or refuse the recipient at RCPT time when it has no usable key.
    Require,
    /// Encrypt when a usable key exists; otherwise sign (when possible) or send plain.
    Opportunistic,
    /// Sign only, never encrypt.
    SignOnly,
    /// Pass the message through untouched.
    None,
}

/// What to do when some recipients of one message have keys and others do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mixed {
    /// Per-recipient copies: encrypted for those with keys, signed or plain for the rest.
    Split,
    /// Refuse the keyless recipients at RCPT, so that nothing leaves unencrypted.
    RefuseUnencrypted,
}

/// One layer's settings; `None` means "inherit from the less specific layer".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    pub mode: Option<Mode>,
    pub encrypt_to_self: Option<bool>,
    pub protect_subject: Option<bool>,
    pub hold_on_review: Option<bool>,
    pub mixed: Option<Mixed>,
    /// The least trusted key this layer encrypts to; unset, it depends on the mode.
    pub min_trust: Option<Trust>,
}

/// Where an effective setting came from, for `sealpost policy explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layer {
    Default,
    Global,
    Domain(String),
    Address(String),
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Layer::Default => write!(f, "built-in default"),
            Layer::Global => write!(f, "[policy]"),
            Layer::Domain(d) => write!(f, "[policy.domain.\"{d}\"]"),
            Layer::Address(a) => write!(f, "[policy.address.\"{a}\"]"),
        }
    }
}

/// The settings in force for one recipient, each with the layer that set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    pub mode: (Mode, Layer),
    pub encrypt_to_self: (bool, Layer),
    pub mixed: (Mixed, Layer),
    /// The least trusted key the recipient's copy may be encrypted to. Unless a layer sets
    /// it, `require` takes keys from WKD (or DANE) up, and the other modes any key: a
    /// key anyone on the path could have planted must not satisfy a requirement.
    pub min_trust: (Trust, Layer),
    /// Whether an encrypted copy's outer Subject is the placeholder `[...]` (RFC 9788);
    /// `false` keeps it in the clear, for mail servers that search by Subject.
    pub protect_subject: (bool, Layer),
    /// Whether mail to an address whose changed key waits for review is deferred (4xx)
    /// until an admin decides, rather than encrypted to the key it has now.
    pub hold_on_review: (bool, Layer),
}

/// The minimum trust when no layer sets one.
pub fn default_min_trust(mode: Mode) -> Trust {
    match mode {
        Mode::Require => Trust::Wkd,
        Mode::Opportunistic | Mode::SignOnly | Mode::None => Trust::Autocrypt,
    }
}

/// The whole policy, built once from the configuration.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub global: Rule,
    /// Keyed by lower-case domain.
    pub domains: HashMap<String, Rule>,
    /// Keyed by lower-case address.
    pub addresses: HashMap<String, Rule>,
    /// What happens when a login sends from an address it may not sign for.
    pub sender_mismatch: super::sender::OnMismatch,
}

impl Policy {
    /// The effective settings for `address` (already normalised: lower-case domain).
    pub fn for_recipient(&self, address: &str) -> Effective {
        let lower = address.to_ascii_lowercase();
        let domain = lower.rsplit_once('@').map(|(_, d)| d.to_string());
        // Most specific first; the first layer that sets a field wins.
        let mut layers: Vec<(&Rule, Layer)> = Vec::with_capacity(3);
        if let Some(rule) = self.addresses.get(&lower) {
            layers.push((rule, Layer::Address(lower.clone())));
        }
        if let Some(d) = domain {
            if let Some(rule) = self.domains.get(&d) {
                layers.push((rule, Layer::Domain(d)));
            }
        }
        layers.push((&self.global, Layer::Global));
        let mode = layers
            .iter()
            .find_map(|(r, l)| r.mode.map(|m| (m, l.clone())));
        let ets = layers
            .iter()
            .find_map(|(r, l)| r.encrypt_to_self.map(|v| (v, l.clone())));
        let mixed = layers
            .iter()
            .find_map(|(r, l)| r.mixed.map(|m| (m, l.clone())));
        let min_trust = layers
            .iter()
            .find_map(|(r, l)| r.min_trust.map(|t| (t, l.clone())));
        let protect_subject = layers
            .iter()
            .find_map(|(r, l)| r.protect_subject.map(|v| (v, l.clone())));
        let hold_on_review = layers
            .iter()
            .find_map(|(r, l)| r.hold_on_review.map(|v| (v, l.clone())));
        let mode = mode.unwrap_or((Mode::Opportunistic, Layer::Default));
        Effective {
            min_trust: min_trust.unwrap_or((default_min_trust(mode.0), Layer::Default)),
            mode,
            encrypt_to_self: ets.unwrap_or((false, Layer::Default)),
            mixed: mixed.unwrap_or((Mixed::Split, Layer::Default)),
            protect_subject: protect_subject.unwrap_or((true, Layer::Default)),
            hold_on_review: hold_on_review.unwrap_or((false, Layer::Default)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(mode: Option<Mode>, ets: Option<bool>, mixed: Option<Mixed>) -> Rule {
        Rule {
            mode,
            encrypt_to_self: ets,
            protect_subject: None,
            hold_on_review: None,
            mixed,
            min_trust: None,
        }
    }

    #[test]
    fn minimum_trust_follows_the_mode_unless_a_layer_sets_it() {
        let mut p = Policy::default();
        p.domains.insert(
            "strict.example".into(),
            rule(Some(Mode::Require), None, None),
        );
        p.addresses.insert(
            "ops@strict.example".into(),
            Rule {
                min_trust: Some(Trust::Pinned),
                ..Rule::default()
            },
        );
        p.global.min_trust = None;
        assert_eq!(
            p.for_recipient("a@other.example").min_trust,
            (Trust::Autocrypt, Layer::Default)
        );
        assert_eq!(
            p.for_recipient("a@strict.example").min_trust,
            (Trust::Wkd, Layer::Default)
        );
        assert_eq!(
            p.for_recipient("ops@strict.example").min_trust,
            (Trust::Pinned, Layer::Address("ops@strict.example".into()))
        );
        p.global.min_trust = Some(Trust::Keyserver);
        assert_eq!(
            p.for_recipient("a@strict.example").min_trust,
            (Trust::Keyserver, Layer::Global)
        );
    }

    #[test]
    fn most_specific_layer_wins_per_field() {
        let mut p = Policy {
            global: rule(Some(Mode::Opportunistic), Some(true), None),
            ..Policy::default()
        };
        p.domains.insert(
            "corp.example".into(),
            rule(Some(Mode::Require), None, Some(Mixed::RefuseUnencrypted)),
        );
        p.addresses.insert(
            "ceo@corp.example".into(),
            rule(Some(Mode::SignOnly), None, None),
        );

        let e = p.for_recipient("bob@other.example");
        assert_eq!(e.mode, (Mode::Opportunistic, Layer::Global));
        assert_eq!(e.encrypt_to_self, (true, Layer::Global));
        assert_eq!(e.mixed, (Mixed::Split, Layer::Default));

        let e = p.for_recipient("alice@CORP.example");
        assert_eq!(
            e.mode,
            (Mode::Require, Layer::Domain("corp.example".into()))
        );
        assert_eq!(e.mixed.0, Mixed::RefuseUnencrypted);

        let e = p.for_recipient("ceo@corp.example");
        assert_eq!(
            e.mode,
            (Mode::SignOnly, Layer::Address("ceo@corp.example".into()))
        );
        assert_eq!(e.mixed.1, Layer::Domain("corp.example".into()));
        assert_eq!(e.encrypt_to_self.1, Layer::Global);
    }

    #[test]
    fn empty_policy_is_opportunistic_split() {
        let e = Policy::default().for_recipient("x@y.example");
        assert_eq!(e.mode, (Mode::Opportunistic, Layer::Default));
        assert_eq!(e.mixed, (Mixed::Split, Layer::Default));
        assert!(!e.encrypt_to_self.0);
    }
}
