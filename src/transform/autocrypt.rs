//! The `Autocrypt:` header (Autocrypt Level 1) for the sender of a message sealpost signs.
//!
//! Written here rather than with `sequoia-autocrypt` 0.26: that crate reads the clock
//! (its validity checks use the current time, not `now`), keeps expired subkeys, compares
//! the address case-sensitively and does not fold the header.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::time::SystemTime;

use base64::Engine;
use openpgp::packet::Packet;
use openpgp::policy::Policy;
use openpgp::serialize::SerializeInto;
use openpgp::Cert;
use sealpost_keyring::openpgp;

use super::Error;

/// Header lines are folded to this many columns.
const WIDTH: usize = 78;

/// `Autocrypt: addr=…; keydata=…`, folded to 78 columns, CRLF-terminated, with the
/// minimal key Autocrypt asks for: the primary key and its direct-key signature, the user
/// IDs for `addr`, the newest valid signing subkey and the newest valid encryption
/// subkey, each with the binding signature valid at `now`; no secret key material, no
/// third-party certifications.
///
/// # Errors
/// `NoSigningKey` when `cert` is not valid at `now`, has no valid user ID for `addr`, or
/// no encryption subkey; `Crypto` when it cannot be serialized.
pub fn header(
    cert: &Cert,
    addr: &str,
    policy: &dyn Policy,
    now: SystemTime,
) -> Result<String, Error> {
    let addr = addr.to_ascii_lowercase();
    let unfit = |why: &str| Error::NoSigningKey(format!("{} ({why})", cert.fingerprint()));
    let vc = cert
        .with_policy(policy, now)
        .map_err(|_| unfit("not valid now"))?;
    let mut packets: Vec<Packet> = vec![cert.primary_key().key().clone().into()];
    if let Ok(sig) = vc.direct_key_signature() {
        packets.push(sig.clone().into());
    }
    let mut uids = 0;
    for ua in vc.userids().revoked(false) {
        let matches = ua
            .userid()
            .email()
            .ok()
            .flatten()
            .is_some_and(|e| e.eq_ignore_ascii_case(&addr));
        if matches {
            packets.push(ua.userid().clone().into());
            packets.push(ua.binding_signature().clone().into());
            uids += 1;
        }
    }
    if uids == 0 {
        return Err(unfit(&format!("no user ID for {addr}")));
    }
    let subkeys = || vc.keys().subkeys().alive().revoked(false);
    let newest = |ka: &openpgp::cert::amalgamation::key::ValidSubordinateKeyAmalgamation<
        '_,
        openpgp::packet::key::PublicParts,
    >| ka.key().creation_time();
    let signing = subkeys().for_signing().max_by_key(newest);
    let encryption = subkeys()
        .filter(|ka| ka.for_transport_encryption() || ka.for_storage_encryption())
        .max_by_key(newest)
        .ok_or_else(|| unfit("no encryption subkey"))?;
    for ka in signing.iter().chain(std::iter::once(&encryption)) {
        packets.push(ka.key().clone().into());
        packets.push(ka.binding_signature().clone().into());
    }
    let minimal =
        Cert::from_packets(packets.into_iter()).map_err(|e| Error::Crypto(e.to_string()))?;
    let bytes = minimal.to_vec().map_err(|e| Error::Crypto(e.to_string()))?;
    Ok(fold(
        &addr,
        &base64::engine::general_purpose::STANDARD.encode(bytes),
    ))
}

/// `Autocrypt: addr=…; keydata=…` folded inside the base64 run (which readers take with
/// whitespace removed): every line within [`WIDTH`] columns, continuation lines starting
/// with a space. Only an address longer than the first line can overflow it.
fn fold(addr: &str, keydata: &str) -> String {
    let mut out = format!("Autocrypt: addr={addr};");
    if out.len() + " keydata=".len() + 4 > WIDTH {
        out.push_str("\r\n");
    }
    out.push_str(" keydata=");
    let mut col = out.rsplit("\r\n").next().map_or(0, str::len);
    let mut rest = keydata.as_bytes();
    while !rest.is_empty() {
        if col >= WIDTH {
            out.push_str("\r\n ");
            col = 1;
        }
        let (line, tail) = rest.split_at((WIDTH - col).min(rest.len()));
        out.push_str(&String::from_utf8_lossy(line));
        col += line.len();
        rest = tail;
    }
    out.push_str("\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use openpgp::cert::CertBuilder;
    use openpgp::parse::Parse;
    use openpgp::policy::StandardPolicy;

    #[test]
    fn minimal_key_folded_to_78_columns() {
        let p = StandardPolicy::new();
        let now = SystemTime::now();
        let (cert, _) = CertBuilder::general_purpose(Some("Alice <Alice@Example.org>"))
            .add_userid("Alice <alice@elsewhere.example>")
            .add_transport_encryption_subkey()
            .generate()
            .unwrap();
        let h = header(&cert, "alice@example.org", &p, now).unwrap();
        assert!(h.starts_with("Autocrypt: addr=alice@example.org; keydata="));
        assert!(h.ends_with("\r\n"));
        for line in h.strip_suffix("\r\n").unwrap().split("\r\n") {
            assert!(line.len() <= WIDTH, "{line}");
        }
        let unfolded = h.replace("\r\n", "");
        let b64: String = unfolded
            .split("keydata=")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let key = Cert::from_bytes(&bytes).unwrap();
        assert_eq!(key.fingerprint(), cert.fingerprint());
        assert!(!key.is_tsk());
        assert_eq!(key.userids().count(), 1, "only the user ID for addr");
        let vc = key.with_policy(&p, now).unwrap();
        assert_eq!(vc.keys().subkeys().for_signing().count(), 1);
        assert_eq!(
            vc.keys().subkeys().for_transport_encryption().count(),
            1,
            "one encryption subkey"
        );
        assert!(header(&cert, "bob@example.org", &p, now).is_err());
    }

    #[test]
    fn folding_keeps_every_character() {
        let data = "x".repeat(500);
        let folded = fold("a@b", &data);
        assert!(folded.starts_with("Autocrypt: addr=a@b; keydata=xxx"));
        assert!(folded.split("\r\n").all(|l| l.len() <= WIDTH));
        let squeeze = |s: &str| s.split_whitespace().collect::<String>();
        assert_eq!(
            squeeze(&folded),
            squeeze(&format!("Autocrypt: addr=a@b; keydata={data}"))
        );
        let long = format!("{}@example.org", "l".repeat(70));
        let folded = fold(&long, &data);
        assert!(folded.contains(";\r\n keydata=xxx"), "{folded}");
        assert!(folded.split("\r\n").skip(1).all(|l| l.len() <= WIDTH));
    }
}
