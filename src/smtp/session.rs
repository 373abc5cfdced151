//! The SMTP session as a state machine: bytes in, [`Step`]s out. No sockets, no tokio, so
//! that every script can be tested whole and split at every byte.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::net::SocketAddr;
use std::sync::Arc;

use smtp_proto::Request;
use zeroize::Zeroizing;

use super::command::{self, data::DataReader, data::Verdict, ehlo, mail, rcpt};
use super::config::SessionConfig;
use super::envelope::{Envelope, Recipient, Sender};
use super::reply::{Enhanced, Reply};
use super::trace::{new_queue_id, received_header};
use super::transaction::{Client, Credentials, Transaction};
use crate::wipe;

/// AUTH responses may be longer than commands (RFC 4954 §4: 12288 octets).
const MAX_AUTH_LINE: usize = 12288;

/// What the connection must do next.
#[derive(Debug)]
pub enum Step {
    /// Send this reply.
    Reply(Reply),
    /// Send this reply, then close the connection.
    Close(Reply),
    /// Ask the backend about this recipient, then call [`Session::recipient_checked`].
    CheckRecipient(Recipient),
    /// Hand the message to the backend, then send what [`Session::delivered`] returns.
    Deliver(Box<Transaction>),
    /// Check these credentials, then call [`Session::authenticated`].
    Authenticate(Credentials),
    /// Send this reply, then start TLS; the buffered input has been discarded.
    StartTls(Reply),
}

#[derive(Debug)]
enum Mode {
    Command,
    Data(Box<DataReader>),
    AuthPlain,
    AuthLoginUser,
    /// The user name given, while the password is asked for.
    AuthLoginPass(Zeroizing<Vec<u8>>),
}

/// One client's session.
#[derive(Debug)]
pub struct Session {
    cfg: Arc<SessionConfig>,
    peer: SocketAddr,
    tls: bool,
    /// The EHLO/HELO name, and whether it was EHLO.
    helo: Option<(String, bool)>,
    auth: Option<Credentials>,
    sender: Option<Sender>,
    /// When MAIL was accepted: where the transaction's key-lookup budget starts. The one
    /// clock read in the session, kept here so the backend sees it with every recipient.
    mail_at: Option<std::time::Instant>,
    rcpts: Vec<Recipient>,
    mode: Mode,
    /// The command line read so far (an AUTH line holds the password): zeroed when it
    /// has been handled, and as it grows.
    line: Vec<u8>,
    /// An over-long line is being skipped up to its LF.
    discarding: bool,
    errors: u32,
    auth_failures: u32,
    /// Messages the backend accepted (a 2xx after DATA), for the session's log line.
    accepted: u32,
}

impl Session {
    pub fn new(cfg: Arc<SessionConfig>, peer: SocketAddr, tls: bool) -> Session {
        Session {
            cfg,
            peer,
            tls,
            helo: None,
            auth: None,
            sender: None,
            mail_at: None,
            rcpts: Vec::new(),
            mode: Mode::Command,
            line: Vec::new(),
            discarding: false,
            errors: 0,
            auth_failures: 0,
            accepted: 0,
        }
    }

    pub fn greeting(&self) -> Reply {
        Reply::bare(220, format!("{} ESMTP sealpost ready", self.cfg.hostname))
    }

    /// The client's address and port.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Whether the session is inside DATA (the connection uses the data timeout then).
    pub fn in_data(&self) -> bool {
        matches!(self.mode, Mode::Data(_))
    }

    /// The client as the backend sees it.
    pub fn client(&self) -> Client {
        Client {
            addr: self.peer,
            helo: self.helo.as_ref().map(|h| h.0.clone()).unwrap_or_default(),
            tls: self.tls,
            auth: self.auth.clone(),
            mail_at: self.mail_at,
        }
    }

    /// The sender of the current transaction (for the backend's recipient check).
    pub fn sender(&self) -> Option<&Sender> {
        self.sender.as_ref()
    }

