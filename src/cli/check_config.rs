//! Command-line parser and runner for `sealpost check-config`.

use std::path::{Path, PathBuf};

use crate::config::{AuthMode, Config, Mode, Target, TlsMode};

use super::access::{self, Account, Need};

/// Check a configuration as `serve` would, and print the effective configuration.
///
/// The embedded defaults are overlaid by the file and then by the same flags `serve`
/// takes. Every check `serve` makes before it opens the keyring runs here, through the
/// same code: each certificate and private key is loaded, each ca_file read, the
/// passphrase file (SEALPOST_PASSPHRASE_FILE) read. A configuration this passes is one
/// `serve` starts with, except for what only happens then: binding the addresses and
/// opening the keyring. The result is printed with secrets hidden; an error names the
/// key and the line.
///
/// Root can read every file. With --user, check-config also tells whether the account
/// `serve` runs as can read each file the configuration names and write the data
/// directory, from the files' modes and owners.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  sealpost check-config --config /etc/sealpost/sealpost.toml --user sealpost
  sealpost check-config --config sealpost.toml --upstream-ca-file upstream.pem
  sealpost check-config            # the embedded defaults
  # as the service user itself, meeting exactly what serve would:
  setpriv --reuid=sealpost --regid=sealpost --init-groups \\
      sealpost check-config --config /etc/sealpost/sealpost.toml")]
pub struct Args {
    /// The account `serve` runs as (NAME, UID or UID:GID): report each file it cannot
    /// read and a data directory it cannot write
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    #[command(flatten)]
    flags: super::serve::Flags,
}

pub fn run(
    args: Args,
    config_path: Option<&Path>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let overrides = args.flags.overrides(data_dir);
    let config = Config::load(config_path, &overrides, super::default_data_dir)?;
    // What `serve` runs before it opens anything, with the same messages.
    super::serve::prepare(&config)?;
    match &args.user {
        Some(spec) => {
            let account = Account::lookup(spec).map_err(anyhow::Error::msg)?;
            let problems = access_problems(&config, config_path, &account);
            if !problems.is_empty() {
                for p in &problems {
                    eprintln!("sealpost: error: {p}");
                }
                return Err(super::Exit(1).into());
            }
        }
        None if rustix::process::geteuid().is_root() => eprintln!(
            "sealpost: note: run as root, which reads every file; add --user ACCOUNT to \
             check what the account `serve` runs as can read"
        ),
        None => {}
    }
    if let Some(warning) = &config.hostname_warning {
        eprintln!("sealpost: warning: {warning}");
    }
    print!("{}", render(&config));
    Ok(())
}

/// Each file the configuration names that `account` could not use as `serve` does.
fn access_problems(config: &Config, config_path: Option<&Path>, account: &Account) -> Vec<String> {
    let mut wanted: Vec<(PathBuf, Need)> = Vec::new();
    if let Some(p) = config_path {
        wanted.push((p.to_path_buf(), Need::Read));
    }
    for l in &config.listeners {
        if l.tls != TlsMode::None {
            wanted.extend(l.certificate.iter().map(|c| (c.clone(), Need::Read)));
            wanted.extend(l.private_key.iter().map(|k| (k.clone(), Need::Read)));
        }
    }
    if let Some(u) = &config.upstream {
        wanted.extend(u.ca_file.iter().map(|c| (c.clone(), Need::Read)));
        wanted.extend(u.password_file.iter().map(|c| (c.clone(), Need::Read)));
    } else {
        wanted.push((config.outbound_maildir.clone(), Need::Write));
    }
    if let Some(c) = &config.inbound_ca_file {
        wanted.push((c.clone(), Need::Read));
    }
    if let Some(a) = &config.discovery.dane_trust_anchor {
        wanted.push((a.path.clone(), Need::Read));
    }
    match &config.inbound_target {
        Target::Maildir(p) => wanted.push((p.clone(), Need::Write)),
        Target::LmtpUnix(p) => wanted.push((p.clone(), Need::Write)),
        Target::Smtp { .. } | Target::Lmtp { .. } => {}
    }
    wanted.push((config.data_dir.clone(), Need::Write));
    let mut problems = Vec::new();
    for (path, need) in wanted {
        if !path.exists() && need == Need::Write {
            if path.starts_with(&config.data_dir) {
                // `serve` makes its data directory, as its own user, or systemd does
                // (StateDirectory=) before it starts: nothing to judge yet.
                if path == config.data_dir {
                    eprintln!(
                        "sealpost: note: the data directory {} does not exist yet; `serve` \
                         makes it (under systemd, StateDirectory= does)",
                        path.display()
                    );
                }
                continue;
            }
            // A Maildir elsewhere is made by `serve`: the nearest existing directory
            // above must take new files.
            match path.ancestors().skip(1).find(|a| a.exists()) {
                Some(parent) => {
                    if let Err(e) = access::check(account, parent, Need::Write) {
                        problems.push(format!("{e} (to create {})", path.display()));
                    }
                }
                None => problems.push(format!("{}: no such directory", path.display())),
            }
            continue;
        }
        if let Err(e) = access::check(account, &path, need) {
            problems.push(e);
        }
    }
    problems.dedup();
    problems
}

