//! One client connection: its upstream connection, the bytes between them, and the few
//! commands and responses the proxy reads on the way (login, FETCH, capabilities).
//!
//! Client to upstream, a command without a literal is read whole and sent on as it came,
//! or rewritten when it is a FETCH of content ([`fetch::rewrite`]; first as a probe
//! when it does not set `\Seen`). A command with literals is sent on a fragment at a
//! time, because the client waits for the upstream's continuation request before it
//! sends a synchronising literal; its bytes are kept (up to a bound) only to learn the
//! login name. An APPEND with `encrypt_appended` is the exception: taken whole and sent
//! encrypted ([`super::append`]). A literal over the limit is refused with `NO [TOOBIG]`.
//! Upstream to client, every response is read whole; FETCH responses to a rewritten
//! command are answered by [`fetch::Fetched`] (or from the cache), and capability lists
//! are narrowed ([`capability::filter`]). Everything else passes byte for byte.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine;
use imap_codec::decode::Decoder;
use imap_codec::imap_types::auth::AuthMechanism;
use imap_codec::imap_types::command::CommandBody;
use imap_codec::CommandCodec;
use sealpost_keyring::Keyring;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::blob::Blob;
use crate::tls::client::ClientTls;
use crate::transform::inbound::{self, Encryption, Signature};
use crate::wipe::Buf;

use super::cache::{Entry, Key};
use super::fetch::{self, Fetched, Wanted};
use super::frame::{Fragment, Framer};
use super::outbox::Outbox;
use super::{capability, ListenerTls, Settings, UpstreamTls};

