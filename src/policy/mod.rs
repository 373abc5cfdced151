//! Policy: per recipient, whether a message is encrypted, signed, sent plain or refused.
//!
//! Sans-I/O: the caller looks the keys up and passes in what it found; `decide` only
//! combines those facts with the layered rules of [`rules`].

pub mod explain;
pub mod rules;
pub mod sender;
pub mod trust;

pub use rules::{Effective, Layer, Mixed, Mode, Policy, Rule};
pub use trust::keys_for;

use crate::smtp::reply::{Enhanced, Reply};

/// What one recipient's copy gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    Encrypt,
    SignOnly,
    Plain,
}

/// The verdict for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Accept(Treatment),
    /// Refused at RCPT time, with the reply the client sees.
    Refuse(Reply),
}

/// What the caller found out about a recipient and the sender.
#[derive(Debug, Clone, Copy)]
pub struct Facts {
    /// The recipient has a certificate usable for encryption now.
    pub has_key: bool,
    /// The sender has a secret key in the keyring that can sign now.
    pub can_sign: bool,
    /// Another recipient of this transaction was already accepted for encryption.
    pub others_encrypted: bool,
}

/// Combines the effective rule for `address` with the facts.
pub fn decide(address: &str, eff: &Effective, facts: Facts) -> Decision {
    let fallback = if facts.can_sign {
        Treatment::SignOnly
    } else {
        Treatment::Plain
    };
    match eff.mode.0 {
        Mode::None => Decision::Accept(Treatment::Plain),
        Mode::SignOnly => Decision::Accept(fallback),
        Mode::Require if !facts.has_key => Decision::Refuse(no_key(address, "require")),
        Mode::Require | Mode::Opportunistic if facts.has_key => {
            Decision::Accept(Treatment::Encrypt)
        }
        Mode::Require | Mode::Opportunistic => {
            if eff.mixed.0 == Mixed::RefuseUnencrypted && facts.others_encrypted {
                Decision::Refuse(no_key(address, "mixed = refuse-unencrypted"))
            } else {
                Decision::Accept(fallback)
            }
        }
    }
}

/// The RCPT-time refusal, shown in the person's mail client at once.
pub fn no_key(address: &str, why: &str) -> Reply {
    Reply::new(
        550,
        Enhanced(5, 7, 1),
        format!("<{address}>: no valid OpenPGP key for this recipient (policy: {why})"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eff(mode: Mode, mixed: Mixed) -> Effective {
        Effective {
            mode: (mode, Layer::Global),
            encrypt_to_self: (false, Layer::Default),
            mixed: (mixed, Layer::Default),
            min_trust: (rules::default_min_trust(mode), Layer::Default),
            protect_subject: (true, Layer::Default),
            hold_on_review: (false, Layer::Default),
        }
    }

    fn facts(has_key: bool, can_sign: bool, others: bool) -> Facts {
        Facts {
            has_key,
            can_sign,
            others_encrypted: others,
        }
    }

    #[test]
    fn require_refuses_keyless_with_a_readable_reply() {
        let d = decide(
            "bob@example.org",
            &eff(Mode::Require, Mixed::Split),
            facts(false, true, false),
        );
        let Decision::Refuse(reply) = d else {
            panic!("{d:?}")
        };
        assert_eq!(
            reply.to_wire(),
            b"550 5.7.1 <bob@example.org>: no valid OpenPGP key for this recipient (policy: require)\r\n"
        );
        let d = decide(
            "bob@example.org",
            &eff(Mode::Require, Mixed::Split),
            facts(true, false, false),
        );
        assert_eq!(d, Decision::Accept(Treatment::Encrypt));
    }

    #[test]
    fn opportunistic_falls_back_to_sign_then_plain() {
        let e = eff(Mode::Opportunistic, Mixed::Split);
        assert_eq!(
            decide("a@b", &e, facts(true, true, false)),
            Decision::Accept(Treatment::Encrypt)
        );
        assert_eq!(
            decide("a@b", &e, facts(false, true, true)),
            Decision::Accept(Treatment::SignOnly)
        );
        assert_eq!(
            decide("a@b", &e, facts(false, false, false)),
            Decision::Accept(Treatment::Plain)
        );
    }

    #[test]
    fn refuse_unencrypted_only_refuses_when_mixed() {
        let e = eff(Mode::Opportunistic, Mixed::RefuseUnencrypted);
        assert!(matches!(
            decide("a@b", &e, facts(false, true, true)),
            Decision::Refuse(_)
        ));
        assert_eq!(
            decide("a@b", &e, facts(false, true, false)),
            Decision::Accept(Treatment::SignOnly)
        );
    }

    #[test]
    fn sign_only_and_none_never_encrypt() {
        assert_eq!(
            decide(
                "a@b",
                &eff(Mode::SignOnly, Mixed::Split),
                facts(true, true, false)
            ),
            Decision::Accept(Treatment::SignOnly)
        );
        assert_eq!(
            decide(
                "a@b",
                &eff(Mode::None, Mixed::Split),
                facts(true, true, false)
            ),
            Decision::Accept(Treatment::Plain)
        );
    }
}
