//! Autocrypt Level 1 (§2.1, §2.3) on received mail, sans-I/O apart from the keyring: the
//! `Autocrypt:` header read strictly, and the peer state updated for every message from a
//! single From address.
//!
//! Refused, each with a logged reason and nothing stored: a header whose `addr` is not the
//! From address, a header with an unknown critical attribute, without `addr` or `keydata`,
//! with keydata that is not base64 or not a certificate, a header over
//! [`MAX_HEADER`], several headers for the From address, and any header of a
//! `multipart/report` (a bounce carries someone else's headers).
//!
//! `Autocrypt-Gossip` (§5.2) is read only from the header of a decrypted payload (the
//! inbound transform hands it over; gossip in cleartext is never looked at), by the same
//! rules, for addresses among the message's To and Cc recipients, one key per address.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use sealpost_keyring::autocrypt::{Header, PreferEncrypt};
use sealpost_keyring::openpgp::parse::Parse;
use sealpost_keyring::openpgp::Cert;
use sealpost_keyring::{Keyring, Offer};

use crate::blob::Blob;
use crate::mime::entity::ContentType;
use crate::mime::headers::{self, Field};
use crate::mime::lines::HEAD_MAX;
use crate::mime::scan;

/// Longest `Autocrypt:` field value read: a Cv25519 key is under 1 KiB, an RSA-4096 key
/// with a few user IDs under 10 KiB.
pub const MAX_HEADER: usize = 64 << 10;

/// Standard base64, its padding optional: writers differ.
const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Why a header was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the header is longer than {MAX_HEADER} bytes")]
    TooLarge,
    #[error("the header has no addr attribute")]
    NoAddr,
    #[error("the header has no keydata attribute")]
    NoKeydata,
    #[error("the header has the unknown critical attribute {0:?}")]
    UnknownCritical(String),
    #[error("the keydata is not base64")]
    BadBase64,
    #[error("the keydata is not an OpenPGP certificate: {0}")]
    BadKey(String),
    #[error("its addr {addr} is not the From address {from}")]
    NotTheFrom { addr: String, from: String },
    #[error("the message has several Autocrypt headers for its From address")]
    Several,
    #[error("its addr {0} is not among the message's To and Cc recipients")]
    NotARecipient(String),
    #[error("the message gossips several keys for {0}")]
    SeveralGossip(String),
}

/// A header's attributes, before its key is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub addr: String,
    pub prefer_encrypt: PreferEncrypt,
    pub keydata: Vec<u8>,
}

/// Reads an `Autocrypt:` field value (§2.1): `;`-separated `name=value` attributes;
/// `addr` and `keydata` required, `prefer-encrypt` optional, names starting with `_`
/// ignored, any other name makes the header invalid.
///
/// # Errors
/// What makes the header unusable.
pub fn parse(value: &str) -> Result<Parsed, Refused> {
    if value.len() > MAX_HEADER {
        return Err(Refused::TooLarge);
    }
    let (mut addr, mut keydata, mut prefer) = (None, None, PreferEncrypt::NoPreference);
    for attribute in value.split(';') {
        let Some((name, v)) = attribute.split_once('=') else {
            if attribute.trim().is_empty() {
                continue;
            }
            return Err(Refused::UnknownCritical(attribute.trim().to_string()));
        };
        let name = name.trim().to_ascii_lowercase();
        match name.as_str() {
            "addr" => addr = Some(v.trim().to_ascii_lowercase()),
            "keydata" => {
                let text: String = v.chars().filter(|c| !c.is_ascii_whitespace()).collect();
                keydata = Some(BASE64.decode(text).map_err(|_| Refused::BadBase64)?);
            }
            "prefer-encrypt" => {
                if v.trim().eq_ignore_ascii_case("mutual") {
                    prefer = PreferEncrypt::Mutual;
                }
            }
            n if n.starts_with('_') => {}
            n => return Err(Refused::UnknownCritical(n.to_string())),
        }
    }
    Ok(Parsed {
        addr: addr.ok_or(Refused::NoAddr)?,
        prefer_encrypt: prefer,
        keydata: keydata.ok_or(Refused::NoKeydata)?,
    })
}

