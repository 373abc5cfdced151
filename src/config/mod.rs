//! The validated configuration: the embedded defaults, overlaid by a TOML file, overlaid by
//! command-line flags, converted once into typed values ("parse, don't validate").

mod file;
mod value;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;

pub use value::{parse_duration, parse_host_port, parse_size};

/// The default of `[inbound] max_plaintext`.
pub const DEFAULT_MAX_PLAINTEXT: usize = 64 << 20;

/// The defaults `serve` runs with when no file is given.
pub const DEFAULTS: &str = include_str!("defaults.toml");

/// A configuration problem, naming the key and, where the value came from a file, the line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Syntax { origin: String, message: String },
    #[error("{origin}, line {line}: `{key}`: {message}")]
    Invalid {
        origin: String,
        line: usize,
        key: String,
        message: String,
    },
    #[error("{key}: {message}")]
    Flag { key: String, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Submission from mail clients: encrypt and sign, relay upstream.
    Outbound,
    /// Mail for local users: decrypt and verify, deliver to the mailbox.
    Inbound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    None,
    StartTls,
    /// TLS from the first byte (port 465 style).
    Implicit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    None,
    /// Users and argon2 hashes from the config file.
    Local,
    /// The client's credentials are checked by logging in upstream with them.
    Passthrough,
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub mode: Mode,
    pub address: SocketAddr,
    pub tls: TlsMode,
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    pub auth: AuthMode,
    /// Whether AUTH (or an allowlisted address) is needed before MAIL; decided once every
    /// override has set the final address.
    pub require_auth: bool,
    /// `require_auth` as the file gave it, if it did.
    pub require_auth_set: Option<bool>,
    pub allow: Vec<IpNet>,
    /// The admin consented to an open outbound listener (`open_relay = "i-know"`).
    pub open_relay: bool,
    pub limits: Limits,
}

/// Per-listener limits (security.md rule 10).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_message_size: usize,
    pub max_recipients: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    /// Messages larger than this are kept in a sealed temporary file in the data
    /// directory while they are received and processed, not in memory.
    pub spill_above: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_message_size: 35 * 1024 * 1024,
            max_recipients: 100,
            max_connections: 1000,
            max_connections_per_ip: 50,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            spill_above: 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub password_hash: String,
    /// Lower-cased From addresses this user may have mail signed for.
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub ca_file: Option<PathBuf>,
    pub username: Option<String>,
    /// Where `password` was read from, for `check-config --user`.
    pub password_file: Option<PathBuf>,
    /// Read from `password_file` at start-up; never printed.
    pub password: Option<String>,
}

/// Where a listener's copies go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Smtp {
        host: String,
        port: u16,
    },
    /// `lmtp:HOST:PORT`: a mailbox server speaking LMTP over TCP.
    Lmtp {
        host: String,
        port: u16,
    },
    /// `lmtp:unix:PATH`: LMTP over a Unix socket (Dovecot's default).
    LmtpUnix(PathBuf),
    Maildir(PathBuf),
}

