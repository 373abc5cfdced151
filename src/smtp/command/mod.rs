//! One file per SMTP verb: each checks its preconditions and says what to reply.

pub mod auth;
pub mod data;
pub mod ehlo;
pub mod mail;
pub mod rcpt;

use super::reply::{Enhanced, Reply};

pub fn ok(text: &str) -> Reply {
    Reply::new(250, Enhanced(2, 0, 0), text)
}

pub fn bad_sequence(text: &str) -> Reply {
    Reply::new(503, Enhanced(5, 5, 1), text)
}

pub fn syntax(text: &str) -> Reply {
    Reply::new(501, Enhanced(5, 5, 4), text)
}

pub fn unknown() -> Reply {
    Reply::new(500, Enhanced(5, 5, 1), "Command not recognized")
}

pub fn not_implemented(verb: &str) -> Reply {
    Reply::new(
        502,
        Enhanced(5, 5, 1),
        format!("{verb} is not implemented here"),
    )
}

pub fn line_too_long(limit: usize) -> Reply {
    Reply::new(
        500,
        Enhanced(5, 5, 2),
        format!("Line too long; commands are limited to {limit} octets"),
    )
}

pub fn bare_line_end() -> Reply {
    Reply::new(
        500,
        Enhanced(5, 5, 2),
        "Bare CR or LF in command; lines must end with CRLF",
    )
}

/// A recipient given again in the same transaction: accepted, and delivered to once.
pub fn duplicate_recipient(address: &str) -> Reply {
    Reply::new(
        250,
        Enhanced(2, 1, 5),
        format!(
            "Recipient <{address}> OK; a duplicate of an earlier RCPT, it gets the message once"
        ),
    )
}

pub fn help() -> Reply {
    Reply {
        code: 214,
        enhanced: Some(Enhanced(2, 0, 0)),
        lines: vec![
            "sealpost: an OpenPGP encryption gateway".into(),
            "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT HELP VRFY STARTTLS AUTH".into(),
            "End of HELP".into(),
        ],
    }
}

pub fn vrfy() -> Reply {
    Reply::new(
        252,
        Enhanced(2, 5, 0),
        "Cannot VRFY user, but will accept the message and attempt delivery",
    )
}

pub fn quit(hostname: &str) -> Reply {
    Reply::new(
        221,
        Enhanced(2, 0, 0),
        format!("{hostname} closing connection"),
    )
}

pub fn too_many_errors() -> Reply {
    Reply::new(
        421,
        Enhanced(4, 7, 0),
        "Too many errors; closing connection",
    )
}

pub fn timeout() -> Reply {
    Reply::new(
        421,
        Enhanced(4, 4, 2),
        "Timeout waiting for input; closing connection",
    )
}
