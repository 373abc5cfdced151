//! Command-line parser and runner for `sealpost serve`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sealpost_keyring::openpgp::crypto::Password;
use sealpost_keyring::{Keyring, OpenOptions};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::blob::Spill;
use crate::config::{self, AuthMode, Config, Mode, Target, TlsMode};
use crate::pipeline::{Direction, Gateway};
use crate::relay::{
    HopTls, LmtpAddress, LmtpConfig, Relay, RelayConfig, Route, Transport, UpstreamConfig,
};
use crate::server::listener::{self, ConnectionLimits, Serving};
use crate::smtp::config::{self as smtp_config, SessionConfig};

/// Run the gateway: SMTP listeners, the relay and its spool, and the admin socket.
///
/// With no configuration, one outbound listener on 127.0.0.1:2587 (STARTTLS with a
/// self-signed certificate made on first start) delivers to the Maildir in the data
/// directory. SIGTERM drains gracefully.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  sealpost serve                                   # embedded defaults, Maildir delivery
  sealpost serve --upstream smtp.example.org:587 --upstream-tls starttls
  sealpost serve --upstream mail.internal:465 --upstream-tls tls --upstream-ca-file mail.internal.pem
  sealpost serve --config /etc/sealpost/sealpost.toml
  sealpost serve --inbound-listen 0.0.0.0:25 --deliver 10.0.0.5:25
  sealpost serve --inbound-listen 0.0.0.0:25 --deliver lmtp:mail.example.org:24 --deliver-tls starttls
  sealpost serve --inbound-listen 0.0.0.0:25 --deliver lmtp:unix:/run/dovecot/lmtp")]
pub struct Args {
    #[command(flatten)]
    flags: Flags,
}

/// The settings `serve` takes on the command line, over the configuration file;
/// `check-config` takes the same, to check what `serve` would run with.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Flags {
    /// Address of the outbound (submission) listener
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Where outbound mail goes: HOST:PORT, or maildir:PATH
    #[arg(long, value_name = "HOST:PORT")]
    upstream: Option<String>,
    /// TLS to the upstream
    #[arg(long, value_name = "none|starttls|tls")]
    upstream_tls: Option<String>,
    /// CA certificates (PEM) that replace the system roots for the upstream; a
    /// certificate in it that the upstream presents exactly (a self-signed one) is trusted
    /// as it is
    #[arg(long, value_name = "FILE")]
    upstream_ca_file: Option<PathBuf>,
    /// Address of an inbound listener (mail for local users)
    #[arg(long, value_name = "ADDR")]
    inbound_listen: Option<String>,
    /// Where inbound mail goes: HOST:PORT or smtp:HOST:PORT (SMTP), lmtp:HOST:PORT or
    /// lmtp:unix:PATH (LMTP, e.g. Dovecot), or maildir:PATH
    #[arg(long, value_name = "TARGET")]
    deliver: Option<String>,
    /// TLS to the inbound delivery target (SMTP or LMTP over TCP)
    #[arg(long, value_name = "none|starttls|tls")]
    deliver_tls: Option<String>,
    /// Address of the IMAP proxy a mail client on this machine connects to (default
    /// 127.0.0.1:1143 once --imap-upstream is given)
    #[arg(long, value_name = "ADDR")]
    imap_listen: Option<String>,
    /// The provider's IMAP server, HOST:PORT: mail fetched through the proxy comes back
    /// decrypted and verified for the logged-in user
    #[arg(long, value_name = "HOST:PORT")]
    imap_upstream: Option<String>,
    /// TLS to the IMAP upstream (default tls, port 993)
    #[arg(long, value_name = "none|starttls|tls")]
    imap_upstream_tls: Option<String>,
}

impl Flags {
    pub fn overrides(self, data_dir: Option<PathBuf>) -> config::Overrides {
        config::Overrides {
            data_dir,
            listen: self.listen,
            upstream: self.upstream,
            upstream_tls: self.upstream_tls,
            upstream_ca_file: self.upstream_ca_file,
            inbound_listen: self.inbound_listen,
            deliver: self.deliver,
            deliver_tls: self.deliver_tls,
            imap_listen: self.imap_listen,
            imap_upstream: self.imap_upstream,
            imap_upstream_tls: self.imap_upstream_tls,
        }
    }
}