/// Longest command or response line taken (a SEARCH response lists many numbers).
const MAX_LINE: usize = 8 << 20;
/// Answers gathered before they are written to the client: one upstream read can answer
/// a thousand cached messages (their UIDs are small), and the client reads the first
/// while the proxy writes the next.
const FLUSH: usize = 64 << 10;
/// Most bytes of a command with literals kept to read its login name.
const KEPT_COMMAND: usize = 64 << 10;

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("upstream {0}: {1}")]
    Upstream(String, std::io::Error),
    #[error("the upstream IMAP server refused STARTTLS: {0}")]
    NoStartTls(String),
    #[error("the upstream sent {0}")]
    UpstreamFrame(super::frame::Error),
    #[error("the client sent {0}")]
    ClientFrame(super::frame::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What every connection shares.
pub struct Proxy {
    pub cache: super::cache::Cache,
    /// TLS towards the client, when [`Settings::tls`] asks for it.
    pub acceptor: Option<tokio_rustls::TlsAcceptor>,
    pub settings: Settings,
    pub tls: ClientTls,
    pub keyring: Keyring,
    pub inbound: Arc<inbound::Settings>,
    /// `[discovery] autocrypt`: the keys that opened messages offer in their `Autocrypt:`
    /// and `Autocrypt-Gossip:` fields are harvested, as on the SMTP inbound path.
    pub autocrypt: bool,
}

/// Accepts clients until the listener fails; one task per connection.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "IMAP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let proxy = Arc::clone(&proxy);
        tokio::spawn(async move {
            if let Err(e) = run(stream, &proxy).await {
                tracing::warn!(%peer, error = %e, "IMAP session ended");
            }
        });
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One client connection.
///
/// # Errors
/// The upstream unreachable, either side breaking IMAP's framing, or I/O.
pub async fn run(tcp: TcpStream, proxy: &Proxy) -> Result<(), Error> {
    let s = &proxy.settings;
    // Responses go out as they are answered, often small: Nagle's algorithm against the
    // peer's delayed ACK would hold each for tens of milliseconds.
    tcp.set_nodelay(true)?;
    let mut client: Box<dyn Stream> = match (&s.tls, &proxy.acceptor) {
        (ListenerTls::Tls, Some(a)) => Box::new(a.accept(tcp).await?),
        _ => Box::new(tcp),
    };
    let target = format!("{}:{}", s.upstream_host, s.upstream_port);
    let (mut upstream, greeting) = match connect(proxy, &target).await {
        Ok(c) => c,
        Err(e) => {
            // The client learns why, in words, instead of a closed connection.
            let bye = format!("* BYE the upstream IMAP server is unavailable: {e}\r\n");
            client.write_all(bye.as_bytes()).await?;
            return Err(e);
        }
    };
    let starttls = s.tls == ListenerTls::StartTls && proxy.acceptor.is_some();
    let greeting = capability::filter(&greeting).unwrap_or(greeting);
    let greeting = if starttls {
        capability::before_tls(&greeting)
    } else {
        greeting
    };
    client.write_all(&greeting).await?;

    let mut state = State::new(MAX_LINE, s.max_message, starttls);
    state.encrypt_appended = s.encrypt_appended;
    let (mut cbuf, mut ubuf) = (vec![0u8; 64 << 10], vec![0u8; 64 << 10]);
    loop {
        tokio::select! {
            n = client.read(&mut cbuf) => {
                let n = n?;
                if n == 0 {
                    return Ok(());
                }
                state.from_client.push(cbuf.get(..n).unwrap_or_default());
                loop {
                    let f = match state.from_client.fragment() {
                        Ok(Some(f)) => f,
                        Ok(None) => break,
                        Err(e) => {
                            // The rest of the stream cannot be read as IMAP any more.
                            let bye = format!("* BYE {e}: the proxy cannot read on\r\n");
                            client.write_all(bye.as_bytes()).await?;
                            return Err(Error::ClientFrame(e));
                        }
                    };
                    let (to_upstream, to_client) = state.client_fragment(f);
                    upstream.write_all(&to_upstream).await.map_err(|e| Error::Upstream(target.clone(), e))?;
                    client.write_all(&to_client).await?;
                    if let Some(e) = state.broken.take() {
                        let bye = format!("* BYE the client sent {e}: the proxy cannot read on\r\n");
                        client.write_all(bye.as_bytes()).await?;
                        return Err(Error::ClientFrame(e));
                    }
                    if let Some(command) = state.append_ready.take() {
                        let mut link = Link { client: &mut client, upstream: &mut upstream, ubuf: &mut ubuf, target: &target };
                        append(proxy, &mut state, command, &mut link).await?;
                    }
                    if std::mem::take(&mut state.upgrade) {
                        // Whatever the client sent after STARTTLS in the clear is dropped
                        // (the CVE-2011-0411 injection), and the session goes on in TLS.
                        state.from_client = Framer::refusing(MAX_LINE, s.max_message);
                        let Some(acceptor) = &proxy.acceptor else {
                            return Ok(());
                        };
                        client = Box::new(acceptor.accept(client).await?);
                        break;
                    }
                }
            }
            n = upstream.read(&mut ubuf) => {
                let n = n.map_err(|e| Error::Upstream(target.clone(), e))?;
                if n == 0 {
                    if !state.logging_out {
                        client.write_all(b"* BYE the upstream IMAP server closed the connection\r\n").await?;
                    }
                    return Ok(());
                }
                state.from_upstream.push(ubuf.get(..n).unwrap_or_default());
                // The answers to what this read completed, written at once: one write per
                // read rather than per message.
                let mut out = Outbox::default();
                loop {
                    let f = match state.from_upstream.fragment() {
                        Ok(Some(f)) => f,
                        Ok(None) => break,
                        Err(e) => {
                            out.extend_from_slice(format!("* BYE the upstream IMAP server sent {e}\r\n").as_bytes());
                            out.flush(&mut client).await?;
                            return Err(Error::UpstreamFrame(e));
                        }
                    };
                    if let Some(response) = state.upstream_fragment(f) {
                        answer(proxy, &mut state, response, &mut out).await;
                    }
                    if out.len() >= FLUSH {
                        out.flush(&mut client).await?;
                    }
                }
                out.flush(&mut client).await?;
                if !state.to_upstream.is_empty() {
                    let own = std::mem::take(&mut state.to_upstream);
                    upstream.write_all(&own).await.map_err(|e| Error::Upstream(target.clone(), e))?;
                }
            }
        }
    }
}

/// A client's FETCH of content, sent upstream for the UIDs and the items that are not
/// content ([`fetch::Wanted::probe_items`]): the messages in the cache are answered from
/// it, and those that are not are fetched whole afterwards. UIDs, never sequence
/// numbers, name cached messages, so an EXPUNGE in between cannot make the proxy serve
/// another message.
struct Probe {
    wanted: Wanted,
    /// The UIDs not in the cache.
    missing: Vec<u32>,
}

/// A client's completion waiting for the proxy's own FETCHes.
struct Held {
    completion: Vec<u8>,
    /// Own FETCHes not completed yet.
    waiting: usize,
    /// The upstream's completion of an own FETCH that failed.
    failed: Option<String>,
}

/// The connection's state between fragments.
struct State {
    from_client: Framer,
    from_upstream: Framer,
    /// The client's command so far (bounded), while it has literals.
    command: Vec<u8>,
    in_command: bool,
    /// FETCH commands in flight, by tag.
    fetches: HashMap<String, Wanted>,
    /// FETCHes sent upstream as [`Probe`]s, by tag.
    probes: HashMap<String, Probe>,
    /// The client's completion of a probe, held back until the proxy's own FETCHes of the
    /// messages not in the cache complete (by the client's tag).
    held: HashMap<String, Held>,
    /// The proxy's own FETCHes in flight: the client's tag each belongs to.
    own: HashMap<String, String>,
    /// Commands of the proxy's own, to send upstream.
    to_upstream: Vec<u8>,
    /// The login name, once seen.
    login: Option<String>,
    /// `AUTHENTICATE PLAIN` without an initial response: the next line is it.
    awaiting_plain: bool,
    /// The upstream's response so far.
    response: Vec<u8>,
    /// The selected mailbox and its UIDVALIDITY, which name cached messages.
    mailbox: Option<String>,
    uidvalidity: Option<u32>,
    /// STARTTLS is offered and not done yet: logins wait for it.
    tls_pending: bool,
    /// The client asked for STARTTLS and was told OK: TLS starts now.
    upgrade: bool,
    /// The client sent LOGOUT: the upstream closing is the end it asked for.
    logging_out: bool,
    /// [`Settings::encrypt_appended`].
    encrypt_appended: bool,
    /// An APPEND held whole to be encrypted, so far.
    append: Option<Vec<u8>>,
    /// An APPEND taken whole: to encrypt and send upstream.
    append_ready: Option<Vec<u8>>,
    /// The tag of a command whose non-synchronising literal was over the limit: the rest
    /// of it is dropped, then it is answered `NO`.
    refused: Option<String>,
    /// The largest literal taken from the client.
    max_literal: usize,
    /// A literal over the limit in a command partly sent upstream already: the two
    /// streams cannot be kept in step any more.
    broken: Option<super::frame::Error>,
}

impl State {
    fn new(max_line: usize, max_message: usize, starttls: bool) -> State {
        State {
            from_client: Framer::refusing(max_line, max_message),
            from_upstream: Framer::new(max_line, max_message),
            command: Vec::new(),
            in_command: false,
            fetches: HashMap::new(),
            probes: HashMap::new(),
            held: HashMap::new(),
            own: HashMap::new(),
            to_upstream: Vec::new(),
            login: None,
            awaiting_plain: false,
            response: Vec::new(),
            tls_pending: starttls,
            upgrade: false,
            logging_out: false,
            mailbox: None,
            uidvalidity: None,
            encrypt_appended: false,
            append: None,
            append_ready: None,
            refused: None,
            max_literal: max_message,
            broken: None,
        }
    }

    /// The cache's name for message `uid` of the selected mailbox, for this login.
    fn cache_key(&self, uid: u32) -> Option<Key> {
        Some(Key {
            login: self.login.clone()?,
            mailbox: self.mailbox.clone()?,
            uidvalidity: self.uidvalidity?,
            uid,
        })
    }

    /// What a client fragment sends upstream, and what the proxy answers itself.
    fn client_fragment(&mut self, f: Fragment) -> (Vec<u8>, Vec<u8>) {
        if let Fragment::TooLarge { bytes, literal } = f {
            return (Vec::new(), self.too_large(&bytes, literal));
        }
        if let Some(tag) = self.refused.take() {
            // The rest of a refused command: answered once the client sends no more of it
            // (a synchronising literal waits for a go-ahead it does not get).
            return match f {
                Fragment::Line {
                    literal: Some(l), ..
                } if !l.sync => {
                    self.refused = Some(tag);
                    (Vec::new(), Vec::new())
                }
                Fragment::Literal(_) => {
                    self.refused = Some(tag);
                    (Vec::new(), Vec::new())
                }
                Fragment::Line { .. } | Fragment::TooLarge { .. } => {
                    self.in_command = false;
                    (Vec::new(), self.too_big(&tag))
                }
            };
        }
        let starts_append = matches!(&f, Fragment::Line { bytes, literal: Some(_) }
            if self.encrypt_appended && !self.in_command && !self.awaiting_plain && super::append::is_append(bytes));
        if starts_append {
            self.append = Some(Vec::new());
        }
        if self.append.is_some() {
            return (Vec::new(), self.append_fragment(f));
        }
        match f {
            Fragment::TooLarge { .. } => (Vec::new(), Vec::new()),
            Fragment::Line { bytes, literal } => {
                if self.awaiting_plain && !self.in_command {
                    self.awaiting_plain = false;
                    self.login = self.login.take().or_else(|| plain_user(&bytes));
                    return (bytes, Vec::new());
                }
                if !self.in_command && literal.is_none() {
                    return self.command_line(bytes);
                }
                if self.command.len() + bytes.len() <= KEPT_COMMAND {
                    self.command.extend_from_slice(&bytes);
                }
                self.in_command = literal.is_some();
                if !self.in_command {
                    let whole = std::mem::take(&mut self.command);
                    self.learn_login(&whole);
                }
                (bytes, Vec::new())
            }
            Fragment::Literal(data) => {
                if self.command.len() + data.len() <= KEPT_COMMAND {
                    self.command.extend_from_slice(&data);
                }
                (data, Vec::new())
            }
        }
    }

    /// A literal over the limit: the command is answered `NO [TOOBIG]` (now, or once the
    /// rest of it is dropped), unless part of it went upstream already.
    fn too_large(&mut self, line: &[u8], literal: super::frame::Literal) -> Vec<u8> {
        if let Some(tag) = self.refused.take() {
            // Another one in the rest of a command refused already.
            if literal.sync {
                self.in_command = false;
                return self.too_big(&tag);
            }
            self.refused = Some(tag);
            return Vec::new();
        }
        let held = self.append.take();
        if self.in_command && held.is_none() {
            let len = u64::try_from(literal.len).unwrap_or(u64::MAX);
            self.broken = Some(super::frame::Error::LiteralTooLarge(len, self.max_literal));
            return Vec::new();
        }
        let first = held
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| line.to_vec());
        let tag = String::from_utf8_lossy(first.split(|&b| b == b' ').next().unwrap_or_default())
            .into_owned();
        if literal.sync {
            // Announced within the limit of one literal but over that of the command: the
            // framer waits for it, and it never comes.
            self.from_client.cancel_literal();
            self.in_command = false;
            self.too_big(&tag)
        } else {
            self.in_command = true;
            self.refused = Some(tag);
            Vec::new()
        }
    }

    fn too_big(&self, tag: &str) -> Vec<u8> {
        format!(
            "{tag} NO [TOOBIG] larger than the proxy's limit of {} bytes\r\n",
            self.max_literal
        )
        .into_bytes()
    }

    /// A fragment of an APPEND held whole; what the client is told (go on, or `NO`).
    fn append_fragment(&mut self, f: Fragment) -> Vec<u8> {
        let Some(held) = self.append.as_mut() else {
            return Vec::new();
        };
        match f {
            Fragment::Line { bytes, literal } => {
                held.extend_from_slice(&bytes);
                self.in_command = literal.is_some();
                match literal {
                    // The whole command is bounded as each of its literals is.
                    Some(l)
                        if held.len().saturating_add(l.len) > self.max_literal + KEPT_COMMAND =>
                    {
                        self.too_large(&[], l)
                    }
                    Some(l) if l.sync => b"+ go ahead\r\n".to_vec(),
                    Some(_) => Vec::new(),
                    None => {
                        self.append_ready = self.append.take();
                        Vec::new()
                    }
                }
            }
            Fragment::Literal(data) => {
                held.extend_from_slice(&data);
                Vec::new()
            }
            Fragment::TooLarge { .. } => Vec::new(),
        }
    }

    /// A whole command line without literals.
    fn command_line(&mut self, line: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
        if let Some((rewritten, tag, wanted)) = fetch::rewrite(&line) {
            // One FETCH at a time is probed, so that the UIDs that come back are its own.
            let probe =
                self.fetches.is_empty() && self.probes.is_empty() && self.cache_key(0).is_some();
            let items = probe.then(|| wanted.probe_items()).flatten();
            if let Some(command) = items.and_then(|i| fetch::probe_command(&line, i)) {
                let missing = Vec::new();
                self.probes.insert(tag, Probe { wanted, missing });
                return (command, Vec::new());
            }
            self.fetches.insert(tag, wanted);
            return (rewritten, Vec::new());
        }
        let words: Vec<String> = String::from_utf8_lossy(&line)
            .split_whitespace()
            .take(2)
            .map(str::to_string)
            .collect();
        if let [tag, verb] = words.as_slice() {
            let verb = verb.to_ascii_uppercase();
            self.logging_out |= verb == "LOGOUT";
            if verb == "STARTTLS" && self.tls_pending {
                self.tls_pending = false;
                self.upgrade = true;
                let ok = format!("{tag} OK begin TLS now\r\n");
                return (Vec::new(), ok.into_bytes());
            }
            if self.tls_pending && (verb == "LOGIN" || verb == "AUTHENTICATE") {
                // No password crosses the network in the clear when TLS is offered.
                let no = format!("{tag} NO [PRIVACYREQUIRED] STARTTLS first\r\n");
                return (Vec::new(), no.into_bytes());
            }
            if verb == "STARTTLS" || verb.starts_with("COMPRESS") {
                // Not offered: the stream must stay readable to the proxy.
                let no = format!("{tag} NO {verb} is not offered by this proxy\r\n");
                return (Vec::new(), no.into_bytes());
            }
        }
        self.learn_login(&line);
        (line, Vec::new())
    }

    /// The login name of a LOGIN or AUTHENTICATE PLAIN command.
    fn learn_login(&mut self, command: &[u8]) {
        let Ok((_, c)) = CommandCodec::default().decode(command) else {
            return;
        };
        match c.body {
            CommandBody::Select { mailbox, .. } | CommandBody::Examine { mailbox, .. } => {
                self.mailbox = Some(format!("{mailbox:?}"));
                self.uidvalidity = None;
            }
            CommandBody::Login { username, .. } => {
                self.login = Some(String::from_utf8_lossy(username.as_ref()).into_owned());
            }
            CommandBody::Authenticate {
                mechanism: AuthMechanism::Plain,
                initial_response,
            } => match initial_response {
                Some(r) => self.login = plain_authcid(r.declassify()),
                None => self.awaiting_plain = true,
            },
            _ => {}
        }
    }

    /// A whole upstream response, once its last fragment came.
    fn upstream_fragment(&mut self, f: Fragment) -> Option<Vec<u8>> {
        match f {
            Fragment::Line { bytes, literal } => {
                self.response.extend_from_slice(&bytes);
                if literal.is_some() {
                    return None;
                }
            }
            Fragment::Literal(data) => {
                self.response.extend_from_slice(&data);
                return None;
            }
            // Only a client's framer refuses literals.
            Fragment::TooLarge { bytes, .. } => {
                self.response.extend_from_slice(&bytes);
            }
        }
        let response = std::mem::take(&mut self.response);
        if let Some(v) = uidvalidity(&response) {
            self.uidvalidity = Some(v);
        }
        // A tagged completion ends its FETCH.
        if !response.starts_with(b"* ") && !response.starts_with(b"+") {
            if let Some(tag) = response.split(|&b| b == b' ').next() {
                let tag = String::from_utf8_lossy(tag).into_owned();
                self.fetches.remove(&tag);
                let ok = response
                    .get(tag.len() + 1..tag.len() + 3)
                    .is_some_and(|w| w.eq_ignore_ascii_case(b"OK"));
                if let Some(client_tag) = self.own.remove(&tag) {
                    return self.own_done(&client_tag, ok, &response);
                }
                if let Some(probe) = self.probes.remove(&tag) {
                    let commands = if ok && !probe.missing.is_empty() {
                        fetch::by_uid(&tag, &probe.missing, &probe.wanted)
                    } else {
                        Vec::new()
                    };
                    if !commands.is_empty() {
                        for (own, command) in &commands {
                            self.to_upstream.extend_from_slice(command);
                            self.fetches.insert(own.clone(), probe.wanted.clone());
                            self.own.insert(own.clone(), tag.clone());
                        }
                        let held = Held {
                            completion: response,
                            waiting: commands.len(),
                            failed: None,
                        };
                        self.held.insert(tag, held);
                        return None;
                    }
                }
            }
        }
        Some(response)
    }

    /// One of the proxy's own FETCHes for `client_tag` completed; the client's completion
    /// once they all have: as the upstream gave it, or `NO` when one of them failed (some
    /// messages asked for were not sent).
    fn own_done(&mut self, client_tag: &str, ok: bool, response: &[u8]) -> Option<Vec<u8>> {
        let held = self.held.get_mut(client_tag)?;
        held.waiting = held.waiting.saturating_sub(1);
        if !ok {
            held.failed = Some(String::from_utf8_lossy(response).trim_end().to_string());
        }
        if held.waiting > 0 {
            return None;
        }
        let held = self.held.remove(client_tag)?;
        match held.failed {
            None => Some(held.completion),
            Some(why) => {
                tracing::warn!(upstream = %why, "fetching messages not in the cache failed");
                Some(
                    format!(
                        "{client_tag} NO the upstream did not send every message asked for\r\n"
                    )
                    .into_bytes(),
                )
            }
        }
    }

    /// The address whose keys open mail: the login name when it is one.
    fn address(&self, settings: &Settings) -> Option<String> {
        self.login
            .as_deref()
            .filter(|l| l.contains('@'))
            .map(str::to_ascii_lowercase)
            .or_else(|| settings.address.clone())
    }
}