/// The effective configuration in the file's own syntax; passwords and hashes hidden.
pub fn render(c: &Config) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "data_dir = {:?}", c.data_dir.display().to_string());
    let _ = writeln!(s, "hostname = {:?}", c.hostname);
    if c.hostname_warning.is_some() {
        let _ = writeln!(
            s,
            "# not fully qualified: set hostname to the name this gateway has in DNS"
        );
    }
    for l in &c.listeners {
        let _ = writeln!(s, "\n[[listener]]");
        let mode = match l.mode {
            Mode::Outbound => "outbound",
            Mode::Inbound => "inbound",
        };
        let _ = writeln!(s, "mode = {mode:?}");
        let _ = writeln!(s, "address = \"{}\"", l.address);
        let _ = writeln!(s, "tls = {:?}", tls(l.tls));
        match (&l.certificate, &l.private_key) {
            (Some(c), Some(k)) => {
                let _ = writeln!(s, "certificate = {:?}", c.display().to_string());
                let _ = writeln!(s, "private_key = {:?}", k.display().to_string());
            }
            _ if l.tls != TlsMode::None => {
                let _ = writeln!(
                    s,
                    "# certificate: self-signed, {} (made on first start; loopback only)",
                    crate::tls::self_signed_path(&c.data_dir).display()
                );
            }
            _ => {}
        }
        let auth = match l.auth {
            AuthMode::None => "none",
            AuthMode::Local => "local",
            AuthMode::Passthrough => "passthrough",
        };
        let _ = writeln!(s, "auth = {auth:?}");
        let _ = writeln!(s, "require_auth = {}", l.require_auth);
        let allow: Vec<String> = l
            .allow
            .iter()
            .map(|n| format!("{:?}", n.to_string()))
            .collect();
        let _ = writeln!(s, "allow = [{}]", allow.join(", "));
        if l.open_relay {
            let _ = writeln!(s, "open_relay = \"i-know\"");
        }
        let m = &l.limits;
        let _ = writeln!(s, "max_message_size = {}", m.max_message_size);
        let _ = writeln!(s, "max_recipients = {}", m.max_recipients);
        let _ = writeln!(s, "max_connections = {}", m.max_connections);
        let _ = writeln!(s, "max_connections_per_ip = {}", m.max_connections_per_ip);
        let _ = writeln!(s, "command_timeout = \"{}s\"", m.command_timeout.as_secs());
        let _ = writeln!(s, "data_timeout = \"{}s\"", m.data_timeout.as_secs());
        let _ = writeln!(s, "spill_above = {}", m.spill_above);
    }
    for u in &c.users {
        let addrs: Vec<String> = u.addresses.iter().map(|a| format!("{a:?}")).collect();
        let _ = writeln!(
            s,
            "\n[[user]]\nname = {:?}\npassword_hash = \"<hidden>\"\naddresses = [{}]",
            u.name,
            addrs.join(", ")
        );
    }
    let url = std::env::var("SEALPOST_KEYRING_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .or_else(|| c.keyring_url.clone());
    match url {
        Some(url) => {
            let _ = writeln!(
                s,
                "\n[keyring]\nurl = {:?}",
                sealpost_keyring::store::postgres::hide_password(&url)
            );
        }
        None => {
            let _ = writeln!(s, "\n# no [keyring]: the keyring is in the data directory");
        }
    }
    let _ = writeln!(s, "\n[admin]");
    match c.admin_http {
        Some(addr) => {
            let _ = writeln!(s, "http = \"{addr}\"  # /metrics, /healthz, /readyz");
        }
        None => {
            let _ = writeln!(s, "# no http: no metrics or health endpoints");
        }
    }
    let _ = writeln!(
        s,
        "keep_trail = \"{}s\"  # each message's decision trail, for sealpost log show",
        c.keep_trail.as_secs()
    );
    match &c.wkd {
        Some(w) => {
            let _ = writeln!(s, "\n[wkd]");
            let _ = writeln!(
                s,
                "listen = \"{}\"  # the local users' keys over HTTPS",
                w.listen
            );
            let _ = writeln!(s, "certificate = {:?}", w.certificate.display().to_string());
            let _ = writeln!(s, "private_key = {:?}", w.private_key.display().to_string());
            let domains: Vec<String> = w.domains.iter().map(|d| format!("{d:?}")).collect();
            let _ = writeln!(s, "domains = [{}]", domains.join(", "));
            if w.domains.is_empty() {
                let _ = writeln!(s, "# empty: the domains of the keyring's secret keys");
            }
        }
        None => {
            let _ = writeln!(
                s,
                "\n# no [wkd] listen: the local users' keys are not served"
            );
        }
    }
    let d = &c.discovery;
    let _ = writeln!(s, "\n[discovery]");
    let _ = writeln!(s, "autocrypt = {}", d.autocrypt);
    let _ = writeln!(s, "wkd = {}", d.wkd);
    let servers: Vec<String> = d
        .keyservers
        .iter()
        .map(|u| format!("{:?}", u.as_str()))
        .collect();
    let _ = writeln!(s, "keyservers = [{}]", servers.join(", "));
    let _ = writeln!(
        s,
        "budget = \"{}s\"  # per message, all recipients together",
        d.budget.as_secs()
    );
    let _ = writeln!(s, "retry_after = \"{}s\"", d.retry_after.as_secs());
    if d.refresh.is_zero() {
        let _ = writeln!(s, "refresh = \"0\"  # known keys are never fetched again");
    } else {
        let _ = writeln!(s, "refresh = \"{}s\"", d.refresh.as_secs());
    }
    if let Some(ca) = &d.ca_file {
        let _ = writeln!(
            s,
            "ca_file = {:?}  # besides the system roots",
            ca.display().to_string()
        );
    }
    let _ = writeln!(s, "dane = {}", d.dane);
    if d.dane {
        let resolvers: Vec<String> = d.dane_resolver.iter().map(|a| format!("\"{a}\"")).collect();
        let _ = writeln!(
            s,
            "dane_resolver = [{}]  # DNSSEC validated here",
            resolvers.join(", ")
        );
    }
    match &d.dane_trust_anchor {
        Some(a) => {
            let _ = writeln!(
                s,
                "dane_trust_anchor = {:?}  # keys for {}",
                a.path.display().to_string(),
                a.zones.join(", ")
            );
        }
        None if d.dane => {
            let _ = writeln!(s, "# dane_trust_anchor: the IANA root keys");
        }
        None => {}
    }
    if !d.resolve.is_empty() {
        let _ = writeln!(s, "[discovery.resolve]");
        let mut hosts: Vec<_> = d.resolve.iter().collect();
        hosts.sort();
        for (h, a) in hosts {
            let _ = writeln!(s, "{h:?} = \"{a}\"");
        }
    }
    match &c.upstream {
        Some(u) => {
            let _ = writeln!(s, "\n[upstream]");
            let _ = writeln!(s, "address = \"{}:{}\"", u.host, u.port);
            let _ = writeln!(s, "tls = {:?}", tls(u.tls));
            if let Some(ca) = &u.ca_file {
                let _ = writeln!(s, "ca_file = {:?}", ca.display().to_string());
            }
            if let Some(user) = &u.username {
                let _ = writeln!(s, "username = {user:?}");
            }
            if u.password.is_some() {
                let _ = writeln!(s, "# password: <hidden>, read from password_file");
            }
        }
        None => {
            let _ = writeln!(
                s,
                "\n# no [upstream]: outbound mail goes to the Maildir below"
            );
        }
    }
    let _ = writeln!(s, "\n[delivery]");
    if c.upstream.is_some() {
        let _ = writeln!(s, "transport = \"smtp\"");
    } else {
        let _ = writeln!(
            s,
            "transport = \"maildir:{}\"",
            c.outbound_maildir.display()
        );
    }
    let _ = writeln!(s, "budget = \"{}s\"", c.budget.as_secs());
    let _ = writeln!(s, "lifetime = \"{}s\"", c.lifetime.as_secs());
    let _ = writeln!(s, "retry = \"{}s\"", c.retry.as_secs());
    let _ = writeln!(s, "\n[inbound]");
    let target = match &c.inbound_target {
        Target::Smtp { host, port } => format!("{host}:{port}"),
        Target::Lmtp { host, port } => format!("lmtp:{host}:{port}"),
        Target::LmtpUnix(p) => format!("lmtp:unix:{}", p.display()),
        Target::Maildir(p) => format!("maildir:{}", p.display()),
    };
    let _ = writeln!(s, "deliver = {target:?}");
    if matches!(c.inbound_target, Target::Smtp { .. } | Target::Lmtp { .. }) {
        let _ = writeln!(s, "tls = {:?}", tls(c.inbound_tls));
    }
    if let Some(ca) = &c.inbound_ca_file {
        let _ = writeln!(s, "ca_file = {:?}", ca.display().to_string());
    }
    let domains: Vec<String> = c.local_domains.iter().map(|d| format!("{d:?}")).collect();
    let _ = writeln!(s, "local_domains = [{}]", domains.join(", "));
    if c.local_domains.is_empty() {
        let _ = writeln!(s, "# empty: the domains of the keyring's secret keys");
    }
    let recipients = match &c.recipients {
        crate::config::Recipients::Verify => "verify".to_string(),
        crate::config::Recipients::File(p) => format!("file:{}", p.display()),
        crate::config::Recipients::Any => "any".to_string(),
    };
    let _ = writeln!(s, "recipients = {recipients:?}");
    let _ = writeln!(s, "authserv_id = {:?}", c.authserv_id);
    let _ = writeln!(s, "max_plaintext = {}", c.max_plaintext);
    render_policy(&mut s, &c.policy);
    s
}