/// `[inbound] recipients`: how the inbound listener knows, at RCPT, that a recipient of
/// a local domain exists, so that mail for nobody is refused there and then (550 5.1.1)
/// instead of accepted and bounced to a sender that may be forged (backscatter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipients {
    /// Ask the next hop (SMTP or LMTP: `MAIL FROM:<>`, `RCPT TO:`), with the answers
    /// cached a short time. A Maildir target has no users to ask: every address is taken.
    Verify,
    /// The addresses in this file, one per line (`#` starts a comment), read at start.
    File(PathBuf),
    /// Every address of a local domain (mail for an unknown user is then bounced).
    Any,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// `[keyring] url`: a PostgreSQL keyring shared by several gateways, instead of the
    /// sled keyring in the data directory. `SEALPOST_KEYRING_URL` overrides it.
    pub keyring_url: Option<String>,
    /// `[admin] http`: where `/metrics`, `/healthz` and `/readyz` are served; off when
    /// `None`.
    pub admin_http: Option<SocketAddr>,
    /// `[admin] keep_trail`: how long each message's decision trail is kept.
    pub keep_trail: Duration,
    pub hostname: String,
    /// Why `hostname` may be refused by other servers: no name was configured and this
    /// machine has no fully-qualified one. `serve` logs it, `check-config` prints it.
    pub hostname_warning: Option<String>,
    pub listeners: Vec<Listener>,
    pub users: Vec<User>,
    /// Outbound copies go upstream when this is set, else to `outbound_maildir`.
    pub upstream: Option<Upstream>,
    pub outbound_maildir: PathBuf,
    pub budget: Duration,
    pub lifetime: Duration,
    pub retry: Duration,
    /// Where inbound copies go.
    pub inbound_target: Target,
    /// TLS to `inbound_target`, which is then on the network (SMTP or LMTP over TCP).
    pub inbound_tls: TlsMode,
    /// CA certificates that replace the system roots for `inbound_tls`.
    pub inbound_ca_file: Option<PathBuf>,
    /// Empty: the domains of the keyring's secret keys.
    pub local_domains: Vec<String>,
    /// How the inbound listener knows a local recipient exists, at RCPT.
    pub recipients: Recipients,
    /// The authserv-id of our `Authentication-Results` fields (default: the hostname).
    pub authserv_id: String,
    /// Most plaintext one inbound message may decrypt to.
    pub max_plaintext: usize,
    pub policy: crate::policy::Policy,
    /// The IMAP proxy, when `[imap]` or `--imap-upstream` names an upstream.
    pub imap: Option<crate::imap::Settings>,
    /// Key discovery (`[discovery]`).
    pub discovery: crate::discovery::Settings,
    /// The WKD listener, when `[wkd] listen` is set.
    pub wkd: Option<crate::publish::Settings>,
}

/// Command-line overrides for `serve`.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub upstream: Option<String>,
    pub upstream_tls: Option<String>,
    pub upstream_ca_file: Option<PathBuf>,
    pub inbound_listen: Option<String>,
    pub deliver: Option<String>,
    pub deliver_tls: Option<String>,
    pub imap_listen: Option<String>,
    pub imap_upstream: Option<String>,
    pub imap_upstream_tls: Option<String>,
}

/// Which text a value came from, to turn a byte span into a line number.
#[derive(Clone, Copy)]
struct Source<'a> {
    name: &'a str,
    text: &'a str,
}

impl Source<'_> {
    fn invalid<T>(&self, key: &str, at: &Spanned<T>, message: impl Into<String>) -> Error {
        let offset = at.span().start.min(self.text.len());
        let line = self.text.as_bytes()[..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        Error::Invalid {
            origin: self.name.to_string(),
            line,
            key: key.to_string(),
            message: message.into(),
        }
    }
}

impl Config {
    /// Loads the defaults, then `path` if given, then the overrides.
    ///
    /// # Errors
    /// Any unreadable file, unknown key, or invalid value, named with its line.
    pub fn load(
        path: Option<&Path>,
        overrides: &Overrides,
        default_data_dir: impl FnOnce() -> Result<PathBuf, String>,
    ) -> Result<Config, Error> {
        let user_text = match path {
            Some(p) => Some(std::fs::read_to_string(p).map_err(|source| Error::Read {
                path: p.to_path_buf(),
                source,
            })?),
            None => None,
        };
        let user_name = path.map(|p| p.display().to_string()).unwrap_or_default();
        let defaults = Source {
            name: "embedded defaults",
            text: DEFAULTS,
        };
        let user = user_text.as_deref().map(|text| Source {
            name: &user_name,
            text,
        });
        build(defaults, user, overrides, default_data_dir)
    }

    /// [`Config::load`] for a file's text already in memory, called `name` in errors.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn from_text(
        name: &str,
        text: &str,
        overrides: &Overrides,
        default_data_dir: impl FnOnce() -> Result<PathBuf, String>,
    ) -> Result<Config, Error> {
        let defaults = Source {
            name: "embedded defaults",
            text: DEFAULTS,
        };
        build(
            defaults,
            Some(Source { name, text }),
            overrides,
            default_data_dir,
        )
    }
}

fn parse_file(src: Source<'_>) -> Result<file::File, Error> {
    toml::from_str(src.text).map_err(|e| Error::Syntax {
        origin: src.name.to_string(),
        message: e.to_string().trim().replace('\n', " "),
    })
}

