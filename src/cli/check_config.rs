//! Command-line parser and runner for `sealpost check-config`.

use std::path::PathBuf;

use anyhow::Context;

use crate::config::{AuthMode, Config, Mode, Target, TlsMode};

/// Validate a configuration file and print the effective configuration.
///
/// The embedded defaults are overlaid by the file; the result is printed with secrets
/// hidden. An error names the key and the line.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  sealpost check-config --config /etc/sealpost/sealpost.toml
  sealpost check-config            # the embedded defaults")]
pub struct Args {}

pub fn run(
    _args: Args,
    config: Option<&std::path::Path>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let overrides = crate::config::Overrides {
        data_dir,
        ..Default::default()
    };
    let config = Config::load(config, &overrides, super::default_data_dir)?;
    // `serve` reads each ca_file at start and stops on a bad one: so does this.
    let ca_files = [
        (
            "[upstream] ca_file",
            config
                .upstream
                .as_ref()
                .filter(|u| u.tls != TlsMode::None)
                .and_then(|u| u.ca_file.as_deref()),
        ),
        ("[inbound] ca_file", config.inbound_ca_file.as_deref()),
    ];
    for (key, path) in ca_files {
        if let Some(path) = path {
            crate::tls::ClientTls::new(Some(path)).with_context(|| key.to_string())?;
        }
    }
    print!("{}", render(&config));
    Ok(())
}

/// The effective configuration in the file's own syntax; passwords and hashes hidden.
pub fn render(c: &Config) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "data_dir = {:?}", c.data_dir.display().to_string());
    let _ = writeln!(s, "hostname = {:?}", c.hostname);
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
                    "# certificate: self-signed, generated in the data directory (loopback only)"
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
    s
}

fn tls(t: TlsMode) -> &'static str {
    match t {
        TlsMode::None => "none",
        TlsMode::StartTls => "starttls",
        TlsMode::Implicit => "tls",
    }
}
