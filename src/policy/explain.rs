//! `sealpost policy explain`: for each recipient, the rule that matched, the key chosen,
//! and the copy it would get.

use std::fmt::Write;
use std::time::SystemTime;

use sealpost_keyring::Keyring;

use super::{decide, Decision, Facts, Layer, Mixed, Mode, Policy, Treatment};

/// The explanation, one block per recipient. `named` are the To/Cc recipients; the others
/// are treated as Bcc.
pub fn explain(
    policy: &Policy,
    keyring: &Keyring,
    from: &str,
    to: &[String],
    bcc: &[String],
    now: SystemTime,
) -> String {
    let mut out = String::new();
    let signer = keyring.signing_cert_for(from, now).ok().flatten();
    let _ = writeln!(
        out,
        "from {from}: {}",
        match &signer {
            Some(s) => format!("signs with {} (keyring)", s.fingerprint().to_hex()),
            None => "no secret key in the keyring: encrypted copies go unsigned".to_string(),
        }
    );
    let can_sign = signer.is_some();
    let mut treatments = Vec::new();
    for (addr, named) in to
        .iter()
        .map(|a| (a, true))
        .chain(bcc.iter().map(|a| (a, false)))
    {
        let eff = policy.for_recipient(addr);
        let lookup = super::trust::keys_with_trust(keyring, addr, &eff, now);
        let facts = Facts {
            has_key: lookup.is_ok(),
            can_sign,
            others_encrypted: false,
        };
        let decision = decide(addr, &eff, facts);
        let _ = writeln!(out, "\n{addr}{}", if named { "" } else { " (Bcc)" });
        let _ = writeln!(
            out,
            "    rule:  mode = {} ({}); mixed = {} ({}); encrypt_to_self = {} ({}); protect_subject = {} ({}); hold_on_review = {} ({})",
            mode_name(eff.mode.0),
            eff.mode.1,
            match eff.mixed.0 {
                Mixed::Split => "split",
                Mixed::RefuseUnencrypted => "refuse-unencrypted",
            },
            eff.mixed.1,
            eff.encrypt_to_self.0,
            eff.encrypt_to_self.1,
            eff.protect_subject.0,
            eff.protect_subject.1,
            eff.hold_on_review.0,
            eff.hold_on_review.1
        );
        let _ = writeln!(
            out,
            "    trust: keys from {} up ({})",
            eff.min_trust.0,
            match eff.min_trust.1 {
                Layer::Default => format!("built-in default for mode {}", mode_name(eff.mode.0)),
                ref l => l.to_string(),
            }
        );
        match &lookup {
            Ok(certs) => {
                for (c, meta) in certs {
                    let _ = writeln!(out, "    key:   {} (keyring)", c.fingerprint().to_hex());
                    let _ = writeln!(out, "           trust {}", meta.describe());
                }
            }
            Err(e) => {
                let _ = writeln!(out, "    key:   none usable: {e}");
                if let Ok(Some(miss)) = keyring.discovery_miss(addr) {
                    let next = if miss.holds_at(now) {
                        format!(
                            "not asked again before {}",
                            crate::discovery::finder::when(miss.until_time())
                        )
                    } else {
                        "the next message looks again".to_string()
                    };
                    let _ = writeln!(
                        out,
                        "    found: nothing at {} ({}); {next}",
                        crate::discovery::finder::when(miss.at_time()),
                        miss.reason
                    );
                }
            }
        }
        if let Ok(waiting) = keyring.review_list() {
            let addr_index = sealpost_keyring::normalize_email(addr).map(|a| a.to_lowercase());
            for w in waiting
                .iter()
                .filter(|w| Some(&w.email) == addr_index.as_ref())
            {
                let _ = writeln!(
                    out,
                    "    queue: {} (found by {}) waits for review: sealpost keys review accept {}",
                    w.fingerprint, w.source, w.fingerprint
                );
                if eff.hold_on_review.0 {
                    let _ = writeln!(
                        out,
                        "    hold:  mail to this address is deferred (450) until an admin decides"
                    );
                }
            }
        }
        let copy = match &decision {
            Decision::Refuse(reply) => format!("refused at RCPT: {reply}"),
            Decision::Accept(Treatment::Encrypt) if named => {
                "encrypted, in the copy shared by the To/Cc recipients with keys".to_string()
            }
            Decision::Accept(Treatment::Encrypt) => "encrypted, in a copy of its own".to_string(),
            Decision::Accept(Treatment::SignOnly) => {
                "signed, not encrypted (multipart/signed)".to_string()
            }
            Decision::Accept(_) => "the message as it is".to_string(),
        };
        let _ = writeln!(out, "    copy:  {copy}");
        treatments.push((addr.clone(), decision, eff.mixed.0));
    }
    let any_encrypted = treatments
        .iter()
        .any(|(_, d, _)| *d == Decision::Accept(Treatment::Encrypt));
    let refused: Vec<&str> = treatments
        .iter()
        .filter(|(_, d, m)| {
            any_encrypted
                && matches!(d, Decision::Accept(t) if *t != Treatment::Encrypt)
                && *m == Mixed::RefuseUnencrypted
        })
        .map(|(a, _, _)| a.as_str())
        .collect();
    if !refused.is_empty() {
        let _ = writeln!(
            out,
            "\nthe whole message would be refused: {} would get an unencrypted copy of a message others get encrypted (mixed = refuse-unencrypted)",
            refused.join(", ")
        );
    }
    out
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Require => "require",
        Mode::Opportunistic => "opportunistic",
        Mode::SignOnly => "sign-only",
        Mode::None => "none",
    }
}
