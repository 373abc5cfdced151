//! DANE OPENPGPKEY lookups (RFC 7929): a recipient's key published in its domain's DNS
//! at `hex(SHA-256(local-part))[..56]._openpgpkey.<domain>`, used only when the answer's
//! DNSSEC proof is secure.
//!
//! Validation happens here, in-process, by hickory's validating resolver: the resolvers
//! we ask (`dane_resolver`, else the nameservers of `/etc/resolv.conf`) only have to pass
//! the DNSSEC records along, and a resolver that claims to have validated (the AD bit) is
//! not believed. Trust starts from `dane_trust_anchor` when given (DNSKEY records for a
//! private or split-horizon zone), else from the IANA root keys built into hickory.
//!
//! We call hickory ourselves rather than `sequoia_net::dane::get` because that function
//! builds its resolver from the system configuration with the root anchors, so it can
//! neither be pointed at a chosen resolver nor given another trust anchor, and it does not
//! tell an unsigned zone from a failed validation, which `keys discover` and the log must.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::dnssec::{Proof, TrustAnchors, Verifier};
use hickory_resolver::proto::rr::{LowerName, Name, RData, RecordType};
use hickory_resolver::proto::serialize::txt::trust_anchor::{Entry, Parser};
use hickory_resolver::TokioResolver;
use sealpost_keyring::openpgp::parse::Parse;
use sealpost_keyring::openpgp::Cert;
use sha2::{Digest, Sha256};

/// Where the system names its resolvers.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// The DNS port, for a resolver named without one.
const DNS_PORT: u16 = 53;

/// Why `[discovery]`'s DANE settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot read the trust anchor file {path}: {source}")]
    ReadAnchor {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the trust anchor file {path} is not DNSKEY records in zone-file form: {reason}")]
    ParseAnchor { path: PathBuf, reason: String },
    #[error("the trust anchor file {0} holds no DNSKEY record")]
    EmptyAnchor(PathBuf),
    #[error("cannot read {RESOLV_CONF} for the resolvers to ask: {0}")]
    ReadResolvConf(std::io::Error),
    #[error(
        "{RESOLV_CONF} names no nameserver; set dane_resolver to a resolver that passes \
         DNSSEC records, such as [\"127.0.0.1:53\"]"
    )]
    NoResolver,
    #[error("cannot set up the DNS resolver: {0}")]
    Resolver(String),
}

/// DNSKEY records trusted as the start of DNSSEC validation, read from a file.
#[derive(Clone)]
pub struct Anchor {
    pub path: PathBuf,
    /// The zones the keys are for, as written (`.` for the root).
    pub zones: Vec<String>,
    keys: Arc<TrustAnchors>,
}

impl fmt::Debug for Anchor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Anchor")
            .field("path", &self.path)
            .field("zones", &self.zones)
            .finish()
    }
}

impl Anchor {
    /// Reads DNSKEY records in zone-file form (`example.net. IN DNSKEY 257 3 13 …`, the
    /// `.key` file `ldns-keygen` or `dnssec-keygen` writes), each trusted for its own name.
    ///
    /// hickory 0.26 trusts a zone's DNSKEY set from the anchors alone only when every key
    /// of the set is an anchor; otherwise it asks the parent for DS records, which a
    /// private zone's parent does not have. So a zone below the root must be listed with
    /// all its keys (or be signed with one key); a root zone needs only its KSK, as its
    /// DNSKEY set is checked by that key's signature.
    ///
    /// # Errors
    /// An unreadable file, a line that is not a DNSKEY record, a key hickory cannot use,
    /// or no key at all.
    pub fn load(path: &Path) -> Result<Anchor, SetupError> {
        let text = std::fs::read_to_string(path).map_err(|source| SetupError::ReadAnchor {
            path: path.to_path_buf(),
            source,
        })?;
        let bad = |reason: String| SetupError::ParseAnchor {
            path: path.to_path_buf(),
            reason,
        };
        let entries = Parser::new(text.as_str())
            .parse()
            .map_err(|e| bad(e.to_string()))?;
        let mut keys = TrustAnchors::empty();
        let mut zones = Vec::new();
        for entry in entries {
            let Entry::DNSKEY(record) = entry else {
                continue;
            };
            let dnskey = record.data();
            let key = dnskey
                .key()
                .map_err(|e| bad(format!("the key for {}: {e}", record.name())))?;
            keys.insert_with_name(&*key, LowerName::from(record.name()));
            let zone = record.name().to_string();
            if !zones.contains(&zone) {
                zones.push(zone);
            }
        }
        if zones.is_empty() {
            return Err(SetupError::EmptyAnchor(path.to_path_buf()));
        }
        Ok(Anchor {
            path: path.to_path_buf(),
            zones,
            keys: Arc::new(keys),
        })
    }
}

/// A resolver address as `dane_resolver` gives it: `IP` or `IP:PORT` (`[v6]:PORT`). Never a
/// host name: that would need DNS to find DNS.
///
/// # Errors
/// Anything else, in words.
pub fn parse_resolver(text: &str) -> Result<SocketAddr, String> {
    let t = text.trim();
    if let Ok(a) = t.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = t
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(SocketAddr::new(ip, DNS_PORT));
    }
    Err(format!(
        "{text:?} is not a resolver address: give an IP address with an optional port, \
         such as \"127.0.0.1:53\" or \"[::1]:53\""
    ))
}

