//! Trace information: queue IDs and the `Received:` header (RFC 5321 §4.4).
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use super::envelope::Recipient;
use super::transaction::Client;

/// A short unique ID: 12 base-32 characters from the clock and randomness.
pub fn new_queue_id() -> String {
    const ALPHABET: &[u8; 32] = b"0123456789BCDFGHJKLMNPQRSTVWXYZ_";
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = nanos ^ rand::random::<u64>().rotate_left(17);
    let mut id = String::with_capacity(12);
    for _ in 0..12 {
        id.push(char::from(
            ALPHABET.get((x & 31) as usize).copied().unwrap_or(b'0'),
        ));
        x >>= 5;
    }
    id
}

/// The trace header (RFC 5321 §4.4), with the protocol named as RFC 3848 does.
pub fn received_header(
    hostname: &str,
    client: &Client,
    esmtp: bool,
    id: &str,
    rcpts: &[Recipient],
) -> Vec<u8> {
    let proto = match (esmtp, client.tls, client.auth.is_some()) {
        (false, _, _) => "SMTP",
        (true, false, false) => "ESMTP",
        (true, true, false) => "ESMTPS",
        (true, false, true) => "ESMTPA",
        (true, true, true) => "ESMTPSA",
    };
    let helo: String = client
        .helo
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    let ip = match client.addr.ip() {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("IPv6:{v6}"),
    };
    let mut h = format!(
        "Received: from {helo} ([{ip}])\r\n\tby {hostname} (sealpost) with {proto} id {id}"
    );
    if let [only] = rcpts {
        if only.address.is_ascii() {
            h.push_str(&format!("\r\n\tfor <{}>", only.address));
        }
    }
    h.push_str(&format!("; {}\r\n", chrono::Utc::now().to_rfc2822()));
    h.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_ids_are_short_and_distinct() {
        let a = new_queue_id();
        let b = new_queue_id();
        assert_eq!(a.len(), 12);
        assert_ne!(a, b);
    }

    #[test]
    fn received_names_protocol_and_single_recipient() {
        let client = Client {
            addr: "[::1]:25".parse().unwrap(),
            helo: "c.test\r\nX-Injected: 1".into(),
            tls: true,
            auth: None,
            mail_at: None,
        };
        let h = received_header(
            "gw.test",
            &client,
            true,
            "ID1",
            &[Recipient::plain("b@y.test")],
        );
        let h = String::from_utf8(h).unwrap();
        assert!(h.starts_with("Received: from c.testX-Injected:1 ([IPv6:::1])\r\n\tby gw.test (sealpost) with ESMTPS id ID1\r\n\tfor <b@y.test>; "), "{h}");
        assert!(h.ends_with("\r\n") && h.matches("\r\n").count() == 3);
        let two = [Recipient::plain("b@y.test"), Recipient::plain("c@y.test")];
        let h = received_header("gw.test", &client, false, "ID1", &two);
        assert!(!String::from_utf8(h).unwrap().contains("for <"));
    }
}
