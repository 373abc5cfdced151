//! Conversions from the file's strings to typed values, each with a message a person can act on.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;

use super::Error;
use super::{file, AuthMode, Limits, Listener, Mode, Source, Target, TlsMode, Upstream, User};

pub fn listener(l: &file::Listener, i: usize, src: Source<'_>) -> Result<Listener, Error> {
    let key = |k: &str| format!("listener[{i}].{k}");
    let mode = match l.mode.get_ref().as_str() {
        "outbound" => Mode::Outbound,
        "inbound" => Mode::Inbound,
        _ => return Err(src.invalid(&key("mode"), &l.mode, "must be \"outbound\" or \"inbound\"")),
    };
    let address = socket_addr(l.address.get_ref())
        .map_err(|m| src.invalid(&key("address"), &l.address, m))?;
    let tls = match &l.tls {
        Some(t) => tls_mode(t.get_ref()).map_err(|m| src.invalid(&key("tls"), t, m))?,
        None => TlsMode::StartTls,
    };
    if l.certificate.is_some() != l.private_key.is_some() {
        return Err(src.invalid(
            &key("certificate"),
            &l.address,
            "give both certificate and private_key, or neither",
        ));
    }
    let auth = match &l.auth {
        Some(a) => match a.get_ref().as_str() {
            "none" => AuthMode::None,
            "local" => AuthMode::Local,
            "passthrough" => AuthMode::Passthrough,
            _ => {
                return Err(src.invalid(
                    &key("auth"),
                    a,
                    "must be \"none\", \"local\" or \"passthrough\"",
                ))
            }
        },
        None => AuthMode::None,
    };
    let mut allow = Vec::new();
    for a in &l.allow {
        allow.push(cidr(a.get_ref()).map_err(|m| src.invalid(&key("allow"), a, m))?);
    }
    let open_relay = match &l.open_relay {
        Some(v) if v.get_ref() == "i-know" => true,
        Some(v) => {
            return Err(src.invalid(
                &key("open_relay"),
                v,
                "the only value is \"i-know\": consent to a listener anyone can relay through",
            ))
        }
        None => false,
    };
    let d = Limits::default();
    Ok(Listener {
        mode,
        address,
        tls,
        certificate: l.certificate.clone(),
        private_key: l.private_key.clone(),
        auth,
        // Decided by `settle_access` once the final address is known.
        require_auth: false,
        require_auth_set: l.require_auth,
        allow,
        open_relay,
        limits: Limits {
            max_message_size: match &l.max_message_size {
                Some(m) => {
                    size(m.get_ref()).map_err(|e| src.invalid(&key("max_message_size"), m, e))?
                }
                None => d.max_message_size,
            },
            max_recipients: l.max_recipients.unwrap_or(d.max_recipients),
            max_connections: l.max_connections.unwrap_or(d.max_connections),
            max_connections_per_ip: l.max_connections_per_ip.unwrap_or(d.max_connections_per_ip),
            command_timeout: duration_or(&l.command_timeout, &key("command_timeout"), src, 300)?,
            data_timeout: duration_or(&l.data_timeout, &key("data_timeout"), src, 600)?,
            spill_above: match &l.spill_above {
                Some(s) => {
                    parse_size(s.get_ref()).map_err(|e| src.invalid(&key("spill_above"), s, e))?
                }
                None => d.spill_above,
            },
        },
    })
}

/// A listener given on the command line, with defaults for everything else.
pub fn default_listener(mode: Mode, address: SocketAddr) -> Listener {
    Listener {
        mode,
        address,
        tls: TlsMode::StartTls,
        certificate: None,
        private_key: None,
        auth: AuthMode::None,
        require_auth: false,
        require_auth_set: None,
        allow: Vec::new(),
        open_relay: false,
        limits: Limits::default(),
    }
}