/// What the client gets for one upstream response, written to `out`.
async fn answer(proxy: &Proxy, state: &mut State, response: Vec<u8>, out: &mut Outbox) {
    if let Some(filtered) = capability::filter(&response) {
        if state.tls_pending {
            out.extend_from_slice(&capability::before_tls(&filtered));
        } else {
            out.extend_from_slice(&filtered);
        }
        return;
    }
    if !response.starts_with(b"* ") || !is_fetch(&response) {
        out.extend_from_slice(&response);
        return;
    }
    if !state.probes.is_empty() {
        probe_answer(proxy, state, response, out);
        return;
    }
    // Untagged FETCH data while a content FETCH is in flight. With several in flight the
    // last one's items are taken (clients wait for each before the next).
    let Some(wanted) = state.fetches.values().last() else {
        out.extend_from_slice(&response);
        return;
    };
    // The common case of a client downloading messages it has seen before: answered
    // from the cache without reading the upstream's copy through the codec.
    if wanted.whole_only() {
        if let Some(((seq, uid), key)) = fetch::whole_message_response(&response)
            .and_then(|(seq, uid)| Some(((seq, uid), state.cache_key(uid)?)))
        {
            match proxy.cache.get(&key) {
                Some(hit) if matches!(*hit, Entry::Opened(_)) => {
                    cached_whole_message(out, seq, uid, hit);
                    return;
                }
                Some(_) => {
                    out.extend_from_slice(&response);
                    return;
                }
                None => {}
            }
        }
    }
    let answered = opened(proxy, state, wanted, response).await;
    out.extend_from_slice(&answered);
}

