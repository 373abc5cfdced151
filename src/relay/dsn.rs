//! Delivery status notifications (RFC 3464): what the sender gets when the gateway gives up
//! on a spooled copy.

use crate::smtp::envelope::{Notify, Recipient};
use crate::smtp::reply::Reply;

/// One recipient the gateway could not deliver to.
#[derive(Debug, Clone)]
pub struct Failure {
    pub recipient: Recipient,
    pub reply: Reply,
}

/// Whether this recipient asked not to be told (NOTIFY=NEVER, or NOTIFY without FAILURE).
pub fn wanted(r: &Recipient) -> bool {
    r.notify.is_empty() || r.notify.contains(&Notify::Failure)
}

/// What of the original message a report returns (RFC 3461 §4.3, RFC 3464 §2).
#[derive(Debug, Clone, Copy)]
pub enum Original<'a> {
    /// RET=FULL: the whole message, as `message/rfc822`.
    Full(&'a [u8]),
    /// RET=HDRS or no RET: the header (cut from these bytes at the first empty line), as
    /// `text/rfc822-headers`.
    Headers(&'a [u8]),
    /// RET=FULL, but the message is too large to return whole: its header, as for
    /// `Headers`, and the text part says why the body is missing.
    HeadersOfLarge(&'a [u8]),
    /// Incoming mail, whatever RET asks for: the header of the message as the gateway
    /// received it, as for `Headers`, and the text part says that only it is returned.
    /// What was delivered may have been decrypted; none of it goes back.
    ReceivedHeader(&'a [u8]),
}

/// A `multipart/report; report-type=delivery-status` message to `sender`.
pub fn build(
    hostname: &str,
    sender: &str,
    queue_id: &str,
    envid: Option<&str>,
    failures: &[Failure],
    original: Original<'_>,
) -> Vec<u8> {
    let boundary = format!("sealpost-dsn-{queue_id}");
    let date = chrono::Utc::now().to_rfc2822();
    let mut m = String::new();
    m.push_str(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n"
    ));
    m.push_str(&format!("To: <{sender}>\r\n"));
    m.push_str("Subject: Undelivered Mail Returned to Sender\r\n");
    m.push_str(&format!("Date: {date}\r\n"));
    m.push_str(&format!("Message-ID: <{queue_id}.dsn@{hostname}>\r\n"));
    m.push_str("Auto-Submitted: auto-replied\r\n");
    m.push_str("MIME-Version: 1.0\r\n");
    m.push_str(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\r\n"
    ));
    m.push_str("This is a MIME-encapsulated message.\r\n\r\n");
    m.push_str(&format!(
        "--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    ));
    m.push_str(&format!(
        "This is the mail gateway at {hostname}.\r\n\r\nYour message (queue ID {queue_id}) could not be delivered to the\r\nrecipients below. The gateway has given up.\r\n\r\n"
    ));
    for f in failures {
        m.push_str(&format!("<{}>: {}\r\n", f.recipient.address, f.reply));
    }
    match original {
        Original::HeadersOfLarge(_) => m.push_str(
            "\r\nYour message was too large to be returned whole; its header follows.\r\n",
        ),
        Original::ReceivedHeader(_) => m.push_str(
            "\r\nOnly the header of your message, as this gateway received it, is returned.\r\n",
        ),
        Original::Full(_) | Original::Headers(_) => {}
    }
    m.push_str(&format!(
        "\r\n--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
    ));
    m.push_str(&format!("Reporting-MTA: dns; {hostname}\r\n"));
    if let Some(id) = envid {
        m.push_str(&format!("Original-Envelope-Id: {id}\r\n"));
    }
    m.push_str(&format!("Arrival-Date: {date}\r\n"));
    for f in failures {
        m.push_str("\r\n");
        if let Some(orcpt) = &f.recipient.orcpt {
            m.push_str(&format!("Original-Recipient: {orcpt}\r\n"));
        }
        m.push_str(&format!(
            "Final-Recipient: rfc822; {}\r\n",
            f.recipient.address
        ));
        m.push_str("Action: failed\r\n");
        let status = f
            .reply
            .enhanced
            .map(|e| {
                // A DSN reports a final failure: a temporary code that ran out of time is
                // reported with class 4 as given, and the Action says "failed".
                e.to_string()
            })
            .unwrap_or_else(|| "5.0.0".to_string());
        m.push_str(&format!("Status: {status}\r\n"));
        m.push_str(&format!(
            "Diagnostic-Code: smtp; {}\r\n",
            f.reply.to_string().replace(['\r', '\n'], " ")
        ));
    }
    match original {
        Original::Full(message) => {
            m.push_str(&format!(
                "\r\n--{boundary}\r\nContent-Type: message/rfc822\r\n\r\n"
            ));
            m.push_str(&String::from_utf8_lossy(message));
        }
        Original::Headers(message)
        | Original::HeadersOfLarge(message)
        | Original::ReceivedHeader(message) => {
            let end = message
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(message.len(), |i| i + 2);
            m.push_str(&format!(
                "\r\n--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"
            ));
            m.push_str(&String::from_utf8_lossy(
                message.get(..end).unwrap_or(message),
            ));
        }
    }
    m.push_str(&format!("\r\n--{boundary}--\r\n"));
    m.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::reply::Enhanced;

    fn bob_unknown() -> Vec<Failure> {
        vec![Failure {
            recipient: Recipient::plain("bob@example.net"),
            reply: Reply::new(550, Enhanced(5, 1, 1), "no such user"),
        }]
    }

    #[test]
    fn report_names_recipients_and_reason() {
        let failures = bob_unknown();
        let original = b"Subject: hello\r\nFrom: a@example.org\r\n\r\nsecret body\r\n";
        let dsn = build(
            "gw.test",
            "a@example.org",
            "Q1",
            None,
            &failures,
            Original::Headers(original),
        );
        use mail_parser::MimeHeaders;
        let parsed = mail_parser::MessageParser::default().parse(&dsn).unwrap();
        assert_eq!(parsed.content_type().unwrap().subtype(), Some("report"));
        assert_eq!(parsed.parts.len(), 4, "root, text, status, headers");
        let text = String::from_utf8_lossy(&dsn);
        assert!(text.contains("Final-Recipient: rfc822; bob@example.net"));
        assert!(text.contains("Status: 5.1.1"));
        assert!(text.contains("Diagnostic-Code: smtp; 550 5.1.1 no such user"));
        assert!(text.contains("Subject: hello"));
        assert!(
            !text.contains("secret body"),
            "headers only unless RET=FULL"
        );
        assert!(wanted(&failures[0].recipient));
    }

    #[test]
    fn a_large_message_asked_back_whole_comes_back_as_its_header_with_a_note() {
        let failures = bob_unknown();
        let original = b"Subject: hello\r\n\r\nsecret body\r\n";
        let full = build(
            "gw.test",
            "a@x",
            "Q1",
            None,
            &failures,
            Original::Full(original),
        );
        let full = String::from_utf8_lossy(&full);
        assert!(full.contains("message/rfc822") && full.contains("secret body"));
        let dsn = build(
            "gw.test",
            "a@x",
            "Q1",
            None,
            &failures,
            Original::HeadersOfLarge(original),
        );
        let text = String::from_utf8_lossy(&dsn);
        assert!(text.contains("too large to be returned whole"));
        assert!(text.contains("text/rfc822-headers") && text.contains("Subject: hello"));
        assert!(!text.contains("secret body"));
    }
}
