//! The command line: global options, subcommands, and how failures become exit codes.
//!
//! `anyhow` is used here and in `main.rs` only; everything below the CLI returns typed errors.

mod access;
mod admin_handler;
pub mod check_config;
pub mod hash_password;
pub mod keyring;
pub mod keys;
pub mod log;
pub mod policy;
pub mod queue;
pub mod serve;

use std::path::{Path, PathBuf};

use anyhow::Context;

use clap::{Parser, Subcommand};

use crate::admin;

/// sealpost: an OpenPGP end-to-end encryption gateway for SMTP.
///
/// Mail clients and MTAs send through sealpost; it encrypts and signs outgoing mail for
/// recipients whose keys it knows, and decrypts and verifies incoming mail.
#[derive(Debug, Parser)]
#[command(name = "sealpost", version, propagate_version = true)]
#[command(after_help = "\
Examples:
  sealpost keys generate alice@example.org --name 'Alice Example'
  sealpost keys import bob.asc
  sealpost keys list
  sealpost --data-dir /var/lib/sealpost keys show bob@example.org

Environment:
  SEALPOST_DATA_DIR          data directory (keyring, spool), if --data-dir is not given
  SEALPOST_PASSPHRASE_FILE   file holding the passphrase that encrypts secret keys at rest")]
pub struct Cli {
    /// Where the keyring and the spool live [default: $XDG_DATA_HOME/sealpost]
    #[arg(long, global = true, env = "SEALPOST_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// The TOML configuration file (its policy, and its data_dir unless --data-dir is given)
    #[arg(long, global = true, env = "SEALPOST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides it.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Log lines as text (for people; colour only when stderr is a terminal) or as one
    /// JSON object per line (for a log collector: every field, such as client_ip and
    /// user on a failed AUTH, is a key of its own)
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage the OpenPGP keyring: import, list, show, export, remove, generate and extend
    /// keys; back up and restore; review discovered keys; publish a Web Key Directory
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// The keyring as a whole: `keyring passphrase set|change`, `keyring copy` into PostgreSQL
    #[command(subcommand)]
    Keyring(keyring::KeyringCommand),
    Serve(serve::Args),
    /// Inspect and manage the spool of copies awaiting delivery
    #[command(subcommand)]
    Queue(queue::QueueCommand),
    /// Inspect the outbound policy: `policy explain`
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    CheckConfig(check_config::Args),
    HashPassword(hash_password::Args),
    /// The decision trail of a message: `log show QUEUE-ID`
    #[command(subcommand)]
    Log(log::LogCommand),
}

/// A command that already printed its own diagnostics and only needs its exit code
/// passed on (the result of a command run through the admin socket).
#[derive(Debug)]
pub struct Exit(pub u8);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}", self.0)
    }
}

impl std::error::Error for Exit {}

/// 1 for every error (bad input, unknown key, unreachable server): the message says what
/// to do. 2 is for usage errors, which clap reports itself.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    match err.downcast_ref::<Exit>() {
        Some(Exit(code)) => *code,
        None => 1,
    }
}

/// Whether `main` should print this error (an `Exit` was printed already).
pub fn should_print(err: &anyhow::Error) -> bool {
    err.downcast_ref::<Exit>().is_none()
}

/// One line: the error and its causes, without repeating a cause already in the message.
pub fn describe(err: &anyhow::Error) -> String {
    let mut out = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out.replace('\n', " ")
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text per event
    Text,
    /// One JSON object per line
    Json,
}

