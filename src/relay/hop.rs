//! The connection to a next hop (the upstream SMTP server, or the mailbox server over SMTP
//! or LMTP) and its TLS, shared by both clients: none, STARTTLS (RFC 3207, which LMTP
//! uses as SMTP does), or TLS from the first byte, every server verified by
//! [`ClientTls`].
//!
//! STARTTLS is required when it is configured: a server that does not offer it, refuses
//! it, or fails the handshake gets nothing, not the message in the clear. Each of these
//! is a temporary failure, so the copy waits (in the client's queue or the spool) until
//! the hop is secure again.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::fmt;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::smtp::reply::Reply;
use crate::tls::ClientTls;

use super::wire;

/// How the connection to a next hop is secured.
#[derive(Debug, Clone)]
pub enum HopTls {
    None,
    /// STARTTLS after the hello, required.
    StartTls(ClientTls),
    /// TLS from the first byte (SMTPS, port 465 style).
    Implicit(ClientTls),
}

impl HopTls {
    pub fn is_none(&self) -> bool {
        matches!(self, HopTls::None)
    }
}

impl fmt::Display for HopTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HopTls::None => "none",
            HopTls::StartTls(_) => "starttls",
            HopTls::Implicit(_) => "tls",
        })
    }
}

/// A byte stream to the server: TCP, TLS, a Unix socket, or in tests an in-memory pipe.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync + fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync + fmt::Debug> Stream for T {}

/// What went wrong on the connection itself (not a refusal by the server).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server closed the connection")]
    Closed,
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("unreadable reply: {0}")]
    Wire(#[from] wire::Error),
    #[error("the server does not offer STARTTLS, which the configuration requires; nothing was sent in the clear")]
    NoStartTls,
    #[error("the server refused STARTTLS ({0}); nothing was sent in the clear")]
    StartTlsRefused(Reply),
    /// Bytes that came after the reply to STARTTLS were sent before TLS: anyone on the
    /// path could have put them there, to be read as the encrypted server's replies.
    #[error("the server sent more than its reply to STARTTLS before TLS began")]
    InjectedReplies,
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    #[error("TLS to a Unix socket is not supported")]
    TlsOnUnixSocket,
}

impl Error {
    /// A failure of the TLS the configuration requires, rather than of the network.
    pub fn is_tls_policy(&self) -> bool {
        matches!(
            self,
            Error::NoStartTls | Error::StartTlsRefused(_) | Error::InjectedReplies
        )
    }
}

/// TCP to `host:port`, then for implicit TLS the handshake. Nagle's algorithm is off:
/// commands are small writes answered one by one, and lettre writes a message and its
/// final dot separately, which on a reused connection would otherwise wait for a delayed
/// ACK.
///
/// # Errors
/// The connection or the handshake failed, or timed out.
pub async fn connect_tcp(
    host: &str,
    port: u16,
    tls: &HopTls,
    timeout: Duration,
) -> Result<(Box<dyn Stream>, std::net::SocketAddr), Error> {
    let connecting = tokio::net::TcpStream::connect((host, port));
    let tcp = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| Error::Timeout("the connection"))?
        .map_err(Error::Connect)?;
    let _ = tcp.set_nodelay(true);
    let peer = tcp.peer_addr().map_err(Error::Connect)?;
    let stream: Box<dyn Stream> = match tls {
        HopTls::Implicit(client) => Box::new(handshake(client, host, tcp, timeout).await?),
        HopTls::None | HopTls::StartTls(_) => Box::new(tcp),
    };
    Ok((stream, peer))
}

async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    client: &ClientTls,
    host: &str,
    stream: S,
    timeout: Duration,
) -> Result<tokio_rustls::client::TlsStream<S>, Error> {
    tokio::time::timeout(timeout, client.connect(host, stream))
        .await
        .map_err(|_| Error::Timeout("the TLS handshake"))?
        .map_err(Error::Handshake)
}

/// Whether a reply to EHLO or LHLO lists `keyword` (its first line is the server's name;
/// each further line starts with a keyword).
pub fn offers(hello: &Reply, keyword: &str) -> bool {
    hello.lines.iter().skip(1).any(|line| {
        line.split_whitespace()
            .next()
            .is_some_and(|k| k.eq_ignore_ascii_case(keyword))
    })
}

/// The socket and the bytes read but not yet parsed, so that a reply that arrives with
/// the next one (LMTP's per-recipient replies often do) is kept for the next read.
pub struct Connection {
    stream: Box<dyn Stream>,
    buf: Vec<u8>,
}

impl Connection {
    pub fn new(stream: Box<dyn Stream>) -> Connection {
        Connection {
            stream,
            buf: Vec::with_capacity(1024),
        }
    }

