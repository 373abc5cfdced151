//! EHLO and HELO: the greeting and the extensions this listener offers.

use crate::smtp::config::{AuthMode, SessionConfig};
use crate::smtp::reply::{Enhanced, Reply};

/// The EHLO reply. AUTH is offered only under TLS or on loopback (RFC 4954 §4), STARTTLS
/// only before TLS.
pub fn ehlo(cfg: &SessionConfig, peer_name: &str, tls: bool) -> Reply {
    let mut lines = vec![format!("{} greets {}", cfg.hostname, peer_name)];
    lines.push("PIPELINING".into());
    lines.push(format!("SIZE {}", cfg.message_limit()));
    lines.push("8BITMIME".into());
    lines.push("ENHANCEDSTATUSCODES".into());
    lines.push("DSN".into());
    if cfg.smtputf8 {
        lines.push("SMTPUTF8".into());
    }
    if cfg.tls.is_some() && !tls {
        lines.push("STARTTLS".into());
    }
    if auth_offered(cfg, tls) {
        lines.push("AUTH PLAIN LOGIN".into());
    }
    Reply {
        code: 250,
        enhanced: None,
        lines,
    }
}

pub fn auth_offered(cfg: &SessionConfig, tls: bool) -> bool {
    !matches!(cfg.auth, AuthMode::None) && (tls || cfg.loopback)
}

pub fn helo(cfg: &SessionConfig, peer_name: &str) -> Reply {
    Reply::new(
        250,
        Enhanced(2, 0, 0),
        format!("{} greets {}", cfg.hostname, peer_name),
    )
}

/// A HELO/EHLO argument must be a domain or an address literal; reject empty ones.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '<' && c != '>')
}