pub fn run(
    args: Args,
    config: Option<&std::path::Path>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let source = Source {
        path: config.map(Path::to_path_buf),
        overrides: args.flags.overrides(data_dir),
    };
    let config = source.load()?;
    super::refuse_root_in_others_dir(&config.data_dir)?;
    // Every file is read and every TLS setting built before anything is opened or bound.
    let prepared = prepare(&config)?;
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(Arc::new(config), prepared, source))
}

/// Where the configuration comes from, to read it again on SIGHUP: the file and the
/// command line's overrides, which keep applying.
struct Source {
    path: Option<PathBuf>,
    overrides: config::Overrides,
}

impl Source {
    fn load(&self) -> anyhow::Result<Config> {
        Ok(Config::load(
            self.path.as_deref(),
            &self.overrides,
            super::default_data_dir,
        )?)
    }
}

/// What `serve` reads and builds from the configuration before it opens the keyring or
/// binds a socket: the passphrase file, each listener's certificate and key, each
/// `ca_file` and the next hops' TLS. `check-config` runs exactly this, so that a
/// configuration it passes is one `serve` starts with, and each refusal reads the same.
pub struct Prepared {
    pub passphrase: Option<Password>,
    pub outbound: Transport,
    pub inbound: Transport,
    /// One per listener, in the configuration's order.
    pub listener_tls: Vec<ListenerTls>,
    /// The WKD listener's certificate, when `[wkd]` is set.
    pub wkd_tls: Option<tokio_rustls::TlsAcceptor>,
}

/// A listener's TLS, as far as it can be decided before the data directory is opened.
pub enum ListenerTls {
    None,
    Files(tokio_rustls::TlsAcceptor),
    /// The data directory's self-signed certificate, made on first start (loopback only).
    SelfSigned,
}

/// # Errors
/// An unreadable or empty passphrase file, certificate, key or `ca_file`; a key that does
/// not match its certificate; a TLS listener off loopback without a certificate.
pub fn prepare(config: &Config) -> anyhow::Result<Prepared> {
    crate::tls::install_provider();
    let passphrase = super::keys::passphrase_from_env()?;
    let listener_tls = config
        .listeners
        .iter()
        .map(listener_tls)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let outbound = match &config.upstream {
        Some(up) => Transport::Smtp(upstream_config(config, up)?),
        None => Transport::Maildir(config.outbound_maildir.clone()),
    };
    let inbound_tls = || {
        hop_tls(config.inbound_tls, config.inbound_ca_file.as_deref())
            .context("inbound delivery TLS ([inbound] ca_file)")
    };
    let inbound = match &config.inbound_target {
        Target::Maildir(p) => Transport::Maildir(p.clone()),
        Target::Smtp { host, port } => Transport::Smtp(UpstreamConfig {
            host: host.clone(),
            port: *port,
            tls: inbound_tls()?,
            credentials: None,
            helo: config.hostname.clone(),
            timeout: Duration::from_secs(60),
            data_timeout: Duration::from_secs(600),
            pool: Default::default(),
        }),
        Target::Lmtp { host, port } => Transport::Lmtp(lmtp_config(
            config,
            LmtpAddress::Tcp {
                host: host.clone(),
                port: *port,
            },
            inbound_tls()?,
        )),
        // The configuration refuses TLS to a local socket.
        Target::LmtpUnix(path) => Transport::Lmtp(lmtp_config(
            config,
            LmtpAddress::Unix(path.clone()),
            HopTls::None,
        )),
    };
    // Read here, not only where `serve` builds the key finder and the IMAP proxy, so that
    // `check-config` refuses the same files with the same words.
    crate::tls::client::ClientTls::with_extra(config.discovery.ca_file.as_deref())
        .context("key discovery over HTTPS ([discovery] ca_file)")?;
    if let Some(imap) = &config.imap {
        crate::tls::client::ClientTls::new(imap.ca_file.as_deref())
            .context("IMAP upstream TLS ([imap] ca_file)")?;
    }
    Ok(Prepared {
        passphrase,
        outbound,
        inbound,
        listener_tls,
        wkd_tls: config.wkd.as_ref().map(wkd_tls).transpose()?,
    })
}

fn wkd_tls(w: &crate::publish::Settings) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    crate::tls::from_files(&w.certificate, &w.private_key)
        .with_context(|| format!("cannot use the WKD certificate {}", w.certificate.display()))
}