/// `-v` and `-vv` raise sealpost's own crates only. Dependencies stay at `warn`: sled's
/// debug and trace lines print the stored values themselves (secret key records among
/// them), and rustls's and tokio's drown sealpost's own lines. `RUST_LOG` can still name a
/// dependency explicitly.
///
/// hickory (DANE lookups) is silent unless `RUST_LOG` names it: it warns at every step of
/// a DNSSEC validation that fails, with the whole DNS message, and a zone that is unsigned
/// or hostile would fill the log; the lookup's outcome is logged by sealpost in one line.
///
/// Colour codes are written only when stderr is a terminal: in a log file or the journal
/// they are noise that breaks grep and fail2ban's patterns.
pub fn init_tracing(verbose: u8, format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn,sealpost=info,sealpost_keyring=info",
        1 => "warn,sealpost=debug,sealpost_keyring=debug",
        _ => "warn,sealpost=trace,sealpost_keyring=trace",
    };
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::new(with_store_quiet(&spec)),
        _ => EnvFilter::new(format!("{default},{HICKORY_OFF}")),
    };
    // Logs go to stderr so that `keys export` and `--json` output stay clean on stdout.
    use tracing_subscriber::prelude::*;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let fmt = match format {
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).boxed(),
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .boxed(),
    };
    // The decision trail takes sealpost's events about a message whatever the log level
    // (it records only once `serve` starts it).
    let trail = crate::ops::trail::Layer.with_filter(
        tracing_subscriber::filter::Targets::new().with_target("sealpost", tracing::Level::INFO),
    );
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(trail)
        .try_init();
}

/// The DNS resolver's crates, off (see [`init_tracing`]).
const HICKORY_OFF: &str = "hickory_resolver=off,hickory_net=off,hickory_proto=off";

/// `RUST_LOG` as given, but with sled held at `warn` unless the spec names sled itself: a
/// blanket `RUST_LOG=trace` must not print the keyring's records, which sled's trace lines
/// contain byte for byte. hickory stays off unless named, as by default.
fn with_store_quiet(spec: &str) -> String {
    let mut out = spec.to_string();
    if !spec.contains("sled") {
        out.push_str(",sled=warn");
    }
    if !spec.contains("hickory") {
        out.push(',');
        out.push_str(HICKORY_OFF);
    }
    out
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    // Everything sealpost writes may be secret (keys, the spool, decrypted mail), and sled
    // creates its files with the process's umask: nothing it makes is for group or others.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    match cli.command {
        Command::Keys(cmd) => {
            let url = keyring_url(cli.config.as_deref(), cli.data_dir.as_deref())?;
            let from = data_dir_origin(cli.data_dir.as_deref(), cli.config.as_deref());
            let dir = resolve_data_dir(cli.data_dir, cli.config.as_deref())?;
            if url.is_none() && as_owner(&dir)? == AsOwner::Forward {
                return forward(&dir, &keys::inputs(&cmd));
            }
            keys_command(cmd, &dir, &from, url.as_deref(), cli.config.as_deref())
        }
        Command::Keyring(cmd) => {
            let url = keyring_url(cli.config.as_deref(), cli.data_dir.as_deref())?;
            let dir = resolve_data_dir(cli.data_dir, cli.config.as_deref())?;
            if as_owner(&dir)? == AsOwner::Forward {
                anyhow::bail!("{}", not_as_root(&dir));
            }
            keyring::run(cmd, &dir, url.as_deref())
        }
        Command::Serve(args) => serve::run(args, cli.config.as_deref(), cli.data_dir),
        Command::Queue(cmd) => {
            let dir = resolve_data_dir(cli.data_dir, cli.config.as_deref())?;
            if as_owner(&dir)? == AsOwner::Forward {
                return forward(&dir, &[]);
            }
            queue_command(cmd, &dir)
        }
        Command::Policy(cmd) => policy_command(cmd, cli.config.as_deref(), cli.data_dir),
        Command::CheckConfig(args) => check_config::run(args, cli.config.as_deref(), cli.data_dir),
        Command::HashPassword(args) => hash_password::run(args),
        Command::Log(cmd) => {
            let dir = resolve_data_dir(cli.data_dir, cli.config.as_deref())?;
            log::run(cmd, &dir)
        }
    }
}

/// What a command run as root does with a data directory another account owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AsOwner {
    /// Not root, or root's own directory: as usual.
    Proceed,
    /// The server (running as the owner) does it, through its admin socket.
    Forward,
}