/// What a received message says about its sender, for the keyring.
#[derive(Debug)]
pub struct Seen {
    /// The single From address, lower-cased.
    pub from: String,
    /// The message's Date, or now when it has none or one in the future (§2.3's
    /// effective date).
    pub date: SystemTime,
    /// The sender's header, read; `None` when there is none. A refused header counts as
    /// none, as the spec says.
    pub header: Option<Result<Header, Refused>>,
}

/// Reads the sender's Autocrypt header from a message's header section; `None` for a
/// message without one, or that says nothing about a single sender (no single From
/// address, or a `multipart/report`).
pub fn seen(head: &[u8], now: SystemTime) -> Option<Seen> {
    let (fields, _) = headers::split(&[head, b"\r\n"].concat());
    // Most mail has no Autocrypt header: nothing more to read then.
    if !fields.iter().any(|f| f.is("Autocrypt")) {
        return None;
    }
    let from = headers::from_address(&fields)?;
    if ContentType::of(&fields).is_some_and(|c| c.is("multipart", "report")) {
        return None;
    }
    let date = date_of(head).filter(|d| *d < now).unwrap_or(now);
    let mut theirs: Vec<Result<Parsed, Refused>> = Vec::new();
    for f in fields.iter().filter(|f| f.is("Autocrypt")) {
        match parse(&unfold(f)) {
            Ok(p) if p.addr != from => theirs.push(Err(Refused::NotTheFrom {
                addr: p.addr,
                from: from.clone(),
            })),
            other => theirs.push(other),
        }
    }
    let header = match theirs.len() {
        0 => None,
        1 => theirs.pop().map(|p| p.and_then(certificate)),
        _ if theirs.iter().filter(|p| p.is_ok()).count() > 1 => Some(Err(Refused::Several)),
        _ => theirs
            .into_iter()
            .find(Result::is_ok)
            .map(|p| p.and_then(certificate)),
    };
    Some(Seen { from, date, header })
}

fn certificate(p: Parsed) -> Result<Header, Refused> {
    let cert = Cert::from_bytes(&p.keydata).map_err(|e| Refused::BadKey(e.to_string()))?;
    Ok(Header {
        cert,
        prefer_encrypt: p.prefer_encrypt,
    })
}

fn unfold(f: &Field) -> String {
    f.raw.replace("\r\n", "")
}

/// The Date field as a time, when it reads as one.
fn date_of(head: &[u8]) -> Option<SystemTime> {
    let parsed = mail_parser::MessageParser::default().parse_headers(head)?;
    let ts = parsed.date()?.to_timestamp();
    let secs = u64::try_from(ts).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// Offers the sender's Autocrypt key of a received message to the keyring, and records
/// that the sender was seen. Never fails the delivery: every outcome is logged.
pub fn harvest(keyring: &Keyring, message: &Blob, now: SystemTime, queue_id: &str) {
    let head = match scan::head_of(message.reader(), HEAD_MAX) {
        Ok((head, _)) => head,
        Err(e) => {
            tracing::warn!(%queue_id, error = %e, "cannot read the header for Autocrypt");
            return;
        }
    };
    let Some(seen) = seen(&head, now) else {
        return;
    };
    // Only a message with a header is recorded: a write per received message (and, on a
    // shared keyring, a change notice to every gateway) would cost more than the last-seen
    // date is worth here, where it decides nothing.
    let header = match seen.header {
        Some(Ok(h)) => h,
        Some(Err(reason)) => {
            tracing::info!(%queue_id, from = %seen.from, %reason, "Autocrypt header not taken");
            return;
        }
        None => return,
    };
    if fresh(keyring, &seen.from, &header, seen.date) {
        return;
    }
    match keyring.autocrypt_seen(&seen.from, seen.date, Some(header)) {
        Ok(Some(offer)) => log_offer(queue_id, "Autocrypt", &seen.from, &offer),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(%queue_id, from = %seen.from, error = %e, "cannot record the Autocrypt state")
        }
    }
}

/// Whether the keyring already has this header's key as the peer's, recorded less than a
/// day before `date`: then the same header on every message of a busy correspondent is
/// not written again. A new key, or an update of the same one, is taken the next day.
fn fresh(keyring: &Keyring, from: &str, header: &Header, date: SystemTime) -> bool {
    const DAY: u64 = 24 * 60 * 60;
    let Ok(Some(peer)) = keyring.autocrypt_peer(from) else {
        return false;
    };
    let date = date.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    peer.public_key.as_deref() == Some(header.cert.fingerprint().to_hex().as_str())
        && peer.prefer_encrypt == header.prefer_encrypt
        && peer
            .autocrypt_timestamp
            .is_some_and(|t| date >= t && date - t < DAY)
}