    /// Consumes input from the front of `input` and returns the next step, or `None` when
    /// more input is needed.
    pub fn ingest(&mut self, input: &mut Vec<u8>) -> Option<Step> {
        if let Mode::Data(reader) = &mut self.mode {
            let (used, done) = reader.ingest(input);
            wipe::drain_front(input, used);
            return done.then(|| self.finish_data());
        }
        let limit = match self.mode {
            Mode::Command => self.cfg.max_command_line,
            _ => MAX_AUTH_LINE,
        };
        // The caller's buffer zeroes what it leaves behind (`wipe::drain_front`); the
        // line buffer here does the same.
        let Some(lf) = input.iter().position(|&b| b == b'\n') else {
            if self.discarding || self.line.len().saturating_add(input.len()) > limit {
                self.discarding = true;
                wipe::clear(&mut self.line);
            } else {
                wipe::extend(&mut self.line, input);
            }
            wipe::clear(input);
            return None;
        };
        if self.discarding || self.line.len().saturating_add(lf).saturating_add(1) > limit {
            self.discarding = false;
            wipe::clear(&mut self.line);
            wipe::drain_front(input, lf.saturating_add(1));
            return Some(self.error(command::line_too_long(limit)));
        }
        wipe::extend(&mut self.line, input.get(..=lf).unwrap_or_default());
        wipe::drain_front(input, lf.saturating_add(1));
        let line = Zeroizing::new(std::mem::take(&mut self.line));
        let clean = line
            .strip_suffix(b"\r\n")
            .is_some_and(|text| !text.contains(&b'\r'));
        if !clean {
            // Back to command mode: a smuggled line ending never continues AUTH.
            self.mode = Mode::Command;
            return Some(self.error(command::bare_line_end()));
        }
        let step = match std::mem::replace(&mut self.mode, Mode::Command) {
            Mode::Command => self.command(&line, input),
            Mode::Data(_) => unreachable_data(),
            auth_mode => self.auth_line(auth_mode, &line),
        };
        Some(step)
    }

    fn command(&mut self, line: &[u8], input: &mut Vec<u8>) -> Step {
        let request = match Request::parse(&mut line.iter()) {
            Ok(r) => r.into_owned(),
            Err(e) => return self.error(parse_error(e)),
        };
        match request {
            Request::Ehlo { host } => self.hello(host, true),
            Request::Helo { host } => self.hello(host, false),
            Request::Lhlo { .. } => self.error(command::unknown()),
            Request::Mail { from } => self.mail(from),
            Request::Rcpt { to } => self.rcpt(to),
            Request::Data => self.data(),
            Request::Rset => {
                self.reset();
                Step::Reply(command::ok("Reset OK"))
            }
            Request::Noop { .. } => Step::Reply(command::ok("OK")),
            Request::Quit => Step::Close(command::quit(&self.cfg.hostname)),
            Request::Help { .. } => Step::Reply(command::help()),
            Request::Vrfy { .. } => Step::Reply(command::vrfy()),
            Request::StartTls => self.starttls(input),
            Request::Auth {
                mechanism,
                initial_response,
            } => self.auth(mechanism, Zeroizing::new(initial_response)),
            Request::Bdat { .. } => self.error(command::not_implemented("BDAT")),
            Request::Expn { .. } => self.error(command::not_implemented("EXPN")),
            Request::Etrn { .. } => self.error(command::not_implemented("ETRN")),
            Request::Atrn { .. } => self.error(command::not_implemented("ATRN")),
            Request::Burl { .. } => self.error(command::not_implemented("BURL")),
        }
    }

    fn hello(&mut self, host: String, extended: bool) -> Step {
        if !ehlo::valid_name(&host) {
            return self.error(Reply::new(
                501,
                Enhanced(5, 5, 4),
                "EHLO and HELO need your domain name or address literal",
            ));
        }
        self.reset();
        let reply = if extended {
            ehlo::ehlo(&self.cfg, &host, self.tls)
        } else {
            ehlo::helo(&self.cfg, &host)
        };
        self.helo = Some((host, extended));
        Step::Reply(reply)
    }