/// Logs a warning when group or others have any access to `path`. The mode is left
/// alone: the admin may have reasons (a shared group), and a silent change would hide
/// that the keys were exposed until now.
fn warn_if_shared(path: &Path, what: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                "{what} {} is mode {mode:04o}, open to group or others; make it private with `chmod go= {}`",
                path.display(),
                path.display()
            );
        }
    }
}

async fn serve(config: Arc<Config>, prepared: Prepared, source: Source) -> anyhow::Result<()> {
    // From here on SIGHUP reloads instead of ending the process (its default action).
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot handle SIGHUP")?;
    let Prepared {
        passphrase,
        outbound,
        inbound,
        listener_tls,
        wkd_tls: wkd_acceptor,
    } = prepared;
    if let Some(warning) = &config.hostname_warning {
        tracing::warn!("{warning}");
    }
    let opts = OpenOptions {
        passphrase: passphrase.clone(),
        ..OpenOptions::default()
    };
    let url = std::env::var("SEALPOST_KEYRING_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .or_else(|| config.keyring_url.clone());
    let (keyring, vault) = match &url {
        // Shared by several gateways; the spool stays this gateway's own, with its own
        // vault in the data directory.
        Some(url) => {
            let shown = sealpost_keyring::store::postgres::hide_password(url);
            let keyring = Keyring::open_url(url, opts)
                .with_context(|| format!("cannot open the keyring at {shown}"))?;
            sealpost_vault::disk::create_private_dir(&config.data_dir)
                .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
            let vault =
                sealpost_vault::Vault::open(&config.data_dir.join("vault"), passphrase.as_ref())
                    .with_context(|| {
                        format!("cannot open the vault in {}", config.data_dir.display())
                    })?;
            tracing::info!(keyring = %shown, "the keyring is shared in PostgreSQL");
            (keyring, vault)
        }
        None => {
            let keyring = Keyring::open(&config.data_dir, opts).with_context(|| {
                format!("cannot open the keyring in {}", config.data_dir.display())
            })?;
            let vault = keyring.vault().clone();
            (keyring, vault)
        }
    };
    if !keyring.has_passphrase() {
        tracing::warn!("no keyring passphrase (SEALPOST_PASSPHRASE_FILE): the keys of secret keys and spooled mail rest unencrypted in the vault, protected by file modes only");
    }
    // The keyring and the spool share the data directory's vault.
    let spool =
        crate::relay::Spool::open_with(&config.data_dir, vault.clone(), passphrase.as_ref())
            .context("cannot open the spool")?;
    warn_if_shared(&config.data_dir, "the data directory");
    if let Some(file) = std::env::var_os("SEALPOST_PASSPHRASE_FILE").filter(|p| !p.is_empty()) {
        warn_if_shared(
            Path::new(&file),
            "the passphrase file (SEALPOST_PASSPHRASE_FILE)",
        );
    }

    let relay_cfg = RelayConfig {
        budget: config.budget,
        lifetime: config.lifetime,
        retry_base: config.retry,
        ..RelayConfig::new(config.hostname.clone())
    };
    let relay =
        Relay::open(spool, outbound, inbound, relay_cfg).context("cannot open the relay")?;

    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    crate::server::shutdown::on_signal(shutdown.clone());
    // Once a day: a log line for each local user's key within 30 days of expiry.
    let expiry = tokio::spawn(sealpost_keyring::expiry_notices(keyring.clone(), |_| {}));
    let worker = relay.spawn_worker(shutdown.clone());

    // Large messages go here while they are received and processed: unnamed files,
    // sealed under keys that die with the process.
    // Each message's decision trail, for `sealpost log show`.
    crate::ops::trail::start(&config.data_dir, config.keep_trail)?;
    let spill_dir = crate::blob::spill_dir(&config.data_dir);
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&spill_dir)
            .with_context(|| format!("cannot create {}", spill_dir.display()))?;
    }
    let discovery = Arc::new(
        crate::discovery::Finder::new(config.discovery.clone(), keyring.clone())
            .context("[discovery]")?,
    );
    // Known certificates fetched again over `[discovery] refresh`.
    let refresh = tokio::spawn(crate::discovery::refresh::run(
        Arc::clone(&discovery),
        keyring.clone(),
        shutdown.clone(),
    ));
    let running = Running {
        discovery,
        smtputf8_out: relay.offers_smtputf8(Route::Outbound).await,
        smtputf8_in: relay.offers_smtputf8(Route::Inbound).await,
        relay: relay.clone(),
        keyring: keyring.clone(),
        // One table for every listener: an address that fails AUTH on one is blocked on
        // all. A reload keeps it.
        auth_failures: Arc::new(crate::smtp::auth_failures::AuthFailures::default()),
        spill_dir,
    };

    let mut sockets = Vec::new();
    for l in &config.listeners {
        let socket = tokio::net::TcpListener::bind(l.address)
            .await
            .with_context(|| format!("cannot listen on {}", l.address))?;
        sockets.push(socket);
    }
    let bound = sockets
        .iter()
        .map(|s| s.local_addr())
        .collect::<std::io::Result<Vec<_>>>()?;
    let (built, local_domains) = build(&config, listener_tls, &running, &bound)?;
    let mut listeners = Vec::new();
    let mut serving = Vec::new();
    for (((l, socket), bound), b) in config.listeners.iter().zip(sockets).zip(&bound).zip(built) {
        let direction = b.gateway.direction;
        let mode = match direction {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        };
        println!("sealpost: {mode} listener on {bound} ({})", b.tls_text);
        if direction == Direction::Inbound {
            println!(
                "sealpost: inbound mail accepted for: {}",
                local_domains.join(", ")
            );
            println!(
                "sealpost: inbound mail is delivered to {}",
                inbound_text(&config)
            );
        }
        let limits = ConnectionLimits {
            max: l.limits.max_connections,
            per_ip: l.limits.max_connections_per_ip,
        };
        let (tx, rx) = tokio::sync::watch::channel(Serving {
            cfg: b.cfg,
            backend: b.gateway,
        });
        serving.push(tx);
        listeners.push(tokio::spawn(listener::run(
            socket,
            rx,
            limits,
            shutdown.clone(),
            tracker.clone(),
        )));
    }
    // Started after every SMTP listener is bound, so that /readyz answering at all means
    // they are.
    let admin_http = match config.admin_http {
        Some(addr) => {
            let socket = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} ([admin] http)"))?;
            println!(
                "sealpost: admin HTTP on {} (/metrics, /healthz, /readyz)",
                socket.local_addr()?
            );
            let state = Arc::new(crate::ops::http::State {
                keyring: keyring.clone(),
                relay: relay.clone(),
                upstream: config.upstream.as_ref().map(|u| (u.host.clone(), u.port)),
            });
            Some(tokio::spawn(crate::ops::http::serve(
                socket,
                state,
                shutdown.clone(),
            )))
        }
        None => None,
    };
    let (wkd_task, wkd_certificate) = match (&config.wkd, wkd_acceptor) {
        (Some(w), Some(acceptor)) => {
            let socket = tokio::net::TcpListener::bind(w.listen)
                .await
                .with_context(|| format!("cannot listen on {} ([wkd] listen)", w.listen))?;
            let state = Arc::new(crate::publish::wkd::State {
                keyring: keyring.clone(),
                domains: w.domains.clone(),
            });
            let shown = if w.domains.is_empty() {
                "the domains of the keyring's secret keys".to_string()
            } else {
                w.domains.join(", ")
            };
            println!(
                "sealpost: WKD over HTTPS on {} for {shown}",
                socket.local_addr()?
            );
            let (tx, rx) = tokio::sync::watch::channel(acceptor);
            let task = tokio::spawn(crate::publish::wkd::serve(
                socket,
                rx,
                state,
                shutdown.clone(),
            ));
            (Some(task), Some(tx))
        }
        _ => (None, None),
    };
    let imap_task = match &config.imap {
        Some(settings) => {
            let socket = tokio::net::TcpListener::bind(settings.listen)
                .await
                .with_context(|| format!("cannot listen on {} (IMAP proxy)", settings.listen))?;
            println!(
                "sealpost: IMAP proxy on {} for {}:{}",
                socket.local_addr()?,
                settings.upstream_host,
                settings.upstream_port
            );
            let acceptor =
                match (&settings.tls, &settings.certificate) {
                    (crate::imap::ListenerTls::None, _) => None,
                    (_, Some((c, k))) => Some(crate::tls::from_files(c, k).with_context(|| {
                        format!("cannot use the IMAP certificate {}", c.display())
                    })?),
                    (_, None) => Some(
                        crate::tls::self_signed(&config.data_dir, &config.hostname)
                            .context("cannot make the self-signed certificate for IMAP")?
                            .acceptor,
                    ),
                };
            let proxy = Arc::new(crate::imap::session::Proxy {
                // Opened messages kept for the next fetch: 64 MiB in memory, and what
                // `[imap] disk_cache` allows on disk, sealed under a key in the vault.
                cache: imap_cache(&config.data_dir, &vault, settings.disk_cache),
                acceptor,
                settings: settings.clone(),
                tls: crate::tls::client::ClientTls::new(settings.ca_file.as_deref())?,
                keyring: keyring.clone(),
                inbound: Arc::new(crate::transform::inbound::Settings {
                    authserv_id: config.authserv_id.clone(),
                    max_plaintext: config.max_plaintext,
                    spill: Some(Spill::new(&running.spill_dir, 1 << 20)),
                }),
                autocrypt: config.discovery.autocrypt,
            });
            Some(tokio::spawn(crate::imap::session::serve(socket, proxy)))
        }
        None => None,
    };
    match &config.upstream {
        Some(up) => println!("sealpost: outbound mail goes to {}:{}", up.host, up.port),
        None => println!(
            "sealpost: outbound mail goes to the Maildir {}",
            config.outbound_maildir.display()
        ),
    }

    let (policy_tx, policy_rx) = tokio::sync::watch::channel(Arc::new(config.policy.clone()));
    let admin_path = crate::admin::socket_path(&config.data_dir);
    let admin = crate::admin::socket::bind(&admin_path)
        .with_context(|| format!("cannot create the admin socket {}", admin_path.display()))?;
    let handler = super::admin_handler::handler(
        keyring.clone(),
        relay.clone(),
        policy_rx,
        Arc::clone(&running.discovery),
    );
    let admin_task = tokio::spawn(crate::admin::socket::serve(
        admin,
        admin_path,
        handler,
        shutdown.clone(),
    ));

    let reloads = {
        let shutdown = shutdown.clone();
        let mut current = config.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    hup = hangups.recv() => if hup.is_none() { return },
                }
                crate::ops::notify::reloading();
                // Files, and a shared keyring's domains, are read in blocking calls.
                let reloaded =
                    tokio::task::block_in_place(|| reload(&source, &current, &running, &bound));
                match reloaded {
                    Ok((config, built)) => {
                        for (tx, b) in serving.iter().zip(built) {
                            tx.send_replace(Serving {
                                cfg: b.cfg,
                                backend: b.gateway,
                            });
                        }
                        policy_tx.send_replace(Arc::new(config.policy.clone()));
                        // The WKD listener keeps its address; its certificate is renewed.
                        if let (Some(tx), Some(w)) = (&wkd_certificate, &config.wkd) {
                            match tokio::task::block_in_place(|| wkd_tls(w)) {
                                Ok(a) => drop(tx.send_replace(a)),
                                Err(e) => tracing::error!(
                                    error = %super::describe(&e),
                                    "SIGHUP: the WKD listener keeps its old certificate"
                                ),
                            }
                        }
                        current = Arc::new(config);
                        tracing::info!(
                            "SIGHUP: configuration, certificates, users and policy reloaded; \
                             sessions in flight finish with the old ones"
                        );
                    }
                    Err(e) => tracing::error!(
                        error = %super::describe(&e),
                        "SIGHUP: the new configuration is not used; the old one stays in force"
                    ),
                }
                // Serving again, with the new configuration or the old one.
                crate::ops::notify::notify("READY=1");
            }
        })
    };

    // Every listener is bound and the stores are open: `systemctl start` returns now.
    crate::ops::notify::notify("READY=1");
    shutdown.cancelled().await;
    crate::ops::notify::notify("STOPPING=1");
    for l in listeners {
        let _ = l.await;
    }
    let _ = reloads.await;
    if !crate::server::shutdown::drain(&tracker, Duration::from_secs(60)).await {
        tracing::warn!("some sessions did not finish within the shutdown deadline");
    }
    if let Some(task) = imap_task {
        task.abort();
    }
    if let Some(task) = wkd_task {
        let _ = task.await;
    }
    expiry.abort();
    refresh.abort();
    let _ = worker.await;
    let _ = admin_task.await;
    if let Some(task) = admin_http {
        let _ = task.await;
    }
    keyring.flush()?;
    tracing::info!("stopped");
    Ok(())
}