/// Root must not make files in the service account's data directory: a keyring or spool
/// file owned by root locks the service out ("Permission denied") at its next start. So
/// root's commands go through the running server's admin socket, which does the work as
/// the owner, and without a server they are refused with the owner's name.
///
/// # Errors
/// Run as root on another account's data directory with no admin socket there.
fn as_owner(data_dir: &Path) -> anyhow::Result<AsOwner> {
    use std::os::unix::fs::MetadataExt;
    if !rustix::process::geteuid().is_root() {
        return Ok(AsOwner::Proceed);
    }
    let Ok(meta) = std::fs::metadata(data_dir) else {
        return Ok(AsOwner::Proceed);
    };
    if meta.uid() == 0 {
        return Ok(AsOwner::Proceed);
    }
    if admin::socket_path(data_dir).exists() {
        return Ok(AsOwner::Forward);
    }
    anyhow::bail!("{}", not_as_root(data_dir))
}

/// `serve` as root in another account's data directory: refused, whatever runs there.
///
/// # Errors
/// Root, and a data directory that another account owns.
pub(crate) fn refuse_root_in_others_dir(data_dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let others = std::fs::metadata(data_dir).is_ok_and(|m| m.uid() != 0);
    if rustix::process::geteuid().is_root() && others {
        anyhow::bail!("{}", not_as_root(data_dir));
    }
    Ok(())
}

/// The refusal for root in another account's data directory.
fn not_as_root(data_dir: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata(data_dir)
        .map(|m| m.uid())
        .unwrap_or_default();
    let who = access::Account::lookup(&uid.to_string())
        .map(|a| a.name)
        .unwrap_or_else(|_| format!("uid {uid}"));
    format!(
        "the data directory {} belongs to {who}, and files root made there would lock \
         `sealpost serve` out; run this as that user: runuser -u {who} -- sealpost …",
        data_dir.display()
    )
}

/// Runs a `keys` command on the keyring directly, or, while `serve` holds it, through the
/// server's admin socket, so that the user never meets a lock error. A PostgreSQL keyring
/// (`url`) is always used directly: any number of processes may have it open.
///
/// A command that only reads never creates a keyring: run in the wrong directory (no
/// `--data-dir`, say) it would otherwise show an empty keyring as if it were the
/// server's. `from` says where `data_dir` came from, for that message.
fn keys_command(
    cmd: keys::KeysCommand,
    data_dir: &Path,
    from: &str,
    url: Option<&str>,
    config: Option<&Path>,
) -> anyhow::Result<()> {
    let keyring = data_dir.join("keyring");
    // A keyring that cannot be looked for (a directory this user cannot enter) is not
    // "no keyring": the error names the path.
    let exists = url.is_some()
        || keyring
            .try_exists()
            .with_context(|| format!("cannot look for the keyring {}", keyring.display()))?;
    if !exists {
        let missing = format!(
            "there is no keyring in {} ({from}); give the data directory `serve` uses \
             with --data-dir DIR or SEALPOST_DATA_DIR (/var/lib/sealpost in the example \
             configuration)",
            data_dir.display()
        );
        match cmd {
            keys::KeysCommand::List(args) => {
                return terminal(|io| keys::list::without_keyring(&args, &missing, io))
            }
            keys::KeysCommand::Show(_)
            | keys::KeysCommand::Export(_)
            | keys::KeysCommand::Remove(_)
            | keys::KeysCommand::Review(_)
            | keys::KeysCommand::Extend(_)
            | keys::KeysCommand::Backup(_)
            | keys::KeysCommand::WkdExport(_)
            | keys::KeysCommand::Discover(_) => anyhow::bail!("{missing}"),
            keys::KeysCommand::Import(_)
            | keys::KeysCommand::Generate(_)
            | keys::KeysCommand::Restore(_) => {
                eprintln!("sealpost: a new keyring in {} ({from})", data_dir.display())
            }
        }
    }
    match keys::open(data_dir, url) {
        Ok(keyring) => match cmd {
            keys::KeysCommand::Discover(args) => {
                let settings = discovery_settings(config)?;
                let finder = crate::discovery::Finder::new(settings, keyring.clone())?;
                terminal(|io| keys::discover::run(args, &finder, &keyring, io))
            }
            cmd => terminal(|io| keys::execute_local(cmd, &keyring, io)),
        },
        Err(e) if is_locked(&e) => match keys::refuse_forward(&cmd) {
            Some(why) => anyhow::bail!("{why}"),
            None => forward(data_dir, &keys::inputs(&cmd)),
        },
        Err(e) => Err(e),
    }
}

