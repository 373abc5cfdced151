//! The configuration file as written: serde structures, before validation.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub data_dir: Option<PathBuf>,
    pub hostname: Option<Spanned<String>>,
    #[serde(default, rename = "listener")]
    pub listeners: Vec<Listener>,
    #[serde(default, rename = "user")]
    pub users: Vec<User>,
    pub upstream: Option<Upstream>,
    pub delivery: Option<Delivery>,
    pub inbound: Option<Inbound>,
    pub policy: Option<Policy>,
    pub keyring: Option<Keyring>,
    pub admin: Option<Admin>,
    pub imap: Option<Imap>,
    pub discovery: Option<Discovery>,
    pub wkd: Option<Wkd>,
}

/// `[discovery]`: where keys for recipients without one are looked for.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Discovery {
    /// Keys from the `Autocrypt:` headers of received mail (default on).
    pub autocrypt: Option<bool>,
    /// Web Key Directory lookups at send time (default on).
    pub wkd: Option<bool>,
    /// VKS keyservers asked by address, as `https://` base URLs (default none).
    #[serde(default)]
    pub keyservers: Vec<Spanned<String>>,
    /// DANE OPENPGPKEY lookups, DNSSEC validated in-process (default off).
    pub dane: Option<bool>,
    /// Resolvers asked for OPENPGPKEY records, as `IP` or `IP:PORT` (default: the
    /// nameservers of /etc/resolv.conf).
    #[serde(default)]
    pub dane_resolver: Vec<Spanned<String>>,
    /// DNSKEY records (zone-file form) trusted instead of the IANA root's.
    pub dane_trust_anchor: Option<Spanned<PathBuf>>,
    /// How long one message may wait for lookups (default `5s`).
    pub budget: Option<Spanned<String>>,
    /// How long an address that gave no key is left alone (default `1h`).
    pub retry_after: Option<Spanned<String>>,
    /// The period over which known certificates are fetched again (default `7d`; `0`: never).
    pub refresh: Option<Spanned<String>>,
    /// CA certificates (PEM) trusted for lookups besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Host name → `ADDRESS:PORT` to connect to instead of asking DNS.
    #[serde(default)]
    pub resolve: std::collections::BTreeMap<String, Spanned<String>>,
}

/// `[wkd]`: the local users' keys served as a Web Key Directory over HTTPS.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wkd {
    /// `ADDRESS:PORT` of the HTTPS listener; none when absent or empty.
    pub listen: Option<Spanned<String>>,
    /// Certificate chain and key (PEM), for `openpgpkey.<domain>` and `<domain>`.
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    /// The domains served; default: the local domains.
    #[serde(default)]
    pub domains: Vec<Spanned<String>>,
}

/// `[imap]`: the IMAP proxy for a mail client on this machine.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Imap {
    /// `ADDRESS:PORT` the mail client connects to (default `127.0.0.1:1143`).
    pub listen: Option<Spanned<String>>,
    /// `HOST:PORT` of the provider's IMAP server.
    pub upstream: Option<Spanned<String>>,
    /// `none`, `starttls` or `tls` (default `tls`).
    pub upstream_tls: Option<Spanned<String>>,
    /// CA certificates (PEM) for TLS to the upstream instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// The address whose keys open mail when the login name is not an address.
    pub address: Option<String>,
    /// TLS towards the mail client: `none` (default), `starttls` or `tls`.
    pub tls: Option<Spanned<String>>,
    /// Certificate chain and key (PEM) for it; without them, the self-signed certificate.
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    /// Encrypt what the mail client APPENDs (sent copies, drafts) to the user's own keys.
    pub encrypt_appended: Option<bool>,
    /// Most bytes of opened messages kept on disk, sealed (`0`: memory only).
    pub disk_cache: Option<Spanned<String>>,
}

/// `[admin]`: the HTTP listener for metrics and health checks.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// `ADDRESS:PORT` of the `/metrics`, `/healthz` and `/readyz` listener; none when absent.
    pub http: Option<Spanned<String>>,
    /// How long the decision trail of each message is kept (`sealpost log show`).
    pub keep_trail: Option<Spanned<String>>,
}