/// What the listeners share, opened once at start; a reload keeps it.
struct Running {
    relay: Relay,
    keyring: Keyring,
    auth_failures: Arc<crate::smtp::auth_failures::AuthFailures>,
    spill_dir: PathBuf,
    smtputf8_out: bool,
    smtputf8_in: bool,
    /// Key lookups, shared by the outbound listeners; `[discovery]` as at start.
    discovery: Arc<crate::discovery::Finder>,
}

/// One listener's session settings and gateway, as a configuration makes them.
struct Built {
    cfg: Arc<SessionConfig>,
    gateway: Arc<Gateway>,
    /// How the listener speaks TLS, for its start-up line.
    tls_text: String,
}

/// Makes every listener's settings and gateway from `config`, for the sockets bound at
/// `bound` (in the configuration's order). The start and each reload run this.
fn build(
    config: &Config,
    listener_tls: Vec<ListenerTls>,
    running: &Running,
    bound: &[std::net::SocketAddr],
) -> anyhow::Result<(Vec<Built>, Arc<Vec<String>>)> {
    let local_domains = if config.local_domains.is_empty() {
        running.keyring.secret_domains()?
    } else {
        config.local_domains.clone()
    };
    let local_domains = Arc::new(local_domains);
    let spill_dir = &running.spill_dir;
    // Plaintext of a decrypted message spills from the inbound listener's size on (the
    // smallest, if several listen inbound).
    let plaintext_spill_above = config
        .listeners
        .iter()
        .filter(|l| l.mode == Mode::Inbound)
        .map(|l| l.limits.spill_above)
        .min()
        .unwrap_or(crate::config::Limits::default().spill_above);
    let inbound_settings = Arc::new(crate::transform::inbound::Settings {
        authserv_id: config.authserv_id.clone(),
        max_plaintext: config.max_plaintext,
        spill: Some(Spill::new(spill_dir, plaintext_spill_above)),
    });
    // Inbound: how a local recipient is known to exist, at RCPT.
    let recipients = Arc::new(match &config.recipients {
        config::Recipients::Verify => running.relay.inbound_verifier(),
        config::Recipients::File(path) => {
            crate::relay::verify::Verifier::new(crate::relay::verify::By::List(
                crate::relay::verify::read_list(path).with_context(|| {
                    format!(
                        "cannot read the recipients file {} ([inbound] recipients)",
                        path.display()
                    )
                })?,
            ))
        }
        config::Recipients::Any => {
            crate::relay::verify::Verifier::new(crate::relay::verify::By::Any)
        }
    });
    let senders = Arc::new(crate::policy::sender::Senders::new(
        config
            .users
            .iter()
            .map(|u| (u.name.as_str(), u.addresses.as_slice())),
    ));
    let policy = Arc::new(config.policy.clone());
    let mut self_signed: Option<crate::tls::SelfSigned> = None;
    let mut out = Vec::new();
    for ((l, tls), bound) in config.listeners.iter().zip(listener_tls).zip(bound) {
        let (tls, made) = match tls {
            ListenerTls::None => (None, None),
            ListenerTls::Files(acceptor) => (Some(acceptor), None),
            ListenerTls::SelfSigned => {
                let made = match &self_signed {
                    Some(made) => made,
                    None => self_signed.insert(
                        crate::tls::self_signed(&config.data_dir, &config.hostname)
                            .context("the self-signed certificate for loopback listeners")?,
                    ),
                };
                (
                    Some(made.acceptor.clone()),
                    Some(format!(
                        "self-signed certificate SHA-256 {}, in {}",
                        made.fingerprint,
                        made.path.display()
                    )),
                )
            }
        };
        let mut cfg = SessionConfig::new(config.hostname.clone());
        cfg.max_message_size = l.limits.max_message_size;
        cfg.spill = Some(Spill::new(spill_dir, l.limits.spill_above));
        cfg.max_recipients = l.limits.max_recipients;
        cfg.command_timeout = l.limits.command_timeout;
        cfg.data_timeout = l.limits.data_timeout;
        cfg.implicit_tls = l.tls == TlsMode::Implicit;
        cfg.tls = tls;
        cfg.auth = match l.auth {
            AuthMode::None => smtp_config::AuthMode::None,
            AuthMode::Passthrough => smtp_config::AuthMode::Passthrough,
            AuthMode::Local => smtp_config::AuthMode::Local(Arc::new(
                config
                    .users
                    .iter()
                    .map(|u| (u.name.clone(), u.password_hash.clone()))
                    .collect(),
            )),
        };
        cfg.auth_failures = running.auth_failures.clone();
        cfg.require_auth = l.require_auth;
        cfg.allow = l.allow.clone();
        cfg.loopback = bound.ip().is_loopback();
        let direction = match l.mode {
            Mode::Outbound => Direction::Outbound,
            Mode::Inbound => Direction::Inbound,
        };
        cfg.smtputf8 = match direction {
            Direction::Outbound => running.smtputf8_out,
            Direction::Inbound => running.smtputf8_in,
        };
        // Each listener offers only what still fits its next hop's SIZE once transformed.
        cfg.next_hop_size = running.relay.next_hop_size(l.mode == Mode::Inbound);
        let tls_text = match (l.tls, &made) {
            (TlsMode::None, _) => "no TLS".to_string(),
            (TlsMode::StartTls, Some(m)) => format!("STARTTLS, {m}"),
            (TlsMode::StartTls, None) => "STARTTLS".to_string(),
            (TlsMode::Implicit, Some(m)) => format!("implicit TLS, {m}"),
            (TlsMode::Implicit, None) => "implicit TLS".to_string(),
        };
        let gateway = Gateway {
            direction,
            relay: running.relay.clone(),
            keyring: running.keyring.clone(),
            policy: policy.clone(),
            local_domains: local_domains.clone(),
            inbound: inbound_settings.clone(),
            senders: senders.clone(),
            spill: Some(Spill::new(spill_dir, l.limits.spill_above)),
            recipients: recipients.clone(),
            discovery: Arc::clone(&running.discovery),
        };
        out.push(Built {
            cfg: Arc::new(cfg),
            gateway: Arc::new(gateway),
            tls_text,
        });
    }
    Ok((out, local_domains))
}

