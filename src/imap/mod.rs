//! The IMAP proxy for the person on localhost: a mail client talks IMAP to sealpost,
//! sealpost talks to the provider's IMAP server with the client's own credentials, and
//! encrypted mail comes back decrypted and verified by the same inbound transform as the
//! SMTP path (EFAIL rules and verdict fields included).
//!
//! - [`frame`]: IMAP's lines and literals, sans-I/O, with limits;
//! - [`capability`]: what is advertised (only what the proxy handles);
//! - [`fetch`]: a FETCH of content rewritten, and its answers served from the opened
//!   message;
//! - [`structure`]: the opened message's BODYSTRUCTURE and numbered parts;
//! - [`append`]: APPENDed copies encrypted to the user's own keys, when asked for;
//! - [`cache`]: opened messages kept in memory for the next fetch;
//! - [`outbox`]: answers on their way to the client, cached messages written uncopied;
//! - [`session`]: one client connection and its upstream connection.

pub mod append;
pub mod cache;
pub mod capability;
pub mod disk;
pub mod fetch;
pub mod frame;
pub mod outbox;
pub mod session;
pub mod structure;

use std::net::SocketAddr;
use std::path::PathBuf;

/// How the proxy reaches the upstream IMAP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamTls {
    /// Plain TCP (a server on loopback, or a test).
    None,
    /// STARTTLS after the greeting.
    StartTls,
    /// TLS from the first byte (port 993).
    Tls,
}

impl std::str::FromStr for UpstreamTls {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(UpstreamTls::None),
            "starttls" => Ok(UpstreamTls::StartTls),
            "tls" => Ok(UpstreamTls::Tls),
            other => Err(format!(
                "{other:?} is not an IMAP upstream TLS mode: use none, starttls or tls"
            )),
        }
    }
}

/// The IMAP proxy's settings (`[imap]`, or `serve --imap-…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub listen: SocketAddr,
    pub upstream_host: String,
    pub upstream_port: u16,
    pub upstream_tls: UpstreamTls,
    /// Extra CA (or the upstream's own certificate) for TLS to the upstream.
    pub ca_file: Option<PathBuf>,
    /// The address whose keys open mail when the login name is not an address.
    pub address: Option<String>,
    /// Largest message the proxy takes from the upstream to open.
    pub max_message: usize,
    /// TLS towards the mail client: none (loopback), STARTTLS, or from the first byte.
    pub tls: ListenerTls,
    /// The certificate and key for it; none: the self-signed one the SMTP listeners use.
    pub certificate: Option<(PathBuf, PathBuf)>,
    /// Messages the client APPENDs are encrypted to the user's own keys ([`append`]).
    pub encrypt_appended: bool,
    /// Most bytes of opened messages kept on disk, sealed ([`disk`]); zero: memory only.
    pub disk_cache: u64,
}

/// `[imap] disk_cache` unless set: 256 MiB, some 20,000 opened messages of 10 KB.
pub const DISK_CACHE_DEFAULT: u64 = 256 << 20;

/// TLS towards the mail client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerTls {
    None,
    /// Offered as STARTTLS; LOGIN and AUTHENTICATE wait for it.
    StartTls,
    /// TLS from the first byte (as port 993).
    Tls,
}

impl std::str::FromStr for ListenerTls {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(ListenerTls::None),
            "starttls" => Ok(ListenerTls::StartTls),
            "tls" => Ok(ListenerTls::Tls),
            other => Err(format!(
                "{other:?} is not an IMAP listener TLS mode: use none, starttls or tls"
            )),
        }
    }
}