/// Decides whether the listener needs AUTH from its final address, and refuses an
/// outbound listener that anyone on the network could relay through, unless the admin
/// consented with `open_relay = "i-know"`.
///
/// # Errors
/// The listener would be open, or requires AUTH that it cannot offer.
pub fn settle_access(l: &mut Listener) -> Result<(), String> {
    let loopback = l.address.ip().is_loopback();
    l.require_auth = l
        .require_auth_set
        .unwrap_or(l.mode == Mode::Outbound && !loopback);
    if l.require_auth && l.auth == AuthMode::None && l.allow.is_empty() {
        return Err(format!(
            "the listener on {} requires AUTH but has auth = \"none\" and no allow list; \
             set auth = \"local\" or \"passthrough\", or allow = [\"10.0.0.0/8\"]",
            l.address
        ));
    }
    if l.mode != Mode::Outbound || loopback || l.open_relay {
        return Ok(());
    }
    let why = if !l.require_auth {
        Some("require_auth = false lets any client send without AUTH".to_string())
    } else {
        l.allow.iter().find(|n| too_wide(n)).map(|n| {
            format!("allow = [\"{n}\"] lets a large part of the internet send without AUTH")
        })
    };
    match why {
        Some(why) => Err(format!(
            "the outbound listener on {} would be an open relay: {why}. Require AUTH, allow \
             only your own networks, bind it to loopback, or set open_relay = \"i-know\" if \
             a firewall really keeps everyone else out",
            l.address
        )),
        None => Ok(()),
    }
}

/// An allow entry wider than a /16 (IPv4) or /32 (IPv6) that reaches beyond private,
/// loopback and link-local ranges: that much of the internet is no trusted network.
fn too_wide(net: &IpNet) -> bool {
    const PRIVATE: [&str; 9] = [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
        "::1/128",
    ];
    let private = PRIVATE
        .iter()
        .filter_map(|p| p.parse::<IpNet>().ok())
        .any(|p| p.contains(net));
    let wide = match net {
        IpNet::V4(n) => n.prefix_len() < 16,
        IpNet::V6(n) => n.prefix_len() < 32,
    };
    wide && !private
}

pub fn user(u: &file::User, i: usize, src: Source<'_>) -> Result<User, Error> {
    let hash = u.password_hash.get_ref();
    if !hash.starts_with("$argon2") {
        return Err(src.invalid(
            &format!("user[{i}].password_hash"),
            &u.password_hash,
            "must be an argon2 PHC string ($argon2id$…)",
        ));
    }
    let mut addresses = Vec::new();
    for a in &u.addresses {
        let text = a.get_ref().trim();
        match crate::smtp::address::Address::parse(text) {
            Ok(addr) if !addr.is_null() => addresses.push(text.to_ascii_lowercase()),
            _ => {
                return Err(src.invalid(
                    &format!("user[{i}].addresses"),
                    a,
                    "each entry must be an address such as \"alice@example.org\"",
                ))
            }
        }
    }
    // A login that is an address may sign for itself, as a passthrough login does.
    if u.addresses.is_empty() && u.name.contains('@') {
        addresses.push(u.name.trim().to_ascii_lowercase());
    }
    Ok(User {
        name: u.name.clone(),
        password_hash: hash.clone(),
        addresses,
    })
}

/// A size key's value: bytes as a number, or text with a unit.
fn size(v: &file::Size) -> Result<usize, String> {
    match v {
        file::Size::Bytes(n) => parse_size(&n.to_string()),
        file::Size::Text(t) => parse_size(t),
    }
}

pub fn upstream(u: &file::Upstream, src: Source<'_>) -> Result<Upstream, Error> {
    let (host, port) = parse_host_port(u.address.get_ref())
        .map_err(|m| src.invalid("upstream.address", &u.address, m))?;
    let tls = match &u.tls {
        Some(t) => tls_mode(t.get_ref()).map_err(|m| src.invalid("upstream.tls", t, m))?,
        None => TlsMode::StartTls,
    };
    let password = match &u.password_file {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| Error::Read {
                path: p.clone(),
                source,
            })?;
            Some(text.trim_end_matches(['\r', '\n']).to_string())
        }
        None => None,
    };
    if let Some(ca) = &u.ca_file {
        if tls == TlsMode::None {
            return Err(src.invalid("upstream.ca_file", ca, CA_FILE_IN_THE_CLEAR));
        }
    }
    Ok(Upstream {
        host,
        port,
        tls,
        ca_file: u.ca_file.as_ref().map(|c| c.get_ref().clone()),
        username: u.username.clone(),
        password_file: u.password_file.clone(),
        password,
    })
}

