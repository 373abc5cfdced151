//! A verdict's signature part from the checked signatures, and what header protection
//! does to the outer header: protected fields replace the outer ones only under a `valid`
//! signature (security rule 5), a sender disguised by its display name or `Sender` field
//! is never `valid` (rule 3).

use crate::mime::headers::Field;

use super::assemble::Edits;
use super::binding;
use super::context::Outer;
use super::protected;
use super::verdict::{HeaderProtection, Signature, Verdict};
use super::verify::{self, Check, InnerFrom, Judgement};

/// Judges `checks` into `v` and returns what header protection does to the outer header:
/// protected fields replace the outer ones only with a valid signature.
pub fn judge_into(
    v: &mut Verdict,
    checks: &[Check],
    outer: &Outer<'_>,
    protected: Option<&[Field]>,
) -> Edits {
    let inner = protected.map_or(InnerFrom::Absent, protected::inner_from);
    let Judgement {
        mut signature,
        signer,
        mut signer_address,
        mut valid,
    } = verify::judge(checks, outer.from.as_deref(), &inner);
    if let (Some(from), Some(_)) = (outer.from.as_deref(), &valid) {
        // What the reader is shown, in the outer header or in the fields that replace it.
        let shown = binding::disguise(&outer.fields, from)
            .or_else(|| protected.and_then(|p| binding::disguise(p, from)));
        if let Some(d) = shown {
            signature = match d {
                binding::Disguise::Sender => Signature::SenderMismatch,
                binding::Disguise::DisplayName => Signature::DisplayNameMismatch,
            };
            (signer_address, valid) = (None, None);
        }
    }
    v.signature = signature;
    v.signer = signer;
    v.signer_address = signer_address;
    let Some(protected) = protected.filter(|p| !p.is_empty()) else {
        return Edits::None;
    };
    match valid {
        Some(proof) => {
            v.protected_headers = HeaderProtection::Applied;
            let (names, lines) = protected::applied(protected, &proof);
            Edits::Applied { names, lines }
        }
        None => {
            v.protected_headers = HeaderProtection::KeptApart;
            Edits::KeptApart(protected::kept_apart(protected))
        }
    }
}
