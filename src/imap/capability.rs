//! The capabilities the proxy passes on: only those it handles correctly. Everything it
//! would have to understand and does not (COMPRESS would hide the stream from it, BINARY
//! and CONDSTORE change what FETCH returns, server-side SORT and THREAD see only the
//! placeholder Subject of an encrypted message, STARTTLS towards the client is not
//! offered) is taken out of every capability list: the greeting's, a `CAPABILITY`
//! response's and the one in a tagged `OK` after login.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

/// Capabilities kept, upper-case. STARTTLS is the proxy's own ([`before_tls`]), never the
/// upstream's.
const KEPT: &[&str] = &[
    "IMAP4REV1",
    "LITERAL+",
    "LITERAL-",
    "SASL-IR",
    "AUTH=PLAIN",
    "LOGINDISABLED",
    "IDLE",
    "UIDPLUS",
    "MOVE",
    "NAMESPACE",
    "ID",
    "ENABLE",
    "CHILDREN",
    "SPECIAL-USE",
    "UNSELECT",
    "LIST-EXTENDED",
    "LIST-STATUS",
    "QUOTA",
    "I18NLEVEL=1",
];

/// `line` with the capabilities it lists narrowed to those kept; `None` when it lists
/// none (`* CAPABILITY …` or a `[CAPABILITY …]` response code).
pub fn filter(line: &[u8]) -> Option<Vec<u8>> {
    // A capability list is one line without literals: a response with more (a FETCH with
    // a message in it) is passed over without reading it all.
    let first = line.iter().position(|&b| b == b'\n')?;
    if first + 1 != line.len() {
        return None;
    }
    let upper = line.to_ascii_uppercase();
    let (start, bracketed) = if upper.starts_with(b"* CAPABILITY ") {
        (b"* CAPABILITY ".len(), false)
    } else {
        let at = upper.windows(12).position(|w| w == b"[CAPABILITY ")?;
        (at + 12, true)
    };
    let rest = line.get(start..)?;
    let end = if bracketed {
        rest.iter().position(|&b| b == b']')?
    } else {
        rest.len() - usize::from(rest.ends_with(b"\r\n")) * 2
    };
    let list = rest.get(..end)?;
    let kept: Vec<&[u8]> = list
        .split(|&b| b == b' ')
        .filter(|c| {
            let c = c.to_ascii_uppercase();
            KEPT.iter().any(|k| k.as_bytes() == c.as_slice())
        })
        .collect();
    let mut out = line.get(..start)?.to_vec();
    out.extend_from_slice(&kept.join(&b' '));
    out.extend_from_slice(rest.get(end..)?);
    Some(out)
}

/// A capability list as it reads before STARTTLS: STARTTLS offered, and logins disabled
/// until it is done (RFC 9051 §6.2.1), so that no password crosses in the clear.
pub fn before_tls(line: &[u8]) -> Vec<u8> {
    let upper = line.to_ascii_uppercase();
    let Some(at) = upper
        .windows(11)
        .position(|w| w == b"CAPABILITY ")
        .map(|i| i + 11)
    else {
        return line.to_vec();
    };
    let mut out = line.get(..at).unwrap_or_default().to_vec();
    out.extend_from_slice(b"STARTTLS LOGINDISABLED ");
    let rest = line.get(at..).unwrap_or_default();
    // AUTH= mechanisms are not offered before TLS either.
    let mut words = Vec::new();
    let (list, tail) = match rest.iter().position(|&b| b == b']' || b == b'\r') {
        Some(i) => (
            rest.get(..i).unwrap_or_default(),
            rest.get(i..).unwrap_or_default(),
        ),
        None => (rest, &b""[..]),
    };
    for w in list.split(|&b| b == b' ') {
        if !w.to_ascii_uppercase().starts_with(b"AUTH=") && !w.is_empty() {
            words.push(w);
        }
    }
    out.extend_from_slice(&words.join(&b' '));
    out.extend_from_slice(tail);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_handled_capabilities_remain() {
        let greeting = b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN AUTH=LOGIN COMPRESS=DEFLATE BINARY] Dovecot ready.\r\n";
        assert_eq!(
            filter(greeting).unwrap(),
            b"* OK [CAPABILITY IMAP4rev1 SASL-IR ID ENABLE IDLE LITERAL+ AUTH=PLAIN] Dovecot ready.\r\n"
        );
        let listed = b"* CAPABILITY IMAP4rev1 STARTTLS CONDSTORE SORT THREAD=REFERENCES MOVE\r\n";
        assert_eq!(filter(listed).unwrap(), b"* CAPABILITY IMAP4rev1 MOVE\r\n");
        assert_eq!(filter(b"* 3 EXISTS\r\n"), None);
        assert_eq!(filter(b"A1 OK [CAPABILITY IMAP4rev1"), None);
        assert_eq!(
            filter(b"* 1 FETCH (BODY[] {27}\r\n* CAPABILITY IMAP4rev1 X\r\n)\r\n"),
            None
        );
        assert_eq!(
            before_tls(b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN IDLE] ready\r\n"),
            b"* OK [CAPABILITY STARTTLS LOGINDISABLED IMAP4rev1 SASL-IR IDLE] ready\r\n"
        );
    }
}