/// The `nameserver` lines of a resolv.conf.
pub fn nameservers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        // A link-local IPv6 resolver carries its interface (`fe80::1%eth0`): not ours to use.
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, DNS_PORT))
        .collect()
}

/// The resolvers of the system, for `dane = true` without `dane_resolver`.
///
/// # Errors
/// An unreadable resolv.conf, or one without a nameserver.
pub fn system_resolvers() -> Result<Vec<SocketAddr>, SetupError> {
    let text = std::fs::read_to_string(RESOLV_CONF).map_err(SetupError::ReadResolvConf)?;
    let found = nameservers(&text);
    if found.is_empty() {
        return Err(SetupError::NoResolver);
    }
    Ok(found)
}

/// The name of `email`'s OPENPGPKEY record: the first 28 octets of the SHA-256 of the
/// local part, in hex, under `_openpgpkey.<domain>`. The local part is lowercased (ASCII)
/// as the keyring and gpg compare addresses, so that `Alice@` and `alice@` find one key.
pub fn record_name(email: &str) -> Option<Name> {
    let (local, domain) = email.rsplit_once('@')?;
    if local.is_empty() || domain.is_empty() {
        return None;
    }
    let digest = Sha256::digest(local.to_ascii_lowercase().as_bytes());
    let label: String = digest[..28].iter().map(|b| format!("{b:02x}")).collect();
    let domain = domain.trim_end_matches('.').to_lowercase();
    Name::from_utf8(format!("{label}._openpgpkey.{domain}.")).ok()
}

/// What a DANE lookup asked and got.
#[derive(Debug)]
pub struct Answer {
    /// The record asked for, where, and what came back.
    pub asked: Vec<String>,
    /// The certificates in DNSSEC-secure records, or why there are none.
    pub certs: Result<Vec<Cert>, String>,
}

/// A validating resolver for OPENPGPKEY records (cheap to clone; answers are cached for
/// their TTL).
#[derive(Clone)]
pub struct Dane {
    resolver: TokioResolver,
    servers: Vec<SocketAddr>,
    timeout: Duration,
}

impl Dane {
    /// A resolver asking `servers` (UDP, then TCP for an answer too large for UDP),
    /// validating from `anchor`, else from the root keys built into hickory. A lookup,
    /// validation included, ends after `timeout`.
    ///
    /// # Errors
    /// No server, or a resolver hickory cannot build.
    pub fn new(
        servers: &[SocketAddr],
        anchor: Option<&Anchor>,
        timeout: Duration,
    ) -> Result<Dane, SetupError> {
        if servers.is_empty() {
            return Err(SetupError::NoResolver);
        }
        let name_servers = servers
            .iter()
            .map(|a| {
                let mut ns = NameServerConfig::udp_and_tcp(a.ip());
                for c in &mut ns.connections {
                    c.port = a.port();
                }
                ns
            })
            .collect();
        let mut opts = ResolverOpts::default();
        opts.validate = true;
        // The name is complete: no search domains, no hosts file.
        opts.ndots = 0;
        opts.use_hosts_file = ResolveHosts::Never;
        opts.timeout = Duration::from_secs(3);
        let mut builder = TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, Vec::new(), name_servers),
            TokioRuntimeProvider::default(),
        )
        .with_options(opts);
        if let Some(a) = anchor {
            builder = builder.with_trust_anchor(Arc::clone(&a.keys));
        }
        let resolver = builder
            .build()
            .map_err(|e| SetupError::Resolver(e.to_string()))?;
        Ok(Dane {
            resolver,
            servers: servers.to_vec(),
            timeout,
        })
    }

    /// Looks `email`'s OPENPGPKEY records up and parses the certificates in them, if the
    /// answer is DNSSEC-secure. Which user IDs are kept is the keyring's business.
    pub async fn lookup(&self, email: &str) -> Answer {
        let Some(name) = record_name(email) else {
            return Answer {
                asked: Vec::new(),
                certs: Err(format!("{email:?} has no domain to look up")),
            };
        };
        let via = self
            .servers
            .iter()
            .map(SocketAddr::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let asked = |outcome: &str| vec![format!("OPENPGPKEY {name} via {via}: {outcome}")];
        let found = tokio::time::timeout(
            self.timeout,
            self.resolver.lookup(name.clone(), RecordType::OPENPGPKEY),
        )
        .await;
        let lookup = match found {
            Err(_) => {
                let why = format!("no answer within {:?}", self.timeout);
                return Answer {
                    asked: asked(&why),
                    certs: Err(why),
                };
            }
            Ok(Err(e)) => {
                let why = words(&e);
                return Answer {
                    asked: asked(&why),
                    certs: Err(why),
                };
            }
            Ok(Ok(l)) => l,
        };
        // Every record the answer rests on (a CNAME on the way included) must be proven;
        // the signatures themselves carry no proof of their own.
        let weakest = lookup
            .answers()
            .iter()
            .filter(|r| r.record_type() != RecordType::RRSIG)
            .map(|r| r.proof)
            .min()
            .unwrap_or(Proof::Indeterminate);
        let blobs: Vec<&[u8]> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::OPENPGPKEY(k) => Some(k.public_key.as_slice()),
                _ => None,
            })
            .collect();
        if blobs.is_empty() {
            let why = "no OPENPGPKEY record for the address".to_string();
            return Answer {
                asked: asked(&why),
                certs: Err(why),
            };
        }
        let outcome = format!("{} record(s), DNSSEC {}", blobs.len(), proof_words(weakest));
        if weakest != Proof::Secure {
            return Answer {
                asked: asked(&outcome),
                certs: Err(refusal(weakest)),
            };
        }
        // RFC 7929 §2: one certificate per record; a domain in transition publishes more.
        let mut certs = Vec::new();
        let mut bad = Vec::new();
        for b in blobs {
            match Cert::from_bytes(b) {
                Ok(c) => certs.push(c),
                Err(e) => bad.push(e.to_string()),
            }
        }
        let certs = if certs.is_empty() {
            Err(format!("no readable certificate: {}", bad.join("; ")))
        } else {
            Ok(certs)
        };
        Answer {
            asked: asked(&outcome),
            certs,
        }
    }
}

