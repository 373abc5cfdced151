//! MAIL and RCPT command lines for the next hop, SMTP or LMTP, with the parameters the
//! client gave (DSN, RFC 3461) and those the message needs (SIZE, BODY, SMTPUTF8), each
//! only when the next hop offers its extension.

use crate::smtp::envelope::{Notify, Recipient, Ret, Sender};

/// Which MAIL parameters to send; each is decided from the next hop's capabilities.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `SIZE=n` (RFC 1870), the size of the bytes actually sent.
    pub size: Option<usize>,
    /// `BODY=8BITMIME` (RFC 6152): the data has 8-bit bytes and the next hop takes them.
    pub body_8bit: bool,
    /// `SMTPUTF8` (RFC 6531): the client asked for it and the next hop offers it.
    pub smtputf8: bool,
    /// RET and ENVID (RFC 3461): the next hop offers DSN.
    pub dsn: bool,
}

/// `MAIL FROM:<sender> …` with CRLF.
pub fn mail(s: &Sender, p: MailParams) -> String {
    // Quoted again where the local part needs it: written unquoted, a local part such
    // as `a> NOTIFY=…` would become parameters of the command.
    let mut cmd = format!("MAIL FROM:<{}>", s.address.to_smtp());
    if let Some(size) = p.size {
        cmd.push_str(&format!(" SIZE={size}"));
    }
    if p.body_8bit {
        cmd.push_str(" BODY=8BITMIME");
    }
    if p.smtputf8 {
        cmd.push_str(" SMTPUTF8");
    }
    if p.dsn {
        match s.ret {
            Some(Ret::Full) => cmd.push_str(" RET=FULL"),
            Some(Ret::Headers) => cmd.push_str(" RET=HDRS"),
            None => {}
        }
        if let Some(envid) = &s.envid {
            cmd.push_str(&format!(" ENVID={}", xtext(envid)));
        }
    }
    cmd.push_str("\r\n");
    cmd
}

/// `RCPT TO:<recipient> …` with CRLF; NOTIFY and ORCPT only when `dsn`.
pub fn rcpt(r: &Recipient, dsn: bool) -> String {
    let mut cmd = format!("RCPT TO:<{}>", r.address.to_smtp());
    if dsn {
        if !r.notify.is_empty() {
            let n: Vec<&str> = r
                .notify
                .iter()
                .map(|n| match n {
                    Notify::Never => "NEVER",
                    Notify::Success => "SUCCESS",
                    Notify::Failure => "FAILURE",
                    Notify::Delay => "DELAY",
                })
                .collect();
            cmd.push_str(&format!(" NOTIFY={}", n.join(",")));
        }
        if let Some(orcpt) = &r.orcpt {
            match orcpt.split_once(';') {
                Some((kind, addr)) => cmd.push_str(&format!(" ORCPT={kind};{}", xtext(addr))),
                None => cmd.push_str(&format!(" ORCPT=rfc822;{}", xtext(orcpt))),
            }
        }
    }
    cmd.push_str("\r\n");
    cmd
}

/// RFC 3461 xtext: `+`, `=`, controls and non-ASCII as `+XX`.
fn xtext(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if (33..=126).contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_only_when_asked_for() {
        let mut s = Sender::plain("a@example.org");
        s.ret = Some(Ret::Headers);
        s.envid = Some("id 1".into());
        assert_eq!(
            mail(&s, MailParams::default()),
            "MAIL FROM:<a@example.org>\r\n"
        );
        let all = MailParams {
            size: Some(42),
            body_8bit: true,
            smtputf8: true,
            dsn: true,
        };
        assert_eq!(
            mail(&s, all),
            "MAIL FROM:<a@example.org> SIZE=42 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=id+201\r\n"
        );
        let mut r = Recipient::plain("b@example.net");
        r.notify = vec![Notify::Failure, Notify::Delay];
        r.orcpt = Some("rfc822;b+x@example.net".into());
        assert_eq!(rcpt(&r, false), "RCPT TO:<b@example.net>\r\n");
        assert_eq!(
            rcpt(&r, true),
            "RCPT TO:<b@example.net> NOTIFY=FAILURE,DELAY ORCPT=rfc822;b+2Bx@example.net\r\n"
        );
        assert_eq!(xtext("a+b=c d"), "a+2Bb+3Dc+20d");
    }

    #[test]
    fn a_quoted_local_part_is_sent_quoted() {
        // Unquoted, these would be another recipient and a parameter upstream.
        let r = Recipient::plain("victim@evil.test@local.test");
        assert_eq!(
            rcpt(&r, false),
            "RCPT TO:<\"victim@evil.test\"@local.test>\r\n"
        );
        let s = Sender::plain("john doe@example.org");
        assert_eq!(
            mail(&s, MailParams::default()),
            "MAIL FROM:<\"john doe\"@example.org>\r\n"
        );
    }
}
