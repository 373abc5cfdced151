//! The `Autocrypt:` header (Autocrypt Level 1) for the sender of a message sealpost signs.
//!
//! Written here rather than with `sequoia-autocrypt` 0.26: that crate reads the clock
//! (its validity checks use the current time, not `now`), keeps expired subkeys, compares
//! the address case-sensitively and does not fold the header.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use base64::Engine;
use openpgp::packet::Packet;
use openpgp::policy::Policy;
use openpgp::serialize::SerializeInto;
use openpgp::{Cert, Fingerprint};
use sealpost_keyring::openpgp;

use super::error::Error;

/// Header lines are folded to this many columns.
const WIDTH: usize = 78;

/// How long a built header is reused at most, so that a subkey that only becomes valid
/// later (created in the future) is announced soon enough.
const REUSE: Duration = Duration::from_secs(600);

/// Most headers kept; a gateway signs for few senders, and the cache is emptied when full.
const CACHE_ENTRIES: usize = 1024;

/// A header built for one certificate object and address, and while it stays correct.
struct Cached {
    /// The keyring hands out one `Arc` per stored version of a key and replaces it when the
    /// key changes, so the same live allocation means the same certificate.
    cert: Weak<Cert>,
    header: String,
    built: SystemTime,
    until: SystemTime,
}

type Cache = Mutex<HashMap<(Fingerprint, String, usize), Cached>>;

static CACHE: OnceLock<Cache> = OnceLock::new();

/// [`header`], built once per signer certificate, address and policy and then reused until
/// a component in it expires (or [`REUSE`] passes). Building it means assembling,
/// canonicalizing and serializing a minimal certificate, which cost more than the
/// signature itself on a 10 KB message.
///
/// # Errors
/// As [`header`].
pub fn cached_header(
    cert: &Arc<Cert>,
    addr: &str,
    policy: &dyn Policy,
    now: SystemTime,
) -> Result<String, Error> {
    let addr = addr.to_ascii_lowercase();
    // The policy object's address: a different policy may choose different subkeys.
    let key = (
        cert.fingerprint(),
        addr,
        policy as *const dyn Policy as *const () as usize,
    );
    let cache = CACHE.get_or_init(Cache::default);
    if let Ok(entries) = cache.lock() {
        if let Some(c) = entries.get(&key) {
            let same = c.cert.upgrade().is_some_and(|c| Arc::ptr_eq(&c, cert));
            if same && c.built <= now && now < c.until {
                return Ok(c.header.clone());
            }
        }
    }
    let (header, expires) = build(cert, &key.1, policy, now)?;
    let until = expires.map_or(now + REUSE, |e| e.min(now + REUSE));
    if let Ok(mut entries) = cache.lock() {
        if entries.len() >= CACHE_ENTRIES {
            entries.clear();
        }
        entries.insert(
            key,
            Cached {
                cert: Arc::downgrade(cert),
                header: header.clone(),
                built: now,
                until,
            },
        );
    }
    Ok(header)
}

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
    build(cert, addr, policy, now).map(|(h, _)| h)
}

/// The header, and the first time at which a key or signature in it expires.
fn build(
    cert: &Cert,
    addr: &str,
    policy: &dyn Policy,
    now: SystemTime,
) -> Result<(String, Option<SystemTime>), Error> {
    let addr = addr.to_ascii_lowercase();
    let unfit = |why: &str| Error::NoSigningKey(format!("{} ({why})", cert.fingerprint()));
    let vc = cert
        .with_policy(policy, now)
        .map_err(|_| unfit("not valid now"))?;
    let mut expires = earliest(None, vc.primary_key().key_expiration_time());
    let mut packets: Vec<Packet> = vec![cert.primary_key().key().clone().into()];
    if let Ok(sig) = vc.direct_key_signature() {
        expires = earliest(expires, sig.signature_expiration_time());
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
            expires = earliest(expires, ua.binding_signature().signature_expiration_time());
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
        expires = earliest(expires, ka.key_expiration_time());
        expires = earliest(expires, ka.binding_signature().signature_expiration_time());
        packets.push(ka.key().clone().into());
        packets.push(ka.binding_signature().clone().into());
    }
    let minimal =
        Cert::from_packets(packets.into_iter()).map_err(|e| Error::Crypto(e.to_string()))?;
    let bytes = minimal.to_vec().map_err(|e| Error::Crypto(e.to_string()))?;
    let header = fold(
        &addr,
        &base64::engine::general_purpose::STANDARD.encode(bytes),
    );
    Ok((header, expires))
}

fn earliest(a: Option<SystemTime>, b: Option<SystemTime>) -> Option<SystemTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
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
    fn cached_headers_follow_expiry_and_key_updates() {
        use openpgp::types::KeyFlags;
        use std::time::Duration;
        let p = StandardPolicy::new();
        let t0 = SystemTime::now() - Duration::from_secs(60);
        let hour = Duration::from_secs(3600);
        let (cert, _) = CertBuilder::new()
            .set_creation_time(t0 - hour)
            .add_userid("<cache@example.org>")
            .add_subkey(KeyFlags::empty().set_signing(), Some(2 * hour), None)
            .add_transport_encryption_subkey()
            .generate()
            .unwrap();
        let cert = Arc::new(cert);
        let first = cached_header(&cert, "cache@example.org", &p, t0).unwrap();
        assert_eq!(first, header(&cert, "cache@example.org", &p, t0).unwrap());
        assert_eq!(
            cached_header(&cert, "Cache@Example.org", &p, t0 + Duration::from_secs(1)).unwrap(),
            first,
            "reused"
        );
        // The signing subkey expires an hour after t0: the header is built anew without it.
        let later = t0 + 2 * hour;
        let after = cached_header(&cert, "cache@example.org", &p, later).unwrap();
        assert_ne!(after, first);
        assert_eq!(
            after,
            header(&cert, "cache@example.org", &p, later).unwrap()
        );
        // Another version of the certificate (another allocation, same fingerprint) is
        // not served the header built for the first.
        let signing = cert
            .with_policy(&p, t0)
            .unwrap()
            .keys()
            .subkeys()
            .for_signing()
            .next()
            .unwrap()
            .key()
            .fingerprint();
        let stripped = Arc::new(
            cert.as_ref()
                .clone()
                .retain_subkeys(|k| k.key().fingerprint() != signing),
        );
        assert_eq!(stripped.fingerprint(), cert.fingerprint());
        let soon = t0 + Duration::from_secs(2);
        let without = cached_header(&stripped, "cache@example.org", &p, soon).unwrap();
        assert_eq!(
            without,
            header(&stripped, "cache@example.org", &p, soon).unwrap()
        );
        let with = cached_header(&cert, "cache@example.org", &p, soon).unwrap();
        assert_eq!(with, first);
        assert_ne!(with, without);
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