/// A message's UID (and the items that are not content) for a probed FETCH: the answer
/// composed from the cache, or the UID noted to be fetched whole once the FETCH completes.
fn probe_answer(proxy: &Proxy, state: &mut State, response: Vec<u8>, out: &mut Outbox) {
    // `* n FETCH (UID u)`, the common case, is read without the codec.
    let fast = fetch::uid_response(&response);
    let fetched = if fast.is_none() {
        Fetched::parse(&response)
    } else {
        None
    };
    let uid = match (fast, fetched.as_ref().and_then(Fetched::uid)) {
        (Some((_, uid)), _) | (None, Some(uid)) => uid,
        // Items the codec does not read: the message is fetched whole, as without a probe.
        (None, None) if fetched.is_none() && fetch::uid_in(&response).is_some() => {
            if let (Some(uid), Some(probe)) =
                (fetch::uid_in(&response), state.probes.values_mut().next())
            {
                probe.missing.push(uid);
            }
            return;
        }
        // Not an answer to the probe (a flag change, say): as it came.
        (None, None) => {
            out.extend_from_slice(&response);
            return;
        }
    };
    let hit = state
        .cache_key(uid)
        .and_then(|k| proxy.cache.get(&k))
        .filter(|h| matches!(**h, Entry::Opened(_)));
    if let (Some(hit), Some(probe)) = (hit, state.probes.values().next()) {
        if let (Some((seq, _)), true) = (fast, probe.wanted.whole_only()) {
            cached_whole_message(out, seq, uid, hit);
            return;
        }
        let fetched = fetched.or_else(|| Fetched::parse(&response));
        if let (Some(f), Entry::Opened(served)) = (fetched, &*hit) {
            if let Some(answer) = f.composed(&probe.wanted, served) {
                out.extend_from_slice(&answer);
                return;
            }
        }
    }
    if let Some(probe) = state.probes.values_mut().next() {
        probe.missing.push(uid);
    }
}

