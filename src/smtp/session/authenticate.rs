//! AUTH PLAIN and LOGIN (RFC 4954) in the session: the command, the client's answers to
//! 334 challenges, and the result of the credential check.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN};
use zeroize::Zeroizing;

use super::{Mode, Session, Step};
use crate::smtp::command::{self, auth, ehlo};
use crate::smtp::config::AuthMode;
use crate::smtp::reply::{Enhanced, Reply};
use crate::smtp::transaction::Credentials;

impl Session {
    /// `initial` may be the password, base64-encoded: zeroed when dropped.
    pub(super) fn auth(&mut self, mechanism: u64, initial: Zeroizing<String>) -> Step {
        if matches!(self.cfg.auth, AuthMode::None) {
            return self.error(auth::not_offered());
        }
        if !ehlo::auth_offered(&self.cfg, self.tls) {
            return self.error(auth::needs_tls());
        }
        if self.helo.is_none() {
            return self.error(command::bad_sequence("Send EHLO first"));
        }
        if self.auth.is_some() {
            return self.error(command::bad_sequence("Already authenticated"));
        }
        if self.sender.is_some() {
            return self.error(command::bad_sequence(
                "AUTH is not allowed during a mail transaction",
            ));
        }
        match mechanism {
            AUTH_PLAIN if initial.is_empty() => {
                self.mode = Mode::AuthPlain;
                Step::Reply(Reply::bare(334, ""))
            }
            AUTH_PLAIN => match auth::plain(if *initial == "=" { "" } else { &initial }) {
                Ok(c) => Step::Authenticate(c),
                Err(r) => self.error(r),
            },
            AUTH_LOGIN if initial.is_empty() => {
                self.mode = Mode::AuthLoginUser;
                Step::Reply(auth::challenge("Username:"))
            }
            AUTH_LOGIN => match auth::decode(&initial) {
                Ok(user) => {
                    self.mode = Mode::AuthLoginPass(user);
                    Step::Reply(auth::challenge("Password:"))
                }
                Err(r) => self.error(r),
            },
            _ => self.error(auth::unsupported()),
        }
    }

    /// The result of checking credentials. In `local` mode the password is dropped here;
    /// in `passthrough` it is kept for the relay. A `535` counts as a failed attempt; a
    /// `421` (an address blocked after too many failures) closes the connection; any
    /// other refusal (an unreachable upstream: `454 4.7.0`) is passed on as it is.
    pub fn authenticated(&mut self, mut creds: Credentials, result: Result<(), Reply>) -> Step {
        match result {
            Ok(()) => {
                if !matches!(self.cfg.auth, AuthMode::Passthrough) {
                    creds.secret = None;
                }
                self.auth = Some(creds);
                Step::Reply(auth::success())
            }
            Err(reply) if reply.code == 421 => Step::Close(reply),
            Err(reply) if reply.code == 535 => {
                self.auth_failures = self.auth_failures.saturating_add(1);
                if self.auth_failures >= self.cfg.max_auth_failures {
                    return Step::Close(Reply::new(
                        421,
                        Enhanced(4, 7, 0),
                        "Too many failed authentication attempts; closing connection",
                    ));
                }
                Step::Reply(reply)
            }
            Err(reply) => Step::Reply(reply),
        }
    }

    /// A line read while a 334 challenge is outstanding.
    pub(super) fn auth_line(&mut self, mode: Mode, line: &[u8]) -> Step {
        match mode {
            Mode::AuthPlain => {
                self.auth_response(line, |_, text| auth::plain(text).map(Step::Authenticate))
            }
            Mode::AuthLoginUser => self.auth_response(line, |s, text| {
                let user = auth::decode(text)?;
                s.mode = Mode::AuthLoginPass(user);
                Ok(Step::Reply(auth::challenge("Password:")))
            }),
            Mode::AuthLoginPass(user) => self.auth_response(line, |_, text| {
                let pass = auth::decode(text)?;
                auth::credentials(&user, &pass).map(Step::Authenticate)
            }),
            Mode::Command | Mode::Data(_) => super::unreachable_data(),
        }
    }

    fn auth_response(
        &mut self,
        line: &[u8],
        f: impl FnOnce(&mut Session, &str) -> Result<Step, Reply>,
    ) -> Step {
        let line = line.strip_suffix(b"\r\n").unwrap_or(line);
        let text = Zeroizing::new(String::from_utf8_lossy(line).into_owned());
        if text.trim() == "*" {
            return Step::Reply(auth::cancelled());
        }
        match f(self, &text) {
            Ok(step) => step,
            Err(reply) => {
                self.mode = Mode::Command;
                self.error(reply)
            }
        }
    }
}
