//! The HTTP/1.1 accept loop.

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long a connection may take to send a request's head (and how long an
/// HTTP connection may sit idle before its next request): a client that opens
/// a connection and sends nothing, or a header a byte at a time, does not hold
/// a task and a socket for ever.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves HTTP/1.1 on `listener` until `shutdown` completes, then stops
/// accepting and waits (within `grace`) for requests in flight; returns when
/// it stopped accepting.
///
/// What `axum::serve` does, but with the socket itself under each connection:
/// a WebSocket upgrade then gets the `TcpStream`, split in two halves without a
/// lock ([`crate::ws::split_upgraded`]); under `axum::serve` it is wrapped in a
/// type that cannot be named, so it could only be split behind a lock.
/// Upgraded connections are not waited for: their owners end them.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> tokio::time::Instant {
    // Each connection's task holds a receiver: at the end, the sender learns
    // when every one is gone.
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // As axum::serve: a connection that failed before it was
                    // accepted is skipped; anything else (out of file
                    // descriptors) pauses accepting for a second.
                    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
                    if !matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Pushes are small and latency-bound: send each at once instead of
        // holding it for the previous segment's ACK (Nagle), which loopback
        // hides but a real network does not.
        let _ = tcp.set_nodelay(true);
        let router = app.clone();
        let service =
            hyper::service::service_fn(move |req| tower::ServiceExt::oneshot(router.clone(), req));
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let conn = http
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "HTTP connection ended with an error");
                    }
                    return;
                }
                _ = stop.wait_for(|stopping| *stopping) => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }
    let stopped_at = tokio::time::Instant::now();
    drop(listener);
    let _ = stop_tx.send(true);
    drop(stop_rx);
    // A connection that has not sent a whole request head yet ends by
    // HEADER_READ_TIMEOUT, maybe after the grace: it is left to that.
    let _ = tokio::time::timeout_at(stopped_at + grace, stop_tx.closed()).await;
    stopped_at
}