/// The answer to a FETCH of the whole message `uid` (and its UID), from the cache.
fn cached_whole_message(out: &mut Outbox, seq: u32, uid: u32, hit: Arc<Entry>) {
    let len = match &*hit {
        Entry::Opened(served) => served.len(),
        Entry::Plain => 0,
    };
    out.extend_from_slice(&fetch::whole_message_head(seq, uid, len));
    out.push_cached(hit);
    out.extend_from_slice(fetch::WHOLE_MESSAGE_END);
}

/// The answer to a FETCH response with content: from the opened message when it is
/// protected (opened now, or found in the cache), as the upstream sent it otherwise.
/// Whether a stored message carries result fields that imitate ours (an
/// `X-Sealpost-*` field, or `Authentication-Results` with our authserv-id). The store
/// is not ours to trust: such a message is served as the transform leaves it, those
/// fields removed and our verdict added, never as stored.
fn imitates_ours(message: &[u8], authserv_id: &str) -> bool {
    let end = memchr::memmem::find(message, b"\r\n\r\n")
        .map(|i| i + 2)
        .or_else(|| memchr::memmem::find(message, b"\n\n").map(|i| i + 1))
        .unwrap_or(message.len());
    let head = message.get(..end).unwrap_or(message);
    inbound::results::fields(head).iter().any(|r| {
        r.field
            .as_ref()
            .is_some_and(|f| inbound::results::is_ours(f, authserv_id))
    })
}

async fn opened(proxy: &Proxy, state: &State, wanted: &Wanted, response: Vec<u8>) -> Vec<u8> {
    let Some(fetched) = Fetched::parse(&response) else {
        return response;
    };
    let Some(message) = fetched.message().map(<[u8]>::to_vec) else {
        return response;
    };
    let Some(address) = state.address(&proxy.settings) else {
        tracing::warn!(
            "IMAP login name is not an address and [imap] address is not set: mail is not opened"
        );
        return fetched.as_sent(wanted);
    };
    let key = fetched.uid().and_then(|uid| state.cache_key(uid));
    if let Some(hit) = key.as_ref().and_then(|k| proxy.cache.get(k)) {
        return match &*hit {
            Entry::Plain => fetched.as_sent(wanted),
            Entry::Opened(served) => fetched.served(wanted, served),
        };
    }
    let keyring = proxy.keyring.clone();
    let settings = Arc::clone(&proxy.inbound);
    let imitates = imitates_ours(&message, &settings.authserv_id);
    let autocrypt = proxy.autocrypt;
    let id = format!("imap-{}", fetched.uid().unwrap_or_default());
    let opened = tokio::task::spawn_blocking(move || {
        let message = Blob::from(message);
        let opened = inbound::open(
            &message,
            &[address.as_str()],
            &keyring,
            &settings,
            SystemTime::now(),
        );
        // After opening, so that a key first seen in this message never verified it. A
        // user on this proxy receives mail through the provider, never through sealpost's
        // SMTP side: this is where correspondents' Autocrypt keys reach the keyring.
        // The user's own sent copies carry their mail client's header too: the keyring
        // takes no discovered key for an address that has a secret key in it.
        if let (true, Ok(copies)) = (autocrypt, &opened) {
            use crate::discovery::autocrypt::{harvest, harvest_gossip};
            harvest(&keyring, &message, SystemTime::now(), &id);
            if let Some(gossiped) = copies.first().map(|c| c.gossip.as_slice()) {
                harvest_gossip(&keyring, &message, gossiped, SystemTime::now(), &id);
            }
        }
        opened
    })
    .await;
    let copy = match opened {
        Ok(Ok(mut copies)) if copies.len() == 1 => copies.remove(0),
        Ok(Ok(_)) => return fetched.as_sent(wanted),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot open a fetched message: sent as it is stored");
            return fetched.as_sent(wanted);
        }
        Err(e) => {
            tracing::error!(error = %e, "opening a fetched message failed");
            return fetched.as_sent(wanted);
        }
    };
    let v = &copy.verdict;
    if v.encryption == Encryption::None && v.signature == Signature::None && !imitates {
        // Not protected at all: byte for byte as stored.
        if let Some(k) = key {
            proxy.cache.put(k, Entry::Plain);
        }
        return fetched.as_sent(wanted);
    }
    match copy.message.to_vec() {
        Ok(served) => {
            let out = fetched.served(wanted, &served);
            if let Some(k) = key {
                proxy.cache.put(k, Entry::Opened(Buf::from(served)));
            }
            out
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read an opened message back");
            fetched.as_sent(wanted)
        }
    }
}

