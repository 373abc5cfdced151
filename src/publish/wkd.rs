//! The WKD listener (`[wkd] listen`): the local users' keys over HTTPS, in the advanced
//! layout (`https://openpgpkey.<domain>/.well-known/openpgpkey/<domain>/hu/<hash>`) and
//! the direct one (`https://<domain>/.well-known/openpgpkey/hu/<hash>`), with the
//! `policy` file of each.
//!
//! Every answer is read from the keyring when it is asked for, so that a key generated,
//! imported or revoked later is served as it is now, without a restart. The certificates
//! and their names come from [`Keyring::wkd_lookup`], the selection `keys wkd-export`
//! writes too. The listener takes no input but the method, the Host and the path: a
//! request body is never read, and every connection is bounded in time and number.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use sealpost_keyring::Keyring;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 256;
/// A client has this long for its TLS handshake, and then for each request's header.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// A connection is closed after this long, however busy.
const CONNECTION: Duration = Duration::from_secs(30);
/// The most header bytes buffered for one request (hyper's own floor is 8 KiB).
const MAX_HEADER: usize = 16 << 10;

const PREFIX: &str = "/.well-known/openpgpkey/";

/// What the listener serves.
pub struct State {
    pub keyring: Keyring,
    /// The domains served; empty: those of the keyring's secret keys, read per request.
    pub domains: Vec<String>,
}

/// Serves until `shutdown`, with the certificate `acceptor` holds at each handshake (a
/// SIGHUP may replace it).
pub async fn serve(
    listener: TcpListener,
    acceptor: watch::Receiver<TlsAcceptor>,
    state: Arc<State>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let Some(accepted) = crate::server::listener::accept(&listener, &shutdown, "WKD").await
        else {
            return;
        };
        let Ok((stream, peer)) = accepted else {
            continue;
        };
        let tls = acceptor.borrow().clone();
        let state = state.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let stream = match tokio::time::timeout(HANDSHAKE, tls.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "WKD TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(respond(&state, &req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HANDSHAKE)
                .max_buf_size(MAX_HEADER)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION, conn).await;
        });
    }
}

/// What a request asks for, read from its Host and path alone.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Asked {
    /// The `policy` file of `domain`'s directory.
    Policy { domain: String },
    /// The keys published under `hash` in `domain`, narrowed to the local part `local`.
    Key {
        domain: String,
        hash: String,
        local: Option<String>,
    },
}

/// Reads a request's Host (its port and a trailing dot dropped) and path: the advanced
/// layout when the Host is `openpgpkey.` and the domain the path names, the direct one
/// when the path names none and the Host is the domain. `None` for anything else.
fn asked(host: &str, path: &str, query: Option<&str>) -> Option<Asked> {
    let host = host_name(host)?;
    let rest = path.strip_prefix(PREFIX)?;
    let parts: Vec<&str> = rest.split('/').collect();
    let (domain, tail) = match parts.as_slice() {
        ["policy"] | ["hu", _] => (host.clone(), parts.as_slice()),
        [domain, tail @ ..] => {
            let domain = domain.to_ascii_lowercase();
            if host.strip_prefix("openpgpkey.") != Some(domain.as_str()) {
                return None;
            }
            (domain, tail)
        }
        [] => return None,
    };
    match tail {
        ["policy"] => Some(Asked::Policy { domain }),
        ["hu", hash] if is_hash(hash) => Some(Asked::Key {
            domain,
            hash: (*hash).to_string(),
            local: query.and_then(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == "l")
                    .map(|(_, v)| v.into_owned())
            }),
        }),
        _ => None,
    }
}

/// The host name of a Host header value, lower-cased, without its port or a final dot.
fn host_name(host: &str) -> Option<String> {
    let host = host.trim();
    // An IPv6 literal is no domain of ours.
    if host.starts_with('[') {
        return None;
    }
    let name = host.split_once(':').map_or(host, |(n, _)| n);
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    (!name.is_empty()).then_some(name)
}