fn proof_words(p: Proof) -> &'static str {
    match p {
        Proof::Secure => "secure",
        Proof::Insecure => "insecure",
        Proof::Bogus => "bogus",
        Proof::Indeterminate => "indeterminate",
    }
}

/// Why records with proof `p` are not used.
fn refusal(p: Proof) -> String {
    match p {
        Proof::Insecure => {
            "the zone is not signed (DNSSEC insecure), so the record is not used".into()
        }
        Proof::Bogus => "DNSSEC validation failed".into(),
        _ => "DNSSEC validation could not decide, so the record is not used".into(),
    }
}

/// hickory's errors as one line.
fn words(e: &NetError) -> String {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(_)) => "no OPENPGPKEY record for the address".into(),
        NetError::Dns(DnsError::Nsec { proof, .. }) if *proof == Proof::Secure => {
            "no OPENPGPKEY record for the address (proven by DNSSEC)".into()
        }
        NetError::Dns(DnsError::Nsec { proof, .. }) => {
            format!(
                "no OPENPGPKEY record, and the denial is not proven ({})",
                proof_words(*proof)
            )
        }
        NetError::Dns(DnsError::DnssecBogus) => "DNSSEC validation failed".into(),
        NetError::Timeout => "the resolver did not answer".into(),
        e => format!("DNS: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_name_hashes_the_lowercased_local_part() {
        // RFC 7929 §3's example: "hugh@example.com".
        let n = record_name("Hugh@example.com").unwrap();
        assert_eq!(
            n.to_string(),
            "c93f1e400f26708f98cb19d936620da35eec8f72e57f9eec01c1afd6._openpgpkey.example.com."
        );
        assert!(record_name("nobody").is_none());
        assert!(record_name("@example.com").is_none());
    }

    #[test]
    fn resolvers_are_addresses_with_an_optional_port() {
        assert_eq!(
            parse_resolver("127.0.0.1").unwrap(),
            "127.0.0.1:53".parse().unwrap()
        );
        assert_eq!(
            parse_resolver("[::1]:5353").unwrap(),
            "[::1]:5353".parse().unwrap()
        );
        assert_eq!(parse_resolver("::1").unwrap(), "[::1]:53".parse().unwrap());
        assert!(parse_resolver("dns.example:53").is_err());
        assert_eq!(
            nameservers("# x\nsearch example\nnameserver 10.0.0.1\nnameserver fe80::1%eth0\nnameserver ::1\n"),
            vec![
                "10.0.0.1:53".parse::<SocketAddr>().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn a_trust_anchor_file_is_dnskey_records() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.key");
        std::fs::write(
            &good,
            "; a comment\nexample.net.\tIN\tDNSKEY\t257 3 13 3CWYAeVhT0eDSVPN8gf9ciwu24LouZ4PKY0pGTCyzIzrlWK/fVQEPqKeNfDCNLa4tf8j7atsDFm91GY8Wfh5og== ;{id = 64658 (ksk), size = 256b}\n",
        )
        .unwrap();
        let a = Anchor::load(&good).unwrap();
        assert_eq!(a.zones, ["example.net."]);
        let empty = dir.path().join("empty.key");
        std::fs::write(&empty, "; nothing\n").unwrap();
        assert!(matches!(
            Anchor::load(&empty),
            Err(SetupError::EmptyAnchor(_))
        ));
        let garbage = dir.path().join("garbage.key");
        std::fs::write(&garbage, "example.net. IN A 127.0.0.1\n").unwrap();
        assert!(matches!(
            Anchor::load(&garbage),
            Err(SetupError::ParseAnchor { .. })
        ));
        assert!(matches!(
            Anchor::load(&dir.path().join("missing.key")),
            Err(SetupError::ReadAnchor { .. })
        ));
    }
}