/// SIGHUP: reads the configuration file again and makes the listeners' settings from
/// it (certificates, users, policy, limits, AUTH modes). What was opened or bound at
/// start stays as it was: a changed listener address, data directory, keyring, upstream
/// or inbound delivery is logged as needing a restart.
///
/// # Errors
/// Whatever `serve` would refuse to start with, and a different number or kind of
/// listeners; the old configuration then stays in force.
fn reload(
    source: &Source,
    old: &Config,
    running: &Running,
    bound: &[std::net::SocketAddr],
) -> anyhow::Result<(Config, Vec<Built>)> {
    let config = source.load()?;
    let modes = |c: &Config| c.listeners.iter().map(|l| l.mode).collect::<Vec<_>>();
    if modes(&config) != modes(old) {
        anyhow::bail!(
            "the listeners were added, removed or changed direction; \
             restart sealpost to apply that"
        );
    }
    let prepared = prepare(&config)?;
    let (built, _) = build(&config, prepared.listener_tls, running, bound)?;
    for (new, was) in config.listeners.iter().zip(&old.listeners) {
        if new.address != was.address {
            tracing::warn!(
                "SIGHUP: the listener on {} stays there: a new address ({}) needs a restart",
                was.address,
                new.address
            );
        }
    }
    let restart = [
        ("data_dir", config.data_dir != old.data_dir),
        ("[keyring]", config.keyring_url != old.keyring_url),
        ("[admin] http", config.admin_http != old.admin_http),
        (
            "[wkd] listen and domains",
            config.wkd.as_ref().map(|w| (w.listen, &w.domains))
                != old.wkd.as_ref().map(|w| (w.listen, &w.domains)),
        ),
        ("[imap]", config.imap != old.imap),
        (
            "[discovery]",
            format!("{:?}", config.discovery) != format!("{:?}", old.discovery),
        ),
        (
            "[upstream]",
            format!("{:?}", config.upstream) != format!("{:?}", old.upstream),
        ),
        (
            "[inbound] deliver",
            format!("{:?}", config.inbound_target) != format!("{:?}", old.inbound_target)
                || config.inbound_tls != old.inbound_tls,
        ),
    ];
    for (what, changed) in restart {
        if changed {
            tracing::warn!("SIGHUP: {what} changed; it takes effect at the next restart");
        }
    }
    Ok((config, built))
}

