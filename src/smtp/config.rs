//! What one listener's sessions need, built once at start-up.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use super::auth_failures::AuthFailures;

/// How AUTH works on a listener.
#[derive(Clone, Default)]
pub enum AuthMode {
    /// AUTH is not offered.
    #[default]
    None,
    /// Users and argon2 PHC hashes from the configuration.
    Local(Arc<Vec<(String, String)>>),
    /// The backend checks the credentials by logging in upstream with them.
    Passthrough,
}

impl std::fmt::Debug for AuthMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthMode::None => write!(f, "None"),
            AuthMode::Local(users) => write!(f, "Local({} users)", users.len()),
            AuthMode::Passthrough => write!(f, "Passthrough"),
        }
    }
}

/// Per-listener session settings.
#[derive(Clone)]
pub struct SessionConfig {
    /// Our name in the greeting, EHLO and `Received:`.
    pub hostname: String,
    pub max_message_size: usize,
    pub max_header_size: usize,
    pub max_recipients: usize,
    /// The longest command line, CRLF included (RFC 5321: 512).
    pub max_command_line: usize,
    /// Cut a client that takes longer than this for one command (slowloris).
    pub command_timeout: Duration,
    /// Cut a client that takes longer than this from 354 to the final dot.
    pub data_timeout: Duration,
    /// `Some` when STARTTLS (or implicit TLS) is available.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// TLS from the first byte.
    pub implicit_tls: bool,
    pub auth: AuthMode,
    /// AUTH, or an allowlisted address, is needed before MAIL.
    pub require_auth: bool,
    /// Clients allowed to send without AUTH when `require_auth` is set.
    pub allow: Vec<IpNet>,
    /// Offer SMTPUTF8 (only when the next hop offers it).
    pub smtputf8: bool,
    /// AUTH without TLS is allowed on loopback only.
    pub loopback: bool,
    /// Failed AUTH attempts before the session is closed.
    pub max_auth_failures: u32,
    /// Failed AUTH attempts per client address, shared by every listener of the process,
    /// so that reconnecting or switching listeners does not reset them.
    pub auth_failures: Arc<AuthFailures>,
    /// Unknown or invalid commands before the session is closed.
    pub max_errors: u32,
    /// Where and from what size a message goes to disk while it arrives; `None` keeps
    /// every message in memory.
    pub spill: Option<crate::blob::Spill>,
    /// The next hop's SIZE, learned from its EHLO or LHLO, and how this listener's copies
    /// grow on the way there: the listener offers only what still fits.
    pub next_hop_size: Option<crate::relay::size::Fits>,
}

impl SessionConfig {
    /// Defaults for a loopback listener without TLS or AUTH (tests build on this).
    pub fn new(hostname: impl Into<String>) -> SessionConfig {
        SessionConfig {
            hostname: hostname.into(),
            max_message_size: 35 * 1024 * 1024,
            max_header_size: 1024 * 1024,
            max_recipients: 100,
            max_command_line: 512,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            tls: None,
            implicit_tls: false,
            auth: AuthMode::None,
            require_auth: false,
            allow: Vec::new(),
            smtputf8: false,
            loopback: true,
            max_auth_failures: 3,
            auth_failures: Arc::default(),
            max_errors: 20,
            spill: None,
            next_hop_size: None,
        }
    }

    /// The largest message this listener takes now: `max_message_size`, or less when the
    /// next hop's SIZE leaves less room for the copy.
    pub fn message_limit(&self) -> usize {
        let fits = self
            .next_hop_size
            .as_ref()
            .and_then(|h| h.client_limit())
            .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
        self.max_message_size.min(fits)
    }

    /// Whether `ip` may send without AUTH.
    pub fn allowed(&self, ip: IpAddr) -> bool {
        !self.require_auth || self.allow.iter().any(|n| n.contains(&ip))
    }
}

impl std::fmt::Debug for SessionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionConfig")
            .field("hostname", &self.hostname)
            .field("tls", &self.tls.is_some())
            .field("auth", &self.auth)
            .field("require_auth", &self.require_auth)
            .finish_non_exhaustive()
    }
}
