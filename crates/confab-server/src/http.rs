//! The HTTP side of the one port: the WebSocket endpoint, health, readiness,
//! metrics and log upload.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use futures_util::FutureExt as _;
use futures_util::future::Either;

use crate::logs;
use crate::session;
use crate::state::{ConnectionGuard, Shared};
use confab_conn::ws;

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

/// The largest WebSocket message a connection may send: the largest frame
/// limit of any app (the app is known only at login).
pub(crate) fn max_message(shared: &Shared) -> usize {
    let limits = &shared.config.limits;
    shared
        .apps
        .values()
        .map(|a| a.limits.max_frame_bytes)
        .chain([limits.max_frame_bytes])
        .max()
        .unwrap_or(limits.max_frame_bytes)
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
    let accept = match ws::accept_key(&req) {
        Ok(accept) => accept,
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
    let guard = match ConnectionGuard::open(&shared) {
        Ok(guard) => guard,
        Err(max) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("server full: {max} connections\n"),
            )
                .into_response();
        }
    };
    let max = max_message(&shared);
    // A combinator, not an async block: the task (one per connection, for its
    // life) is then the session's future and little more; an async block
    // would keep the upgrade's result and its own captures beside it.
    tokio::spawn(on_upgrade.then(move |upgraded| match upgraded {
        Ok(upgraded) => {
            let (reader, writer) = ws::split_upgraded(upgraded, max);
            Either::Left(session::run(guard, reader, writer))
        }
        Err(e) => {
            tracing::debug!(error = %e, "WebSocket upgrade failed");
            drop(guard);
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
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics_text(&shared),
    )
        .into_response()
}

/// The node's metrics in Prometheus' text format, as `/metrics` answers.
pub(crate) fn metrics_text(shared: &Shared) -> String {
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
    line(
        "confab_publications_waiting",
        "gauge",
        "Stored messages whose publication to the broker failed, waiting to be published again.",
        shared.republish.len() as u64,
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
    out
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