/// `[policy]`: the global layer with the built-in defaults it falls back on, then each
/// domain and address layer as written (what a layer leaves out, it inherits).
fn render_policy(s: &mut String, p: &crate::policy::Policy) {
    use crate::policy::sender::OnMismatch;
    use std::fmt::Write;
    let _ = writeln!(s, "\n[policy]");
    let defaults = crate::policy::Policy::default().for_recipient("");
    let g = &p.global;
    let set = |given: bool| if given { "" } else { "  # built-in default" };
    let _ = writeln!(
        s,
        "mode = {:?}{}",
        mode(g.mode.unwrap_or(defaults.mode.0)),
        set(g.mode.is_some())
    );
    let _ = writeln!(
        s,
        "encrypt_to_self = {}{}",
        g.encrypt_to_self.unwrap_or(defaults.encrypt_to_self.0),
        set(g.encrypt_to_self.is_some())
    );
    let _ = writeln!(
        s,
        "mixed = {:?}{}",
        mixed(g.mixed.unwrap_or(defaults.mixed.0)),
        set(g.mixed.is_some())
    );
    let mismatch = match p.sender_mismatch {
        OnMismatch::Refuse => "refuse",
        OnMismatch::Unsigned => "unsigned",
    };
    let _ = writeln!(s, "sender_mismatch = {mismatch:?}");
    match g.min_trust {
        Some(t) => {
            let _ = writeln!(s, "min_trust = {:?}", t.name());
        }
        // Unset, the minimum follows each recipient's mode: the global one would
        // misstate it for a domain or address under another mode.
        None => {
            let _ = writeln!(
                s,
                "# min_trust unset: {:?} for mode require, {:?} (any key) for the other modes  # built-in default",
                crate::policy::rules::default_min_trust(crate::policy::Mode::Require).name(),
                crate::policy::rules::default_min_trust(crate::policy::Mode::Opportunistic)
                    .name(),
            );
        }
    }
    for (kind, layer) in [("domain", &p.domains), ("address", &p.addresses)] {
        let mut keys: Vec<&String> = layer.keys().collect();
        keys.sort();
        for key in keys {
            let Some(rule) = layer.get(key) else { continue };
            let _ = writeln!(s, "[policy.{kind}.{key:?}]");
            if let Some(m) = rule.mode {
                let _ = writeln!(s, "mode = {:?}", mode(m));
            }
            if let Some(e) = rule.encrypt_to_self {
                let _ = writeln!(s, "encrypt_to_self = {e}");
            }
            if let Some(m) = rule.mixed {
                let _ = writeln!(s, "mixed = {:?}", mixed(m));
            }
            if let Some(t) = rule.min_trust {
                let _ = writeln!(s, "min_trust = {:?}", t.name());
            }
        }
    }
}

