//! The HTTP side of the one port: the WebSocket endpoint, health, readiness,
//! metrics and log upload.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use confab_proto::ErrorCode;
use futures_util::FutureExt as _;
use futures_util::future::Either;
use serde_json::json;

use crate::logs;
use crate::session;
use crate::state::{Metrics, Shared};
use crate::ws;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/ws", get(ws))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/v1/logs",
            // The handler caps the body per app itself, answering in JSON.
            post(logs::upload).layer(DefaultBodyLimit::disable()),
        )
        .with_state(shared)
}

/// An HTTP error answered as JSON `{"code","name","message"}`, like a protocol
/// error (used by every plain HTTP route that can fail).
pub(crate) fn json_error(
    status: StatusCode,
    code: ErrorCode,
    message: impl Into<String>,
) -> Response {
    (
        status,
        Json(json!({"code": code.code(), "name": code.name(), "message": message.into()})),
    )
        .into_response()
}

/// Whether a browser page at `origin` may open a WebSocket to a server reached as
/// `host`: the server's own origin, loopback origins, and the configured list.
fn origin_allowed(origin: &str, host: Option<&str>, allowed: &[String]) -> bool {
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    if host.is_some_and(|h| h.eq_ignore_ascii_case(rest)) {
        return true;
    }
    let hostname = if let Some(v6) = rest.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        rest.split(':').next().unwrap_or("")
    };
    hostname.eq_ignore_ascii_case("localhost")
        || hostname == "::1"
        || hostname
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether a header's comma-separated values include `token` (any case).
fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// The `Sec-WebSocket-Key` of a valid WebSocket opening handshake (RFC 6455
/// 4.2.1), or the answer that says what is wrong with the request.
fn handshake_key(req: &Request) -> Result<&HeaderValue, (StatusCode, &'static str)> {
    let headers = req.headers();
    let bad = |problem: &'static str| (StatusCode::BAD_REQUEST, problem);
    if req.method() != Method::GET {
        return Err(bad("a WebSocket handshake must be a GET request\n"));
    }
    if !header_has(headers, header::CONNECTION, "upgrade") {
        return Err(bad("the Connection header must include \"upgrade\"\n"));
    }
    if !header_has(headers, header::UPGRADE, "websocket") {
        return Err(bad("the Upgrade header must be \"websocket\"\n"));
    }
    // A body would be read as WebSocket frames after the upgrade.
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if has_body {
        return Err(bad("a WebSocket handshake has no body\n"));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err((
            StatusCode::UPGRADE_REQUIRED,
            "the Sec-WebSocket-Version header must be 13\n",
        ));
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| bad("the Sec-WebSocket-Key header is missing\n"))
}