    fn mail(&mut self, from: smtp_proto::MailFrom<String>) -> Step {
        if self.helo.is_none() {
            return self.error(command::bad_sequence("Send EHLO or HELO first"));
        }
        if self.sender.is_some() {
            return self.error(command::bad_sequence("Nested MAIL command"));
        }
        if self.auth.is_none() && !self.cfg.allowed(self.peer.ip()) {
            return self.error(mail::auth_required());
        }
        match mail::sender(&self.cfg, from) {
            Ok(sender) => {
                let reply = mail::accepted(&sender);
                self.sender = Some(sender);
                self.mail_at = Some(std::time::Instant::now());
                Step::Reply(reply)
            }
            Err(reply) => self.error(reply),
        }
    }

    fn rcpt(&mut self, to: smtp_proto::RcptTo<String>) -> Step {
        let Some(sender) = &self.sender else {
            return self.error(command::bad_sequence("Send MAIL first"));
        };
        let rcpt = match rcpt::recipient(sender, to) {
            Ok(r) => r,
            Err(reply) => return self.error(reply),
        };
        // A repeated recipient is accepted, but kept once: twenty RCPTs for one mailbox
        // would otherwise mean twenty decryptions and twenty deliveries.
        if self.has_recipient(&rcpt) {
            return Step::Reply(command::duplicate_recipient(&rcpt.address));
        }
        if self.rcpts.len() >= self.cfg.max_recipients {
            return Step::Reply(rcpt::too_many(self.cfg.max_recipients));
        }
        Step::CheckRecipient(rcpt)
    }

    /// The backend's answer about a recipient.
    pub fn recipient_checked(&mut self, rcpt: Recipient, result: Result<(), Reply>) -> Reply {
        match result {
            Ok(()) if self.has_recipient(&rcpt) => command::duplicate_recipient(&rcpt.address),
            Ok(()) => {
                let reply = rcpt::accepted(&rcpt);
                self.rcpts.push(rcpt);
                reply
            }
            Err(reply) => reply,
        }
    }

    fn has_recipient(&self, rcpt: &Recipient) -> bool {
        self.rcpts
            .iter()
            .any(|r| same_mailbox(&r.address, &rcpt.address))
    }

    fn data(&mut self) -> Step {
        if self.sender.is_none() {
            return self.error(command::bad_sequence("Send MAIL first"));
        }
        if self.rcpts.is_empty() {
            return self.error(command::bad_sequence(
                "No valid recipients; send RCPT first",
            ));
        }
        self.mode = Mode::Data(Box::new(DataReader::spilling(
            self.cfg.message_limit(),
            self.cfg.max_header_size,
            self.cfg.spill.clone(),
        )));
        Step::Reply(DataReader::start_reply())
    }

    fn finish_data(&mut self) -> Step {
        let Mode::Data(reader) = std::mem::replace(&mut self.mode, Mode::Command) else {
            return unreachable_data();
        };
        let sender = self.sender.take();
        let rcpts = std::mem::take(&mut self.rcpts);
        if let Verdict::Refused(reply) = reader.verdict() {
            return Step::Reply(reply);
        }
        let Some(sender) = sender else {
            return Step::Reply(command::bad_sequence("Send MAIL first"));
        };
        let id = new_queue_id();
        let header = received_header(
            &self.cfg.hostname,
            &self.client(),
            self.helo_ehlo(),
            &id,
            &rcpts,
        );
        // Prepended in place (or as a piece of its own in front of a spilled message): a
        // large message is not copied whole a second time.
        let message = match reader.finish() {
            Ok(m) => m.prepend(header),
            Err(e) => {
                tracing::error!(queue_id = %id, error = %e, "cannot finish a spilled message");
                return Step::Reply(Reply::new(
                    451,
                    Enhanced(4, 3, 0),
                    "Temporary local problem: the message cannot be stored; try again later",
                ));
            }
        };
        Step::Deliver(Box::new(Transaction {
            id,
            envelope: Envelope {
                sender,
                recipients: rcpts,
            },
            message,
            client: self.client(),
        }))
    }

