//! The HTTP listener of `[admin] http`: `/metrics`, `/healthz` and `/readyz`. Meant for
//! a monitoring system on a private address; it serves nothing secret and takes no input
//! but the path.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sealpost_keyring::Keyring;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::metrics;
use crate::relay::Relay;

/// How recently the upstream must have answered for `/readyz` to trust it without
/// connecting again.
const UPSTREAM_FRESH: Duration = Duration::from_secs(60);

/// What the endpoints look at.
pub struct State {
    pub keyring: Keyring,
    pub relay: Relay,
    /// The outbound next hop, when it is SMTP: `/readyz` needs it reachable.
    pub upstream: Option<(String, u16)>,
}

/// Serves until `shutdown`. A connection that does not finish in 30 s is dropped.
pub async fn serve(listener: TcpListener, state: Arc<State>, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "admin HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(respond(&state, &req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
        });
    }
}

fn text(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, v);
    }
    response
}

async fn respond<B>(state: &Arc<State>, req: &Request<B>) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            "GET only\n".to_string(),
        );
    }
    match req.uri().path() {
        "/metrics" => text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics::render(&snapshot(state).await),
        ),
        "/healthz" => text(StatusCode::OK, PLAIN, "alive\n".to_string()),
        "/readyz" => {
            let problems = readiness(state).await;
            if problems.is_empty() {
                text(StatusCode::OK, PLAIN, "ready\n".to_string())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    PLAIN,
                    format!("not ready: {}\n", problems.join("; ")),
                )
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "/metrics, /healthz or /readyz\n".to_string(),
        ),
    }
}

/// The spool and keyring figures, read off the async threads (both may touch disk or
/// the database).
async fn snapshot(state: &Arc<State>) -> metrics::Snapshot {
    let s = state.clone();
    let read = tokio::task::spawn_blocking(move || {
        let now = crate::relay::unix(SystemTime::now());
        // Kept by the spool as it changes: a scrape never reads the spool itself.
        let (count, oldest) = s.relay.spool().stats();
        let oldest = oldest.map_or(0, |t| now.saturating_sub(t));
        // The local users' own keys: those an admin must renew (`keys extend`).
        let expiring = s
            .keyring
            .expiring_local_keys(sealpost_keyring::EXPIRY_NOTICE, SystemTime::now())
            .map(|v| v.len())
            .ok();
        metrics::Snapshot {
            spool_messages: count,
            spool_oldest: Duration::from_secs(oldest),
            keys_expiring_30d: expiring,
        }
    })
    .await;
    read.unwrap_or(metrics::Snapshot {
        spool_messages: 0,
        spool_oldest: Duration::ZERO,
        keys_expiring_30d: None,
    })
}

/// What keeps the gateway from taking mail now, in words; empty when it is ready.
async fn readiness(state: &Arc<State>) -> Vec<String> {
    // The SMTP listeners are bound: this listener is started only after them.
    let mut problems = Vec::new();
    let keyring = state.keyring.clone();
    match tokio::task::spawn_blocking(move || keyring.reachable()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => problems.push(format!("the keyring cannot be reached: {e}")),
        Err(_) => problems.push("the keyring check did not complete".to_string()),
    }
    if let Some((host, port)) = &state.upstream {
        if !upstream_reachable(host, *port).await {
            problems.push(format!("the upstream {host}:{port} cannot be reached"));
        }
    }
    problems
}

/// Reachable when the relay or an earlier check reached it in the last minute and has
/// not failed since; otherwise a TCP connection is tried now.
async fn upstream_reachable(host: &str, port: u16) -> bool {
    if let Some((when, true)) = metrics::last_contact(host, port) {
        if when.elapsed() < UPSTREAM_FRESH {
            return true;
        }
    }
    let connect = tokio::net::TcpStream::connect((host, port));
    let reached = matches!(
        tokio::time::timeout(Duration::from_secs(5), connect).await,
        Ok(Ok(_))
    );
    metrics::contact(host, port, reached);
    reached
}