/// The WebSocket endpoint: checks the origin and the handshake, answers `101
/// Switching Protocols`, and runs the session on the upgraded connection (see
/// `ws` for why not axum's WebSocket).
async fn ws(State(shared): State<Arc<Shared>>, mut req: Request) -> Response {
    let headers = req.headers();
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        if !origin_allowed(origin, host, &shared.config.allowed_origins) {
            return (
                StatusCode::FORBIDDEN,
                format!("origin {origin} is not allowed; add it to allowed_origins\n"),
            )
                .into_response();
        }
    }
    let accept = match handshake_key(&req) {
        Ok(key) => ws::derive_accept_key(key.as_bytes()),
        // RFC 6455 4.4: a wrong version is told the one the server speaks.
        Err((status, problem)) => {
            return (status, [(header::SEC_WEBSOCKET_VERSION, "13")], problem).into_response();
        }
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return (
            StatusCode::UPGRADE_REQUIRED,
            "this connection cannot be upgraded to a WebSocket\n",
        )
            .into_response();
    };
    let limits = &shared.config.limits;
    let current = shared.metrics.connections.fetch_add(1, Ordering::Relaxed);
    if current >= limits.max_connections {
        shared.metrics.connections.fetch_sub(1, Ordering::Relaxed);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("server full: {} connections\n", limits.max_connections),
        )
            .into_response();
    }
    Metrics::inc(&shared.metrics.connections_total);
    let max = shared
        .apps
        .values()
        .map(|a| a.limits.max_frame_bytes)
        .chain([limits.max_frame_bytes])
        .max()
        .unwrap_or(limits.max_frame_bytes);
    // A combinator, not an async block: the task (one per connection, for its
    // life) is then the session's future and little more; an async block
    // would keep the upgrade's result and its own captures beside it.
    tokio::spawn(on_upgrade.then(move |upgraded| match upgraded {
        Ok(upgraded) => match ws::split(upgraded, max) {
            Ok((reader, writer)) => Either::Left(session::run(shared, reader, writer)),
            Err(_) => {
                tracing::error!("an upgraded connection was not a TCP stream");
                shared.metrics.connections.fetch_sub(1, Ordering::Relaxed);
                Either::Right(std::future::ready(()))
            }
        },
        Err(e) => {
            tracing::debug!(error = %e, "WebSocket upgrade failed");
            shared.metrics.connections.fetch_sub(1, Ordering::Relaxed);
            Either::Right(std::future::ready(()))
        }
    }));
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if *shared.shutdown.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    let store = shared.store.ping().await;
    let broker = shared.broker.ping().await;
    match (store, broker) {
        (Ok(()), Ok(())) => (StatusCode::OK, "ready\n").into_response(),
        (store, broker) => {
            let mut text = String::from("not ready:");
            if let Err(e) = store {
                let _ = write!(text, " store: {e};");
            }
            if let Err(e) = broker {
                let _ = write!(text, " broker: {e};");
            }
            text.push('\n');
            (StatusCode::SERVICE_UNAVAILABLE, text).into_response()
        }
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let m = &shared.metrics;
    let mut out = String::new();
    let mut line = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    line(
        "confab_connections",
        "gauge",
        "Open WebSocket connections.",
        m.connections.load(Ordering::Relaxed) as u64,
    );
    line(
        "confab_sessions",
        "gauge",
        "Logged-in sessions on this node.",
        shared.hub.len() as u64,
    );
    for (name, help, counter) in [
        (
            "confab_connections_total",
            "WebSocket connections accepted.",
            &m.connections_total,
        ),
        ("confab_logins_total", "Successful logins.", &m.logins_total),
        (
            "confab_login_failures_total",
            "Failed logins.",
            &m.login_failures_total,
        ),
        (
            "confab_messages_stored_total",
            "Messages stored.",
            &m.messages_stored_total,
        ),
        (
            "confab_messages_live_total",
            "Unstored messages published.",
            &m.messages_live_total,
        ),
        (
            "confab_rate_limited_total",
            "Requests refused by rate limits.",
            &m.rate_limited_total,
        ),
        (
            "confab_slow_disconnects_total",
            "Connections closed as slow consumers.",
            &m.slow_disconnects_total,
        ),
        (
            "confab_room_merged_pushes_total",
            "Pushes of several messages built by busy rooms (each sent to every member).",
            &shared.hub.merge_counters().pushes,
        ),
        (
            "confab_room_merged_messages_total",
            "Room messages that went out in merged pushes.",
            &shared.hub.merge_counters().messages,
        ),
    ] {
        line(name, "counter", help, counter.load(Ordering::Relaxed));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

#[cfg(test)]
mod tests {
    use super::origin_allowed;

    #[test]
    fn origins() {
        let none: Vec<String> = vec![];
        assert!(origin_allowed("http://localhost:3000", None, &none));
        assert!(origin_allowed("http://127.0.0.1:8080", None, &none));
        assert!(origin_allowed("http://[::1]:8080", None, &none));
        assert!(origin_allowed(
            "https://chat.example.com",
            Some("chat.example.com"),
            &none
        ));
        assert!(!origin_allowed(
            "https://evil.example",
            Some("chat.example.com"),
            &none
        ));
        assert!(!origin_allowed("null", None, &none));
        assert!(!origin_allowed(
            "http://localhost.evil.example",
            None,
            &none
        ));
        assert!(origin_allowed(
            "https://app.example",
            None,
            &["https://app.example".into()]
        ));
        assert!(origin_allowed("https://any.example", None, &["*".into()]));
    }
}