    fn helo_ehlo(&self) -> bool {
        self.helo.as_ref().is_some_and(|h| h.1)
    }

    /// What the client hears after the backend has handled a transaction.
    pub fn delivered(&mut self, reply: Reply) -> Reply {
        if (200..300).contains(&reply.code) {
            self.accepted = self.accepted.saturating_add(1);
        }
        reply
    }

    /// Whether the connection is encrypted now.
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The user name the client authenticated as, if it did.
    pub fn user(&self) -> Option<&str> {
        self.auth.as_ref().map(|c| c.username.as_str())
    }

    /// How many messages the backend accepted in this session.
    pub fn accepted(&self) -> u32 {
        self.accepted
    }

    fn starttls(&mut self, input: &mut Vec<u8>) -> Step {
        if self.tls {
            return self.error(command::bad_sequence("TLS is already active"));
        }
        if self.cfg.tls.is_none() {
            return self.error(Reply::new(454, Enhanced(4, 7, 0), "TLS not available"));
        }
        // RFC 3207 §4.2 and CVE-2011-0411: nothing sent before the handshake may be
        // executed after it.
        wipe::clear(input);
        self.reset();
        self.helo = None;
        self.auth = None;
        Step::StartTls(Reply::new(220, Enhanced(2, 0, 0), "Ready to start TLS"))
    }

    /// After the TLS handshake: a fresh session that needs a new EHLO.
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.helo = None;
        self.auth = None;
        self.reset();
    }

    fn reset(&mut self) {
        self.sender = None;
        self.rcpts.clear();
        self.mode = Mode::Command;
    }

    /// A refused command: counted, so that a client sending garbage is cut off.
    fn error(&mut self, reply: Reply) -> Step {
        self.errors = self.errors.saturating_add(1);
        if self.errors > self.cfg.max_errors {
            return Step::Close(command::too_many_errors());
        }
        Step::Reply(reply)
    }
}

// A session cut off inside an AUTH line leaves no part of it behind.
impl Drop for Session {
    fn drop(&mut self) {
        wipe::clear(&mut self.line);
    }
}

/// Whether two addresses name one mailbox: the local part exactly (RFC 5321 §2.4 lets
/// the receiving host treat its case as significant), the domain without regard to case.
fn same_mailbox(a: &str, b: &str) -> bool {
    match (a.rsplit_once('@'), b.rsplit_once('@')) {
        (Some((local_a, domain_a)), Some((local_b, domain_b))) => {
            local_a == local_b && domain_a.eq_ignore_ascii_case(domain_b)
        }
        _ => a == b,
    }
}

fn unreachable_data() -> Step {
    // Data mode is handled before command parsing; reaching here would be a logic error,
    // answered as a temporary failure rather than a panic.
    Step::Reply(Reply::new(
        451,
        Enhanced(4, 3, 0),
        "Internal error; try again",
    ))
}

fn parse_error(e: smtp_proto::Error) -> Reply {
    use smtp_proto::Error as E;
    match e {
        E::UnknownCommand => command::unknown(),
        E::InvalidSenderAddress => Reply::new(501, Enhanced(5, 1, 7), "Bad sender address syntax"),
        E::InvalidRecipientAddress => {
            Reply::new(501, Enhanced(5, 1, 3), "Bad recipient address syntax")
        }
        E::SyntaxError { syntax } => command::syntax(&format!("Syntax: {syntax}")),
        E::InvalidParameter { param } => {
            command::syntax(&format!("Invalid value for parameter {param}"))
        }
        E::UnsupportedParameter { param } => Reply::new(
            555,
            Enhanced(5, 5, 4),
            format!("Unsupported parameter {param}"),
        ),
        _ => Reply::new(500, Enhanced(5, 5, 2), "Syntax error"),
    }
}

mod authenticate;

#[cfg(test)]
mod tests;
