//! Envelope addresses: `Address::parse`, and smtp-proto's parser on the `MAIL FROM:<…>`
//! and `RCPT TO:<…>` lines built from the input.
//!
//! Checked on every input:
//! - an address `Address::parse` accepts has no `<`, `>` or control character, and its
//!   local part and domain put back together give its text;
//! - its wire form `to_smtp()`, sent as `RCPT TO:<…>\r\n` (and `MAIL FROM:<…>\r\n`), is
//!   parsed by smtp-proto into the same unquoted text and domain, with no parameter at
//!   all: nothing in an address can add ORCPT, NOTIFY or another command (no injection).
//!   smtp-proto refuses two kinds of valid addresses whole, address literals
//!   (`a@[192.0.2.1]`) and addresses over 256 octets; for those, a refusal is the answer;
//! - an address smtp-proto takes out of a command line built from the raw input, once
//!   accepted by `Address::parse`, passes the same round trip.
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use sealpost::smtp::address::Address;
use smtp_proto::Request;

/// The longest address smtp-proto 0.2 takes (its `MAX_ADDRESS_LEN`).
const SMTP_PROTO_MAX: usize = 256;

/// The round trip of an accepted address through its wire form.
fn round_trip(addr: &Address) {
    if addr.is_null() {
        assert_eq!(addr.to_smtp(), "");
        return;
    }
    let text = addr.as_str();
    assert!(
        !text.chars().any(|c| c.is_control() || c == '<' || c == '>'),
        "accepted {text:?}"
    );
    assert_eq!(format!("{}@{}", addr.local(), addr.domain()), text);
    let wire = addr.to_smtp();
    assert!(
        !wire.chars().any(|c| c.is_control() || c == '<' || c == '>'),
        "wire form {wire:?}"
    );

    // What smtp-proto 0.2 cannot parse at all; never a different address.
    let refusable = addr.domain().starts_with('[') || text.len() > SMTP_PROTO_MAX;

    let line = format!("RCPT TO:<{wire}>\r\n");
    match Request::parse(&mut line.as_bytes().iter()) {
        Ok(Request::Rcpt { to }) => {
            assert_eq!(to.address, text, "RCPT round trip of {wire:?}");
            assert_eq!(to.orcpt, None, "a parameter from {wire:?}");
            assert_eq!((to.flags, to.rrvs), (0, 0), "a parameter from {wire:?}");
            let back = Address::parse(&to.address).expect("re-parsed address");
            assert_eq!(back.domain(), addr.domain());
            assert_eq!(back.local(), addr.local());
        }
        Err(_) if refusable => {}
        other => panic!("{line:?} parsed as {other:?}"),
    }

    let line = format!("MAIL FROM:<{wire}>\r\n");
    match Request::parse(&mut line.as_bytes().iter()) {
        Ok(Request::Mail { from }) => {
            assert_eq!(from.address, text, "MAIL round trip of {wire:?}");
            let plain = smtp_proto::MailFrom {
                address: Cow::Borrowed(text),
                flags: 0,
                size: 0,
                trans_id: None,
                by: 0,
                env_id: None,
                solicit: None,
                mtrk: None,
                auth: None,
                hold_for: 0,
                hold_until: 0,
                mt_priority: 0,
            };
            assert_eq!(from, plain, "a parameter from {wire:?}");
        }
        Err(_) if refusable => {}
        other => panic!("{line:?} parsed as {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(addr) = Address::parse(&text) {
        round_trip(&addr);
    }
    // What a client sends: smtp-proto takes the address out of the line, then the session
    // parses it.
    for line in [
        format!("MAIL FROM:<{text}>\r\n"),
        format!("RCPT TO:<{text}>\r\n"),
        format!("RCPT TO:{text}\r\n"),
    ] {
        let address = match Request::parse(&mut line.as_bytes().iter()) {
            Ok(Request::Mail { from }) => from.address.into_owned(),
            Ok(Request::Rcpt { to }) => to.address.into_owned(),
            _ => continue,
        };
        if let Ok(addr) = Address::parse(&address) {
            round_trip(&addr);
        }
    }
});