/// Runs a `policy` command with the configuration's policy and the keyring, or through
/// the running server (which uses its own configuration).
fn policy_command(
    cmd: policy::PolicyCommand,
    config: Option<&Path>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let overrides = crate::config::Overrides {
        data_dir,
        ..Default::default()
    };
    let config = crate::config::Config::load(config, &overrides, default_data_dir)?;
    if as_owner(&config.data_dir)? == AsOwner::Forward {
        return forward(&config.data_dir, &[]);
    }
    let url = std::env::var("SEALPOST_KEYRING_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .or_else(|| config.keyring_url.clone());
    match keys::open(&config.data_dir, url.as_deref()) {
        Ok(keyring) => terminal(|io| policy::execute(cmd, &config.policy, &keyring, io)),
        Err(e) if is_locked(&e) => forward(&config.data_dir, &[]),
        Err(e) => Err(e),
    }
}

/// Runs a `queue` command on the spool directly, or through the running server.
fn queue_command(cmd: queue::QueueCommand, data_dir: &Path) -> anyhow::Result<()> {
    match crate::relay::Spool::open(data_dir, keys::passphrase_from_env()?.as_ref()) {
        Ok(spool) => terminal(|io| match cmd {
            queue::QueueCommand::List => queue::list(&spool.all()?, io),
            queue::QueueCommand::Remove { id } => {
                if !spool.remove(&id)? {
                    anyhow::bail!("no spooled copy {id}; see `sealpost queue list`");
                }
                writeln!(io.out, "removed {id}")?;
                Ok(())
            }
            queue::QueueCommand::Retry { .. } => anyhow::bail!(
                "no server is running; spooled copies are retried when `sealpost serve` starts"
            ),
        }),
        Err(crate::relay::spool::Error::Locked(_)) => forward(data_dir, &[]),
        Err(e) => Err(e.into()),
    }
}

fn is_locked(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        matches!(
            c.downcast_ref::<sealpost_keyring::Error>(),
            Some(sealpost_keyring::Error::Locked { .. })
        )
    })
}