/// A z-base-32 encoded SHA-1: 32 characters of its alphabet.
fn is_hash(s: &str) -> bool {
    const ZBASE32: &[u8] = b"ybndrfg8ejkmcpqxot1uwisza345h769";
    s.len() == 32 && s.bytes().all(|b| ZBASE32.contains(&b))
}

fn response(status: StatusCode, content_type: &str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        headers.insert(CONTENT_TYPE, v);
    }
    // The WKD draft asks for it: web mail clients look keys up from scripts.
    headers.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    response
}

fn not_found() -> Response<Full<Bytes>> {
    response(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        Bytes::from_static(b"not found\n"),
    )
}

async fn respond<B>(state: &Arc<State>, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = response(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"GET or HEAD only\n"),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    // HTTP/1.1 names the host in the Host field; an absolute URI overrides it.
    let host = req
        .uri()
        .host()
        .map(str::to_string)
        .or_else(|| {
            req.headers()
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let Some(asked) = asked(&host, req.uri().path(), req.uri().query()) else {
        return not_found();
    };
    let s = state.clone();
    let answer = tokio::task::spawn_blocking(move || lookup(&s, &asked)).await;
    match answer {
        Ok(Ok(Some(r))) => r,
        Ok(Ok(None)) => not_found(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "WKD request: the keyring cannot be read");
            response(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain; charset=utf-8",
                Bytes::from_static(b"try again later\n"),
            )
        }
        Err(_) => response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            Bytes::new(),
        ),
    }
}

/// The answer to a request the listener understood; `None` for a domain it does not
/// serve or a name with no key.
fn lookup(
    state: &State,
    asked: &Asked,
) -> Result<Option<Response<Full<Bytes>>>, sealpost_keyring::Error> {
    let domain = match asked {
        Asked::Policy { domain } | Asked::Key { domain, .. } => domain,
    };
    let served = if state.domains.is_empty() {
        state.keyring.secret_domains()?.contains(domain)
    } else {
        state.domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
    };
    if !served {
        return Ok(None);
    }
    match asked {
        // An empty policy file: the directory exists and states no restrictions.
        Asked::Policy { .. } => Ok(Some(response(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            Bytes::new(),
        ))),
        Asked::Key {
            domain,
            hash,
            local,
        } => Ok(state
            .keyring
            .wkd_lookup(domain, hash, local.as_deref())?
            .map(|certs| {
                response(
                    StatusCode::OK,
                    "application/octet-stream",
                    Bytes::from(certs),
                )
            })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "kei1q4tipxxu1yj79k9kfukdhfy631xe";

    #[test]
    fn both_layouts_are_read_from_host_and_path() {
        let path = format!("{PREFIX}example.org/hu/{HASH}");
        assert_eq!(
            asked("openpgpkey.Example.org:8443", &path, Some("l=alice")),
            Some(Asked::Key {
                domain: "example.org".into(),
                hash: HASH.into(),
                local: Some("alice".into()),
            })
        );
        // The advanced layout is only asked of openpgpkey.<the domain in the path>.
        assert_eq!(asked("example.org", &path, None), None);
        assert_eq!(asked("openpgpkey.example.net", &path, None), None);
        assert_eq!(
            asked(
                "example.org.",
                &format!("{PREFIX}hu/{HASH}"),
                Some("l=a%2Bb")
            ),
            Some(Asked::Key {
                domain: "example.org".into(),
                hash: HASH.into(),
                local: Some("a+b".into()),
            })
        );
        assert_eq!(
            asked("example.org", &format!("{PREFIX}policy"), None),
            Some(Asked::Policy {
                domain: "example.org".into()
            })
        );
        assert_eq!(
            asked(
                "openpgpkey.example.org",
                &format!("{PREFIX}example.org/policy"),
                None
            ),
            Some(Asked::Policy {
                domain: "example.org".into()
            })
        );
        assert_eq!(
            asked("example.org", &format!("{PREFIX}hu/notahash"), None),
            None
        );
        assert_eq!(
            asked("example.org", &format!("{PREFIX}hu/{HASH}/x"), None),
            None
        );
        assert_eq!(asked("example.org", "/index.html", None), None);
        assert_eq!(asked("[::1]:443", &format!("{PREFIX}policy"), None), None);
    }
}