fn build(
    defaults: Source<'_>,
    user: Option<Source<'_>>,
    ov: &Overrides,
    default_data_dir: impl FnOnce() -> Result<PathBuf, String>,
) -> Result<Config, Error> {
    let def = parse_file(defaults)?;
    let usr = match user {
        Some(src) => Some((parse_file(src)?, src)),
        None => None,
    };
    // Each top-level item comes whole from the most specific file that sets it.
    let pick = |f: &dyn Fn(&file::File) -> bool| -> (&file::File, Source<'_>) {
        match &usr {
            Some((u, src)) if f(u) => (u, *src),
            _ => (&def, defaults),
        }
    };

    let data_dir = match (
        &ov.data_dir,
        usr.as_ref().and_then(|(u, _)| u.data_dir.clone()),
    ) {
        (Some(d), _) => d.clone(),
        (None, Some(d)) => d,
        (None, None) => default_data_dir().map_err(|message| Error::Flag {
            key: "data_dir".into(),
            message,
        })?,
    };

    let keyring_url = usr
        .as_ref()
        .and_then(|(u, _)| u.keyring.as_ref())
        .and_then(|k| k.url.clone())
        .filter(|u| !u.trim().is_empty());

    let admin_http = match usr.as_ref().and_then(|(u, src)| {
        u.admin
            .as_ref()
            .and_then(|a| a.http.as_ref())
            .map(|h| (h, *src))
    }) {
        Some((h, src)) if !h.get_ref().trim().is_empty() => {
            Some(value::socket_addr(h.get_ref()).map_err(|m| src.invalid("admin.http", h, m))?)
        }
        _ => None,
    };

    // `[admin] keep_trail`: 7 days unless set; "0" keeps none.
    let keep_trail = match usr.as_ref().and_then(|(u, src)| {
        u.admin
            .as_ref()
            .and_then(|a| a.keep_trail.as_ref())
            .map(|k| (k, *src))
    }) {
        Some((k, _)) if k.get_ref().trim() == "0" => Duration::ZERO,
        Some((k, src)) => {
            value::parse_duration(k.get_ref()).map_err(|m| src.invalid("admin.keep_trail", k, m))?
        }
        None => Duration::from_secs(7 * 86400),
    };

    let (f, src) = pick(&|u| u.hostname.is_some());
    let mut hostname_warning = None;
    let hostname = match &f.hostname {
        Some(h) if !h.get_ref().is_empty() => {
            value::hostname(h.get_ref()).map_err(|m| src.invalid("hostname", h, m))?
        }
        _ => {
            let (name, qualified) = value::system_hostname();
            if !qualified {
                hostname_warning = Some(format!(
                    "no hostname is configured and this machine has no fully-qualified name \
                     (none in /etc/hosts): sealpost greets and sends EHLO as {name:?}, which \
                     many servers refuse; set hostname = \"mail.example.org\" in the configuration"
                ));
            }
            name
        }
    };

    let (f, src) = pick(&|u| !u.listeners.is_empty());
    let mut listeners = f
        .listeners
        .iter()
        .enumerate()
        .map(|(i, l)| value::listener(l, i, src))
        .collect::<Result<Vec<_>, _>>()?;

    let users = match &usr {
        Some((u, src)) => u
            .users
            .iter()
            .enumerate()
            .map(|(i, user)| value::user(user, i, *src))
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };

    let (f, src) = pick(&|u| u.upstream.is_some());
    let mut upstream = match &f.upstream {
        Some(up) => Some(value::upstream(up, src)?),
        None => None,
    };

    let (f, src) = pick(&|u| u.delivery.is_some());
    let delivery = f.delivery.clone().unwrap_or(file::Delivery {
        transport: None,
        budget: None,
        lifetime: None,
        retry: None,
    });
    let budget = value::duration_or(&delivery.budget, "delivery.budget", src, 60)?;
    let lifetime = value::duration_or(&delivery.lifetime, "delivery.lifetime", src, 5 * 86400)?;
    let retry = value::duration_or(&delivery.retry, "delivery.retry", src, 60)?;
    let default_maildir = data_dir.join("Maildir");
    let mut outbound_maildir = default_maildir.clone();
    if let Some(t) = &delivery.transport {
        let text = t.get_ref().as_str();
        if text == "smtp" {
            if upstream.is_none() {
                return Err(src.invalid(
                    "delivery.transport",
                    t,
                    "\"smtp\" needs an [upstream] section with an address",
                ));
            }
        } else {
            match value::target(text, &default_maildir) {
                Ok(Target::Maildir(p)) => {
                    // An explicit Maildir wins over an [upstream] kept for later.
                    outbound_maildir = p;
                    upstream = None;
                }
                _ => {
                    return Err(src.invalid(
                        "delivery.transport",
                        t,
                        "give \"smtp\" (with [upstream]) or \"maildir\" / \"maildir:PATH\"",
                    ))
                }
            }
        }
    }

    let (f, src) = pick(&|u| u.inbound.is_some());
    let mut inbound_target = Target::Maildir(default_maildir.clone());
    let mut local_domains = Vec::new();
    let mut authserv_id = hostname.clone();
    let mut max_plaintext = DEFAULT_MAX_PLAINTEXT;
    let mut inbound_tls = TlsMode::None;
    let mut inbound_ca_file = None;
    let mut recipients = Recipients::Verify;
    // Kept to name the key and line of a TLS setting that the final target (which a
    // flag may still change) cannot use.
    let inbound_src = src;
    let inbound_tls_at = f.inbound.as_ref().and_then(|i| i.tls.clone());
    let inbound_ca_at = f.inbound.as_ref().and_then(|i| i.ca_file.clone());
    if let Some(inb) = &f.inbound {
        if let Some(t) = &inb.tls {
            inbound_tls =
                value::tls_mode(t.get_ref()).map_err(|m| src.invalid("inbound.tls", t, m))?;
        }
        inbound_ca_file = inb.ca_file.as_ref().map(|c| c.get_ref().clone());
        if let Some(a) = inb.authserv_id.as_ref().filter(|a| !a.get_ref().is_empty()) {
            authserv_id = value::authserv_id(a.get_ref())
                .map_err(|m| src.invalid("inbound.authserv_id", a, m))?;
        }
        if let Some(m) = &inb.max_plaintext {
            max_plaintext = value::parse_size(m.get_ref())
                .map_err(|e| src.invalid("inbound.max_plaintext", m, e))?;
        }
        if let Some(d) = &inb.deliver {
            inbound_target = value::target(d.get_ref(), &default_maildir)
                .map_err(|e| src.invalid("inbound.deliver", d, e))?;
        }
        if let Some(r) = &inb.recipients {
            recipients = value::recipients(r.get_ref())
                .map_err(|m| src.invalid("inbound.recipients", r, m))?;
        }
        for d in &inb.local_domains {
            let domain = d.get_ref().trim().to_ascii_lowercase();
            if domain.is_empty() || domain.contains('@') || domain.contains(char::is_whitespace) {
                return Err(src.invalid("inbound.local_domains", d, "not a domain name"));
            }
            local_domains.push(domain);
        }
    }

    let (f, src) = pick(&|u| u.policy.is_some());
    let policy = match &f.policy {
        Some(p) => value::policy(p, src)?,
        None => crate::policy::Policy::default(),
    };

    // Command-line flags win over everything.
    let flag = |key: &str, message: String| Error::Flag {
        key: key.to_string(),
        message,
    };
    if let Some(addr) = &ov.listen {
        let address = value::socket_addr(addr).map_err(|m| flag("--listen", m))?;
        match listeners.iter_mut().find(|l| l.mode == Mode::Outbound) {
            Some(l) => l.address = address,
            None => listeners.push(value::default_listener(Mode::Outbound, address)),
        }
    }
    if let Some(addr) = &ov.inbound_listen {
        let address = value::socket_addr(addr).map_err(|m| flag("--inbound-listen", m))?;
        match listeners.iter_mut().find(|l| l.mode == Mode::Inbound) {
            Some(l) => l.address = address,
            None => listeners.push(value::default_listener(Mode::Inbound, address)),
        }
    }
    if let Some(up) = &ov.upstream {
        match value::target(up, &default_maildir).map_err(|m| flag("--upstream", m))? {
            Target::Maildir(p) => {
                upstream = None;
                outbound_maildir = p;
            }
            Target::Lmtp { .. } | Target::LmtpUnix(_) => {
                return Err(flag(
                    "--upstream",
                    format!("{up:?}: LMTP delivers to local mailboxes; give it to --deliver"),
                ))
            }
            Target::Smtp { host, port } => {
                let previous = upstream.take();
                upstream = Some(Upstream {
                    host,
                    port,
                    tls: previous.as_ref().map_or(TlsMode::None, |u| u.tls),
                    ca_file: previous.as_ref().and_then(|u| u.ca_file.clone()),
                    username: previous.as_ref().and_then(|u| u.username.clone()),
                    password_file: previous.as_ref().and_then(|u| u.password_file.clone()),
                    password: previous.and_then(|u| u.password),
                });
            }
        }
    }
    if let Some(tls) = &ov.upstream_tls {
        let mode = value::tls_mode(tls).map_err(|m| flag("--upstream-tls", m))?;
        match upstream.as_mut() {
            Some(u) => u.tls = mode,
            None => {
                return Err(flag(
                    "--upstream-tls",
                    "there is no upstream; give --upstream HOST:PORT too".into(),
                ))
            }
        }
    }
    if let Some(ca) = &ov.upstream_ca_file {
        match upstream.as_mut() {
            Some(u) => u.ca_file = Some(ca.clone()),
            None => {
                return Err(flag(
                    "--upstream-ca-file",
                    "there is no upstream; give --upstream HOST:PORT too".into(),
                ))
            }
        }
    }
    if let Some(u) = &upstream {
        // The file's own pair was checked with its line; this is a flag's doing.
        if u.ca_file.is_some() && u.tls == TlsMode::None {
            let key = if ov.upstream_ca_file.is_some() {
                "--upstream-ca-file"
            } else {
                "--upstream-tls"
            };
            return Err(flag(key, value::CA_FILE_IN_THE_CLEAR.into()));
        }
    }
    if let Some(d) = &ov.deliver {
        inbound_target = value::target(d, &default_maildir).map_err(|m| flag("--deliver", m))?;
    }
    if let Some(t) = &ov.deliver_tls {
        inbound_tls = value::tls_mode(t).map_err(|m| flag("--deliver-tls", m))?;
    }
    if let Err(problem) =
        value::inbound_tls(&inbound_target, inbound_tls, inbound_ca_file.is_some())
    {
        return Err(match (problem, &inbound_tls_at, &inbound_ca_at) {
            (value::TlsProblem::Tls(m), _, _) if ov.deliver_tls.is_some() => {
                flag("--deliver-tls", m)
            }
            (value::TlsProblem::Tls(m), Some(at), _) => inbound_src.invalid("inbound.tls", at, m),
            (value::TlsProblem::CaFile(m), _, Some(at)) => {
                inbound_src.invalid("inbound.ca_file", at, m)
            }
            (value::TlsProblem::Tls(m) | value::TlsProblem::CaFile(m), _, _) => flag("inbound", m),
        });
    }

    if listeners.is_empty() {
        return Err(flag("listener", "no listener is configured".into()));
    }
    // Openness is judged on the final addresses: `--listen` may have moved a loopback
    // listener, whose defaults were made for loopback, to a public one.
    for (i, l) in listeners.iter_mut().enumerate() {
        value::settle_access(l).map_err(|m| flag(&format!("listener[{i}]"), m))?;
    }
    for (i, a) in listeners.iter().enumerate() {
        // Port 0 asks the system for a free port: never a clash.
        if a.address.port() != 0 && listeners[..i].iter().any(|b| b.address == a.address) {
            return Err(flag(
                "listener",
                format!("two listeners share the address {}", a.address),
            ));
        }
        if a.auth == AuthMode::Local && users.is_empty() {
            return Err(flag(
                "listener",
                format!(
                    "the listener on {} uses auth = \"local\" but no [[user]] is configured",
                    a.address
                ),
            ));
        }
        if a.auth == AuthMode::Passthrough && upstream.is_none() {
            return Err(flag(
                "listener",
                format!(
                    "the listener on {} uses auth = \"passthrough\", which needs an [upstream]",
                    a.address
                ),
            ));
        }
    }

    // The proxy opens a fetched message no larger than what the inbound path decrypts.
    let imap = imap(usr.as_ref().map(|(u, src)| (u, *src)), ov, max_plaintext)?;
    let discovery = discovery(Some(pick(&|f| f.discovery.is_some())))?;
    let wkd = wkd(usr.as_ref().map(|(u, src)| (u, *src)), &local_domains)?;

    Ok(Config {
        data_dir,
        keyring_url,
        admin_http,
        keep_trail,
        hostname,
        hostname_warning,
        listeners,
        users,
        upstream,
        outbound_maildir,
        budget,
        lifetime,
        retry,
        inbound_target,
        inbound_tls,
        inbound_ca_file,
        local_domains,
        recipients,
        authserv_id,
        max_plaintext,
        policy,
        imap,
        discovery,
        wkd,
    })
}