fn log_offer(queue_id: &str, what: &str, addr: &str, offer: &Offer) {
    match offer {
        Offer::Stored { fingerprint, new } => tracing::info!(
            %queue_id, %addr, key = %fingerprint.to_hex(), new,
            "{what} key stored (trust autocrypt)"
        ),
        Offer::Unchanged(_) => {}
        Offer::Queued { fingerprint, .. } => tracing::warn!(
            %queue_id, %addr, key = %fingerprint.to_hex(),
            "{what} header offers a different key: queued for review (sealpost keys review list)"
        ),
        Offer::Ignored(why) => {
            tracing::info!(%queue_id, %addr, reason = %why, "{what} key not stored")
        }
    }
}

/// What a decrypted message gossips (Autocrypt Level 1 §5.2): each `Autocrypt-Gossip`
/// value of its payload's header read strictly, as an `Autocrypt:` header is, and kept
/// only for an address among the To and Cc recipients of the message's header `head`;
/// an address gossiped more than once is refused. Each with its `addr` (empty when the
/// value has none), in the order given.
pub fn gossip(head: &[u8], values: &[String]) -> Vec<(String, Result<Cert, Refused>)> {
    let recipients: Vec<String> = mail_parser::MessageParser::default()
        .parse_headers(head)
        .map(|m| {
            [m.to(), m.cc()]
                .into_iter()
                .flatten()
                .flat_map(|a| a.iter())
                .filter_map(|a| a.address())
                .map(str::to_ascii_lowercase)
                .collect()
        })
        .unwrap_or_default();
    let parsed: Vec<Result<Parsed, Refused>> = values.iter().map(|v| parse(v)).collect();
    let addr_of = |p: &Result<Parsed, Refused>| p.as_ref().map(|p| p.addr.clone()).ok();
    parsed
        .iter()
        .map(|p| {
            let addr = addr_of(p).unwrap_or_default();
            let taken = match p {
                Err(e) => Err(e.clone()),
                Ok(p) if !recipients.contains(&p.addr) => {
                    Err(Refused::NotARecipient(p.addr.clone()))
                }
                Ok(p)
                    if parsed
                        .iter()
                        .filter(|q| addr_of(q).as_ref() == Some(&p.addr))
                        .count()
                        > 1 =>
                {
                    Err(Refused::SeveralGossip(p.addr.clone()))
                }
                Ok(p) => Cert::from_bytes(&p.keydata).map_err(|e| Refused::BadKey(e.to_string())),
            };
            (addr, taken)
        })
        .collect()
}