pub fn duration_or(
    v: &Option<Spanned<String>>,
    key: &str,
    src: Source<'_>,
    default_secs: u64,
) -> Result<Duration, Error> {
    match v {
        Some(s) => parse_duration(s.get_ref()).map_err(|m| src.invalid(key, s, m)),
        None => Ok(Duration::from_secs(default_secs)),
    }
}

/// The longest duration any setting takes: a year. Timeouts and lifetimes beyond it
/// mean nothing, and every deadline computed from one stays far from overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 86400);

/// `90s`, `5m`, `2h`, `5d`, or plain seconds; at most [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (examples: 90s, 5m, 2h, 5d)"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86400),
        _ => return Err(format!("{s:?} has an unknown unit (use s, m, h or d)")),
    };
    if secs == 0 {
        return Err("a duration must be more than zero".into());
    }
    if secs > MAX_DURATION.as_secs() {
        return Err(format!("{s:?} is too long; at most 366d"));
    }
    Ok(Duration::from_secs(secs))
}

/// `64MiB`, `10MB`, `512KiB`, `1G`, or plain bytes. `K`, `M` and `G` alone are binary,
/// `KB`, `MB` and `GB` decimal.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 64MiB, 10MB, 1048576)"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => {
            return Err(format!(
                "{s:?} has an unknown unit (use B, KiB, MiB, GiB, KB, MB or GB)"
            ))
        }
    };
    let bytes = n
        .checked_mul(factor)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| format!("{s:?} is too large"))?;
    if bytes == 0 {
        return Err("a size must be more than zero".into());
    }
    Ok(bytes)
}

/// An authserv-id (RFC 8601 §2.2) we can write as a bare token: a host name, say.
pub fn authserv_id(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>[]:;@\\,\"/?=".contains(&b))
    {
        return Err(format!(
            "{s:?} is not an authserv-id (a host name such as mx.example.org)"
        ));
    }
    Ok(s.to_string())
}

pub fn tls_mode(s: &str) -> Result<TlsMode, String> {
    match s {
        "none" => Ok(TlsMode::None),
        "starttls" => Ok(TlsMode::StartTls),
        "tls" => Ok(TlsMode::Implicit),
        _ => Err(format!("{s:?}: must be \"none\", \"starttls\" or \"tls\"")),
    }
}

/// A `ca_file` for a hop without TLS: the admin would believe the hop verified.
pub const CA_FILE_IN_THE_CLEAR: &str = "ca_file is set but tls is \"none\": delivery would go \
     in the clear, verified by nothing. Set tls = \"starttls\" or \"tls\", or remove ca_file";

/// A TLS setting for inbound delivery that the target cannot use, and which key it is.
#[derive(Debug, PartialEq, Eq)]
pub enum TlsProblem {
    Tls(String),
    CaFile(String),
}

/// Refuses `[inbound] tls` and `ca_file` where they cannot apply: TLS is for a mailbox
/// server on the network, not a local directory or socket; and a `ca_file` without TLS
/// would leave the admin believing the hop is verified when it goes in the clear.
pub fn inbound_tls(target: &Target, tls: TlsMode, ca_file: bool) -> Result<(), TlsProblem> {
    let local = match target {
        Target::Maildir(p) => Some(format!(
            "maildir:{} is a local directory, written directly",
            p.display()
        )),
        Target::LmtpUnix(p) => Some(format!(
            "lmtp:unix:{} is a local Unix socket, which its file permissions protect, not TLS",
            p.display()
        )),
        Target::Smtp { .. } | Target::Lmtp { .. } => None,
    };
    let mode = match tls {
        TlsMode::None => "none",
        TlsMode::StartTls => "starttls",
        TlsMode::Implicit => "tls",
    };
    match (local, tls) {
        (Some(what), TlsMode::StartTls | TlsMode::Implicit) => Err(TlsProblem::Tls(format!(
            "tls = \"{mode}\" cannot apply: {what}. Remove tls (and ca_file), or deliver to \
             a mailbox server on the network (HOST:PORT or lmtp:HOST:PORT)"
        ))),
        (Some(what), TlsMode::None) if ca_file => Err(TlsProblem::CaFile(format!(
            "ca_file cannot apply: {what}. Remove ca_file"
        ))),
        (None, TlsMode::None) if ca_file => Err(TlsProblem::CaFile(CA_FILE_IN_THE_CLEAR.into())),
        _ => Ok(()),
    }
}