/// Runs `f` with the terminal's standard output, error and input.
///
/// Standard error is not locked for the whole command: the log writer locks it for each
/// line, and a background thread (sled's flusher) that logs while the command waits for
/// it would otherwise block on that lock forever.
fn terminal<T>(f: impl FnOnce(&mut keys::Io<'_>) -> T) -> T {
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr();
    let mut input = keys::read_local;
    let mut io = keys::Io {
        out: &mut stdout,
        err: &mut stderr,
        input: &mut input,
    };
    f(&mut io)
}

/// Sends this process's command line, and the files it names, to the running server.
fn forward(data_dir: &Path, inputs: &[PathBuf]) -> anyhow::Result<()> {
    use std::io::Write;

    let socket = admin::socket_path(data_dir);
    if !socket.exists() {
        anyhow::bail!(
            "the data directory {} is in use by another process, which is not a sealpost server \
             with an admin socket; stop it, or give another --data-dir",
            data_dir.display()
        );
    }
    let argv = std::env::args_os()
        .skip(1)
        .map(|a| {
            a.into_string()
                .map_err(|a| anyhow::anyhow!("argument {a:?} is not UTF-8"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut files = Vec::new();
    for path in inputs {
        let name = path.display().to_string();
        let data = keys::read_local(path).with_context(|| format!("{name}: cannot read"))?;
        files.push((name, admin::encode(&data)));
    }
    let request = admin::Request {
        argv,
        inputs: files,
    };
    let response = admin::client::call(&socket, &request)?;
    std::io::stdout().write_all(response.stdout.as_bytes())?;
    std::io::stderr().write_all(response.stderr.as_bytes())?;
    match response.code {
        0 => Ok(()),
        code => Err(Exit(code).into()),
    }
}

/// Where [`resolve_data_dir`] takes the data directory from, in words.
fn data_dir_origin(flag: Option<&Path>, config: Option<&Path>) -> String {
    let from_env = std::env::var_os("SEALPOST_DATA_DIR")
        .is_some_and(|v| flag.is_some_and(|f| f.as_os_str() == v));
    match (flag, config) {
        (Some(_), _) if from_env => "from SEALPOST_DATA_DIR".to_string(),
        (Some(_), _) => "from --data-dir".to_string(),
        (None, Some(file)) => format!(
            "data_dir of {}, or the default data directory when it sets none",
            file.display()
        ),
        (None, None) => {
            "the default data directory: neither --data-dir nor SEALPOST_DATA_DIR is set"
                .to_string()
        }
    }
}

/// `--data-dir`, else `SEALPOST_DATA_DIR` (both via clap), else the configuration's
/// `data_dir`, else the platform default.
/// The PostgreSQL keyring's URL: `SEALPOST_KEYRING_URL`, else `[keyring] url` in the
/// configuration file; `None` for the keyring in the data directory.
/// `[discovery]` of the configuration file, or the built-in settings without one.
fn discovery_settings(config: Option<&Path>) -> anyhow::Result<crate::discovery::Settings> {
    Ok(crate::config::Config::load(
        config,
        &crate::config::Overrides::default(),
        default_data_dir,
    )?
    .discovery)
}

fn keyring_url(config: Option<&Path>, data_dir: Option<&Path>) -> anyhow::Result<Option<String>> {
    if let Some(url) = std::env::var("SEALPOST_KEYRING_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
    {
        return Ok(Some(url));
    }
    let Some(file) = config else {
        return Ok(None);
    };
    let overrides = crate::config::Overrides {
        data_dir: data_dir.map(Path::to_path_buf),
        ..Default::default()
    };
    Ok(crate::config::Config::load(Some(file), &overrides, default_data_dir)?.keyring_url)
}

fn resolve_data_dir(flag: Option<PathBuf>, config: Option<&Path>) -> anyhow::Result<PathBuf> {
    match (flag, config) {
        (Some(dir), _) => Ok(dir),
        (None, Some(file)) => Ok(crate::config::Config::load(
            Some(file),
            &crate::config::Overrides::default(),
            default_data_dir,
        )?
        .data_dir),
        (None, None) => default_data_dir().map_err(anyhow::Error::msg),
    }
}

/// `$XDG_DATA_HOME/sealpost`, else `$HOME/.local/share/sealpost`.
pub fn default_data_dir() -> Result<PathBuf, String> {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(xdg).join("sealpost"));
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".local/share/sealpost")),
        None => Err(
            "no data directory: give --data-dir or set SEALPOST_DATA_DIR (HOME and XDG_DATA_HOME are unset)"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::{with_store_quiet, HICKORY_OFF};

    #[test]
    fn a_blanket_rust_log_keeps_sled_and_hickory_quiet() {
        assert_eq!(
            with_store_quiet("trace"),
            format!("trace,sled=warn,{HICKORY_OFF}")
        );
        assert_eq!(
            with_store_quiet("sealpost=debug"),
            format!("sealpost=debug,sled=warn,{HICKORY_OFF}")
        );
    }

    #[test]
    fn a_rust_log_naming_sled_or_hickory_is_taken_as_given() {
        assert_eq!(
            with_store_quiet("sled=trace"),
            format!("sled=trace,{HICKORY_OFF}")
        );
        assert_eq!(
            with_store_quiet("sled=trace,hickory_net=debug"),
            "sled=trace,hickory_net=debug"
        );
    }
}