fn mode(m: crate::policy::Mode) -> &'static str {
    use crate::policy::Mode;
    match m {
        Mode::Require => "require",
        Mode::Opportunistic => "opportunistic",
        Mode::SignOnly => "sign-only",
        Mode::None => "none",
    }
}

fn mixed(m: crate::policy::Mixed) -> &'static str {
    use crate::policy::Mixed;
    match m {
        Mixed::Split => "split",
        Mixed::RefuseUnencrypted => "refuse-unencrypted",
    }
}

fn tls(t: TlsMode) -> &'static str {
    match t {
        TlsMode::None => "none",
        TlsMode::StartTls => "starttls",
        TlsMode::Implicit => "tls",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sealpost.toml");
        std::fs::write(&path, text).unwrap();
        let config = Config::load(Some(&path), &Default::default(), || {
            Ok(std::path::PathBuf::from("/data"))
        })
        .unwrap();
        render(&config)
    }

    #[test]
    fn the_minimum_trust_of_every_layer_is_printed() {
        let out = rendered(
            "[policy]\nmin_trust = \"keyserver\"\n\n\
             [policy.domain.\"partner.example\"]\nmode = \"require\"\nmin_trust = \"pinned\"\n\n\
             [policy.address.\"ops@partner.example\"]\nmin_trust = \"autocrypt\"\n",
        );
        let policy = out.split("\n[policy]\n").nth(1).unwrap();
        assert!(policy.contains("min_trust = \"keyserver\"\n"), "{policy}");
        let domain = policy
            .split("[policy.domain.\"partner.example\"]\n")
            .nth(1)
            .unwrap();
        assert!(
            domain.starts_with("mode = \"require\"\nmin_trust = \"pinned\"\n"),
            "{domain}"
        );
        let address = policy
            .split("[policy.address.\"ops@partner.example\"]\n")
            .nth(1)
            .unwrap();
        assert!(
            address.starts_with("min_trust = \"autocrypt\"\n"),
            "{address}"
        );

        let out = rendered("");
        assert!(
            out.contains(
                "# min_trust unset: \"wkd\" for mode require, \"autocrypt\" (any key) for the other modes"
            ),
            "{out}"
        );
        assert!(out.contains("# no [wkd] listen"), "{out}");
        assert!(
            out.contains(
                "\n[discovery]\nautocrypt = true\nwkd = true\nkeyservers = []\nbudget = \"5s\""
            ),
            "{out}"
        );
        assert!(out.contains("\ndane = false\n"), "{out}");
        let out = rendered("[discovery]\nwkd = false\nrefresh = \"0\"\nkeyservers = [\"https://keys.example.org\"]\n");
        assert!(
            out.contains("wkd = false\nkeyservers = [\"https://keys.example.org/\"]"),
            "{out}"
        );
        assert!(
            out.contains("refresh = \"0\"  # known keys are never fetched again"),
            "{out}"
        );
    }

    #[test]
    fn the_wkd_listener_is_printed() {
        let out = rendered(
            "[wkd]\nlisten = \"127.0.0.1:8443\"\ncertificate = \"/c.pem\"\nprivate_key = \"/k.pem\"\ndomains = [\"example.org\"]\n",
        );
        assert!(
            out.contains("\n[wkd]\nlisten = \"127.0.0.1:8443\""),
            "{out}"
        );
        assert!(out.contains("domains = [\"example.org\"]"), "{out}");
    }
}
