//! The HTTPS client of key discovery: one GET, HTTPS only, a bounded answer, a few
//! redirects, and host names that `[discovery.resolve]` may point elsewhere.
//!
//! Written over hyper and the gateway's rustls client rather than taken from a general
//! HTTP client crate because each lookup must obey the gateway's rules: trust anchors
//! from `[discovery] ca_file` beside the system's, the split-horizon `resolve` map, an
//! answer cut off at [`MAX_BODY`] (a WKD server that sends 100 MB must not cost 100 MB),
//! and errors in words for `policy explain`. WKD names, the advanced-then-direct order
//! and the parsing of answers come from sequoia-net (`wkd.rs`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use url::Url;

use crate::tls::client::ClientTls;

/// The largest answer read. A certificate with its user IDs and subkeys is a few KiB; one
/// carrying every signature ever made on it may reach a few hundred.
pub const MAX_BODY: usize = 1 << 20;

/// Redirects followed, each to another `https:` URL.
const MAX_REDIRECTS: usize = 3;

/// Why a GET gave no certificate bytes, in words.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("not found (HTTP 404)")]
    NotFound,
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("{0} is not an https URL")]
    NotHttps(String),
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("cannot connect to {host}: {reason}")]
    Connect { host: String, reason: String },
    #[error("TLS with {host}: {reason}")]
    Tls { host: String, reason: String },
    #[error("HTTP with {host}: {reason}")]
    Protocol { host: String, reason: String },
    #[error("the answer is larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("more than {MAX_REDIRECTS} redirects")]
    Redirects,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// An HTTPS client for discovery (cheap to clone).
#[derive(Clone, Debug)]
pub struct Client {
    tls: ClientTls,
    /// Host name (lower case) → the address to connect to instead of asking DNS.
    resolve: HashMap<String, SocketAddr>,
    /// Bound on one GET, redirects included, for callers without a deadline of their own.
    timeout: Duration,
}

impl Client {
    pub fn new(tls: ClientTls, resolve: HashMap<String, SocketAddr>, timeout: Duration) -> Client {
        let resolve = resolve
            .into_iter()
            .map(|(h, a)| (h.to_ascii_lowercase(), a))
            .collect();
        Client {
            tls,
            resolve,
            timeout,
        }
    }

    /// The body of a `200 OK` answer to a GET of `url`.
    ///
    /// # Errors
    /// Every way the GET can fail, as [`HttpError`].
    pub async fn get(&self, url: &Url) -> Result<Vec<u8>, HttpError> {
        match tokio::time::timeout(self.timeout, self.follow(url.clone())).await {
            Ok(r) => r,
            Err(_) => Err(HttpError::Timeout(self.timeout)),
        }
    }

    async fn follow(&self, mut url: Url) -> Result<Vec<u8>, HttpError> {
        for _ in 0..=MAX_REDIRECTS {
            match self.once(&url).await? {
                Answer::Body(b) => return Ok(b),
                Answer::Redirect(next) => url = next,
            }
        }
        Err(HttpError::Redirects)
    }

    async fn once(&self, url: &Url) -> Result<Answer, HttpError> {
        if url.scheme() != "https" {
            return Err(HttpError::NotHttps(url.to_string()));
        }
        let host = url
            .host_str()
            .ok_or_else(|| HttpError::NotHttps(url.to_string()))?
            .to_ascii_lowercase();
        let port = url.port().unwrap_or(443);
        let addrs = self.addresses(&host, port).await?;
        let mut last = None;
        let mut tcp = None;
        for a in addrs {
            match TcpStream::connect(a).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(e.to_string()),
            }
        }
        let Some(tcp) = tcp else {
            return Err(HttpError::Connect {
                host,
                reason: last.unwrap_or_else(|| "no address".into()),
            });
        };
        let _ = tcp.set_nodelay(true);
        // A bracketed IPv6 literal is checked against the certificate without brackets.
        let name = host.trim_start_matches('[').trim_end_matches(']');
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| HttpError::Tls {
                host: host.clone(),
                reason: e.to_string(),
            })?;
        let protocol = |e: hyper::Error| HttpError::Protocol {
            host: host.clone(),
            reason: e.to_string(),
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(protocol)?;
        // The connection is driven beside the request and dropped with it.
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let request = Request::get(path)
            .header(hyper::header::HOST, authority)
            .header(
                hyper::header::USER_AGENT,
                concat!("sealpost/", env!("CARGO_PKG_VERSION")),
            )
            .header(hyper::header::ACCEPT, "application/octet-stream, */*")
            .body(Empty::<Bytes>::new())
            .map_err(|e| HttpError::Protocol {
                host: host.clone(),
                reason: e.to_string(),
            })?;
        let result = async {
            let response = sender.send_request(request).await.map_err(protocol)?;
            let status = response.status();
            if status.is_redirection() {
                let next = response
                    .headers()
                    .get(hyper::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| url.join(l).ok())
                    .ok_or(HttpError::Status(status.as_u16()))?;
                return Ok(Answer::Redirect(next));
            }
            if status == StatusCode::NOT_FOUND {
                return Err(HttpError::NotFound);
            }
            if status != StatusCode::OK {
                return Err(HttpError::Status(status.as_u16()));
            }
            if let Some(len) = response
                .headers()
                .get(hyper::header::CONTENT_LENGTH)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| l.parse::<u64>().ok())
            {
                if len > MAX_BODY as u64 {
                    return Err(HttpError::TooLarge);
                }
            }
            let mut body = response.into_body();
            let mut out = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(protocol)?;
                if let Some(data) = frame.data_ref() {
                    if out.len() + data.len() > MAX_BODY {
                        return Err(HttpError::TooLarge);
                    }
                    out.extend_from_slice(data);
                }
            }
            Ok(Answer::Body(out))
        }
        .await;
        driver.abort();
        result
    }

    async fn addresses(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, HttpError> {
        if let Some(a) = self.resolve.get(host) {
            return Ok(vec![*a]);
        }
        let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| HttpError::Resolve {
                host: host.to_string(),
                reason: e.to_string(),
            })?
            .collect();
        if found.is_empty() {
            return Err(HttpError::Resolve {
                host: host.to_string(),
                reason: "no address".into(),
            });
        }
        Ok(found)
    }
}

enum Answer {
    Body(Vec<u8>),
    Redirect(Url),
}