/// Offers the keys a decrypted message gossips (`values`, the `Autocrypt-Gossip` fields
/// of its payload's header; see [`gossip`]) to the keyring as [`Source::Gossip`], which
/// never lets them replace a pinned key or a better trusted one. Never fails the
/// delivery: every outcome is logged.
///
/// [`Source::Gossip`]: sealpost_keyring::Source::Gossip
pub fn harvest_gossip(
    keyring: &Keyring,
    message: &Blob,
    values: &[String],
    now: SystemTime,
    queue_id: &str,
) {
    if values.is_empty() {
        return;
    }
    let head = match scan::head_of(message.reader(), HEAD_MAX) {
        Ok((head, _)) => head,
        Err(e) => {
            tracing::warn!(%queue_id, error = %e, "cannot read the header for Autocrypt-Gossip");
            return;
        }
    };
    let date = date_of(&head).filter(|d| *d < now).unwrap_or(now);
    for (addr, taken) in gossip(&head, values) {
        let cert = match taken {
            Ok(c) => c,
            Err(reason) => {
                tracing::info!(%queue_id, %addr, %reason, "Autocrypt-Gossip header not taken");
                continue;
            }
        };
        match keyring.autocrypt_gossip(&addr, date, cert) {
            Ok(offer) => log_offer(queue_id, "Autocrypt-Gossip", &addr, &offer),
            Err(e) => {
                tracing::warn!(%queue_id, %addr, error = %e, "cannot record the Autocrypt gossip")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYDATA: &str = "xjMEZQ";

    #[test]
    fn attributes_are_read_strictly() {
        let p = parse(&format!(
            "addr=Alice@Example.net; prefer-encrypt=mutual; _hidden=x; keydata=\r\n {KEYDATA}"
        ))
        .unwrap();
        assert_eq!(p.addr, "alice@example.net");
        assert_eq!(p.prefer_encrypt, PreferEncrypt::Mutual);
        assert_eq!(p.keydata, [0xc6, 0x33, 0x04, 0x65]);
        assert_eq!(
            parse(&format!("addr=a@b.example; critical=1; keydata={KEYDATA}")),
            Err(Refused::UnknownCritical("critical".into()))
        );
        assert_eq!(parse(&format!("keydata={KEYDATA}")), Err(Refused::NoAddr));
        assert_eq!(parse("addr=a@b.example"), Err(Refused::NoKeydata));
        assert_eq!(
            parse("addr=a@b.example; keydata=!!"),
            Err(Refused::BadBase64)
        );
        let huge = format!("addr=a@b.example; keydata={}", "A".repeat(MAX_HEADER));
        assert_eq!(parse(&huge), Err(Refused::TooLarge));
    }

    #[test]
    fn only_the_from_address_and_never_a_report() {
        let now = SystemTime::now();
        let head = format!(
            "From: Mallory <mallory@evil.example>\r\nAutocrypt: addr=alice@example.net; keydata={KEYDATA}\r\n"
        );
        let s = seen(head.as_bytes(), now).unwrap();
        assert_eq!(s.from, "mallory@evil.example");
        assert!(matches!(s.header, Some(Err(Refused::NotTheFrom { .. }))));
        let report = format!(
            "From: MAILER-DAEMON@x.example\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\r\nAutocrypt: addr=mailer-daemon@x.example; keydata={KEYDATA}\r\n"
        );
        assert!(seen(report.as_bytes(), now).is_none());
        let two = format!(
            "From: a@b.example\r\nAutocrypt: addr=a@b.example; keydata={KEYDATA}\r\nAutocrypt: addr=a@b.example; keydata={KEYDATA}\r\n"
        );
        assert!(matches!(
            seen(two.as_bytes(), now).unwrap().header,
            Some(Err(Refused::Several))
        ));
        let bad_key =
            format!("From: a@b.example\r\nAutocrypt: addr=a@b.example; keydata={KEYDATA}\r\n");
        assert!(matches!(
            seen(bad_key.as_bytes(), now).unwrap().header,
            Some(Err(Refused::BadKey(_)))
        ));
        let bad_date = format!(
            "From: a@b.example\r\nDate: Sat, 1 Jan 2huh\r\nAutocrypt: addr=a@b.example; keydata={KEYDATA}\r\n"
        );
        assert_eq!(seen(bad_date.as_bytes(), now).unwrap().date, now);
        assert!(seen(b"From: a@b.example\r\nSubject: no header\r\n", now).is_none());
    }

    #[test]
    fn gossip_only_for_recipients_and_once_per_address() {
        let head = b"From: a@b.example\r\nTo: Carol <Carol@c.example>, d@d.example\r\nCc: undisclosed:;, e@e.example\r\n";
        let values = [
            format!("addr=carol@c.example; keydata={KEYDATA}"),
            format!("addr=mallory@evil.example; keydata={KEYDATA}"),
            format!("addr=d@d.example; keydata={KEYDATA}"),
            format!("addr=d@d.example; keydata={KEYDATA}"),
            format!("addr=e@e.example; critical=1; keydata={KEYDATA}"),
        ];
        let got = gossip(head, &values);
        assert_eq!(got.len(), 5);
        assert_eq!(got[0].0, "carol@c.example");
        // A recipient's gossip gets as far as its key (this one is not a certificate).
        assert!(matches!(got[0].1, Err(Refused::BadKey(_))), "{:?}", got[0]);
        assert_eq!(
            got[1].1.as_ref().err(),
            Some(&Refused::NotARecipient("mallory@evil.example".into()))
        );
        assert_eq!(
            got[2].1.as_ref().err(),
            Some(&Refused::SeveralGossip("d@d.example".into()))
        );
        assert!(matches!(got[4].1, Err(Refused::UnknownCritical(_))));
        assert!(gossip(b"From: a@b.example\r\n", &values[..1])[0].1.is_err());
    }
}