    pub async fn reply(
        &mut self,
        timeout: Duration,
        waiting_for: &'static str,
    ) -> Result<Reply, Error> {
        let read = async {
            let mut chunk = [0u8; 4096];
            loop {
                if let Some((reply, used)) = wire::parse(&self.buf)? {
                    self.buf.drain(..used.min(self.buf.len()));
                    return Ok(reply);
                }
                let n = self.stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(Error::Closed);
                }
                self.buf
                    .extend_from_slice(chunk.get(..n).unwrap_or_default());
            }
        };
        tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| Error::Timeout(waiting_for))?
    }

    pub async fn write(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), Error> {
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        tokio::time::timeout(timeout, write)
            .await
            .map_err(|_| Error::Timeout("the server to take our data"))?
            .map_err(Error::Io)
    }

    pub async fn command(
        &mut self,
        line: &str,
        timeout: Duration,
        waiting_for: &'static str,
    ) -> Result<Reply, Error> {
        self.write(line.as_bytes(), timeout).await?;
        self.reply(timeout, waiting_for).await
    }

    /// Ends the session politely; a server that has gone away by now changes nothing.
    pub async fn quit(&mut self, timeout: Duration) {
        let _ = self.command("QUIT\r\n", timeout, "the QUIT reply").await;
    }

    /// STARTTLS on a connection whose hello reply was `hello`, then the handshake, the
    /// server verified as `host`. What the server said before TLS counts for nothing
    /// after it (RFC 3207 §4.2): the caller says hello again.
    ///
    /// # Errors
    /// STARTTLS not offered or refused, replies injected before TLS, or a failed
    /// handshake; the connection is closed (after a QUIT where the server still listens
    /// in the clear).
    pub async fn starttls(
        mut self,
        hello: &Reply,
        client: &ClientTls,
        host: &str,
        timeout: Duration,
    ) -> Result<Connection, Error> {
        if !offers(hello, "STARTTLS") {
            self.quit(timeout).await;
            return Err(Error::NoStartTls);
        }
        let reply = self
            .command("STARTTLS\r\n", timeout, "the STARTTLS reply")
            .await?;
        if reply.code != 220 {
            self.quit(timeout).await;
            return Err(Error::StartTlsRefused(reply));
        }
        if !self.buf.is_empty() {
            return Err(Error::InjectedReplies);
        }
        let tls = handshake(client, host, self.stream, timeout).await?;
        Ok(Connection::new(Box::new(tls)))
    }

    /// The stream, for a client that speaks on it by itself from here on (lettre); no
    /// bytes may be waiting unparsed.
    pub fn into_stream(self) -> Result<Box<dyn Stream>, Error> {
        if !self.buf.is_empty() {
            return Err(Error::InjectedReplies);
        }
        Ok(self.stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};

    fn hello(lines: &[&str]) -> Reply {
        Reply {
            code: 250,
            enhanced: None,
            lines: lines.iter().map(|l| l.to_string()).collect(),
        }
    }

    #[test]
    fn offered_keywords_are_read_from_the_lines_after_the_first() {
        let h = hello(&["mx.test STARTTLS", "8BITMIME", "starttls", "SIZE 1000"]);
        assert!(offers(&h, "STARTTLS") && offers(&h, "size") && offers(&h, "8bitmime"));
        assert!(!offers(&h, "DSN"));
        assert!(!offers(&hello(&["STARTTLS.example"]), "STARTTLS"));
        assert!(!offers(&hello(&["mx.test", "X-STARTTLS"]), "STARTTLS"));
    }

    /// A server that answers STARTTLS with `answer` (in one write), and records what it
    /// was sent.
    async fn starttls_against(hello_lines: &[&str], answer: &'static str) -> (Error, Vec<String>) {
        crate::tls::install_provider();
        let (client, server) = tokio::io::duplex(1 << 16);
        let served = tokio::spawn(async move {
            let (read, mut write) = tokio::io::split(server);
            let mut read = BufReader::new(read);
            let mut seen = Vec::new();
            loop {
                let mut line = String::new();
                if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                    break;
                }
                seen.push(line.trim_end().to_string());
                let reply = if line.starts_with("STARTTLS") {
                    answer
                } else {
                    "221 bye\r\n"
                };
                let _ = write.write_all(reply.as_bytes()).await;
            }
            seen
        });
        let conn = Connection::new(Box::new(client));
        let tls = ClientTls::new(None).unwrap();
        let err = match conn
            .starttls(&hello(hello_lines), &tls, "mx.test", Duration::from_secs(5))
            .await
        {
            Ok(_) => panic!("no TLS server here"),
            Err(e) => e,
        };
        (err, served.await.unwrap())
    }

    #[tokio::test]
    async fn no_starttls_offered_means_nothing_more_is_sent() {
        let (err, seen) = starttls_against(&["mx.test", "8BITMIME"], "220 go\r\n").await;
        assert!(matches!(err, Error::NoStartTls), "{err}");
        assert!(err.is_tls_policy());
        assert_eq!(seen, ["QUIT"]);
    }

    #[tokio::test]
    async fn a_refused_starttls_is_a_policy_failure() {
        let (err, seen) =
            starttls_against(&["mx.test", "STARTTLS"], "454 4.7.0 TLS not available\r\n").await;
        assert!(
            matches!(err, Error::StartTlsRefused(ref r) if r.code == 454),
            "{err}"
        );
        assert!(err.to_string().contains("TLS not available"), "{err}");
        assert_eq!(seen, ["STARTTLS", "QUIT"]);
    }

    #[tokio::test]
    async fn replies_pipelined_after_the_220_are_refused_before_the_handshake() {
        let (err, seen) = starttls_against(
            &["mx.test", "STARTTLS"],
            "220 go ahead\r\n250-injected\r\n250 AUTH PLAIN\r\n",
        )
        .await;
        assert!(matches!(err, Error::InjectedReplies), "{err}");
        assert_eq!(seen, ["STARTTLS"]);
    }
}