/// The two connections, for an exchange the proxy leads itself.
struct Link<'a> {
    client: &'a mut Box<dyn Stream>,
    upstream: &'a mut Box<dyn Stream>,
    ubuf: &'a mut [u8],
    target: &'a str,
}

/// An APPEND held whole: its message encrypted ([`super::append::seal`]) and the command
/// sent upstream, each synchronising literal after the upstream's continuation request.
/// The client is answered `NO` when it cannot be encrypted, and gets the upstream's
/// completion otherwise (through the main loop, as any response).
async fn append(
    proxy: &Proxy,
    state: &mut State,
    command: Vec<u8>,
    link: &mut Link<'_>,
) -> Result<(), Error> {
    let tag = String::from_utf8_lossy(command.split(|&b| b == b' ').next().unwrap_or_default())
        .into_owned();
    let address = state.address(&proxy.settings);
    let keyring = proxy.keyring.clone();
    let sealed = tokio::task::spawn_blocking(move || {
        super::append::seal(&command, address.as_deref(), &keyring, SystemTime::now())
    })
    .await;
    let chunks = match sealed {
        Ok(Ok(chunks)) => chunks,
        Ok(Err(refusal)) => {
            tracing::warn!(reason = %refusal, "an APPEND was refused: it could not be encrypted");
            let no = format!("{tag} NO {refusal}\r\n");
            link.client.write_all(no.as_bytes()).await?;
            return Ok(());
        }
        Err(e) => {
            tracing::error!(error = %e, "encrypting an APPENDed message failed");
            let no = format!("{tag} NO [SERVERBUG] encrypting the message failed\r\n");
            link.client.write_all(no.as_bytes()).await?;
            return Ok(());
        }
    };
    let target = link.target.to_string();
    let up = |e| Error::Upstream(target.clone(), e);
    let mut chunks = chunks.into_iter();
    if let Some(first) = chunks.next() {
        link.upstream.write_all(&first).await.map_err(up)?;
    }
    let mut next = chunks.next();
    let done = format!("{tag} ");
    while next.is_some() {
        let n = link.upstream.read(link.ubuf).await.map_err(up)?;
        if n == 0 {
            // The main loop finds the connection closed and tells the client.
            return Ok(());
        }
        state
            .from_upstream
            .push(link.ubuf.get(..n).unwrap_or_default());
        let mut out = Outbox::default();
        loop {
            let f = match state.from_upstream.fragment() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    out.extend_from_slice(
                        format!("* BYE the upstream IMAP server sent {e}\r\n").as_bytes(),
                    );
                    out.flush(link.client).await?;
                    return Err(Error::UpstreamFrame(e));
                }
            };
            let Some(response) = state.upstream_fragment(f) else {
                continue;
            };
            if response.starts_with(b"+") {
                // The go-ahead for the proxy's own literal: the client never asked.
                if let Some(chunk) = next.take() {
                    link.upstream.write_all(&chunk).await.map_err(up)?;
                    next = chunks.next();
                }
                continue;
            }
            if response.starts_with(done.as_bytes()) {
                // Refused before its message was sent: the client hears why.
                next = None;
                out.extend_from_slice(&response);
                continue;
            }
            answer(proxy, state, response, &mut out).await;
            if out.len() >= FLUSH {
                out.flush(link.client).await?;
            }
        }
        out.flush(link.client).await?;
        if !state.to_upstream.is_empty() {
            let own = std::mem::take(&mut state.to_upstream);
            link.upstream.write_all(&own).await.map_err(up)?;
        }
    }
    Ok(())
}

/// The UIDVALIDITY an `* OK [UIDVALIDITY n]` response gives.
fn uidvalidity(response: &[u8]) -> Option<u32> {
    let upper = response.to_ascii_uppercase();
    let at = upper.windows(13).position(|w| w == b"[UIDVALIDITY ")? + 13;
    let rest = response.get(at..)?;
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(rest.get(..end)?).ok()?.parse().ok()
}

/// Whether an untagged response is `* n FETCH`.
fn is_fetch(response: &[u8]) -> bool {
    let mut words = response.splitn(4, |&b| b == b' ');
    let _star = words.next();
    let number = words
        .next()
        .is_some_and(|n| n.iter().all(u8::is_ascii_digit));
    number
        && words
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case(b"FETCH"))
}

/// The authcid (or authzid) of a SASL PLAIN response.
fn plain_authcid(response: &[u8]) -> Option<String> {
    let mut parts = response.split(|&b| b == 0);
    let authzid = parts.next()?;
    let authcid = parts.next()?;
    let user = if authzid.is_empty() { authcid } else { authzid };
    Some(String::from_utf8_lossy(user).into_owned())
}

/// [`plain_authcid`] of a base64 line sent after `AUTHENTICATE PLAIN`.
fn plain_user(line: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(line).ok()?.trim();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    plain_authcid(&decoded)
}

/// The upstream connection, its greeting read (and STARTTLS done when asked).
async fn connect(proxy: &Proxy, target: &str) -> Result<(Box<dyn Stream>, Vec<u8>), Error> {
    let s = &proxy.settings;
    let up = |e| Error::Upstream(target.to_string(), e);
    let tcp = TcpStream::connect((s.upstream_host.as_str(), s.upstream_port))
        .await
        .map_err(up)?;
    tcp.set_nodelay(true).map_err(up)?;
    match s.upstream_tls {
        UpstreamTls::None => {
            let mut stream: Box<dyn Stream> = Box::new(tcp);
            let greeting = read_line(&mut stream).await.map_err(up)?;
            Ok((stream, greeting))
        }
        UpstreamTls::Tls => {
            let tls = proxy.tls.connect(&s.upstream_host, tcp).await.map_err(up)?;
            let mut stream: Box<dyn Stream> = Box::new(tls);
            let greeting = read_line(&mut stream).await.map_err(up)?;
            Ok((stream, greeting))
        }
        UpstreamTls::StartTls => {
            let mut tcp = tcp;
            let greeting = read_line(&mut tcp).await.map_err(up)?;
            tcp.write_all(b"S0 STARTTLS\r\n").await.map_err(up)?;
            loop {
                let line = read_line(&mut tcp).await.map_err(up)?;
                if line.starts_with(b"S0 ") {
                    if !line.starts_with(b"S0 OK") {
                        return Err(Error::NoStartTls(
                            String::from_utf8_lossy(&line).trim().to_string(),
                        ));
                    }
                    break;
                }
            }
            let tls = proxy.tls.connect(&s.upstream_host, tcp).await.map_err(up)?;
            Ok((Box::new(tls), greeting))
        }
    }
}