/// `[discovery]` over its defaults.
fn discovery(usr: Option<(&file::File, Source<'_>)>) -> Result<crate::discovery::Settings, Error> {
    let mut out = crate::discovery::Settings::default();
    let Some((d, src)) = usr.and_then(|(u, src)| u.discovery.as_ref().map(|d| (d, src))) else {
        return Ok(out);
    };
    if let Some(a) = d.autocrypt {
        out.autocrypt = a;
    }
    if let Some(w) = d.wkd {
        out.wkd = w;
    }
    if let Some(dane) = d.dane {
        out.dane = dane;
    }
    for r in &d.dane_resolver {
        out.dane_resolver.push(
            crate::discovery::dane::parse_resolver(r.get_ref())
                .map_err(|m| src.invalid("discovery.dane_resolver", r, m))?,
        );
    }
    // A named anchor file is read even while `dane` is off: a broken one is found now,
    // not on the day DANE is switched on.
    if let Some(p) = &d.dane_trust_anchor {
        out.dane_trust_anchor = Some(
            crate::discovery::dane::Anchor::load(p.get_ref())
                .map_err(|e| src.invalid("discovery.dane_trust_anchor", p, e.to_string()))?,
        );
    }
    if out.dane && out.dane_resolver.is_empty() {
        out.dane_resolver =
            crate::discovery::dane::system_resolvers().map_err(|e| Error::Flag {
                key: "discovery.dane_resolver".into(),
                message: e.to_string(),
            })?;
    }
    for k in &d.keyservers {
        let url = url::Url::parse(k.get_ref().trim())
            .map_err(|e| src.invalid("discovery.keyservers", k, format!("not a URL: {e}")))?;
        if url.scheme() != "https" || url.host_str().is_none() {
            return Err(src.invalid(
                "discovery.keyservers",
                k,
                "a keyserver is an https:// URL, such as \"https://keys.openpgp.org\"",
            ));
        }
        out.keyservers.push(url);
    }
    if let Some(b) = &d.budget {
        out.budget = value::parse_duration(b.get_ref())
            .map_err(|m| src.invalid("discovery.budget", b, m))?;
    }
    if let Some(r) = &d.retry_after {
        out.retry_after = value::parse_duration(r.get_ref())
            .map_err(|m| src.invalid("discovery.retry_after", r, m))?;
    }
    if let Some(r) = &d.refresh {
        out.refresh = match r.get_ref().trim() {
            "0" => Duration::ZERO,
            text => {
                value::parse_duration(text).map_err(|m| src.invalid("discovery.refresh", r, m))?
            }
        };
    }
    out.ca_file.clone_from(&d.ca_file);
    for (host, addr) in &d.resolve {
        let a = value::socket_addr(addr.get_ref())
            .map_err(|m| src.invalid(&format!("discovery.resolve.{host}"), addr, m))?;
        out.resolve.insert(host.to_ascii_lowercase(), a);
    }
    Ok(out)
}

/// `[wkd]`: off unless `listen` is set, which then needs a certificate and its key.
fn wkd(
    usr: Option<(&file::File, Source<'_>)>,
    local_domains: &[String],
) -> Result<Option<crate::publish::Settings>, Error> {
    let Some((w, src)) = usr.and_then(|(u, src)| u.wkd.as_ref().map(|w| (w, src))) else {
        return Ok(None);
    };
    let listen = match &w.listen {
        Some(l) if !l.get_ref().trim().is_empty() => {
            value::socket_addr(l.get_ref()).map_err(|m| src.invalid("wkd.listen", l, m))?
        }
        _ => return Ok(None),
    };
    let (Some(certificate), Some(private_key)) = (w.certificate.clone(), w.private_key.clone())
    else {
        return Err(Error::Flag {
            key: "wkd".into(),
            message: "[wkd] listen needs certificate and private_key: outsiders fetch keys \
                      over HTTPS, for openpgpkey.<domain> and <domain>"
                .into(),
        });
    };
    let mut domains = Vec::new();
    for d in &w.domains {
        let domain = d.get_ref().trim().to_ascii_lowercase();
        if domain.is_empty() || domain.contains('@') || domain.contains(char::is_whitespace) {
            return Err(src.invalid("wkd.domains", d, "not a domain name"));
        }
        domains.push(domain);
    }
    if domains.is_empty() {
        domains = local_domains.to_vec();
    }
    Ok(Some(crate::publish::Settings {
        listen,
        certificate,
        private_key,
        domains,
    }))
}

/// `[imap]` with the `--imap-…` flags over it; `None` when no upstream is named.
fn imap(
    usr: Option<(&file::File, Source<'_>)>,
    ov: &Overrides,
    max_message: usize,
) -> Result<Option<crate::imap::Settings>, Error> {
    let flag = |key: &str, message: String| Error::Flag {
        key: key.to_string(),
        message,
    };
    let section = usr.and_then(|(u, src)| u.imap.as_ref().map(|i| (i, src)));
    let upstream = match (&ov.imap_upstream, section) {
        (Some(u), _) => value::parse_host_port(u).map_err(|m| flag("--imap-upstream", m))?,
        (None, Some((i, src))) => match &i.upstream {
            Some(u) => value::parse_host_port(u.get_ref())
                .map_err(|m| src.invalid("imap.upstream", u, m))?,
            None => {
                return Err(flag(
                    "imap",
                    "[imap] needs upstream = \"HOST:PORT\", the provider's IMAP server".into(),
                ))
            }
        },
        (None, None) => {
            if ov.imap_listen.is_some() || ov.imap_upstream_tls.is_some() {
                return Err(flag(
                    "--imap-upstream",
                    "--imap-listen and --imap-upstream-tls need --imap-upstream HOST:PORT".into(),
                ));
            }
            return Ok(None);
        }
    };
    let listen = match (
        &ov.imap_listen,
        section.and_then(|(i, src)| i.listen.as_ref().map(|l| (l, src))),
    ) {
        (Some(l), _) => value::socket_addr(l).map_err(|m| flag("--imap-listen", m))?,
        (None, Some((l, src))) => {
            value::socket_addr(l.get_ref()).map_err(|m| src.invalid("imap.listen", l, m))?
        }
        (None, None) => std::net::SocketAddr::from(([127, 0, 0, 1], 1143)),
    };
    let upstream_tls = match (
        &ov.imap_upstream_tls,
        section.and_then(|(i, src)| i.upstream_tls.as_ref().map(|t| (t, src))),
    ) {
        (Some(t), _) => t.parse().map_err(|m| flag("--imap-upstream-tls", m))?,
        (None, Some((t, src))) => t
            .get_ref()
            .parse()
            .map_err(|m: String| src.invalid("imap.upstream_tls", t, m))?,
        (None, None) => crate::imap::UpstreamTls::Tls,
    };
    let tls = match section.and_then(|(i, src)| i.tls.as_ref().map(|t| (t, src))) {
        Some((t, src)) => t
            .get_ref()
            .parse()
            .map_err(|m: String| src.invalid("imap.tls", t, m))?,
        None => crate::imap::ListenerTls::None,
    };
    let certificate = match section.map(|(i, _)| (i.certificate.clone(), i.private_key.clone())) {
        Some((Some(c), Some(k))) => Some((c, k)),
        Some((None, None)) | None => None,
        Some(_) => {
            return Err(flag(
                "imap",
                "[imap] needs both certificate and private_key, or neither (the self-signed certificate)".into(),
            ))
        }
    };
    let disk_cache = match section.and_then(|(i, src)| i.disk_cache.as_ref().map(|d| (d, src))) {
        Some((d, _)) if d.get_ref().trim() == "0" => 0,
        Some((d, src)) => {
            value::parse_size(d.get_ref()).map_err(|m| src.invalid("imap.disk_cache", d, m))? as u64
        }
        None => crate::imap::DISK_CACHE_DEFAULT,
    };
    Ok(Some(crate::imap::Settings {
        tls,
        certificate,
        listen,
        upstream_host: upstream.0,
        upstream_port: upstream.1,
        upstream_tls,
        ca_file: section.and_then(|(i, _)| i.ca_file.clone()),
        address: section
            .and_then(|(i, _)| i.address.clone())
            .map(|a| a.to_ascii_lowercase()),
        max_message,
        encrypt_appended: section
            .and_then(|(i, _)| i.encrypt_appended)
            .unwrap_or(false),
        disk_cache,
    }))
}

#[cfg(test)]
mod tests;