pub fn socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .or_else(|_| {
            s.to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or(())
        })
        .map_err(|_| format!("{s:?} is not an address to listen on (example: 127.0.0.1:2587)"))
}

/// `host:port`, `[v6]:port`.
pub fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let bad = || format!("{s:?} is not HOST:PORT (example: smtp.example.org:587)");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// The forms a delivery target takes, for error messages.
const TARGET_FORMS: &str =
    "HOST:PORT, smtp:HOST:PORT, lmtp:HOST:PORT, lmtp:unix:/path/to/socket or maildir:PATH";

/// `host:port` or `smtp:host:port` (SMTP), `lmtp:host:port` or `lmtp:unix:PATH` (LMTP),
/// `maildir` (the data directory's) or `maildir:PATH`.
pub fn target(s: &str, default_maildir: &Path) -> Result<Target, String> {
    if s == "maildir" {
        return Ok(Target::Maildir(default_maildir.to_path_buf()));
    }
    if let Some(path) = s.strip_prefix("maildir:") {
        if path.is_empty() {
            return Err("maildir: needs a path (maildir:/var/mail/alice)".into());
        }
        return Ok(Target::Maildir(path.into()));
    }
    if let Some(rest) = s.strip_prefix("lmtp:") {
        return lmtp_target(rest);
    }
    if let Some(rest) = s.strip_prefix("smtp:") {
        let (host, port) = parse_host_port(rest)
            .map_err(|_| format!("{s:?}: smtp: needs HOST:PORT (smtp:mail.example.org:25)"))?;
        return Ok(Target::Smtp { host, port });
    }
    let bad = || format!("{s:?} is not a delivery target; use {TARGET_FORMS}");
    let (host, port) = parse_host_port(s).map_err(|_| bad())?;
    // `lmtps:host:24` would otherwise read as the host "lmtps:host": a scheme this does
    // not know is an error, while an IPv6 address (`::1:25`, `[::1]:25`) is a host.
    if host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err() {
        return Err(bad());
    }
    Ok(Target::Smtp { host, port })
}

/// What follows `lmtp:`: `HOST:PORT` or `unix:/absolute/path`.
fn lmtp_target(rest: &str) -> Result<Target, String> {
    if let Some(path) = rest.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("lmtp:unix: needs the socket's path (lmtp:unix:/run/dovecot/lmtp)".into());
        }
        if !path.starts_with('/') {
            return Err(format!(
                "lmtp:unix:{path}: the socket path must be absolute (lmtp:unix:/run/dovecot/lmtp)"
            ));
        }
        return Ok(Target::LmtpUnix(path.into()));
    }
    if rest.is_empty() {
        return Err(
            "lmtp: needs HOST:PORT or unix:PATH (lmtp:127.0.0.1:24, lmtp:unix:/run/dovecot/lmtp)"
                .into(),
        );
    }
    let (host, port) = parse_host_port(rest).map_err(|_| {
        format!(
            "\"lmtp:{rest}\" is not lmtp:HOST:PORT or lmtp:unix:PATH \
             (lmtp:127.0.0.1:24, lmtp:unix:/run/dovecot/lmtp)"
        )
    })?;
    Ok(Target::Lmtp { host, port })
}

fn cidr(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not a network (examples: 10.0.0.0/8, 192.0.2.7)"))
}

