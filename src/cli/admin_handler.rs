//! What the running server does with an admin-socket request: the same `keys` and `queue`
//! commands, run against the server's own keyring and spool.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use clap::Parser;
use sealpost_keyring::Keyring;

use crate::admin::{decode, Request, Response};
use crate::policy::Policy;
use crate::relay::Relay;

use super::{describe, exit_code, Cli, Command};

/// `policy` is the policy in force: a reload sends the new one.
pub fn handler(
    keyring: Keyring,
    relay: Relay,
    policy: tokio::sync::watch::Receiver<Arc<Policy>>,
    finder: Arc<crate::discovery::Finder>,
) -> crate::admin::socket::Handler {
    Arc::new(move |req: Request| {
        let policy = policy.borrow().clone();
        run(&keyring, &relay, &policy, &finder, req)
    })
}

fn run(
    keyring: &Keyring,
    relay: &Relay,
    policy: &Policy,
    finder: &crate::discovery::Finder,
    req: Request,
) -> Response {
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let argv = std::iter::once("sealpost".to_string()).chain(req.argv);
    let cli = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => {
            return Response {
                stdout: String::new(),
                stderr: e.to_string(),
                code: 2,
            }
        }
    };
    let files: HashMap<String, Vec<u8>> = req
        .inputs
        .into_iter()
        .filter_map(|(name, data)| decode(&data).map(|d| (name, d)))
        .collect();
    let mut input = |p: &Path| {
        files.get(&p.display().to_string()).cloned().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "not sent by the client")
        })
    };
    let result = {
        let mut io = super::keys::Io {
            out: &mut stdout,
            err: &mut stderr,
            input: &mut input,
        };
        match cli.command {
            Command::Keys(super::keys::KeysCommand::Discover(args)) => {
                super::keys::discover::run(args, finder, keyring, &mut io)
            }
            Command::Keys(cmd) => super::keys::execute(cmd, keyring, &mut io),
            Command::Queue(cmd) => super::queue::execute(cmd, relay, &mut io),
            Command::Policy(cmd) => super::policy::execute(cmd, policy, keyring, &mut io),
            _ => Err(anyhow::anyhow!(
                "only `keys`, `queue` and `policy` commands run through the admin socket"
            )),
        }
    };
    let code = match &result {
        Ok(()) => 0,
        Err(e) => {
            stderr.extend(format!("sealpost: error: {}\n", describe(e)).into_bytes());
            exit_code(e)
        }
    };
    Response {
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        code,
    }
}