/// Where inbound mail goes, and how securely, for the start-up lines.
fn inbound_text(config: &Config) -> String {
    let tls = match config.inbound_tls {
        TlsMode::None => "no TLS",
        TlsMode::StartTls => "STARTTLS required",
        TlsMode::Implicit => "implicit TLS",
    };
    match &config.inbound_target {
        Target::Smtp { host, port } => format!("{host}:{port} over SMTP ({tls})"),
        Target::Lmtp { host, port } => format!("lmtp:{host}:{port} ({tls})"),
        Target::LmtpUnix(p) => format!("lmtp:unix:{}", p.display()),
        Target::Maildir(p) => format!("the Maildir {}", p.display()),
    }
}

/// The TLS of a next hop: the one client configuration, trusting `ca_file` alone when
/// it is given, made once here so that a bad `ca_file` stops `serve` at start.
fn hop_tls(mode: TlsMode, ca_file: Option<&Path>) -> anyhow::Result<HopTls> {
    Ok(match mode {
        TlsMode::None => HopTls::None,
        TlsMode::StartTls => HopTls::StartTls(crate::tls::ClientTls::new(ca_file)?),
        TlsMode::Implicit => HopTls::Implicit(crate::tls::ClientTls::new(ca_file)?),
    })
}

fn upstream_config(config: &Config, up: &config::Upstream) -> anyhow::Result<UpstreamConfig> {
    Ok(UpstreamConfig {
        host: up.host.clone(),
        port: up.port,
        tls: hop_tls(up.tls, up.ca_file.as_deref()).context("upstream TLS ([upstream] ca_file)")?,
        credentials: up
            .username
            .clone()
            .map(|u| crate::smtp::transaction::Credentials {
                username: u,
                secret: up.password.clone().map(Into::into),
            }),
        helo: config.hostname.clone(),
        timeout: Duration::from_secs(60),
        data_timeout: Duration::from_secs(600),
        pool: Default::default(),
    })
}