/// A host name for the greeting, EHLO and `Received:`: letters, digits and hyphens in
/// dot-separated labels (RFC 1123), as a receiving server checks an EHLO name.
///
/// # Errors
/// Anything else: a space, an underscore, an empty label, a label or name too long.
pub fn hostname(s: &str) -> Result<String, String> {
    let bad = |why: &str| {
        format!("{s:?} is not a host name ({why}); give the name this gateway has in DNS, such as mail.example.org")
    };
    if s.len() > 253 {
        return Err(bad("longer than 253 characters"));
    }
    for label in s.split('.') {
        if label.is_empty() {
            return Err(bad("an empty label"));
        }
        if label.len() > 63 {
            return Err(bad("a label longer than 63 characters"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("a label that starts or ends with '-'"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !c.is_ascii_alphanumeric() && *c != '-')
        {
            let what = if c.is_whitespace() {
                "a space".to_string()
            } else {
                format!("the character {c:?}")
            };
            return Err(bad(&what));
        }
    }
    Ok(s.to_string())
}

/// This machine's fully-qualified name, as `hostname -f` finds it without DNS: the kernel's
/// host name when it has a dot, else the first name of the `/etc/hosts` line that lists
/// it, else the name with the kernel's domain name. `None` in the second place when only a
/// short name was found (with that name, or `localhost`).
pub fn system_hostname() -> (String, bool) {
    let short = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && hostname(h).is_ok());
    let Some(short) = short else {
        return ("localhost".to_string(), false);
    };
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let domain = std::fs::read_to_string("/proc/sys/kernel/domainname").unwrap_or_default();
    match fqdn(&short, &hosts, domain.trim()) {
        Some(full) => (full, true),
        None => (short, false),
    }
}

/// [`system_hostname`]'s rules on the texts of `/etc/hosts` and the kernel's domain name.
fn fqdn(short: &str, hosts: &str, domain: &str) -> Option<String> {
    if short.contains('.') {
        return Some(short.to_string());
    }
    for line in hosts.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut names = line.split_whitespace().skip(1);
        let Some(canonical) = names.next() else {
            continue;
        };
        let listed = canonical.eq_ignore_ascii_case(short)
            || line
                .split_whitespace()
                .skip(2)
                .any(|n| n.eq_ignore_ascii_case(short));
        if listed && canonical.contains('.') && hostname(canonical).is_ok() {
            return Some(canonical.to_string());
        }
        // An alias line such as "127.0.1.1 host host.example.org": a later full name.
        if listed {
            if let Some(full) = line.split_whitespace().skip(1).find(|n| {
                n.contains('.')
                    && n.to_ascii_lowercase()
                        .starts_with(&format!("{}.", short.to_ascii_lowercase()))
            }) {
                if hostname(full).is_ok() {
                    return Some(full.to_string());
                }
            }
        }
    }
    if !domain.is_empty() && domain != "(none)" {
        let full = format!("{short}.{domain}");
        if hostname(&full).is_ok() {
            return Some(full);
        }
    }
    None
}

pub fn policy(p: &file::Policy, src: Source<'_>) -> Result<crate::policy::Policy, Error> {
    let mut out = crate::policy::Policy {
        global: policy_rule(
            &file::PolicyRule {
                mode: p.mode.clone(),
                encrypt_to_self: p.encrypt_to_self,
                protect_subject: p.protect_subject,
                hold_on_review: p.hold_on_review,
                mixed: p.mixed.clone(),
                min_trust: p.min_trust.clone(),
            },
            "policy",
            src,
        )?,
        ..Default::default()
    };
    if let Some(m) = &p.sender_mismatch {
        out.sender_mismatch = match m.get_ref().as_str() {
            "refuse" => crate::policy::sender::OnMismatch::Refuse,
            "unsigned" => crate::policy::sender::OnMismatch::Unsigned,
            _ => {
                return Err(src.invalid(
                    "policy.sender_mismatch",
                    m,
                    "must be \"refuse\" or \"unsigned\"",
                ))
            }
        };
    }
    for (domain, rule) in &p.domain {
        let d = domain.trim().to_ascii_lowercase();
        let key = format!("policy.domain.\"{domain}\"");
        out.domains.insert(d, policy_rule(rule, &key, src)?);
    }
    for (address, rule) in &p.address {
        let a = address.trim().to_ascii_lowercase();
        let key = format!("policy.address.\"{address}\"");
        out.addresses.insert(a, policy_rule(rule, &key, src)?);
    }
    Ok(out)
}

fn policy_rule(
    r: &file::PolicyRule,
    key: &str,
    src: Source<'_>,
) -> Result<crate::policy::Rule, Error> {
    use crate::policy::{Mixed, Mode};
    let mode = match &r.mode {
        Some(m) => Some(match m.get_ref().as_str() {
            "require" => Mode::Require,
            "opportunistic" => Mode::Opportunistic,
            "sign-only" => Mode::SignOnly,
            "none" => Mode::None,
            _ => {
                return Err(src.invalid(
                    &format!("{key}.mode"),
                    m,
                    "must be \"require\", \"opportunistic\", \"sign-only\" or \"none\"",
                ))
            }
        }),
        None => None,
    };
    let mixed = match &r.mixed {
        Some(m) => Some(match m.get_ref().as_str() {
            "split" => Mixed::Split,
            "refuse-unencrypted" => Mixed::RefuseUnencrypted,
            _ => {
                return Err(src.invalid(
                    &format!("{key}.mixed"),
                    m,
                    "must be \"split\" or \"refuse-unencrypted\"",
                ))
            }
        }),
        None => None,
    };
    let min_trust = match &r.min_trust {
        Some(t) => Some(
            t.get_ref()
                .parse::<sealpost_keyring::Trust>()
                .map_err(|m| src.invalid(&format!("{key}.min_trust"), t, &m))?,
        ),
        None => None,
    };
    Ok(crate::policy::Rule {
        mode,
        encrypt_to_self: r.encrypt_to_self,
        protect_subject: r.protect_subject,
        hold_on_review: r.hold_on_review,
        mixed,
        min_trust,
    })
}

/// `[inbound] recipients`.
pub fn recipients(text: &str) -> Result<super::Recipients, String> {
    let t = text.trim();
    match t {
        "verify" => Ok(super::Recipients::Verify),
        "any" => Ok(super::Recipients::Any),
        _ => match t.strip_prefix("file:") {
            Some(path) if !path.is_empty() => Ok(super::Recipients::File(path.into())),
            _ => Err(format!(
                "{t:?} is not a way to know recipients: use \"verify\" (ask the next hop), \
                 \"file:/etc/sealpost/recipients\" or \"any\""
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Target, String> {
        target(s, Path::new("/data/Maildir"))
    }

    #[test]
    fn host_names() {
        assert_eq!(hostname("mail.example.org"), Ok("mail.example.org".into()));
        assert_eq!(hostname("gw-1"), Ok("gw-1".into()));
        for (bad, why) in [
            ("my host", "a space"),
            ("a..b", "an empty label"),
            ("-a.example", "starts or ends with '-'"),
            ("a_b.example", "the character '_'"),
            ("", "an empty label"),
        ] {
            let err = hostname(bad).expect_err(bad);
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn the_fully_qualified_name_as_hostname_f_finds_it() {
        let hosts = "127.0.0.1 localhost\n127.0.1.1 gw.example.org gw # Debian's installer\n";
        assert_eq!(fqdn("gw", hosts, "(none)"), Some("gw.example.org".into()));
        assert_eq!(
            fqdn("gw", "127.0.1.1 gw gw.example.org\n", ""),
            Some("gw.example.org".into())
        );
        assert_eq!(
            fqdn("gw.example.net", "", ""),
            Some("gw.example.net".into())
        );
        assert_eq!(
            fqdn("gw", "127.0.0.1 gw\n", "corp.example"),
            Some("gw.corp.example".into())
        );
        assert_eq!(
            fqdn("gw", "127.0.0.1 localhost\n127.0.0.1 gw\n", "(none)"),
            None
        );
    }

    #[test]
    fn every_target_form() {
        let smtp = |h: &str, p| Target::Smtp {
            host: h.into(),
            port: p,
        };
        assert_eq!(
            parse("mail.example.org:25"),
            Ok(smtp("mail.example.org", 25))
        );
        assert_eq!(
            parse("smtp:mail.example.org:25"),
            Ok(smtp("mail.example.org", 25))
        );
        assert_eq!(parse("[::1]:25"), Ok(smtp("::1", 25)));
        assert_eq!(parse("::1:25"), Ok(smtp("::1", 25)));
        assert_eq!(
            parse("lmtp:127.0.0.1:24"),
            Ok(Target::Lmtp {
                host: "127.0.0.1".into(),
                port: 24
            })
        );
        assert_eq!(
            parse("lmtp:[::1]:24"),
            Ok(Target::Lmtp {
                host: "::1".into(),
                port: 24
            })
        );
        assert_eq!(
            parse("lmtp:unix:/run/dovecot/lmtp"),
            Ok(Target::LmtpUnix("/run/dovecot/lmtp".into()))
        );
        assert_eq!(
            parse("maildir"),
            Ok(Target::Maildir("/data/Maildir".into()))
        );
        assert_eq!(
            parse("maildir:/var/mail/a"),
            Ok(Target::Maildir("/var/mail/a".into()))
        );
    }

    #[test]
    fn every_malformed_target_says_what_to_write() {
        for (input, expected) in [
            ("lmtp:", "lmtp: needs HOST:PORT or unix:PATH"),
            ("lmtp:unix:", "needs the socket's path"),
            ("lmtp:unix:run/lmtp", "must be absolute"),
            ("lmtp:localhost", "is not lmtp:HOST:PORT or lmtp:unix:PATH"),
            ("lmtp:localhost:0", "is not lmtp:HOST:PORT"),
            ("lmtp:localhost:99999", "is not lmtp:HOST:PORT"),
            ("lmtp:24", "is not lmtp:HOST:PORT"),
            ("smtp:", "smtp: needs HOST:PORT"),
            ("smtp:host", "smtp: needs HOST:PORT"),
            (
                "lmtps:host:24",
                "is not a delivery target; use HOST:PORT, smtp:HOST:PORT, lmtp:",
            ),
            ("nowhere", "is not a delivery target"),
            (":25", "is not a delivery target"),
            ("host:port", "is not a delivery target"),
            ("maildir:", "maildir: needs a path"),
        ] {
            let err = parse(input).expect_err(input);
            assert!(err.contains(expected), "{input:?}: {err}");
        }
    }

    #[test]
    fn lmtp_in_the_file_and_on_the_command_line() {
        use crate::config::{build, Overrides, Source, DEFAULTS};
        let load = |text: &str, ov: &Overrides| {
            let defaults = Source {
                name: "embedded defaults",
                text: DEFAULTS,
            };
            let user = Source {
                name: "test.toml",
                text,
            };
            build(defaults, Some(user), ov, || Ok("/data".into()))
        };
        let file = "[inbound]\ndeliver = \"lmtp:unix:/run/dovecot/lmtp\"\n";
        let c = load(file, &Overrides::default()).unwrap();
        assert_eq!(
            c.inbound_target,
            Target::LmtpUnix("/run/dovecot/lmtp".into())
        );
        let ov = Overrides {
            deliver: Some("lmtp:mail.example.org:24".into()),
            ..Overrides::default()
        };
        let c = load(file, &ov).unwrap();
        assert_eq!(
            c.inbound_target,
            Target::Lmtp {
                host: "mail.example.org".into(),
                port: 24
            },
            "the flag wins"
        );
        let err = load(
            "\n[inbound]\ndeliver = \"lmtp:unix:\"\n",
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("line 3")
                && err.contains("inbound.deliver")
                && err.contains("socket's path"),
            "{err}"
        );
        let ov = Overrides {
            upstream: Some("lmtp:127.0.0.1:24".into()),
            ..Overrides::default()
        };
        let err = load("", &ov).unwrap_err().to_string();
        assert!(
            err.contains("--upstream") && err.contains("--deliver"),
            "{err}"
        );
        let err = load(
            "[delivery]\ntransport = \"lmtp:127.0.0.1:24\"\n",
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("delivery.transport"), "{err}");
    }
}