/// `[keyring]`: where the keyring lives when not in the data directory.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keyring {
    /// `postgres://USER[:PASSWORD]@HOST:PORT/DATABASE[?sslmode=require&sslrootcert=FILE]`.
    pub url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// `outbound` (submission from clients) or `inbound` (mail for local users).
    pub mode: Spanned<String>,
    pub address: Spanned<String>,
    /// `none`, `starttls` or `tls` (implicit TLS).
    pub tls: Option<Spanned<String>>,
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    /// `none`, `local` or `passthrough`.
    pub auth: Option<Spanned<String>>,
    /// Whether AUTH (or an allowlisted address) is needed before MAIL. Defaults to true for an
    /// outbound listener that is not on loopback.
    pub require_auth: Option<bool>,
    /// Client networks (CIDR) allowed to relay without AUTH.
    #[serde(default)]
    pub allow: Vec<Spanned<String>>,
    /// `"i-know"`: consent to an outbound listener that anyone on the network can relay
    /// through. Without it, such a listener is refused.
    pub open_relay: Option<Spanned<String>>,
    /// Bytes, or a size such as "35MiB".
    pub max_message_size: Option<Spanned<Size>>,
    /// A size such as "1MiB": larger messages go to a sealed temporary file as they arrive.
    pub spill_above: Option<Spanned<String>>,
    pub max_recipients: Option<usize>,
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub command_timeout: Option<Spanned<String>>,
    pub data_timeout: Option<Spanned<String>>,
}

/// A size as a number of bytes or as text with a unit (`"35MiB"`, `"10 MB"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    /// An argon2 PHC string, as printed by `sealpost hash-password`.
    pub password_hash: Spanned<String>,
    /// The From addresses this user may send signed mail as; default: the user name, when
    /// it is an address.
    #[serde(default)]
    pub addresses: Vec<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// `host:port`.
    pub address: Spanned<String>,
    /// `none`, `starttls` or `tls`.
    pub tls: Option<Spanned<String>>,
    /// A PEM file of CA certificates to trust instead of the system roots.
    pub ca_file: Option<Spanned<PathBuf>>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    /// `smtp` (to `[upstream]`) or `maildir`; `maildir:PATH` picks the directory.
    pub transport: Option<Spanned<String>>,
    /// How long the gateway tries upstream within the client's transaction.
    pub budget: Option<Spanned<String>>,
    /// How long a spooled copy is retried before the sender gets a DSN.
    pub lifetime: Option<Spanned<String>>,
    /// The first retry delay; it doubles on each attempt, up to an hour.
    pub retry: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inbound {
    /// Where decrypted mail goes: `host:port` (SMTP), `lmtp:host:port`, `lmtp:unix:PATH`
    /// or `maildir:PATH`.
    pub deliver: Option<Spanned<String>>,
    /// TLS to a `deliver` on the network: `none` (default), `starttls` (required) or `tls`.
    pub tls: Option<Spanned<String>>,
    /// A PEM file of CA certificates to trust instead of the system roots.
    pub ca_file: Option<Spanned<PathBuf>>,
    /// Domains the inbound listener accepts mail for; default: those of the keyring's secret keys.
    #[serde(default)]
    pub local_domains: Vec<Spanned<String>>,
    /// How a recipient of a local domain is known to exist, at RCPT: `verify` (ask the
    /// next hop), `file:PATH` (one address per line) or `any`.
    pub recipients: Option<Spanned<String>>,
    /// The authserv-id of our `Authentication-Results` fields; empty: the hostname.
    pub authserv_id: Option<Spanned<String>>,
    /// Most plaintext one message may decrypt to, as a size (`64MiB`).
    pub max_plaintext: Option<Spanned<String>>,
}

/// `[policy]`, with `[policy.domain."example.org"]` and `[policy.address."a@example.org"]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The global layer's settings.
    pub mode: Option<Spanned<String>>,
    pub encrypt_to_self: Option<bool>,
    /// `false` keeps the Subject of encrypted copies in the clear (server-side search),
    /// at the cost of the Subject's confidentiality.
    pub protect_subject: Option<bool>,
    /// `true` defers mail to an address whose changed key waits for review, until an
    /// admin decides (default `false`: the current key is used meanwhile).
    pub hold_on_review: Option<bool>,
    pub mixed: Option<Spanned<String>>,
    /// The least trusted key to encrypt to: `pinned`, `wkd`, `keyserver` or `autocrypt`.
    pub min_trust: Option<Spanned<String>>,
    /// `refuse` (default) or `unsigned`: a message whose From address the login may not
    /// sign for.
    pub sender_mismatch: Option<Spanned<String>>,
    #[serde(default)]
    pub domain: std::collections::BTreeMap<String, PolicyRule>,
    #[serde(default)]
    pub address: std::collections::BTreeMap<String, PolicyRule>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    /// `require`, `opportunistic`, `sign-only` or `none`.
    pub mode: Option<Spanned<String>>,
    pub encrypt_to_self: Option<bool>,
    /// `false` keeps the Subject of encrypted copies in the clear (server-side search),
    /// at the cost of the Subject's confidentiality.
    pub protect_subject: Option<bool>,
    /// `true` defers mail to an address whose changed key waits for review.
    pub hold_on_review: Option<bool>,
    /// `split` or `refuse-unencrypted`.
    pub mixed: Option<Spanned<String>>,
    /// `pinned`, `wkd` (or `dane`), `keyserver` or `autocrypt` (or `harvested`, `any`).
    pub min_trust: Option<Spanned<String>>,
}