/// One line, read a byte at a time: only the greeting and the STARTTLS exchange, before
/// anything else is buffered.
async fn read_line(r: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::new();
    while !line.ends_with(b"\r\n") {
        if line.len() > 64 << 10 {
            return Err(std::io::Error::other("a greeting longer than 64 KiB"));
        }
        let b = r.read_u8().await?;
        line.push(b);
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncBufReadExt;

    /// A proxy in front of a scripted upstream that answers every command with `reply`
    /// (after its greeting), and a client's transcript of `commands` (sent 30 ms apart)
    /// through it.
    async fn through(reply: &'static [u8], commands: &[&str], close: bool) -> String {
        let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up_port = up.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = up.accept().await.unwrap();
            // Its answers come at once, not after the client's delayed ACK.
            s.set_nodelay(true).unwrap();
            s.write_all(b"* OK [CAPABILITY IMAP4rev1 COMPRESS=DEFLATE] ready\r\n")
                .await
                .unwrap();
            let (r, mut w) = s.split();
            let mut lines = tokio::io::BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let tag = line.split(' ').next().unwrap_or("*").to_string();
                w.write_all(reply).await.unwrap();
                if close {
                    break;
                }
                let done = format!("{tag} OK done\r\n");
                if w.write_all(done.as_bytes()).await.is_err() || line.contains("LOGOUT") {
                    break;
                }
            }
        });
        let proxy = Arc::new(Proxy {
            settings: Settings {
                listen: "127.0.0.1:0".parse().unwrap(),
                upstream_host: "127.0.0.1".into(),
                upstream_port: up_port,
                upstream_tls: UpstreamTls::None,
                ca_file: None,
                address: Some("bob@example.org".into()),
                max_message: 1 << 20,
                tls: ListenerTls::None,
                certificate: None,
                encrypt_appended: false,
                disk_cache: 0,
            },
            acceptor: None,
            cache: crate::imap::cache::Cache::new(1 << 20),
            tls: ClientTls::new(None).unwrap(),
            keyring: Keyring::open_memory(sealpost_keyring::OpenOptions::default()).unwrap(),
            inbound: Arc::new(inbound::Settings {
                authserv_id: "gw.example.org".into(),
                max_plaintext: 1 << 20,
                spill: None,
            }),
            autocrypt: true,
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(serve(listener, proxy));
        let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        for cmd in commands {
            c.write_all(cmd.as_bytes()).await.unwrap();
            // As a client that waits for each answer: the proxy learns the selected
            // mailbox's UIDVALIDITY before the next command.
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        }
        let mut out = Vec::new();
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(5), c.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn bad_upstream_input_ends_the_session_in_words() {
        // A literal over the limit: a BYE that says so, no panic.
        let t = through(
            b"* 1 FETCH (BODY[] {99999999999}\r\n",
            &["a1 FETCH 1 (BODY.PEEK[])\r\n"],
            false,
        )
        .await;
        assert!(
            t.starts_with("* OK [CAPABILITY IMAP4rev1] ready\r\n"),
            "{t}"
        );
        assert!(
            t.contains("* BYE the upstream IMAP server sent a literal of 99999999999 bytes"),
            "{t}"
        );
        // Unsolicited responses and malformed FETCH data pass as they are.
        let t = through(
            b"* 3 EXPUNGE\r\n* 1 FETCH (BODY[] not-a-string)\r\n",
            &["a1 FETCH 1 (BODY.PEEK[])\r\n", "a2 LOGOUT\r\n"],
            false,
        )
        .await;
        assert!(
            t.contains("* 3 EXPUNGE\r\n* 1 FETCH (BODY[] not-a-string)\r\na1 OK done"),
            "{t}"
        );
        // The upstream going away: the client is told.
        let t = through(b"", &["a1 NOOP\r\n"], true).await;
        assert!(
            t.ends_with("* BYE the upstream IMAP server closed the connection\r\n"),
            "{t}"
        );
    }

    #[tokio::test]
    async fn whole_messages_not_in_the_cache_are_fetched_by_the_proxy_before_the_client_s_ok() {
        // Every command gets this answer: the UIDVALIDITY for SELECT, and message 1 as
        // UID 5 for the FETCH of UIDs (then as the whole message, without content here).
        let t = through(
            b"* OK [UIDVALIDITY 7] x\r\n* 1 FETCH (UID 5)\r\n",
            &[
                "a LOGIN bob@example.org pw\r\n",
                "b SELECT INBOX\r\n",
                "c FETCH 1 (BODY.PEEK[])\r\n",
                "d LOGOUT\r\n",
            ],
            false,
        )
        .await;
        // The client's completion comes after the proxy's own FETCH, and only once.
        assert!(
            t.ends_with("* 1 FETCH (UID 5)\r\nc OK done\r\n* OK [UIDVALIDITY 7] x\r\n* 1 FETCH (UID 5)\r\nd OK done\r\n"),
            "{t}"
        );
        assert_eq!(t.matches("c OK").count(), 1, "{t}");
        // Two commands upstream for c (UIDs, then the message), one each for the others;
        // the UID alone of the first is not passed on.
        assert_eq!(t.matches("[UIDVALIDITY 7]").count(), 5, "{t}");
        assert_eq!(t.matches("* 1 FETCH (UID 5)").count(), 4, "{t}");
        assert!(!t.contains("sealpost"), "{t}");
    }

    #[tokio::test]
    async fn a_probe_answer_the_codec_cannot_read_is_fetched_whole_after_it() {
        let t = through(
            b"* OK [UIDVALIDITY 7] x\r\n* 1 FETCH (UID 5 X-ODD ((\r\n",
            &[
                "a LOGIN bob@example.org pw\r\n",
                "b SELECT INBOX\r\n",
                "c FETCH 1 (ENVELOPE)\r\n",
                "d LOGOUT\r\n",
            ],
            false,
        )
        .await;
        // Asked twice for c; its first answer not passed on, its second one is.
        assert_eq!(t.matches("[UIDVALIDITY 7]").count(), 5, "{t}");
        assert_eq!(t.matches("X-ODD").count(), 4, "{t}");
        assert_eq!(t.matches("c OK").count(), 1, "{t}");
    }

    #[tokio::test]
    async fn a_literal_over_the_limit_is_refused_and_the_session_goes_on() {
        let big = format!("{}\r\n", "x".repeat((1 << 20) + 1));
        let t = through(
            b"",
            &[
                "a APPEND INBOX {2000000}\r\n",
                "b NOOP\r\n",
                "c APPEND INBOX {1048577+}\r\n",
                &big,
                "d LOGOUT\r\n",
            ],
            false,
        )
        .await;
        assert!(
            t.contains(
                "a NO [TOOBIG] larger than the proxy's limit of 1048576 bytes\r\nb OK done\r\n"
            ),
            "{t}"
        );
        assert!(
            t.contains(
                "c NO [TOOBIG] larger than the proxy's limit of 1048576 bytes\r\nd OK done\r\n"
            ),
            "{t}"
        );
        assert!(!t.contains("a OK") && !t.contains("c OK"), "{t}");
    }

    /// What the proxy sends upstream and answers itself for `input` from the client.
    fn feed(s: &mut State, input: &[u8]) -> (Vec<u8>, Vec<u8>) {
        s.from_client.push(input);
        let (mut up, mut back) = (Vec::new(), Vec::new());
        while let Some(f) = s.from_client.fragment().unwrap() {
            let (u, b) = s.client_fragment(f);
            up.extend(u);
            back.extend(b);
        }
        (up, back)
    }

    #[test]
    fn an_append_to_encrypt_is_taken_whole_and_bounded() {
        let mut s = State::new(1024, 100, false);
        s.encrypt_appended = true;
        // The proxy asks for the message itself and sends nothing upstream yet.
        let (up, back) = feed(&mut s, b"a APPEND Sent {5}\r\n");
        assert!(up.is_empty());
        assert_eq!(back, b"+ go ahead\r\n");
        let (up, back) = feed(&mut s, b"hello\r\n");
        assert!(up.is_empty() && back.is_empty());
        assert_eq!(
            s.append_ready.take().unwrap(),
            b"a APPEND Sent {5}\r\nhello\r\n"
        );
        // Each literal within the limit, the command over it: refused, and the next line
        // is a command again.
        let mut s = State::new(1024, 70_000, false);
        s.encrypt_appended = true;
        let (_, back) = feed(&mut s, b"b APPEND {69000}\r\n");
        assert_eq!(back, b"+ go ahead\r\n");
        let mailbox = "m".repeat(69_000);
        let (up, back) = feed(&mut s, format!("{mailbox} {{69000}}\r\n").as_bytes());
        assert!(up.is_empty());
        assert_eq!(
            String::from_utf8_lossy(&back),
            "b NO [TOOBIG] larger than the proxy's limit of 70000 bytes\r\n"
        );
        let (up, _) = feed(&mut s, b"c NOOP\r\n");
        assert_eq!(up, b"c NOOP\r\n");
        assert!(s.append.is_none() && s.append_ready.is_none());
        // Two non-synchronising literals over the limit in one command: one NO.
        let mut s = State::new(1024, 10, false);
        let input = [
            &b"f APPEND X {20+}\r\n"[..],
            &[b'x'; 20],
            b" {30+}\r\n",
            &[b'y'; 30],
            b"\r\ng NOOP\r\n",
        ]
        .concat();
        let (up, back) = feed(&mut s, &input);
        assert_eq!(up, b"g NOOP\r\n");
        assert_eq!(
            String::from_utf8_lossy(&back),
            "f NO [TOOBIG] larger than the proxy's limit of 10 bytes\r\n"
        );
        assert!(s.broken.is_none());
    }

    #[test]
    fn login_names_are_learnt_from_login_and_plain() {
        let mut s = State::new(1024, 1024, false);
        s.learn_login(b"a LOGIN bob@example.org secret\r\n");
        assert_eq!(s.login.as_deref(), Some("bob@example.org"));
        s.login = None;
        // AUTHENTICATE PLAIN with SASL-IR: "\0carol@example.org\0pw".
        s.learn_login(b"b AUTHENTICATE PLAIN AGNhcm9sQGV4YW1wbGUub3JnAHB3\r\n");
        assert_eq!(s.login.as_deref(), Some("carol@example.org"));
        s.login = None;
        s.learn_login(b"c AUTHENTICATE PLAIN\r\n");
        assert!(s.awaiting_plain);
        let (up, _) = s.client_fragment(Fragment::Line {
            bytes: b"AGNhcm9sQGV4YW1wbGUub3JnAHB3\r\n".to_vec(),
            literal: None,
        });
        assert_eq!(up, b"AGNhcm9sQGV4YW1wbGUub3JnAHB3\r\n");
        assert_eq!(s.login.as_deref(), Some("carol@example.org"));
        let (up, back) = s.client_fragment(Fragment::Line {
            bytes: b"d COMPRESS DEFLATE\r\n".to_vec(),
            literal: None,
        });
        assert!(up.is_empty());
        assert_eq!(back, b"d NO COMPRESS is not offered by this proxy\r\n");
        assert!(is_fetch(b"* 12 FETCH (UID 3)\r\n"));
        assert!(!is_fetch(b"* 12 EXISTS\r\n"));
    }
}