/// LMTP to the mailbox server, with the timeouts inbound SMTP delivery uses.
fn lmtp_config(config: &Config, address: LmtpAddress, tls: HopTls) -> LmtpConfig {
    LmtpConfig {
        address,
        tls,
        lhlo: config.hostname.clone(),
        timeout: Duration::from_secs(60),
        data_timeout: Duration::from_secs(600),
        pool: Default::default(),
    }
}

/// The listener's TLS: its configured certificate, or on loopback a self-signed one. The
/// address is the configured one: binding keeps its IP address, so loopback is decided
/// the same before and after.
fn listener_tls(l: &config::Listener) -> anyhow::Result<ListenerTls> {
    if l.tls == TlsMode::None {
        return Ok(ListenerTls::None);
    }
    match (&l.certificate, &l.private_key) {
        (Some(c), Some(k)) => Ok(ListenerTls::Files(
            crate::tls::from_files(c, k)
                .with_context(|| format!("TLS for the listener on {}", l.address))?,
        )),
        _ if l.address.ip().is_loopback() => Ok(ListenerTls::SelfSigned),
        _ => anyhow::bail!(
            "the listener on {} uses TLS but has no certificate and private_key; \
             a self-signed certificate is made only for loopback listeners",
            l.address
        ),
    }
}

/// The IMAP proxy's cache: memory, and a sealed tier in `DATA/imap-cache` unless
/// `disk_cache` is zero. A disk tier that cannot be opened is logged, and memory serves.
fn imap_cache(
    data_dir: &Path,
    vault: &Arc<sealpost_keyring::Vault>,
    disk_cache: u64,
) -> crate::imap::cache::Cache {
    const MEMORY: usize = 64 << 20;
    if disk_cache == 0 {
        return crate::imap::cache::Cache::new(MEMORY);
    }
    let dir = data_dir.join("imap-cache");
    match crate::imap::disk::Disk::open(&dir, Arc::clone(vault), disk_cache) {
        Ok(disk) => crate::imap::cache::Cache::with_disk(MEMORY, disk),
        Err(e) => {
            tracing::warn!(error = %e, "the IMAP cache stays in memory only");
            crate::imap::cache::Cache::new(MEMORY)
        }
    }
}
